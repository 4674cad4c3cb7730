"""A tiny end-to-end run of `python -m experiments.double_descent` (subprocess, as a user runs it), its
results table, its figures, and a run that is independent of the device count."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from ddjax.run import eval_epochs

ARGS = ['--no-progress', 'model.width=2,3,5', 'seed=0,1', 'train.epochs=4', 'data.num_samples=300',
        'data.seed=3', 'train.batch_size=40', 'train.eval_points=3', 'train.eval_every=0', 'data.noise=0.2']


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
  out = tmp_path_factory.mktemp('e2e') / 'run'
  proc = subprocess.run([sys.executable, '-m', 'experiments.double_descent', '--out', str(out), *ARGS],
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return out, proc.stdout


def test_cli_run_writes_table_and_figures(run_dir):
  out, stdout = run_dir
  assert 'padded/useful FLOPs' in stdout and 'results:' in stdout and 'test error' in stdout
  for name in ('error_vs_width.png', 'heatmap_test_error.png', 'loss_vs_width.png'):
    assert (out / name).stat().st_size > 10_000
  df = pd.read_parquet(out / 'results.parquet')
  assert len(df) == 6 and sorted(df['model.width']) == [2, 2, 3, 3, 5, 5] and set(df['seed']) == {0, 1}
  for col in ('train_loss', 'train_error', 'test_loss', 'test_error', 'test_error_noisy', 'epoch'):
    assert all(len(v) == len(eval_epochs(4, 3, 0)) for v in df[col])
  assert list(df['epoch'][0]) == [1, 2, 4]
  final = df['test_error'].map(lambda v: v[-1])
  noisy = df['test_error_noisy'].map(lambda v: v[-1])
  np.testing.assert_allclose(noisy, 0.2 + final * (1 - 0.2 * 10 / 9), rtol=1e-6)
  assert not df['diverged'].any()
  for _, row in df.iterrows():  # each row's config is that member's own
    cfg = json.loads(row['config'])
    assert cfg['train']['epochs'] == 4 and cfg['data']['noise'] == 0.2
    assert (cfg['model']['width'], cfg['seed']) == (row['model.width'], row['seed'])
  assert json.loads(df['versions'][0])['jax']
  assert df['wall_time_s'].gt(0).all() and df['device'][0].startswith('cpu')
  assert json.loads((out / 'run.json').read_text())['members'] == 6


def assert_same_curves(a, b):
  for col in ('train_loss', 'test_loss', 'test_error'):
    np.testing.assert_allclose(np.stack(a[col]), np.stack(b[col]), rtol=1e-5, atol=1e-6)


def run_on_devices(out, n_devices: int, *extra):
  """The tiny run on `n_devices` simulated CPU devices: (its stdout, its table sorted by width and seed)."""
  env = dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={n_devices}')
  proc = subprocess.run([sys.executable, '-m', 'experiments.double_descent', '--out', str(out), *ARGS, *extra],
                        capture_output=True, text=True, timeout=300, env=env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc.stdout, pd.read_parquet(out / 'results.parquet').sort_values(['model.width', 'seed'])


def test_evaluation_grid_is_log_spaced_plus_every_n():
  assert eval_epochs(4, 3, 0) == [1, 2, 4]
  assert eval_epochs(10, 4, 0) == [1, 2, 5, 10]  # 10^(0, 1/3, 2/3, 1) rounded
  assert eval_epochs(10, 4, 3) == [1, 2, 3, 5, 6, 9, 10]
  assert eval_epochs(1, 5, 0) == [1]
  paper = eval_epochs(4000, 60, 100)  # the paper preset: every 100 and 60 log-spaced (a few coincide early)
  assert paper[:3] == [1, 2, 3] and paper[-1] == 4000 and set(range(100, 4001, 100)) <= set(paper)
  assert len(set(paper) - set(range(100, 4001, 100))) < 60


def test_same_results_on_one_device(run_dir, tmp_path):
  """Invariant 4: the subprocess spread buckets over 2 CPU devices; one device, one bucket per width, gives the
  same numbers."""
  out, _ = run_dir
  stdout, b = run_on_devices(tmp_path / 'one', 1, 'train.bucket_ratio=1.0')
  assert 'devices=1' in stdout
  assert_same_curves(pd.read_parquet(out / 'results.parquet').sort_values(['model.width', 'seed']), b)


def test_same_results_sharded_over_8_devices(run_dir, tmp_path):
  """The member axis sharded over 8 simulated CPU devices (buckets padded to a multiple of 8) gives the numbers
  of the 2-device run, which placed whole buckets."""
  out, _ = run_dir
  stdout, b = run_on_devices(tmp_path / 'sharded', 8, 'train.placement=shard')
  assert 'devices=8 (shard)' in stdout and len(b) == 6
  assert_same_curves(pd.read_parquet(out / 'results.parquet').sort_values(['model.width', 'seed']), b)


def two_process_env(devices: int) -> list[dict[str, str]]:
  """The environments of two local processes joined by jax.distributed, each with `devices` CPU devices."""
  import socket
  with socket.socket() as s:
    s.bind(('localhost', 0))
    port = s.getsockname()[1]
  return [dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}',
               DDJAX_COORDINATOR=f'localhost:{port}', DDJAX_NUM_PROCESSES='2', DDJAX_PROCESS_ID=str(pid))
          for pid in range(2)]


def test_processes_agree_on_the_numbers_that_size_buckets():
  """Each process reads its own memory budget and XLA's figures; the buckets of one SPMD program must be sized
  alike on all, from the smallest budget and the largest figures."""
  script = ('from ddjax import parallel; parallel.init_distributed(); import jax; i = jax.process_index(); '
            'print(parallel.agree(3.0 + 2 * i, "min").tolist(), '
            'parallel.agree([[10.0 - i, 1.0 + i], [7.0, 2.0 ** 36 * (1 + i)]], "max").tolist())')
  procs = [subprocess.Popen([sys.executable, '-c', script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env) for env in two_process_env(1)]
  outputs = [p.communicate(timeout=120) for p in procs]
  for p, (stdout, stderr) in zip(procs, outputs):
    assert p.returncode == 0, stderr[-3000:]
    assert stdout.strip().splitlines()[-1] == f'3.0 [[10.0, 2.0], [7.0, {2.0 ** 37}]]'  # after gloo's own lines


def test_same_results_on_two_processes_of_four_devices(run_dir, tmp_path):
  """Multi-host: two processes joined by jax.distributed (4 simulated CPU devices each), the member axis sharded
  over all 8 devices as one SPMD program; process 0 writes the store. Same numbers as the 1-process run."""
  out = tmp_path / 'multihost'
  procs = []
  for env in two_process_env(4):
    # checkpoints by time (every 0.06 s): each process's clock would decide differently; process 0 decides for all
    procs.append(subprocess.Popen([sys.executable, '-m', 'experiments.double_descent', '--out', str(out), *ARGS,
                                   'train.checkpoint_minutes=0.001'],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
  outputs = [p.communicate(timeout=300) for p in procs]
  for p, (stdout, stderr) in zip(procs, outputs):
    assert p.returncode == 0, stderr[-3000:]
  assert 'devices=8 (shard), 2 processes' in outputs[0][0] and 'results:' in outputs[0][0]
  assert 'results:' not in outputs[1][0]  # process 1 trains its shard and writes nothing
  b = pd.read_parquet(out / 'results.parquet').sort_values(['model.width', 'seed'])
  assert len(b) == 6 and b['complete'].all()
  assert_same_curves(pd.read_parquet(run_dir[0] / 'results.parquet').sort_values(['model.width', 'seed']), b)
