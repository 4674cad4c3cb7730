"""CIFAR-10 from a small fake archive in the real "python version" format, the missing-data error, the
on-device augmentation, and the smoke preset end to end."""

import io
import pickle
import tarfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ddjax import cli
from ddjax.data import cifar10
from ddjax.data.augment import Preprocess, random_crop_flip
from experiments.double_descent import PRESETS

N_PER_BATCH = 4


def fake_batches(rng, sizes=(N_PER_BATCH,) * 6):
  """name -> pickled dict exactly as in cifar-10-batches-py (bytes keys, uint8 rows R|G|B of 1024 each), with
  sizes[i] images in the i-th file (data_batch_1..5, test_batch)."""
  out = {}
  for name, n in zip(cifar10.TRAIN_FILES + (cifar10.TEST_FILE,), sizes):
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, 10, n)]
    out[name] = pickle.dumps({b'batch_label': name.encode(), b'labels': labels, b'data': data,
                              b'filenames': [b'x.png'] * n})
  return out


def write_archive(path, batches):
  with tarfile.open(path, 'w:gz') as tar:
    for name, blob in batches.items():
      info = tarfile.TarInfo(f'{cifar10.FOLDER}/{name}')
      info.size = len(blob)
      tar.addfile(info, io.BytesIO(blob))


@pytest.fixture
def archive(tmp_path):
  batches = fake_batches(np.random.default_rng(0))
  path = tmp_path / cifar10.ARCHIVE
  write_archive(path, batches)
  folder = tmp_path / 'extracted' / cifar10.FOLDER
  folder.mkdir(parents=True)
  for name, blob in batches.items():
    (folder / name).write_bytes(blob)
  return path, batches


def test_archive_and_folder_give_the_same_nhwc_images(archive):
  path, batches = archive
  x, y, xt, yt = cifar10.load_local(path)
  assert x.shape == (5 * N_PER_BATCH, 32, 32, 3) and x.dtype == np.uint8 and xt.shape == (N_PER_BATCH, 32, 32, 3)
  first = pickle.loads(batches['data_batch_1'])
  row = first[b'data'][0]
  for (i, j, c) in [(0, 0, 0), (5, 17, 1), (31, 2, 2)]:
    assert x[0, i, j, c] == row[c * 1024 + i * 32 + j]  # channel-major rows, row-major pixels
  assert list(y[:N_PER_BATCH]) == first[b'labels']
  for where in (path.parent / 'extracted', path.parent / 'extracted' / cifar10.FOLDER, path.parent):
    got = cifar10.load_local(where)
    for a, b in zip(got, (x, y, xt, yt)):
      np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize('extra', [['data.dir=/nonexistent/cifar'], []])
def test_missing_cifar10_is_one_line_naming_both_options(extra, tmp_path, capsys, monkeypatch):
  import builtins
  real_import = builtins.__import__
  monkeypatch.setattr(builtins, '__import__', lambda name, *a, **k: (_ for _ in ()).throw(ImportError(name))
                      if name.startswith('tensorflow_datasets') else real_import(name, *a, **k))
  out = tmp_path / 'run'
  with pytest.raises(SystemExit) as e:
    cli.main('double_descent', PRESETS, ['--preset', 'paper', '--out', str(out), *extra])
  err = capsys.readouterr().err.strip()
  assert e.value.code == 2 and len(err.splitlines()) == 1 and not out.exists()
  for needle in ('data.dir=PATH', cifar10.ARCHIVE, cifar10.FOLDER, 'data_batch_1', 'test_batch', 'ddjax[tfds]'):
    assert needle in err


def test_damaged_or_wrong_files_are_one_line_errors(archive, tmp_path, capsys):
  path, _ = archive
  not_tar = tmp_path / 'notes.txt'
  not_tar.write_text('not an archive')
  truncated = tmp_path / 'cut' / cifar10.ARCHIVE
  truncated.parent.mkdir()
  truncated.write_bytes(path.read_bytes()[:3000])  # a download cut short
  for bad, needle in ((not_tar, 'is not a tar archive'), (truncated, 'damaged')):
    out = tmp_path / f'run-{bad.stem}'
    with pytest.raises(SystemExit) as e:
      cli.main('double_descent', PRESETS, ['--preset', 'smoke', '--out', str(out), '--no-progress',
                                           'data.name=cifar10', f'data.dir={bad}', 'model.width=1'])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and needle in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_random_crop_flip_against_numpy():
  rng = np.random.default_rng(1)
  x = rng.integers(0, 256, size=(64, 32, 32, 3)).astype(np.float32)
  key = jax.random.key(5)
  got = np.asarray(random_crop_flip(key, jnp.asarray(x)))
  k_crop, k_flip = jax.random.split(key)
  offsets = np.asarray(jax.random.randint(k_crop, (64, 2), 0, 9))
  flips = np.asarray(jax.random.uniform(k_flip, (64,)) < 0.5)
  padded = np.pad(x, ((0, 0), (4, 4), (4, 4), (0, 0)))
  for b in range(64):
    want = padded[b, offsets[b, 0]:offsets[b, 0] + 32, offsets[b, 1]:offsets[b, 1] + 32]
    np.testing.assert_array_equal(got[b], want[:, ::-1] if flips[b] else want)
  assert set(offsets.ravel()) == set(range(9)) and 0.25 < flips.mean() < 0.75


