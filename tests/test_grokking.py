"""The grokking pieces: modular-arithmetic data against brute force, the embedding MLP and the residual LayerNorm
MLP (regression, infinite targets excluded) against dense references, weight norms, the best-validation state,
and `python -m experiments.grokking` end to end (it groks)."""

import subprocess
import sys

import flax.traverse_util as tu
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd
import pytest

from ddjax import analysis
from ddjax import config as cfglib
from ddjax import run as runlib
from ddjax.data.datasets import modular
from ddjax.members import expand
from ddjax.nn.models import make_model
from ddjax.train import StepSpec, init_member, train_step, weight_norms
from tests.dense_reference import DenseEmbedMLP, DenseResMLP
from tests.helpers import close, hp_for, run_experiment, unstack

K, W = 3, 8


@pytest.mark.parametrize('op', ['add', 'sub', 'mul', 'div'])
def test_modular_labels_match_python(op):
  p = 7
  ds = modular(op, p, train_split=0.5, seed=1)
  x = np.concatenate([ds.x_train, ds.x_test])
  y = np.concatenate([ds.y_train, ds.y_test])
  want = {'add': lambda a, b: (a + b) % p, 'sub': lambda a, b: (a - b) % p, 'mul': lambda a, b: a * b % p,
          'div': lambda a, b: a * pow(int(b), -1, p) % p}[op]
  assert [int(v) for v in y] == [want(int(a), int(b)) for a, b in x]
  pairs = {(int(a), int(b)) for a, b in x}
  assert len(pairs) == len(x) == (p * (p - 1) if op == 'div' else p * p)  # every pair once (no b = 0 for div)
  assert len(ds.y_train) == int(len(x) * 0.5) and ds.num_classes == p and ds.x_train.dtype == np.int32
  assert not np.array_equal(modular(op, p, 0.5, seed=2).x_train, ds.x_train)  # the split follows the seed


def _slice(tree, dense_tree):
  """The member's active block of every leaf, shaped like the dense model's leaf ((2, W, W) hidden kernels
  become the dense (2K, K))."""
  flat, out = tu.flatten_dict(tree), {}
  for path, d in tu.flatten_dict(dense_tree).items():
    m = flat[path]
    if m.ndim == 3:
      out[path] = m[:, :K, :K].reshape(d.shape)
    else:
      out[path] = m[tuple(slice(0, s) for s in d.shape)]
  return tu.unflatten_dict(out)


def _five_adamw_steps(model, dense, spec, xs, ys, dense_loss):
  """Five AdamW steps of the masked member (train_step) and of the dense reference (plain optax), from the member's
  own init; checks the parameters agree at every step and masked entries stay zero."""
  hp = unstack(hp_for([K], **{'optim.lr': 1e-3, 'optim.wd': 0.5}), 0)
  state = init_member(spec, hp, xs[0][0])
  dense_params = dense.init(jax.random.key(0), xs[0][:2])['params']
  params = _slice(state['params'], dense_params)
  tx = optax.adamw(1e-3, weight_decay=0.5)
  opt = tx.init(params)
  step = jax.jit(lambda s, x, y: train_step(spec, s, hp, x, y))
  for x, y in zip(xs, ys):
    state, loss = step(state, x, y)
    want_loss, g = jax.value_and_grad(lambda p: dense_loss(dense.apply({'params': p}, x), y))(params)
    updates, opt = tx.update(g, opt, params)
    params = optax.apply_updates(params, updates)
    close(_slice(state['params'], dense_params), params, rtol=2e-5)
  total = sum(float(jnp.abs(v).sum()) for v in jax.tree.leaves(state['params']))
  active = sum(float(jnp.abs(v).sum()) for v in jax.tree.leaves(_slice(state['params'], dense_params)))
  assert total == pytest.approx(active, rel=1e-6)  # nothing outside the active block
  return state, params


