"""Sweeps at scale: a store that skips complete members, --rerun, dry-run tables, run ids, a battery of malformed
input (one line, exit 2, nothing written), and SIGKILL at random moments."""

import hashlib
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ddjax import cli
from ddjax import config as cfglib
from ddjax import results
from ddjax import run as runlib
from ddjax.members import expand
from experiments.double_descent import PRESETS

TINY = ['data.num_samples=300', 'data.seed=3', 'train.batch_size=40', 'train.eval_points=3', 'data.noise=0.2']


def sweep_of(*extra):
  cfg, sweep = cfglib.apply_overrides(cfglib.Config(), {}, TINY + list(extra))
  return cfg, sweep, expand(cfg, sweep)


def curves(table):
  return {r['run_id']: (list(r['epoch']), list(r['test_loss']), list(r['train_loss'])) for _, r in table.iterrows()}


def assert_identical_curves(have, want):
  """Every run's evaluation epochs and losses, bitwise."""
  assert have.keys() == want.keys()
  for k in want:
    assert have[k][0] == want[k][0]
    np.testing.assert_array_equal(have[k][1], want[k][1])
    np.testing.assert_array_equal(have[k][2], want[k][2])


SMALL = ('model.width=2,3', 'seed=0,1', 'train.epochs=2', 'optim.name=adam,sgd')


@pytest.fixture(scope='module')
def small_store(tmp_path_factory):
  """Two jobs (adam, sgd) of 4 members each, trained once in this process."""
  out = tmp_path_factory.mktemp('small') / 'store'
  cfg, sweep, jobs = sweep_of(*SMALL)
  runlib.run(cfg, sweep, jobs, out, progress=False, log=lambda *a: None)
  return out


def test_store_skips_complete_members_and_reruns_on_request(small_store, tmp_path):
  out, logs = tmp_path / 'store', []
  shutil.copytree(small_store, out)
  log = logs.append
  cfg, sweep, jobs = sweep_of(*SMALL)
  first = results.load_sweep(out)
  assert len(first) == 8 and first['run_id'].is_unique and first['job_id'].nunique() == 2
  # run ids: a hash of each member's own config, the same whatever else is swept or how it executes
  for _, row in first.iterrows():
    member_cfg = cfglib.replace(cfglib.replace(cfg, 'model.width', row['model.width']), 'seed', row['seed'])
    member_cfg = cfglib.replace(cfglib.replace(member_cfg, 'optim.name', row['optim.name']), 'train.max_buckets', 1)
    assert runlib.run_id(member_cfg) == row['run_id']
  parts = {p.name: p.stat().st_mtime_ns for p in (out / 'parts').iterdir()}

  logs.clear()  # the same sweep again: nothing trains, nothing is rewritten
  again = results.load_sweep(runlib.run(cfg, sweep, jobs, out, progress=False, log=log).parent)
  assert sum('members already complete' in m and 'skipped' in m for m in logs) == 2
  assert {p.name: p.stat().st_mtime_ns for p in (out / 'parts').iterdir()} == parts
  assert curves(again) == curves(first)

  logs.clear()  # one more seed: only its 4 members train; the others are untouched
  cfg3, sweep3, jobs3 = sweep_of('model.width=2,3', 'seed=0,1,2', 'train.epochs=2', 'optim.name=adam,sgd')
  grown = results.load_sweep(runlib.run(cfg3, sweep3, jobs3, out, progress=False, log=log).parent)
  assert len(grown) == 12 and sorted(grown['seed'].value_counts()) == [4, 4, 4]
  assert all(curves(grown)[k] == v for k, v in curves(first).items())
  assert sum('4 of 6 members already complete' in m for m in logs) == 2

  rerun = lambda c: c.seed == 1 and c.optim.name == 'sgd'  # --rerun seed=1 optim.name=sgd
  redone = results.load_sweep(runlib.run(cfg3, sweep3, jobs3, out, progress=False, log=log, rerun=rerun).parent)
  assert len(redone) == 12 and redone['run_id'].is_unique
  newer = redone[(redone['seed'] == 1) & (redone['optim.name'] == 'sgd')]
  assert len(newer) == 2 and (newer['attempt'] > grown.set_index('run_id').loc[newer['run_id'], 'attempt'].values).all()
  assert curves(redone) == curves(grown)  # deterministic: the same numbers again, kept once


