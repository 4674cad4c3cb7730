"""Invariant 5 and 6: a run stopped by SIGTERM checkpoints, and resuming gives exactly the uninterrupted results,
also when the newest checkpoint is damaged (it falls back to the previous one), and with other buckets or another
sweep order (members move into their new buckets and rows)."""

import os
import signal

import jax
import numpy as np
import pandas as pd
import pytest

from ddjax import config as cfglib
from ddjax import run as runlib
from ddjax.checkpoint import Checkpoints
from ddjax.members import expand
from tests.helpers import close

OVERRIDES = ['model.width=2,5', 'seed=0,1', 'train.epochs=4', 'data.num_samples=300', 'data.seed=3',
             'train.batch_size=60', 'train.eval_every_steps=1',  # 4 steps an epoch, each followed by an evaluation
             'train.eval_points=4', 'data.noise=0.2', 'train.checkpoint_every=1',
             'model.name=resnet1d', 'optim.name=adamw', 'optim.wd=0.05', 'train.keep_best=true',
             'optim.warmup=5', 'optim.schedule=cosine',  # the resumed run's lr continues from its step count
             'probes=step_metrics,drift', 'probe.step_metrics.every=3',  # the step table: flushed, resumed, compacted
             'probe.drift.batch=32', 'train.snapshot_epochs=3']  # a probe state and a snapshot, both resumed


def setup(*more):
  cfg, sweep = cfglib.apply_overrides(cfglib.Config(), {}, OVERRIDES + list(more))
  return cfg, sweep, expand(cfg, sweep)


@pytest.fixture(scope='module')
def straight(tmp_path_factory):
  cfg, sweep, jobs = setup()
  return runlib.run(cfg, sweep, jobs, tmp_path_factory.mktemp('straight'), progress=False, log=lambda *a: None)


def signal_during_third_epoch(monkeypatch):
  """Bucket.train_epoch and train_segment (an epoch's steps up to an evaluation within it) that send one real
  SIGTERM, handled by the run loop, during the third epoch."""
  originals, sent = {name: getattr(runlib.Bucket, name) for name in ('train_epoch', 'train_segment')}, []

  def then_signal(original):
    def train(self, epoch, *segment):
      loss = original(self, epoch, *segment)
      if epoch == 2 and not sent:
        sent.append(True)
        os.kill(os.getpid(), signal.SIGTERM)
      return loss
    return train

  for name, original in originals.items():
    monkeypatch.setattr(runlib.Bucket, name, then_signal(original))
  return lambda: [monkeypatch.setattr(runlib.Bucket, name, original) for name, original in originals.items()]


def table(out):
  return pd.read_parquet(out / 'results.parquet').sort_values(['model.width', 'seed']).reset_index(drop=True)


def test_sigterm_then_resume_is_exact(tmp_path, monkeypatch, straight):
  cfg, sweep, jobs = setup()
  out = tmp_path / 'killed'
  restore = signal_during_third_epoch(monkeypatch)
  with pytest.raises(runlib.Interrupted) as e:
    runlib.run(cfg, sweep, jobs, out, progress=False, log=lambda *a: None)
  assert e.value.epoch == 3 and e.value.signum == signal.SIGTERM
  restore()
  assert len(runlib.results.load(out)) == 4  # the table is readable after the stop
  [ckpt_dir] = (out / 'checkpoints').iterdir()  # named by the job's id
  assert sorted(int(p.name) for p in ckpt_dir.iterdir() if p.name.isdigit()) == [1, 2, 3]
  for f in (ckpt_dir / '3').rglob('*'):  # damage the newest checkpoint: resume must fall back to epoch 2
    if f.is_file():
      f.write_bytes(b'\0garbage')
  said = []
  with pytest.warns(UserWarning, match='checkpoint at epoch 3 is unreadable'):
    resumed = runlib.run(cfg, sweep, jobs, out, progress=False, log=said.append)
  assert any('resumed after epoch 2' in str(m) for m in said)  # not started over
  a, b = table(straight.parent), table(resumed.parent)
  for col in ('epoch', 'train_loss', 'train_error', 'test_loss', 'test_error', 'weight_norm', 'update_norm',
              'drift_cka'):  # drift: its epoch-1 reference is in the checkpoint
    np.testing.assert_array_equal(np.stack(a[col]), np.stack(b[col]), err_msg=col)
  for col in ('best_epoch', 'best_test_loss'):  # the best-validation state is part of the checkpoint
    np.testing.assert_array_equal(a[col], b[col], err_msg=col)
  for run in b['run_id']:  # the epoch-3 snapshot, written before the stop (kept after the fallback to epoch 2)
    jax.tree.map(np.testing.assert_array_equal, runlib.member_variables(straight.parent, run, 3),
                 runlib.member_variables(resumed.parent, run, 3))
  # Four evaluations per epoch, those after the epoch-2 checkpoint written before the stop and again after it: each
  # once, bitwise those of the uninterrupted run (above); so is the step table (steps 3, 6, ..., 15 of each member),
  # in steps.parquet as in the part files.
  assert all(list(e) == [q / 4 for q in range(1, 17)] and list(s) == list(range(1, 17))
             for e, s in zip(b['epoch'], b['step']))
  steps = [runlib.results.load_sweep(o, table='steps').sort_values(['run_id', 'step']).reset_index(drop=True)
           for o in (straight.parent, resumed.parent)]
  assert all(list(g['step']) == list(range(3, 17, 3)) for _, g in steps[1].groupby('run_id'))
  pd.testing.assert_frame_equal(steps[0].drop(columns='attempt'), steps[1].drop(columns='attempt'))
  parts = runlib.results.assemble_steps(resumed.parent)
  pd.testing.assert_frame_equal(pd.read_parquet(resumed.parent / 'steps.parquet'), parts)