def test_embed_mlp_matches_dense_under_adamw():
  p = 7
  ds = modular('add', p, 0.9, seed=0)
  xs, ys = jnp.asarray(ds.x_train[:40]).reshape(5, 8, 2), jnp.asarray(ds.y_train[:40]).reshape(5, 8)
  model = make_model('embed_mlp', W, (2,), p, 'im2col')
  spec = StepSpec(model, 'adamw', 8, p)
  ce = lambda logits, y: optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
  state, params = _five_adamw_steps(model, DenseEmbedMLP(K, p), spec, xs, ys, ce)
  close(model.apply({'params': state['params']}, xs[0], K), DenseEmbedMLP(K, p).apply({'params': params}, xs[0]),
        rtol=2e-5)


def test_resmlp_regression_skips_infinite_targets():
  rng = np.random.default_rng(0)
  xs = jnp.asarray(rng.normal(size=(5, 8, 6, 6, 3)), jnp.float32)
  ys = rng.normal(size=(5, 8)).astype(np.float32) * 4
  ys[:, ::3] = np.inf  # infinite heights: kept in the data, excluded from the loss
  ys = jnp.asarray(ys)
  model = make_model('resmlp', W, (6, 6, 3), 1, 'im2col')
  spec = StepSpec(model, 'adamw', 8, 1, task='regress')

  def mse(out, y):  # the mean over finite targets only
    finite = jnp.isfinite(y)
    return jnp.sum(jnp.where(finite, (out[:, 0] - jnp.where(finite, y, 0)) ** 2, 0)) / finite.sum()

  _five_adamw_steps(model, DenseResMLP(K), spec, xs, ys, mse)


def test_weight_norms_count_layers():
  params = {'hidden': {'kernel': jnp.full((2, 3), 2.0), 'bias': jnp.zeros(3)}, 'head': {'kernel': jnp.ones((3, 4))}}
  n = weight_norms(params)
  assert float(n['norm_hidden']) == pytest.approx(np.sqrt(6 * 4))
  assert float(n['weight_norm_last']) == float(n['norm_head']) == pytest.approx(np.sqrt(12))
  assert float(n['weight_norm']) == pytest.approx(np.sqrt(36))


GROK = ['--no-progress', '--wd', '1', 'train.epochs=400', 'train.eval_every=20', 'seed=0,1']


@pytest.fixture(scope='module')
def grok_run(tmp_path_factory):
  """The default preset at wd 1 (groks near epoch 200), 2 seeds, 400 epochs, with the report."""
  out = tmp_path_factory.mktemp('grok') / 'run'
  return out, run_experiment('grokking', out, '--report', *GROK)


def test_grokking_cli_groks_and_reports(grok_run):
  out, stdout = grok_run
  df = pd.read_parquet(out / 'results.parquet')
  assert len(df) == 2 and set(df['optim.wd']) == {1.0}
  for _, r in df.iterrows():
    train_acc = 1 - np.asarray(r['train_error'])
    val_acc = 1 - np.asarray(r['test_error'])
    e = np.asarray(r['epoch'])
    # The analysis columns agree with the curves: first epochs at 99%, validation well after train.
    assert r['memorisation_epoch'] == e[np.argmax(train_acc >= 0.99)]
    assert r['grokking_epoch'] == e[np.argmax((val_acc >= 0.99) & (e >= r['memorisation_epoch']))]
    assert r['memorisation_epoch'] < 50 < 100 < r['grokking_epoch'] < 400
    assert val_acc[e == 20] < 0.2 and r['final_test_accuracy'] == pytest.approx(1.0)
    assert r['grokking_gap'] == r['grokking_epoch'] - r['memorisation_epoch']
    # The best-validation state: the evaluation with the lowest validation loss.
    assert r['best_epoch'] == e[np.argmin(r['test_loss'])]
    assert r['best_test_loss'] == pytest.approx(min(r['test_loss']))
    for col in ('weight_norm', 'weight_norm_last', 'norm_embed', 'norm_hidden', 'update_norm'):
      assert len(r[col]) == len(e) and np.all(np.asarray(r[col]) > 0)
    layers = np.sqrt(sum(np.asarray(r[f'norm_{k}']) ** 2 for k in ('embed', 'hidden', 'head')))
    np.testing.assert_allclose(layers, r['weight_norm'], rtol=1e-5)
  assert 'grokked at epoch' in stdout and 'report:' in stdout
  report = (out / 'report.md').read_text()
  assert '| member |' in report and 'curves.png' in report
  for name in ('curves.png', 'weight_norm.png'):
    assert (out / name).stat().st_size > 10_000