def test_dry_run_prints_jobs_members_and_compiled_steps(tmp_path, capsys):
  cli.main('double_descent', PRESETS, ['--dry-run', '--out', str(tmp_path / 'x'), 'model.width=range(2,66,2)',
                                       'seed=0,1', 'optim.name=adam,sgd', 'optim.lr=1e-3,3e-4', 'optim.wd=0,0.1',
                                       '--zip', 'optim.lr,optim.wd'])
  text = capsys.readouterr().out
  assert '2 job(s), 256 member(s)' in text and 'compiled train step' in text
  lines = [line for line in text.splitlines() if line.strip().startswith(('0 ', '1 '))]
  assert len(lines) == 2 and all(' 128 ' in line for line in lines)  # 32 widths x 2 seeds x 2 zipped (lr, wd)
  adam, sgd = (float(line.split()[5]) for line in lines)  # est. GiB: Adam keeps two moments, SGD one
  assert adam > sgd > 0 and 'est. GiB' in text
  assert all(1.0 <= float(line.split()[4]) < 1.3 for line in lines)  # padded/useful of the width buckets
  assert not (tmp_path / 'x').exists()


def test_dry_run_plans_without_the_data_and_says_a_run_would_stop(tmp_path, capsys):
  # keys before, between and after options
  cli.main('double_descent', PRESETS, ['model.width=1..4', '--preset', 'paper', 'seed=0', '--dry-run',
                                       f'data.dir={tmp_path / "missing"}', '--out', str(tmp_path / 'x')])
  text = capsys.readouterr().out
  assert '1 job(s), 4 member(s)' in text and 'note: a run would stop here (exit status 2)' in text
  assert 'cifar-10-python.tar.gz' in text and not (tmp_path / 'x').exists()


def _tree_digest(path):
  if not path.exists():
    return None
  return {str(p.relative_to(path)): hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(path.rglob('*'))
          if p.is_file()}


def _yaml(tmp_path, name, text):
  path = tmp_path / name
  path.write_text(text)
  return str(path)


def battery(tmp_path):
  """(argv, expected words in the one-line error): malformed overrides, config files, flags and paths."""
  a_file = tmp_path / 'a-file'
  a_file.write_text('not a directory')
  return [
      (['model.widht=3'], 'did you mean model.width'),
      (['model.width=abc'], 'expected an integer'),
      (['model.width=0'], 'must be >= 1'),
      (['optim.lr=-1'], 'must be > 0'),
      (['model.width='], 'model.width'),
      (['=3'], 'bad override'),
      (['model.width'], 'expected key=value'),
      (['model.width=1,,2'], 'empty value'),
      (['model.width=5..2'], 'a <= b'),
      (['model.width=range(5,5)'], 'range'),
      (['model.width=range(1,4,0)'], 'range'),
      (["data.dir='unclosed"], 'quote'),
      (['optim.name=rmsprop'], 'allowed values are adam, adamw, sgd'),
      (['data.noise=1.5'], 'must be in [0, 1)'),
      (['seed=-1'], 'must be in [0, 2^31)'),
      (['train.batch_size=99999'], 'larger than the 4000 training examples'),
      (['model.name=resnet18k'], 'does not fit data.name=mnist1d'),
      (['data.augment=crop_flip'], 'has no images'),
      (['train.epochs=1e3'], 'expected an integer'),
      (['optim.lr=1e-3,3e-4,1e-4', 'optim.wd=0,0.1', '--zip', 'optim.lr,optim.wd'], 'optim.lr has 3 values'),
      (['--zip', 'optim.lr,optim.wd'], 'not swept'),
      (['--zip', 'optim.lrr,seed'], 'optim.lrr'),
      (['-c', str(tmp_path / 'missing.yaml')], 'missing.yaml'),
      (['-c', _yaml(tmp_path, 'bad.yaml', 'optim: [1, 2\n')], 'bad.yaml'),
      (['-c', _yaml(tmp_path, 'list.yaml', '- 1\n- 2\n')], 'mapping'),
      (['-c', _yaml(tmp_path, 'unknown.yaml', 'optim:\n  lrr: 0.1\n')], 'did you mean'),
      (['-c', _yaml(tmp_path, 'type.yaml', 'model.width: 2.5\n')], 'model.width'),
      (['--rerun', 'foo=1'], 'bad --rerun'),
      (['--rerun', 'seed=abc'], 'expected an integer'),
      (['--out', str(a_file)], 'not a directory'),
      (['--preset', 'nope'], "unknown preset 'nope'"),
      (['--resume'], 'no run found'),
      (['data.name=cifar10', 'model.name=resnet18k', f'data.dir={tmp_path / "no-such-cifar"}'], 'no-such-cifar'),
      (['--bogus-flag'], 'unrecognized arguments'),
      (['--workers', '0'], 'bad --workers 0'),
      (['train.eval_batch=50,100'], 'only change(s) how a run executes'),
      (['seed=0,0'], 'seed repeats 0 in its sweep: give each value once'),
      (['seed=0,1,0', 'optim.lr=0.1,0.2,0.1', '--zip', 'seed,optim.lr'], 'seed with optim.lr repeats 0,0.1'),
      (['--workers', 'two'], 'invalid int value'),
  ]