def test_resume_moves_members_into_other_buckets_and_sweep_order(tmp_path, monkeypatch, straight):
  # Interrupted with every member in one bucket padded to width 5; resumed with the default two buckets (2 and 5)
  # and the seeds listed the other way round: each member continues from its own state in its new row.
  one = setup('train.max_buckets=1')
  out = tmp_path / 'moved'
  restore = signal_during_third_epoch(monkeypatch)
  with pytest.raises(runlib.Interrupted):
    runlib.run(*one, out, progress=False, log=lambda *a: None)
  restore()
  cfg, sweep, jobs = setup('seed=1,0')
  said = []
  resumed = runlib.run(cfg, sweep, jobs, out, progress=False, log=said.append)
  assert any('moving each member into its new bucket' in str(m) for m in said)
  assert any('resumed after epoch 3' in str(m) for m in said)
  a, b = table(straight.parent), table(resumed.parent)
  assert b['bucket_width'].tolist() == [2, 2, 5, 5]
  for col in ('epoch', 'train_loss', 'train_error', 'test_loss', 'test_error', 'weight_norm', 'update_norm',
              'drift_cka'):
    close(np.stack(a[col]), np.stack(b[col]))
  close(a['best_test_loss'].to_numpy(), b['best_test_loss'].to_numpy())
  np.testing.assert_array_equal(a['best_epoch'], b['best_epoch'])
  # Later checkpoints are in the new buckets; the one it resumed from keeps its own.
  [ckpt_dir] = (out / 'checkpoints').iterdir()
  ckpt = Checkpoints(ckpt_dir)
  try:
    assert [[m.shape[0] for m in ckpt.manager.item_metadata(step)['layout']] for step in (3, 4)] == [[4], [2, 2]]
  finally:
    ckpt.close()


def test_checkpoint_moves_rows_into_buckets_of_other_widths(tmp_path):
  # Members 11..14 of active width 1..4 (their kernel's active block holds their id), saved in buckets [11, 12]
  # and [13, 14] padded to widths 2 and 4, restored into [13, 11] and [12, 14] padded to 3 and 4: as many rows
  # per bucket, other shapes and rows. Optimizer states are NamedTuples, which orbax restores as dicts.
  import jax
  import optax

  def bucket(ids, width, filled=True):
    k = np.zeros((len(ids), width, width), np.float32)
    for r, i in enumerate(ids):
      k[r, :i - 10, :i - 10] = i if filled else 0
    count = np.asarray(ids if filled else [0] * len(ids), np.int32)
    return {'params': {'k': jax.numpy.asarray(k)},
            'opt': optax.ScaleByAdamState(count=jax.numpy.asarray(count), mu={'k': jax.numpy.asarray(-k)}, nu={})}

  saved = Checkpoints(tmp_path)
  saved.save(7, [bucket([11, 12], 2), bucket([13, 14], 4)], [[11, 12], [13, 14]], [2, 4], 1.5, 9)
  saved.close()
  said = []
  ckpt = Checkpoints(tmp_path)
  epoch, states, elapsed, attempt = ckpt.restore(
      [bucket([13, 11], 3, False), bucket([12, 14], 4, False)], [[13, 11], [12, 14]], said.append)
  ckpt.close()
  assert (epoch, elapsed, attempt) == (7, 1.5, 9) and len(said) == 1 and 'moving each member' in said[0]
  close(states, [bucket([13, 11], 3), bucket([12, 14], 4)], rtol=0)