@pytest.mark.parametrize('argv,message', [
    (['--task', 'pow'], "unknown task 'pow'"),
    (['--wd', '-1'], 'bad value -1.0 for optim.wd'),
    (['--task', 'mheight', '--preset', 'default'], 'needs an m-height preset'),
    (['--task', 'add', '--preset', 'mheight_small'], 'task add is modular arithmetic'),
    (['--task', 'div', 'data.p=12'], 'division mod p needs a prime p'),
    (['data.groups=9/4/9', '--task', 'mheight'], 'data.groups'),
    (['model.name=cnn1d'], 'model.name=cnn1d does not fit data.name=modular'),
    (['train.batch_size=5000'], 'larger than the 1685 training examples'),
    (['data.p=2', 'data.train_split=0.2'], 'both splits need at least one'),
])
def test_grokking_cli_rejects_bad_input(argv, message, tmp_path):
  proc = subprocess.run([sys.executable, '-m', 'experiments.grokking', '--out', str(tmp_path / 'x'), *argv],
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
  assert not (tmp_path / 'x').exists()


@pytest.mark.parametrize('module', ['plots.grokking', 'plots.double_descent'])
def test_plot_scripts_reject_a_directory_without_results(module, tmp_path):
  proc = subprocess.run([sys.executable, '-m', module, str(tmp_path / 'none')], capture_output=True, text=True,
                        timeout=120)
  assert proc.returncode == 2 and 'no results in' in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
  assert not (tmp_path / 'none').exists()


def test_task_and_wd_flags_build_the_sweep(capsys):
  from experiments.grokking import FLAGS, PRESETS
  from ddjax.cli import main
  main('grokking', PRESETS, ['--dry-run', '--task', 'div', '--wd', '0.01,0.1', 'seed=0..2'], flags=FLAGS)
  out = capsys.readouterr().out
  assert '6 member(s)' in out
  cfg, sweep = cfglib.apply_overrides(PRESETS['default'].config, PRESETS['default'].sweep,
                                      ['data.op=div', 'optim.wd=0.01,0.1', 'seed=0..2'])
  [job] = expand(cfg, sweep)
  assert sorted({m['optim.wd'] for m in job.members}) == [0.01, 0.1] and job.config.data.op == 'div'


def test_best_checkpoint_holds_the_lowest_validation_loss(grok_run):
  """The best-validation parameters restored from the checkpoint give, on the validation split, the loss recorded
  as best_test_loss (an independent forward pass with plain optax cross-entropy)."""
  out, _ = grok_run
  df = pd.read_parquet(out / 'results.parquet')
  ds = modular('add', 53, 0.6, seed=42)
  for member in (0, 1):
    row = df[df['member'] == member].iloc[0]
    for which, want in (('best', row['best_test_loss']), ('last', row['test_loss'][-1])):
      variables, width = runlib.member_variables(out, row['run_id'], which)
      model = make_model('embed_mlp', width, (2,), 53, 'im2col')
      logits = model.apply({'params': variables['params']}, jnp.asarray(ds.x_test), int(row['model.width']))
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.asarray(ds.y_test)).mean()
      assert float(loss) == pytest.approx(want, rel=1e-4), which