def test_malformed_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys):
  """Each bad input stops before any work: one line naming the problem, status 2, and neither a fresh --out nor an
  existing store changes."""
  store = tmp_path / 'store'
  cfg, sweep, jobs = sweep_of('model.width=2', 'train.epochs=1')
  runlib.run(cfg, sweep, jobs, store, progress=False, log=lambda *a: None)
  before = _tree_digest(store)
  cases = battery(tmp_path)
  assert len(cases) >= 25
  for argv, words in cases:
    outs = [[]] if '--out' in argv else [['--out', str(tmp_path / 'fresh')]] + ([] if '--resume' in argv else [
        ['--out', str(store)]])
    for out in outs:
      with pytest.raises(SystemExit) as e:
        cli.main('double_descent', PRESETS, out + argv)
      err = capsys.readouterr().err.strip()
      assert e.value.code == 2, (argv, err)
      assert words in err and len(err.splitlines()) == 1 and err.startswith('error:'), (argv, err)
      assert not (tmp_path / 'fresh').exists(), argv
      assert _tree_digest(store) == before, argv
  assert (tmp_path / 'a-file').read_text() == 'not a directory'


KILL_ARGS = ['--no-progress', *TINY, 'model.width=2,4', 'seed=0,1', 'optim.name=adam,sgd', 'train.epochs=24',
             'train.eval_every=2', 'train.checkpoint_every=3', 'train.flush_seconds=0']


def env_with_cache(path):
  """This process's environment with DDJAX_CACHE=path and no JAX compilation-cache settings: ddjax's defaults."""
  env = {k: v for k, v in os.environ.items() if not k.startswith(('JAX_COMPILATION_CACHE', 'JAX_PERSISTENT_CACHE'))}
  return dict(env, DDJAX_CACHE=str(path))


def _cli(out):
  return [sys.executable, '-m', 'experiments.double_descent', '--out', str(out), *KILL_ARGS]


