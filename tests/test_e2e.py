"""A tiny end-to-end run of `python -m experiments.double_descent` (subprocess, as a user runs it), its
results table, its figures, and a run that is independent of the device count."""

import json
import os
import sys

import numpy as np
import pandas as pd
import pytest

from ddjax.results import load_sweep
from ddjax.run import eval_epochs
from tests.helpers import run_experiment, two_processes

ARGS = ['--no-progress', 'model.width=2,3,5', 'seed=0,1', 'train.epochs=4', 'data.num_samples=300',
        'data.seed=3', 'train.batch_size=40', 'train.eval_points=3', 'train.eval_every=0', 'data.noise=0.2',
        'probes=step_metrics,cka', 'probe.step_metrics.every=2',  # the step table and summaries of members gathered
        'probe.cka.pairs=seeds/widths', 'probe.cka.batch=32']    # over devices and processes


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
  out = tmp_path_factory.mktemp('e2e') / 'run'
  return out, run_experiment('double_descent', out, *ARGS, timeout=300)


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
  stdout = run_experiment('double_descent', out, *ARGS, *extra, timeout=300, env=env)
  return stdout, pd.read_parquet(out / 'results.parquet').sort_values(['model.width', 'seed'])


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


def test_processes_agree_on_the_numbers_that_size_buckets():
  """Each process reads its own memory budget and XLA's figures; the buckets of one SPMD program must be sized
  alike on all, from the smallest budget and the largest figures."""
  script = ('from ddjax import parallel; parallel.init_distributed(); import jax; i = jax.process_index(); '
            'print(parallel.agree(3.0 + 2 * i, "min").tolist(), '
            'parallel.agree([[10.0 - i, 1.0 + i], [7.0, 2.0 ** 36 * (1 + i)]], "max").tolist())')
  for rc, stdout, stderr in two_processes('-c', script):
    assert rc == 0, stderr[-3000:]
    assert stdout.strip().splitlines()[-1] == f'3.0 [[10.0, 2.0], [7.0, {2.0 ** 37}]]'  # after gloo's own lines


SIGNAL_PROCESS_1 = """
import os, signal, sys
from ddjax import run
from ddjax.cli import main
from experiments.double_descent import PRESETS
train_epoch, sent, process = run.Bucket.train_epoch, [], os.environ['DDJAX_PROCESS_ID']
def train_then_signal(self, epoch):  # process 1 alone gets a SIGTERM during the third epoch
  loss = train_epoch(self, epoch)
  if epoch == 2 and not sent and process == '1':
    sent.append(os.kill(os.getpid(), signal.SIGTERM))
  return loss
run.Bucket.train_epoch = train_then_signal
# process 1 alone calls for checkpoints by time (every 0.06 s): process 0 saves when process 1 does
main('double_descent', PRESETS, sys.argv[1:] + ['train.checkpoint_minutes=' + ('0.001' if process == '1' else '0')])
"""


def test_two_processes_of_four_devices_stop_together_and_resume_exactly(run_dir, tmp_path):
  """Multi-host: two processes joined by jax.distributed (4 simulated CPU devices each), the member axis sharded
  over all 8 devices as one SPMD program; process 0 writes the store. Process 1 alone calls for a checkpoint
  after every epoch and gets a SIGTERM in the third: both save after epochs 1 and 2, and both stop after the third
  with a checkpoint. With that newest checkpoint damaged, both resume from the one before. Same numbers as the
  1-process run."""
  out = tmp_path / 'multihost'
  args = ['--out', str(out), *ARGS]

  for rc, stdout, stderr in two_processes('-c', SIGNAL_PROCESS_1, *args, devices=4):
    assert rc == 128 + 15 and 'stopped by signal 15' in stderr, stderr[-3000:]
  [ckpt_dir] = (out / 'checkpoints').iterdir()
  assert sorted(int(p.name) for p in ckpt_dir.iterdir() if p.name.isdigit()) == [1, 2, 3]
  for f in (ckpt_dir / '3').rglob('*'):  # both processes must fall back to epoch 2 together
    if f.is_file():
      f.write_bytes(b'\0garbage')

  outputs = two_processes('-m', 'experiments.double_descent', '--resume', *args, devices=4)
  for rc, stdout, stderr in outputs:
    assert rc == 0 and 'checkpoint at epoch 3 is unreadable' in stderr, stderr[-3000:]
  assert 'devices=8 (shard), 2 processes' in outputs[0][1] and 'resumed after epoch 2' in outputs[0][1]
  assert 'results:' in outputs[0][1] and 'results:' not in outputs[1][1]  # process 1 trains its shard, writes nothing
  b = pd.read_parquet(out / 'results.parquet').sort_values(['model.width', 'seed'])
  assert len(b) == 6 and b['complete'].all()
  assert_same_curves(pd.read_parquet(run_dir[0] / 'results.parquet').sort_values(['model.width', 'seed']), b)
  steps = [load_sweep(o, table='steps').sort_values(['run_id', 'step']).reset_index(drop=True)
           for o in (run_dir[0], out)]
  assert len(steps[1]) == 6 * 12 and list(steps[1]['run_id']) == list(steps[0]['run_id'])  # 6 steps an epoch, every 2
  np.testing.assert_allclose(steps[1]['step_loss'], steps[0]['step_loss'], rtol=1e-5, atol=1e-6)
  a = pd.read_parquet(run_dir[0] / 'results.parquet').sort_values(['model.width', 'seed'])
  for col in ('cka_seeds', 'cka_w2', 'cka_w3', 'cka_w5'):  # members of other processes' devices compared
    np.testing.assert_allclose(np.stack(b[col]), np.stack(a[col]), rtol=1e-4, err_msg=col)


