"""Datasets as arrays held in memory (moved to the device once per job)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ddjax.data import cifar10
from ddjax.data.augment import Preprocess


@dataclass(frozen=True)
class Dataset:
  x_train: np.ndarray  # (N, *input_shape) float32, or uint8 images
  y_train: np.ndarray  # (N,) int32, clean labels
  x_test: np.ndarray
  y_test: np.ndarray
  num_classes: int
  preprocess: Preprocess = Preprocess()  # applied on the device to every gathered batch

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


def cache_dir() -> Path:
  return Path(os.environ.get('DDJAX_CACHE', Path.home() / '.cache' / 'ddjax'))


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
