"""Compatibility: a store written by an earlier ddjax (tests/fixtures/compat_store, made once by
tests/fixtures/make_compat_store.py and never rewritten) keeps its run ids, its complete members are skipped,
`--resume` accepts it, and its interrupted job continues from its checkpoint to what an uninterrupted run gives.

The numbers are bitwise equal on a machine listed in compat_machines.txt, and equal to float rounding (rtol 1e-5)
elsewhere. An instruction set alone does not fix them: XLA tunes CPU code to the host's model, its matrix kernels
block by cache size and split over the cores, and jaxlib versions differ; a CI machine with the fixture's instruction
flags gave 1-ulp differences. A machine joins the list once this test passes bitwise there with its line added
(`python -m tests.test_compat` prints it); test_resume.py checks bitwise resumption on every machine."""

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ddjax import cli, config as cfglib, parallel, results
from ddjax.members import expand
from experiments.double_descent import PRESETS
from tests.fixtures.make_compat_store import ARGV

FIXTURE = Path(__file__).parent / 'fixtures' / 'compat_store'


def machine() -> str:
  """What fixes XLA's CPU numbers here: jaxlib's version, instruction flags, CPU family/model/stepping, cache sizes and
  core count."""
  import jaxlib
  info = {}
  for line in Path('/proc/cpuinfo').read_text().splitlines() if Path('/proc/cpuinfo').exists() else []:
    key, _, value = line.partition(':')
    info.setdefault(key.strip(), value.strip())
  caches = sorted(Path('/sys/devices/system/cpu/cpu0/cache').glob('index*/size'))
  sizes = '/'.join(p.read_text().strip() for p in caches)
  cpu = f"family {info.get('cpu family')} model {info.get('model')} stepping {info.get('stepping')}"
  return f'jaxlib {jaxlib.__version__} {parallel._host_isa()} {cpu} caches {sizes} cores {len(os.sched_getaffinity(0))}'


KNOWN = (Path(__file__).parent / 'fixtures' / 'compat_machines.txt').read_text().splitlines()
BITWISE = machine() in KNOWN
NOT_NUMBERS = {'attempt', 'attempt_time', 'wall_time_s', 'time_s', 'versions', 'device'}  # differ in any two runs


def member_table(out: Path) -> pd.DataFrame:
  return results.load(out).sort_values('run_id').reset_index(drop=True)


def assert_same_numbers(a: pd.DataFrame, b: pd.DataFrame) -> None:
  assert sorted(a.columns) == sorted(b.columns)
  for col in sorted(set(a.columns) - NOT_NUMBERS):
    x, y = a[col].tolist(), b[col].tolist()
    if col != 'config' and isinstance(x[0], (np.ndarray, list, float)) and not isinstance(x[0], str):
      x, y = np.stack(x).astype(float), np.stack(y).astype(float)
      if BITWISE:
        np.testing.assert_array_equal(x, y, err_msg=f'{col} on {machine()}')
      else:
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7, err_msg=col)
    else:
      assert x == y, col


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
  out = tmp_path_factory.mktemp('uninterrupted')
  cli.main('double_descent', PRESETS, ARGV + ['--out', str(out)])
  return member_table(out)


def test_run_ids_of_an_earlier_store_are_kept():
  cfg, sweep = cfglib.apply_overrides(PRESETS['mnist1d'].config, PRESETS['mnist1d'].sweep,
                                      [a for a in ARGV if '=' in a])
  from ddjax.run import member_config, run_id
  ids = {run_id(member_config(job, i)) for job in expand(cfg, sweep) for i in range(len(job.members))}
  assert ids == set(results.load(FIXTURE)['run_id'])


def test_an_earlier_store_resumes_exactly(tmp_path, capsys, uninterrupted):
  out = tmp_path / 'store'
  shutil.copytree(FIXTURE, out)
  before = member_table(out)
  complete = before[before['complete']]
  assert len(complete) == 2 and set(complete['optim.name']) == {'sgd'}  # the fixture as made
  cli.main('double_descent', PRESETS, ARGV + ['--out', str(out), '--resume'])
  said = capsys.readouterr().out
  assert 'job 1/2: 2 of 2 members already complete' in said and 'skipped' in said
  assert 'job 2/2: resumed after epoch 3' in said
  after = member_table(out)
  kept = after[after['run_id'].isin(complete['run_id'])].reset_index(drop=True)
  assert list(kept['attempt']) == list(complete['attempt'])  # skipped: not trained again
  assert after['complete'].all()
  assert_same_numbers(after, uninterrupted)


def test_a_state_leaf_newer_than_the_checkpoint_starts_at_its_init(tmp_path, capsys, monkeypatch, uninterrupted):
  """A later ddjax adds a leaf to the train state: the fixture's checkpoint still resumes (not from scratch), the
  leaf starts at its init value, and the numbers are those of the uninterrupted run."""
  import jax.numpy as jnp
  import orbax.checkpoint as ocp
  from ddjax import train
  init_member = train.init_member
  monkeypatch.setattr(train, 'init_member', lambda *a: dict(init_member(*a), later_leaf=jnp.full((), 7.0)))
  train.bucket_fns.cache_clear()  # programs built before the patch hold the old init
  try:
    out = tmp_path / 'store'
    shutil.copytree(FIXTURE, out)
    cli.main('double_descent', PRESETS, ARGV + ['--out', str(out), '--resume'])
  finally:
    train.bucket_fns.cache_clear()
  said = capsys.readouterr().out
  assert 'job 2/2: resumed after epoch 3' in said and "has no ['later_leaf']" in said
  assert_same_numbers(member_table(out), uninterrupted)
  job = results.load(out).query("`optim.name` == 'adam'")['job_id'].iloc[0]
  manager = ocp.CheckpointManager((out / 'checkpoints' / job).absolute(), item_handlers=ocp.StandardCheckpointHandler())
  saved = manager.restore(4, args=ocp.args.StandardRestore())  # the final checkpoint, with the new leaf
  manager.close()
  for bucket in saved['buckets']:
    np.testing.assert_array_equal(bucket['later_leaf'], 7.0)


def test_a_checkpoint_without_a_renamed_layer_is_refused(tmp_path):
  """A leaf missing inside an entry the checkpoint has (here a renamed output layer) is not a new state leaf: restoring
  refuses, naming it, rather than training on with that layer re-initialised."""
  import jax
  import orbax.checkpoint as ocp
  from ddjax.checkpoint import Checkpoints
  shutil.copytree(FIXTURE, tmp_path / 'store')
  job = results.load(tmp_path / 'store').query("`optim.name` == 'adam'")['job_id'].iloc[0]
  directory = tmp_path / 'store' / 'checkpoints' / job
  manager = ocp.CheckpointManager(directory.absolute(), item_handlers=ocp.StandardCheckpointHandler())
  saved = manager.restore(3, args=ocp.args.StandardRestore())
  manager.close()
  states = jax.device_put([dict(b, params={('out' if k == 'head' else k): v for k, v in b['params'].items()})
                           for b in saved['buckets']])
  ckpt = Checkpoints(directory)
  try:
    with pytest.raises(ValueError, match=r"has no \['params'\]\['out'\]\['bias'\], \['params'\]\['out'\]\['kernel'\]"):
      ckpt.restore(states, [list(np.asarray(ids)) for ids in saved['layout']], log=lambda *a: None)
  finally:
    ckpt.close()


if __name__ == '__main__':  # this machine's line for compat_machines.txt
  print(machine())
