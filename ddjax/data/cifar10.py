"""CIFAR-10 from a local copy of the standard "CIFAR-10 python version" archive or its folder, or from
tensorflow-datasets, plus a small procedural CIFAR-shaped stand-in for tests and smoke runs.

Images stay uint8 (N, 32, 32, 3): 150 MB for the whole training set, gathered and normalised on the device.
"""

from __future__ import annotations

import pickle
import tarfile
from pathlib import Path

import numpy as np

TRAIN_FILES = tuple(f'data_batch_{i}' for i in range(1, 6))
TEST_FILE = 'test_batch'
ARCHIVE = 'cifar-10-python.tar.gz'
FOLDER = 'cifar-10-batches-py'
MEAN = (0.4914, 0.4822, 0.4465)  # per-channel statistics of the training images, in [0, 1]
STD = (0.2470, 0.2435, 0.2616)


class DataMissing(FileNotFoundError):
  """The data set is not where it was looked for; the message says where to put it."""


def missing_message(where: str) -> str:
  return (f'CIFAR-10 not found {where}: either set data.dir=PATH to the "CIFAR-10 python version" archive '
          f'({ARCHIVE}) or its extracted folder ({FOLDER}/ with {", ".join(TRAIN_FILES[:1])}..5 and {TEST_FILE}), '
          f'or install the tfds extra (pip install "ddjax[tfds]", or -e ".[tfds]" in a checkout) with cifar10 '
          f'prepared in its data dir')


def _decode(batch: dict) -> tuple[np.ndarray, np.ndarray]:
  data = np.asarray(batch[b'data'] if b'data' in batch else batch['data'], np.uint8)
  labels = np.asarray(batch[b'labels'] if b'labels' in batch else batch['labels'], np.int32)
  return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels  # channel-major rows -> NHWC


def _read_members(read) -> tuple[np.ndarray, ...]:
  parts = [_decode(pickle.loads(read(name), encoding='bytes')) for name in TRAIN_FILES]
  x_test, y_test = _decode(pickle.loads(read(TEST_FILE), encoding='bytes'))
  return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), x_test, y_test)


def resolve(path: str | Path) -> tuple[str, Path]:
  """('archive', file) or ('folder', folder) that `path` names, or DataMissing saying what is wrong.

  `path` may be the .tar.gz archive, a folder holding it or its extracted cifar-10-batches-py/, or that folder."""
  path = Path(path).expanduser()
  if not path.exists():
    raise DataMissing(missing_message(f'at {path} (no such file or folder)'))
  if path.is_dir():
    folder = path / FOLDER if (path / FOLDER).is_dir() else path
    missing = [n for n in TRAIN_FILES + (TEST_FILE,) if not (folder / n).is_file()]
    if not missing:
      return 'folder', folder
    if (path / ARCHIVE).is_file():
      path = path / ARCHIVE
    else:
      raise DataMissing(missing_message(f'in {path} (missing {", ".join(missing)})'))
  if not tarfile.is_tarfile(path):
    raise DataMissing(f'{path} is not a tar archive; ' + missing_message('there'))
  return 'archive', path


def load_local(path: str | Path) -> tuple[np.ndarray, ...]:
  """(x_train, y_train, x_test, y_test) from what `resolve(path)` finds."""
  kind, path = resolve(path)
  if kind == 'folder':
    return _read_members(lambda n: (path / n).read_bytes())
  try:
    with tarfile.open(path) as tar:
      names = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
      missing = [n for n in TRAIN_FILES + (TEST_FILE,) if n not in names]
      if missing:
        raise DataMissing(f'{path} lacks {", ".join(missing)}; ' + missing_message('there'))
      return _read_members(lambda n: tar.extractfile(names[n]).read())
  except (tarfile.TarError, EOFError, OSError, pickle.UnpicklingError) as e:
    raise DataMissing(f'{path} is damaged ({type(e).__name__}: {e}); ' + missing_message('there')) from None


def load_tfds(data_dir: str | None = None) -> tuple[np.ndarray, ...]:
  """From tensorflow-datasets (with TensorFlow: the `tfds` extra), without downloading: the data must be prepared
  in its data dir (`tfds build cifar10`, or tfds.load once with download=True)."""
  try:
    import tensorflow_datasets as tfds
  except ImportError:
    raise DataMissing(missing_message('(no data.dir given and tensorflow-datasets is not installed)')) from None
  try:
    splits = tfds.load('cifar10', split=['train', 'test'], as_supervised=True, data_dir=data_dir, download=False)
  except ImportError as e:  # tensorflow-datasets without TensorFlow
    raise DataMissing(missing_message(f'(tensorflow-datasets cannot read it: {e})')) from None
  except Exception as e:  # noqa: BLE001 - tfds raises several kinds for a data set that is not prepared
    raise DataMissing(missing_message(f'by tensorflow-datasets ({type(e).__name__}: {e})'.splitlines()[0])) from None
  arrays = []
  for split in splits:  # in batches: batch_size=-1 fails on tfds's mock data; the images are uint8 throughout
    batches = list(tfds.as_numpy(split.batch(10_000)))
    arrays += [np.concatenate([x for x, _ in batches]).astype(np.uint8),
               np.concatenate([y for _, y in batches]).astype(np.int32)]
  return tuple(arrays)


def synthetic(num_train: int, num_test: int, seed: int = 0) -> tuple[np.ndarray, ...]:
  """CIFAR-shaped uint8 images whose class sets a coloured pattern under noise: learnable, made offline."""
  rng = np.random.default_rng(seed)
  templates = rng.uniform(0, 255, size=(10, 8, 8, 3))

  def make(n):
    y = rng.integers(0, 10, n).astype(np.int32)
    base = np.repeat(np.repeat(templates[y], 4, axis=1), 4, axis=2)
    x = np.clip(base + rng.normal(0, 60, size=base.shape), 0, 255).astype(np.uint8)
    return x, y

  return (*make(num_train), *make(num_test))