def test_plot_commands_refuse_another_experiments_store_and_say_what_final_means(run_dir, tmp_path, monkeypatch,
                                                                                   capsys):
  """run.json records the experiment: plots.grokking on a double-descent store is a one-line error naming the
  command that draws it, and writes nothing; an older store without the record is told by its config (modular data:
  grokking). On an interrupted store (the compatibility fixture: 2 of 4 members stopped at epoch 3 of 4) the
  double-descent plots warn in one line and the figure's title says what "final" is."""
  import shutil
  import plots.double_descent as dd
  from plots import grokking
  from plots.common import main
  out, _ = run_dir
  assert json.loads((out / 'run.json').read_text())['experiment'] == 'double_descent'
  with pytest.raises(SystemExit) as e:
    grokking.main([str(out), '--out', str(tmp_path / 'g')])
  err = capsys.readouterr().err
  assert e.value.code == 2 and err.count('\n') == 1
  assert (f'holds a double_descent run, not a grokking one: its figures are {sys.executable} -m plots.double_descent '
          f'{out}') in err
  assert not (tmp_path / 'g').exists()
  store = tmp_path / 'old'
  shutil.copytree(os.path.join(os.path.dirname(__file__), 'fixtures', 'compat_store'), store)
  figures = tmp_path / 'figures'
  monkeypatch.setattr('sys.argv', ['plots.double_descent', str(store), '--out', str(figures)])
  main('plots.double_descent', dd.__doc__, dd.plot_all, experiment='double_descent')
  assert capsys.readouterr().err == (f'warning: {store}: incomplete: 2 of 4 members stopped at epoch 3 of 4, and '
                                     '"final" is their last evaluation\n')
  drawn = {}
  monkeypatch.setattr(dd, 'save', lambda fig, path: drawn.setdefault(path.name, fig))
  dd.error_vs_width(dd.load(store), figures / 'e.png')
  assert drawn['e.png'].axes[0].get_title().endswith('2 of 4 members stopped at epoch 3 of 4, and "final" is their '
                                                     'last evaluation')
  record = json.loads((store / 'run.json').read_text())
  record['config']['data']['name'] = 'modular'
  (store / 'run.json').write_text(json.dumps(record))
  with pytest.raises(SystemExit):
    main('plots.double_descent', dd.__doc__, dd.plot_all, experiment='double_descent')
  assert 'holds a grokking run, not a double_descent one' in capsys.readouterr().err


def test_heatmap_colour_range_follows_the_late_epochs_and_figures_name_their_run(run_dir, monkeypatch):
  """The test-error heatmap's colour range is the range of the seed-mean test error over the last third of the
  evaluations (computed here from the table), and the figures' subtitles name the data, noise, model, optimizer,
  batch and epochs."""
  import plots.double_descent as dd
  out, _ = run_dir
  drawn = {}
  monkeypatch.setattr(dd, 'save', lambda fig, path: drawn.setdefault(path.name, fig))
  df = dd.load(out)
  dd.heatmap(df, out / 'h.png')
  dd.error_vs_width(df, out / 'e.png')
  means = np.stack([np.mean(np.stack(g['test_error'].tolist()), 0) for _, g in df.groupby('model.width')], 1)
  late = means[-max(1, len(means) // 3):]
  assert drawn['h.png'].axes[0].collections[0].get_clim() == pytest.approx((late.min(), late.max()))
  for fig in drawn.values():
    assert fig.get_suptitle().replace('\n', ' ').startswith(
        'mnist1d (240 train), 20% label noise, cnn1d, adam lr 0.001, batch 40, 4 epochs')


def test_the_ddjax_command_runs_experiments_plots_and_tools(run_dir, tmp_path, monkeypatch):
  """The installed `ddjax` command: --help lists the experiments; `ddjax plot DIR` draws the figures of the
  experiment run.json names; `ddjax results describe DIR` is python -m ddjax.results; an unknown command is one line
  and status 2. A printed hint names a command that runs as printed: `ddjax NAME` under the command, else this
  interpreter's full path."""
  import subprocess
  from ddjax.cli import command
  ddjax = os.path.join(os.path.dirname(sys.executable), 'ddjax')
  run = lambda *args: subprocess.run([ddjax, *args], capture_output=True, text=True, timeout=300)
  shown = run('--help')
  assert shown.returncode == 0 and 'double_descent   Model-wise double descent' in shown.stdout
  assert 'representations  Representations on MNIST-1D' in shown.stdout
  out, _ = run_dir
  plotted = run('plot', str(out), '--out', str(tmp_path / 'figs'))
  assert plotted.returncode == 0, plotted.stderr
  assert {p.name for p in (tmp_path / 'figs').iterdir()} >= {'error_vs_width.png', 'heatmap_test_error.png'}
  described = run('results', 'describe', str(out))
  assert described.returncode == 0 and described.stdout.startswith('run_id')
  bad = run('dubble_descent')
  assert bad.returncode == 2 and bad.stderr.count('\n') == 1 and "unknown command 'dubble_descent'" in bad.stderr
  monkeypatch.delenv('DDJAX_COMMAND', raising=False)
  assert command('grokking') == f'{sys.executable} -m experiments.grokking'
  monkeypatch.setenv('DDJAX_COMMAND', 'ddjax')
  assert command('grokking') == 'ddjax grokking'