def test_checkpoint_without_layout_restores_into_the_buckets_it_had(tmp_path):
  import jax
  import orbax.checkpoint as ocp
  state = {'k': jax.numpy.arange(6.0).reshape(2, 3)}
  old = Checkpoints(tmp_path)  # as written before checkpoints recorded their layout
  old.manager.save(4, args=ocp.args.StandardSave({'buckets': [state], 'elapsed_s': np.asarray(2.0),
                                                  'attempt': np.asarray(3)}))
  old.close()
  ckpt = Checkpoints(tmp_path)
  said = []
  epoch, [restored], elapsed, attempt = ckpt.restore([{'k': jax.numpy.zeros((2, 3))}], [[1, 2]], said.append)
  np.testing.assert_array_equal(restored['k'], state['k'])
  assert (epoch, elapsed, attempt) == (4, 2.0, 3) and said == []  # restored as it is: nothing moved
  with pytest.warns(UserWarning, match='older ddjax that did not record its buckets'):
    assert ckpt.restore([{'k': jax.numpy.zeros((2, 4))}], [[1, 2]]) is None
  ckpt.close()


RESTORE_IN_PROCESS = """
import sys
from ddjax import parallel
parallel.init_distributed()
import jax
from ddjax.checkpoint import Checkpoints
ckpt = Checkpoints(sys.argv[1 + jax.process_index()])
epoch, [state], _, _ = ckpt.restore([{'k': jax.numpy.zeros(3)}], [[1]])
print('restored', epoch, state['k'].tolist(), 'left', list(ckpt.manager.all_steps()))
ckpt.close()
"""


def test_processes_restore_the_same_checkpoint_when_they_see_different_ones(tmp_path):
  """Multi-host: every process must restore the same epoch (orbax's restore ends in a barrier, and the processes
  train one program). Process 0 sees checkpoints 2 and 4; process 1 sees 2, 3 and a damaged 4: epoch 4 is not
  readable everywhere, 3 is not everywhere, so both restore 2. The newer ones go: saving epoch 3 again would make
  process 1 alone delete its old one, in orbax's delete that ends in a barrier process 0 never reaches."""
  import jax
  from tests.helpers import two_processes
  for directory, steps in (('p0', (2, 4)), ('p1', (2, 3, 4))):
    ckpt = Checkpoints(tmp_path / directory)
    for step in steps:
      ckpt.save(step, [{'k': jax.numpy.full(3, float(step))}], [[1]], [1], 0.0)
    ckpt.close()
  for f in (tmp_path / 'p1' / '4').rglob('*'):
    if f.is_file():
      f.write_bytes(b'\0garbage')
  for rc, stdout, stderr in two_processes('-c', RESTORE_IN_PROCESS, str(tmp_path / 'p0'), str(tmp_path / 'p1')):
    assert rc == 0, stderr[-3000:]
    assert stdout.strip().splitlines()[-1] == 'restored 2 [2.0, 2.0, 2.0] left [2]'
    assert 'checkpoint at epoch 4 is unreadable' in stderr


def test_buckets_from_map_from_execute_as_map_with_the_same_numbers(tmp_path, monkeypatch, straight):
  """train.map_from, a strategy per bucket: the bucket padded to width 5 runs as lax.map in chunks of 2, the one of
  width 2 stays vmapped; every member gets the numbers of the all-vmap run (invariant 4)."""
  cfg, sweep, jobs = setup('train.map_from=5', 'train.map_batch=2')
  from ddjax import buckets
  built, bucket_fns = [], buckets.bucket_fns

  def recording(spec, members=None):
    built.append((spec.model.max_width, spec.strategy, spec.map_batch))
    return bucket_fns(spec, members)

  monkeypatch.setattr(buckets, 'bucket_fns', recording)
  said = []
  mapped = runlib.run(cfg, sweep, jobs, tmp_path / 'mapped', progress=False, log=said.append)
  assert sorted(set(built)) == [(2, 'vmap', 2), (5, 'map', 2)]
  assert any('strategy=vmap, map:2 from width 5' in str(m) for m in said)
  a, b = table(straight.parent), table(mapped.parent)
  for col in ('train_loss', 'train_error', 'test_loss', 'test_error', 'weight_norm'):
    np.testing.assert_allclose(np.stack(a[col]), np.stack(b[col]), rtol=1e-5, atol=1e-6, err_msg=col)
