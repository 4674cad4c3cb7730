"""Datasets as arrays held in memory (moved to the device once per job)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
from dataclasses import dataclass

import numpy as np

from ddjax.data import cifar10
from ddjax.data.augment import Preprocess
from ddjax.parallel import cache_dir


@dataclass(frozen=True)
class Dataset:
  x_train: np.ndarray  # (N, *input_shape) float32, or uint8 images
  y_train: np.ndarray  # (N,) int32, clean labels
  x_test: np.ndarray
  y_test: np.ndarray
  num_classes: int         # classes, or outputs of a regression (1)
  preprocess: Preprocess = Preprocess()  # applied on the device to every gathered batch
  task: str = 'classify'   # 'classify' (cross-entropy on int labels) | 'regress' (MSE on float targets; inf = excluded)
  info: tuple[tuple[str, int | float], ...] = ()  # facts about the data written next to every member (e.g. infinite targets)
  modes: int = 0           # singular modes of the input-output correlation that deep linear networks report

  @property
  def input_shape(self) -> tuple[int, ...]:
    return tuple(self.x_train.shape[1:])


@contextlib.contextmanager
def _global_rng_preserved():
  """mnist1d reseeds Python's and NumPy's global generators; give the caller theirs back."""
  py_state, np_state = random.getstate(), np.random.get_state()
  try:
    yield
  finally:
    random.setstate(py_state)
    np.random.set_state(np_state)


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


def image_dataset(arrays, data_cfg, default_augment: str) -> Dataset:
  """CIFAR-style uint8 images with CIFAR-10's normalisation and the configured augmentation."""
  augment = default_augment if data_cfg.augment == 'auto' else data_cfg.augment
  return Dataset(*arrays, num_classes=10, preprocess=Preprocess(cifar10.MEAN, cifar10.STD, augment))


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


def modular(op: str = 'add', p: int = 53, train_split: float = 0.6, seed: int = 42) -> Dataset:
  """Every pair (a, b) with a, b in [0, p) (b != 0 for div) labelled a op b mod p, split at random (from `seed`)
  into train and test; inputs are the int32 tokens (a, b)."""
  a, b = (g.ravel() for g in np.meshgrid(np.arange(p), np.arange(1 if op == 'div' else 0, p), indexing='ij'))
  y = MODULAR_OPS[op](a, b, p)
  order = np.random.default_rng(seed).permutation(len(a))
  n_train = int(len(a) * train_split)
  x = np.stack([a, b], axis=1).astype(np.int32)[order]
  y = y.astype(np.int32)[order]
  return Dataset(x[:n_train], y[:n_train], x[n_train:], y[n_train:], p)


def mheight(groups: str = 'all', num_samples: int = 6250, train_split: float = 0.8, seed: int = 42,
            workers: int = 0) -> Dataset:
  """m-height regression over (n, k, m) groups: `num_samples` codes per group, the first train_split of each group
  for training. Input (K, R, 2 + M): P / 100 zero-padded to the largest k x (n - k), a mask of P's entries, and a
  one-hot of m (broadcast); target log2(h_m), +inf where the height is infinite (kept, excluded from the loss)."""
  from ddjax.data import mheight as mh
  spec = mh.parse_groups(groups)
  rows, cols, ms = max(k for _, k, _ in spec), max(n - k for n, k, _ in spec), max(m for *_, m in spec)
  n_train = int(num_samples * train_split)
  parts = {'x_train': [], 'y_train': [], 'x_test': [], 'y_test': []}
  for n, k, m in spec:
    P, h = mh.sample_group(n, k, m, num_samples, seed, workers=workers or None)
    x = np.zeros((num_samples, rows, cols, 2 + ms), np.float32)
    x[:, :k, :n - k, 0] = P / 100.0
    x[:, :k, :n - k, 1] = 1.0
    x[:, :, :, 1 + m] = 1.0
    with np.errstate(divide='ignore'):
      y = np.log2(h).astype(np.float32)
    for split, sl in (('train', slice(0, n_train)), ('test', slice(n_train, None))):
      parts[f'x_{split}'].append(x[sl])
      parts[f'y_{split}'].append(y[sl])
  arrays = {k: np.concatenate(v) for k, v in parts.items()}
  info = (('train_infinite', int(np.isinf(arrays['y_train']).sum())),
          ('test_infinite', int(np.isinf(arrays['y_test']).sum())))
  return Dataset(arrays['x_train'], arrays['y_train'], arrays['x_test'], arrays['y_test'], 1, task='regress',
                 info=info)


def dataset_shape(data_cfg) -> tuple[tuple[int, ...], int]:
  """(input shape, classes or outputs) of the data set a config names, without loading it."""
  if data_cfg.name == 'mnist1d':
    return (40,), 10
  if data_cfg.name in ('cifar10', 'synthetic_cifar10'):
    return (32, 32, 3), 10
  if data_cfg.name == 'modular':
    return (2,), data_cfg.p
  if data_cfg.name == 'mheight':
    from ddjax.data import mheight as mh
    spec = mh.parse_groups(data_cfg.groups)
    return (max(k for _, k, _ in spec), max(n - k for n, k, _ in spec), 2 + max(m for *_, m in spec)), 1
  if data_cfg.name == 'linear_teacher':
    return (data_cfg.dim,), data_cfg.dim
  raise ValueError(f'unknown dataset {data_cfg.name!r}')


def load_dataset(data_cfg) -> Dataset:
  """The data set a config names. Raises cifar10.DataMissing (a message for the user) if it is not there."""
  if data_cfg.name == 'mnist1d':
    return mnist1d(data_cfg.num_samples, data_cfg.train_split, data_cfg.seed)
  if data_cfg.name == 'cifar10':
    arrays = cifar10.load_local(data_cfg.dir) if data_cfg.dir else cifar10.load_tfds()
    return image_dataset(arrays, data_cfg, 'crop_flip')
  if data_cfg.name == 'synthetic_cifar10':
    n_train = int(data_cfg.num_samples * data_cfg.train_split)
    arrays = cifar10.synthetic(n_train, data_cfg.num_samples - n_train, data_cfg.seed)
    return image_dataset(arrays, data_cfg, 'crop_flip')
  if data_cfg.name == 'modular':
    return modular(data_cfg.op, data_cfg.p, data_cfg.train_split, data_cfg.seed)
  if data_cfg.name == 'mheight':
    return mheight(data_cfg.groups, data_cfg.num_samples, data_cfg.train_split, data_cfg.seed, data_cfg.workers)
  if data_cfg.name == 'linear_teacher':
    from ddjax.data.teacher import linear_teacher
    return linear_teacher(data_cfg.dim, data_cfg.spectrum, data_cfg.num_samples, data_cfg.train_split, data_cfg.seed)
  raise ValueError(f'unknown dataset {data_cfg.name!r}')


def check_available(data_cfg) -> None:
  """Cheap check, before any work, that a data set can be loaded; raises cifar10.DataMissing if not."""
  if data_cfg.name != 'cifar10':
    return
  if data_cfg.dir:
    cifar10.resolve(data_cfg.dir)
    return
  try:
    import tensorflow_datasets  # noqa: F401
  except ImportError:
    raise cifar10.DataMissing(
        cifar10.missing_message('(no data.dir given and tensorflow-datasets is not installed)')) from None