def test_mheight_cpu_preset_in_miniature_selects_by_validation_and_reports(tmp_path):
  """The mheight_cpu preset, shrunk (3 groups, one with infinite heights, 10 epochs): three splits per group with
  their infinite heights counted, val_loss recorded and choosing the best state (never the test split), the step
  table, the drop analysis and a report in the structure of a note."""
  out = tmp_path / 'mh'
  groups = '9/4/2+9/5/3+10/5/5'
  stdout = run_experiment('grokking', out, '--preset', 'mheight_cpu', '--no-progress', '--report',
                          f'data.groups={groups}', 'data.num_samples=60', 'data.train_per_group=24',
                          'data.val_per_group=20', 'model.width=4', 'model.depth=1', 'train.batch_size=16',
                          'train.epochs=10', 'train.eval_every=2', 'data.workers=1')
  df = pd.read_parquet(out / 'results.parquet')
  assert sorted(df['optim.wd']) == [0.1, 0.3, 1.0]
  from ddjax.data.codes import mheight
  ds = mheight(groups, 60, 0.8, 42, workers=1, train_per_group=24, val_per_group=20)  # the cached data of the run
  assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (72, 60, 48)
  for split in ('train', 'val', 'test'):
    assert (df[f'{split}_infinite'] == np.isinf(getattr(ds, f'y_{split}')).sum()).all()
  assert df['train_infinite'].iloc[0] > 0
  for _, r in df.iterrows():  # finite log2-MSE (infinite targets excluded); the best state is the lowest val_loss
    assert np.all(np.isfinite(r['train_loss'])) and np.all(np.isfinite(r['val_loss']))
    assert r['best_val_loss'] == pytest.approx(np.min(r['val_loss']), rel=1e-6)
    assert r['best_epoch'] == r['epoch'][int(np.argmin(r['val_loss']))]
    assert 'drop_epoch' in r and r['drop_train_from'] == 'steps'
    crossing = analysis.crossing_epoch(r['epoch'], r['val_loss'], 1.0, above=False,
                                       after=r['memorisation_epoch'] - 1e-9 if np.isfinite(r['memorisation_epoch'])
                                       else np.inf)
    assert crossing == r['grokking_epoch'] or np.isnan(crossing) and np.isnan(r['grokking_epoch'])
  assert 'train_error' not in df.columns and 'best_test_loss' not in df.columns
  steps = pd.read_parquet(out / 'steps.parquet')
  assert len(steps) == 3 * 10 * (72 // 16) and np.isfinite(steps['step_loss']).all()
  from plots.grokking import steps_of
  for epochs, _, per_epoch in steps_of(out, df).values():  # step k of epoch e at e - 1 + k / 4
    assert per_epoch == 4
    np.testing.assert_allclose(epochs, np.arange(1, 41) / 4)
  report = (out / 'report.md').read_text()
  for part in ('## Setup', '## Methods', '## Results', '## Figures', '## Limitations', 'step_loss.png',
               '24 for training, 20 for validation'):
    assert part in report, part
  assert 'final validation loss' in stdout


def test_plot_command_reads_the_store_and_writes_only_when_asked(grok_run, tmp_path, capsys):
  """plots.grokking on a store without analysis columns (a copy with them dropped) draws its figures and prints its
  summary from the analysis computed in memory, leaving results.parquet byte for byte as it was; --write stores the
  columns, the same as the run wrote them; another --threshold moves the epochs without touching the store."""
  import shutil
  from plots.grokking import main
  out, _ = grok_run
  store = tmp_path / 'store'
  shutil.copytree(out, store)
  ran = pd.read_parquet(out / 'results.parquet')
  analysis_columns = [c for c in ran.columns if c.startswith(('memorisation', 'grokking', 'spike', 'final_test'))]
  ran.drop(columns=analysis_columns).to_parquet(store / 'results.parquet')
  before = (store / 'results.parquet').read_bytes()
  main([str(store), '--out', str(tmp_path / 'figs')])
  assert 'grokked at epoch' in capsys.readouterr().out and (tmp_path / 'figs' / 'curves.png').exists()
  assert (store / 'results.parquet').read_bytes() == before
  main([str(store), '--out', str(tmp_path / 'figs'), '--threshold', '0.5'])
  lower = capsys.readouterr().out
  assert (store / 'results.parquet').read_bytes() == before
  main([str(store), '--out', str(tmp_path / 'figs'), '--write'])
  written = pd.read_parquet(store / 'results.parquet')
  for col in ('memorisation_epoch', 'grokking_epoch', 'grokking_gap', 'spike_count'):
    np.testing.assert_array_equal(written[col], ran[col])
  for _, r in written.iterrows():  # at 50% accuracy: the first epochs at 50%, validation at or after train
    e, val_acc, train_acc = (np.asarray(r[k]) for k in ('epoch', 'test_error', 'train_error'))
    val_acc, train_acc = 1 - val_acc, 1 - train_acc
    grokked = e[np.argmax((val_acc >= 0.5) & (e >= e[np.argmax(train_acc >= 0.5)]))]
    assert f'grokked at epoch {float(grokked):g}' in lower and grokked < r['grokking_epoch']