def test_preprocess_scales_then_normalises():
  p = Preprocess(cifar10.MEAN, cifar10.STD, 'crop_flip')
  x = jnp.full((2, 32, 32, 3), 255, jnp.uint8)
  np.testing.assert_allclose(np.asarray(p(x))[0, 0, 0], (1 - np.array(cifar10.MEAN)) / np.array(cifar10.STD),
                             rtol=1e-6)
  aug = np.asarray(p(x, jax.random.key(0)))  # padding is black before normalisation, like torchvision
  assert np.isclose(aug, -np.array(cifar10.MEAN) / np.array(cifar10.STD), rtol=1e-5).all(-1).any()


def test_smoke_preset_runs_on_synthetic_data_and_through_a_cifar10_archive(tmp_path):
  # The same preset then trains from a fake archive in the real format (data.dir), of the synthetic data's sizes
  # (128 train, 32 test images), so the compiled programs are shared.
  import pandas as pd
  write_archive(tmp_path / cifar10.ARCHIVE, fake_batches(np.random.default_rng(1), (26, 26, 26, 25, 25, 32)))
  for out, extra in ((tmp_path / 'smoke', []), (tmp_path / 'archive', ['data.name=cifar10', f'data.dir={tmp_path}'])):
    path = cli.main('double_descent', PRESETS, ['--preset', 'smoke', '--out', str(out), '--no-progress', *extra],
                    after=None)
    df = pd.read_parquet(path)
    assert sorted(df['model.width']) == [1, 2, 3, 4] and not df['diverged'].any()
    assert all(np.isfinite(v).all() for v in df['train_loss'])


class FakeSplit:
  """What tfds.load returns for one split, enough for load_tfds: batch(n), then tfds.as_numpy of that."""

  def __init__(self, x, y, size=None):
    self.x, self.y, self.size = x, y, size

  def batch(self, n):
    return FakeSplit(self.x, self.y, n)

  def numpy_batches(self):
    return [(self.x[i:i + self.size], self.y[i:i + self.size].astype(np.int64))
            for i in range(0, len(self.y), self.size)]


def test_tensorflow_datasets_path_with_a_stand_in_module(tmp_path, monkeypatch, capsys):
  # tensorflow-datasets replaced by a stand-in that records its call (tfds itself needs TensorFlow, the tfds extra,
  # which the tests do not install; its mock data was checked by hand with tensorflow-datasets 4.9.10).
  import sys
  import types
  rng = np.random.default_rng(2)
  images = {s: rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8) for s, n in (('train', 25_000), ('test', 7))}
  labels = {s: rng.integers(0, 10, len(x)) for s, x in images.items()}
  calls, fail = [], []

  def load(name, split, as_supervised, data_dir, download):
    calls.append((name, split, as_supervised, download))
    if fail:
      raise fail[0]
    return [FakeSplit(images[s], labels[s]) for s in split]

  stub = types.SimpleNamespace(load=load, as_numpy=lambda ds: ds.numpy_batches())
  monkeypatch.setitem(sys.modules, 'tensorflow_datasets', stub)
  x, y, xt, yt = cifar10.load_tfds()
  assert calls == [('cifar10', ['train', 'test'], True, False)]  # never downloads
  for got, want in zip((x, y, xt, yt), (images['train'], labels['train'], images['test'], labels['test'])):
    np.testing.assert_array_equal(got, want)
  assert (x.dtype, y.dtype) == (np.uint8, np.int32)
  for error, needle in ((ImportError('No module named tensorflow'), 'cannot read it: No module named tensorflow'),
                        (FileNotFoundError('cifar10 not prepared\nin /x'), 'FileNotFoundError: cifar10 not prepared')):
    fail[:] = [error]
    out = tmp_path / type(error).__name__
    with pytest.raises(SystemExit) as e:
      cli.main('double_descent', PRESETS, ['--preset', 'paper', '--out', str(out), 'model.width=1'])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and needle in err and 'data.dir=PATH' in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_smoke_preset_resumes_exactly_with_augmentation(tmp_path, monkeypatch):
  # The CIFAR path (ResNet18k, BatchNorm, on-device crop and flip, label noise): stopped by SIGTERM after its
  # first epoch and resumed, it gives the uninterrupted run's numbers bitwise. Same shapes as the smoke test above,
  # so the compiled programs are shared.
  import os
  import signal

  import pandas as pd

  from ddjax import config as cfglib
  from ddjax import run as runlib
  from ddjax.members import expand
  cfg, sweep = cfglib.apply_overrides(PRESETS['smoke'].config, PRESETS['smoke'].sweep, ['train.checkpoint_every=1'])
  jobs = expand(cfg, sweep)
  quiet = dict(progress=False, log=lambda *a: None)
  straight = pd.read_parquet(runlib.run(cfg, sweep, jobs, tmp_path / 'straight', **quiet))
  original = runlib.Bucket.train_epoch

  def train_then_signal(self, epoch):
    loss = original(self, epoch)
    if epoch == 0:
      os.kill(os.getpid(), signal.SIGTERM)
    return loss

  monkeypatch.setattr(runlib.Bucket, 'train_epoch', train_then_signal)
  with pytest.raises(runlib.Interrupted):
    runlib.run(cfg, sweep, jobs, tmp_path / 'resumed', **quiet)
  monkeypatch.setattr(runlib.Bucket, 'train_epoch', original)
  said = []
  resumed = pd.read_parquet(runlib.run(cfg, sweep, jobs, tmp_path / 'resumed', progress=False, log=said.append))
  assert any('resumed after epoch 1' in str(m) for m in said)
  a, b = (t.sort_values('model.width').reset_index(drop=True) for t in (straight, resumed))
  for col in ('epoch', 'train_loss', 'train_error', 'test_loss', 'test_error', 'test_error_noisy', 'weight_norm'):
    np.testing.assert_array_equal(np.stack(a[col]), np.stack(b[col]), err_msg=col)
