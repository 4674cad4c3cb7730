"""Invariant 5 and 6: a run stopped by SIGTERM checkpoints, and resuming gives exactly the uninterrupted results,
also when the newest checkpoint is damaged (it falls back to the previous one)."""

import os
import signal

import numpy as np
import pandas as pd
import pytest

from ddjax import config as cfglib
from ddjax import run as runlib
from ddjax.members import expand

OVERRIDES = ['model.width=2,5', 'seed=0,1', 'train.epochs=4', 'data.num_samples=300', 'data.seed=3',
             'train.batch_size=40', 'train.eval_points=4', 'data.noise=0.2', 'train.checkpoint_every=1',
             'model.name=resnet1d', 'optim.name=adamw', 'optim.wd=0.05', 'train.keep_best=true']


def setup():
  cfg, sweep = cfglib.apply_overrides(cfglib.Config(), {}, OVERRIDES)
  return cfg, sweep, expand(cfg, sweep)


def table(out):
  return pd.read_parquet(out / 'results.parquet').sort_values(['model.width', 'seed']).reset_index(drop=True)


def test_sigterm_then_resume_is_exact(tmp_path, monkeypatch):
  cfg, sweep, jobs = setup()
  straight = runlib.run(cfg, sweep, jobs, tmp_path / 'straight', progress=False, log=lambda *a: None)

  original = runlib.Bucket.train_epoch
  sent = []

  def train_then_signal(self, epoch):
    loss = original(self, epoch)
    if epoch == 2 and not sent:  # during the third epoch: one real SIGTERM, handled by the run loop
      sent.append(True)
      os.kill(os.getpid(), signal.SIGTERM)
    return loss

  out = tmp_path / 'killed'
  monkeypatch.setattr(runlib.Bucket, 'train_epoch', train_then_signal)
  with pytest.raises(runlib.Interrupted) as e:
    runlib.run(cfg, sweep, jobs, out, progress=False, log=lambda *a: None)
  assert e.value.epoch == 3 and e.value.signum == signal.SIGTERM
  monkeypatch.setattr(runlib.Bucket, 'train_epoch', original)
  assert len(runlib.results.load(out)) == 4  # the table is readable after the stop
  [ckpt_dir] = (out / 'checkpoints').iterdir()  # named by the job's id
  assert sorted(int(p.name) for p in ckpt_dir.iterdir() if p.name.isdigit()) == [1, 2, 3]
  for f in (ckpt_dir / '3').rglob('*'):  # damage the newest checkpoint: resume must fall back to epoch 2
    if f.is_file():
      f.write_bytes(b'\0garbage')
  with pytest.warns(UserWarning, match='checkpoint at epoch 3 is unreadable'):
    resumed = runlib.run(cfg, sweep, jobs, out, progress=False, log=lambda *a: None)
  a, b = table(straight.parent), table(resumed.parent)
  for col in ('epoch', 'train_loss', 'train_error', 'test_loss', 'test_error', 'weight_norm', 'update_norm'):
    np.testing.assert_array_equal(np.stack(a[col]), np.stack(b[col]), err_msg=col)
  for col in ('best_epoch', 'best_test_loss'):  # the best-validation state is part of the checkpoint
    np.testing.assert_array_equal(a[col], b[col], err_msg=col)
