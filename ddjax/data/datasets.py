"""The built-in datasets (MNIST-1D, CIFAR-10 and its synthetic stand-in, modular arithmetic, m-height), each
registered with its spec (ddjax.data.registry); arrays are held in host memory and moved to the device once per job.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import numpy as np

from ddjax.data import cifar10
from ddjax.data.augment import Preprocess
from ddjax.data.registry import Dataset, check_split, register_dataset
from ddjax.parallel import cache_dir


@contextlib.contextmanager
def _global_rng_preserved():
  """mnist1d reseeds Python's and NumPy's global generators; give the caller theirs back."""
  py_state, np_state = random.getstate(), np.random.get_state()
  try:
    yield
  finally:
    random.setstate(py_state)
    np.random.set_state(np_state)


@register_dataset('mnist1d', shape=lambda d: ((40,), 10), inputs='signal',
                  help='MNIST-1D (Greydanus), generated offline: data.num_samples split at data.train_split')
def _load_mnist1d(d) -> Dataset:
  return mnist1d(d.num_samples, d.train_split, d.seed)


def mnist1d(num_samples: int = 5000, train_split: float = 0.8, seed: int = 42) -> Dataset:
  """MNIST-1D generated offline with the `mnist1d` package (never its downloading `get_dataset`), cached on disk."""
  key = hashlib.sha1(f'mnist1d-{num_samples}-{train_split}-{seed}'.encode()).hexdigest()[:16]
  path = cache_dir() / f'mnist1d-{key}.npz'
  if path.exists():
    try:
      with np.load(path) as z:
        return Dataset(z['x'], z['y'], z['x_test'], z['y_test'], 10)
    except Exception:  # noqa: BLE001 - a damaged cache file (truncated zip, missing key) is regenerated below
      pass
  with _global_rng_preserved():
    from mnist1d.data import get_dataset_args, make_dataset
    args = get_dataset_args()
    args.num_samples, args.train_split, args.seed = num_samples, train_split, seed
    d = make_dataset(args)
  ds = Dataset(d['x'].astype(np.float32), d['y'].astype(np.int32), d['x_test'].astype(np.float32),
               d['y_test'].astype(np.int32), 10)
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f'.{os.getpid()}.tmp.npz')
    np.savez(tmp, x=ds.x_train, y=ds.y_train, x_test=ds.x_test, y_test=ds.y_test)
    os.replace(tmp, path)
  except OSError:
    pass  # caching is an optimisation only
  return ds


def image_dataset(arrays, augment: str = 'none') -> Dataset:
  """CIFAR-style uint8 images with CIFAR-10's normalisation (load_dataset sets the augmentation data.augment asks
  for)."""
  return Dataset(*arrays, num_classes=10, preprocess=Preprocess(cifar10.MEAN, cifar10.STD, augment))


def _cifar10_available(d) -> None:
  if d.dir:
    cifar10.resolve(d.dir)
    return
  try:
    import tensorflow_datasets  # noqa: F401
  except ImportError:
    raise cifar10.DataMissing(
        cifar10.missing_message('(no data.dir given and tensorflow-datasets is not installed)')) from None


@register_dataset('cifar10', shape=lambda d: ((32, 32, 3), 10), inputs='image', options=('dir',),
                  train_examples=lambda d: None, check_available=_cifar10_available, augment='crop_flip',
                  help='CIFAR-10 from data.dir (the python version) or a prepared tensorflow-datasets directory')
def _load_cifar10(d) -> Dataset:
  arrays = cifar10.load_local(d.dir) if d.dir else cifar10.load_tfds()
  return image_dataset(arrays)


@register_dataset('synthetic_cifar10', shape=lambda d: ((32, 32, 3), 10), inputs='image', augment='crop_flip',
                  help='CIFAR-shaped random images with learnable labels, for tests and smoke runs')
def _load_synthetic_cifar10(d) -> Dataset:
  n_train = int(d.num_samples * d.train_split)
  return image_dataset(cifar10.synthetic(n_train, d.num_samples - n_train, d.seed))


MODULAR_OPS = {'add': lambda a, b, p: (a + b) % p, 'sub': lambda a, b, p: (a - b) % p,
               'mul': lambda a, b, p: (a * b) % p, 'div': lambda a, b, p: (a * pow_mod(b, p - 2, p)) % p}


def pow_mod(b: np.ndarray, e: int, p: int) -> np.ndarray:
  """b^e mod p elementwise (b^(p-2) is the inverse of b mod a prime p)."""
  out, b = np.ones_like(b), b % p
  while e:
    if e & 1:
      out = out * b % p
    b, e = b * b % p, e >> 1
  return out


def _modular_pairs(d) -> int:
  return d.p * (d.p - 1 if d.op == 'div' else d.p)


def _check_modular(d) -> None:
  if d.op == 'div' and any(d.p % q == 0 for q in range(2, int(d.p ** 0.5) + 1)):
    raise ValueError(f'bad value {d.p!r} for data.p: division mod p needs a prime p')
  total = _modular_pairs(d)
  if not 0.0 <= d.val_split < 1.0 or (d.val_split and int(total * d.val_split) < 1):
    raise ValueError(f'bad value {d.val_split!r} for data.val_split: must be in [0, 1) and leave at least one '
                     f'validation pair of {total}')
  check_split(d, int(total * d.train_split), total - int(total * d.val_split))


@register_dataset('modular', shape=lambda d: ((2,), d.p), inputs='tokens', options=('op', 'p', 'val_split'),
                  validate=_check_modular, train_examples=lambda d: int(_modular_pairs(d) * d.train_split),
                  has_validation=lambda d: d.val_split > 0,
                  help='every pair (a, b) labelled a op b mod p, split at data.train_split (grokking)')
def _load_modular(d) -> Dataset:
  return modular(d.op, d.p, d.train_split, d.seed, d.val_split)


def modular(op: str = 'add', p: int = 53, train_split: float = 0.6, seed: int = 42, val_split: float = 0.0) -> Dataset:
  """Every pair (a, b) with a, b in [0, p) (b != 0 for div) labelled a op b mod p, split at random (from `seed`)
  into train, validation (val_split of the pairs, after the training ones; none at 0) and test (the rest); inputs
  are the int32 tokens (a, b)."""
  a, b = (g.ravel() for g in np.meshgrid(np.arange(p), np.arange(1 if op == 'div' else 0, p), indexing='ij'))
  y = MODULAR_OPS[op](a, b, p)
  order = np.random.default_rng(seed).permutation(len(a))
  n_train, n_val = int(len(a) * train_split), int(len(a) * val_split)
  x = np.stack([a, b], axis=1).astype(np.int32)[order]
  y = y.astype(np.int32)[order]
  test = slice(n_train + n_val, None)
  val = {'x_val': x[n_train:test.start], 'y_val': y[n_train:test.start]} if n_val else {}
  return Dataset(x[:n_train], y[:n_train], x[test], y[test], p, **val)


from ddjax.data.codes import mheight  # noqa: E402, F401 - registers data.name=mheight; its old home