def test_sigkill_at_random_moments_then_rerun_completes_exactly(tmp_path):
  # A cache of its own, at ddjax's default place in it: the first run fills the compilation cache, and the
  # restarts load their programs from there (a killed run keeps its compiled programs too).
  env = env_with_cache(tmp_path / 'cache')
  straight, again = tmp_path / 'straight', tmp_path / 'again'
  proc = subprocess.run(_cli(straight), capture_output=True, text=True, timeout=600, env=env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  want = curves(results.load(straight))
  assert len(list((tmp_path / 'cache' / 'xla').glob('*/*-cache'))) >= 4  # at least init, epoch, evaluation x 2 jobs
  t0 = time.time()  # the same run with its programs loaded from the cache: the same numbers, bitwise
  proc = subprocess.run(_cli(again), capture_output=True, text=True, timeout=600, env=env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  duration = time.time() - t0
  assert_identical_curves(curves(results.load(again)), want)

  out, rng, kills = tmp_path / 'killed', random.Random(0), 0
  for attempt in range(3):  # each restart resumes, so it has less left to do: kill it sooner
    p = subprocess.Popen(_cli(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    time.sleep(rng.uniform(0.25, 0.5) * duration * (0.8 ** attempt))
    if p.poll() is None:
      os.kill(p.pid, signal.SIGKILL)
      kills += 1
    p.wait()
    try:  # the store stays readable after every kill
      table = results.load(out)
      assert table['run_id'].is_unique and len(table) <= 8
    except FileNotFoundError:  # killed before the first part file
      pass
  assert kills >= 2
  proc = subprocess.run(_cli(out), capture_output=True, text=True, timeout=600, env=env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  got = results.load(out)
  assert len(got) == 8 and got['run_id'].is_unique and got['complete'].all()
  assert_identical_curves(curves(got), want)


def test_compile_cache_folder_threshold_and_the_users_own_settings(tmp_path):
  """ddjax's default folder is per CPU instruction set under DDJAX_CACHE; JAX_* settings win; off is off."""
  code = ('from ddjax import parallel; parallel.use_compile_cache(); import jax, os; '
          'print(jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs, '
          'os.environ.get("JAX_COMPILATION_CACHE_DIR"))')
  env = env_with_cache(tmp_path)

  def settings(**extra):
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env={**env, **extra})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()

  folder, threshold, exported = settings()
  assert Path(folder).parent == tmp_path / 'xla' and Path(folder).name.startswith(platform.machine())
  assert float(threshold) == 0.2 and exported == folder  # exported: worker processes use the same folder
  assert settings(JAX_COMPILATION_CACHE_DIR='/elsewhere', JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='3') == [
      '/elsewhere', '3.0', '/elsewhere']
  assert settings(JAX_ENABLE_COMPILATION_CACHE='false') == ['None', '1.0', 'None']


def test_workers_run_jobs_in_processes_with_the_same_results(small_store, tmp_path):
  """--workers 2: the two jobs train in two spawned processes (one CPU device each) and give the numbers of the
  single-process sweep."""
  cfg, sweep, jobs = sweep_of(*SMALL)
  single = results.load(small_store)
  logs = []
  path = runlib.run(cfg, sweep, jobs, tmp_path / 'two', progress=False, log=logs.append, workers=2)
  assert any('2 jobs in 2 worker processes' in m for m in logs)
  both = results.load(path.parent)
  assert len(both) == 8 and both['complete'].all()
  a, b = curves(single), curves(both)
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_allclose(a[k][1], b[k][1], rtol=1e-6)


class FakeWandb:
  """Stands in for the wandb package: records init, log and finish calls."""

  def __init__(self):
    self.inits, self.logs, self.finished = [], [], 0

  def init(self, **kw):
    self.inits.append(kw)
    return self

  def log(self, metrics):
    self.logs.append(metrics)

  def finish(self):
    self.finished += 1


def test_wandb_logging_is_optional(small_store, tmp_path, monkeypatch, capsys):
  fake = FakeWandb()
  monkeypatch.setitem(sys.modules, 'wandb', fake)
  monkeypatch.delenv('WANDB_MODE', raising=False)
  monkeypatch.delenv('WANDB_API_KEY', raising=False)
  cfg, sweep, jobs = sweep_of(*SMALL)
  out = tmp_path / 'store'
  shutil.copytree(small_store, out)
  rerun = lambda c: c.optim.name == 'adam'  # one job trains again and is logged
  table = results.load(runlib.run(cfg, sweep, jobs, out, progress=False, log=lambda *a: None, rerun=rerun,
                                  wandb_project='proj').parent)
  [init] = fake.inits
  assert init['project'] == 'proj' and init['mode'] == 'offline' and fake.finished == 1
  adam = table[table['optim.name'] == 'adam']
  assert [m['epoch'] for m in fake.logs] == list(adam['epoch'].iloc[0])
  for _, r in adam.iterrows():
    assert [m[f'{r["run_id"]}/test_loss'] for m in fake.logs] == list(r['test_loss'])
  monkeypatch.setitem(sys.modules, 'wandb', None)  # not installed: a one-line error before any work
  with pytest.raises(SystemExit) as e:
    cli.main('double_descent', PRESETS, ['--out', str(tmp_path / 'w'), '--wandb'])
  err = capsys.readouterr().err.strip()
  assert e.value.code == 2 and 'wandb is not installed' in err and len(err.splitlines()) == 1
  assert not (tmp_path / 'w').exists()


def test_an_interrupted_rerun_continues_when_run_again(small_store, tmp_path, monkeypatch):
  """--rerun stopped by a signal in its second job: the same command again keeps the first job's new attempt,
  resumes the second from its checkpoint, and retrains nothing twice."""
  out, logs = tmp_path / 'store', []
  shutil.copytree(small_store, out)
  cfg, sweep, jobs = sweep_of(*SMALL, 'train.checkpoint_every=1')
  record = dict(runlib.run_record(cfg, sweep, jobs), argv=['--rerun', 'optim.name=adam,sgd'])
  before = results.newest_attempts(out)
  original, sent = runlib.Bucket.train_epoch, []

  def signal_in_second_job(self, epoch):
    loss = original(self, epoch)
    if self.spec.optimizer == 'sgd' and epoch == 0 and not sent:
      sent.append(True)
      os.kill(os.getpid(), signal.SIGTERM)
    return loss

  monkeypatch.setattr(runlib.Bucket, 'train_epoch', signal_in_second_job)
  with pytest.raises(runlib.Interrupted):
    runlib.run(cfg, sweep, jobs, out, progress=False, log=logs.append, rerun=['optim.name=adam,sgd'], record=record)
  monkeypatch.setattr(runlib.Bucket, 'train_epoch', original)
  middle = results.newest_attempts(out)
  table = results.load(out).set_index('run_id')
  adam = table.index[table['optim.name'] == 'adam']
  assert all(middle[r] > before[r] for r in table.index)  # every member has started its new attempt
  logs.clear()
  runlib.run(cfg, sweep, jobs, out, progress=False, log=logs.append, rerun=['optim.name=adam,sgd'], record=record)
  after = results.newest_attempts(out)
  assert all(after[r] == middle[r] for r in table.index)  # nothing started over
  assert any('4 of 4 members already complete' in m for m in logs) and any('resumed after epoch 1' in m for m in logs)
  final = results.load(out)
  assert final['complete'].all() and len(final) == 8 and set(adam) <= set(final['run_id'])
  assert curves(final) == curves(results.load(small_store))


def test_auto_placement_shards_jobs_with_fewer_buckets_than_devices(tmp_path):
  """On a CPU, train.placement=auto shards a job of one bucket over both devices (no idle core) and places a job of
  two buckets whole; the sharded job's numbers match whole-bucket placement to float rounding (invariant 4)."""
  import jax
  from ddjax.buckets import placement
  cfg, sweep, jobs = sweep_of('model.name=mlp', 'model.width=3', 'seed=0,1,2', 'train.epochs=3')
  assert jax.local_device_count() == 2 and placement(cfg, 1) == 'shard' and placement(cfg, 2) == 'bucket'
  said, tables = [], {}
  for where in ('auto', 'bucket'):
    c, s, j = sweep_of('model.name=mlp', 'model.width=3', 'seed=0,1,2', 'train.epochs=3', f'train.placement={where}')
    tables[where] = results.load(runlib.run(c, s, j, tmp_path / where, progress=False, log=said.append).parent)
  assert any('1 buckets' in str(m) and '(shard)' in str(m) for m in said)
  a, b = (t.sort_values('seed').reset_index(drop=True) for t in (tables['auto'], tables['bucket']))
  assert list(a['run_id']) == list(b['run_id'])  # placement is an execution key: the same members
  for col in ('train_loss', 'test_loss', 'train_error', 'weight_norm'):
    np.testing.assert_allclose(np.stack(a[col]), np.stack(b[col]), rtol=1e-5, atol=1e-7, err_msg=col)
