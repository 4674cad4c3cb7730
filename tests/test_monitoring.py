"""experiments.monitoring: its presets plan the four variants; its pages and table draw what the store holds."""

import json

import numpy as np
import pandas as pd
import pytest

from ddjax import cli
from ddjax import config as cfglib


def test_cpu_preset_plans_the_four_variants(tmp_path, capsys):
  """The cpu preset zips the variants' keys: 4 jobs (standard, BatchNorm off, narrow, AdamW) x 2 seeds, each with
  the whole monitor suite at its cadence. A zipped key fixed on the command line leaves the group, the rest stay
  in step."""
  from experiments.monitoring import PRESETS
  from plots.monitoring import variant
  cli.main('monitoring', PRESETS, ['--dry-run', '--out', str(tmp_path / 'a')])
  assert '4 job(s), 8 member(s)' in capsys.readouterr().out
  preset = PRESETS['cpu']
  jobs = cli.expand(preset.config, preset.sweep, [list(g) for g in preset.zip])
  configs = [cfglib.to_dict(cfglib.replace(j.config, 'model.width', j.members[0]['model.width'])) for j in jobs]
  assert [variant(c, 16) for c in configs] == ['standard', 'BN off', 'narrow', 'AdamW']
  assert [c['optim']['lr'] for c in configs] == [0.05, 0.05, 0.05, 0.001]
  uses = cfglib.probe_uses(preset.config)
  assert set(uses) == {'step_metrics', 'sharpness', 'hessian_trace', 'noise_scale'}
  assert uses['sharpness'] == {'every': '500steps', 'batch': 256, 'iters': 20}
  assert uses['hessian_trace'] == {'every': '500steps', 'batch': 256, 'probes': 10}
  assert uses['noise_scale'] == {'every': '2epochs', 'batch': 256}
  cli.main('monitoring', PRESETS, ['--dry-run', '--out', str(tmp_path / 'b'), 'optim.wd=0.001', 'seed=0'])
  assert '4 job(s), 4 member(s)' in capsys.readouterr().out
  from ddjax.store import member_config, run_id  # the training loss on fewer examples: a probe option, same ids
  jobs_all = cli.expand(cfglib.replace(preset.config, 'probe', {}), preset.sweep, [list(g) for g in preset.zip])
  ids = lambda js: [run_id(member_config(j, i)) for j in js for i in range(len(j.members))]
  assert ids(jobs) == ids(jobs_all)


def test_pages_and_summary_draw_the_store(tmp_path):
  """A small MLP run with the suite (sgd at widths 8 and 4, AdamW at 8, two seeds): one page per variant and a row
  per member. The loss panel draws the step table's batch losses and the validation losses; the power law drawn is
  the one in the table, which is scipy's curve_fit of a t^-b (+ c >= 0) on the batch losses; the sharpness panel
  draws the recorded values at their steps under 2(1 + momentum) / lr; the loss-shape panel draws NumPy's mean
  squared log-log residual over windows of 256 steps every 2 epochs. The evaluations' training loss is measured
  on 64 evenly spaced training examples (probe.losses.train_examples): NumPy's cross-entropy of the member's head
  on its hidden layer there."""
  from scipy import optimize
  from ddjax import results
  from experiments.monitoring import SUITE, suite
  from plots.monitoring import plot_all, summary, variant_page
  preset = cli.Preset(
      cfglib.Config(data=cfglib.DataConfig(num_samples=400), model=cfglib.ModelConfig(name='mlp', depth=1),
                    optim=cfglib.OptimConfig(name='sgd', lr=0.05),
                    train=cfglib.TrainConfig(epochs=10, batch_size=8, eval_points=1, eval_every_steps=10),
                    probes=SUITE, probe=suite('50steps', '2epochs', 32, 64)),
      sweep={'model.width': [8, 4, 8], 'optim.name': ['sgd', 'sgd', 'adamw'], 'optim.lr': [0.05, 0.05, 0.002],
             'seed': [0, 1]}, zip=(('model.width', 'optim.name', 'optim.lr'),))
  out = tmp_path / 'store'
  cli.main('monitoring', {'t': preset}, ['--out', str(out), '--no-progress'])
  paths = plot_all(out)
  assert sorted(p.name for p in paths) == ['monitoring-adamw.png', 'monitoring-narrow.png',
                                           'monitoring-standard.png', 'monitoring-summary.csv']
  df, steps, table = results.load(out), results.load_steps(out), summary(out)
  assert len(table) == 6 and table.equals(pd.read_csv(out / 'monitoring-summary.csv').pipe(
      lambda t: t.astype(table.dtypes.to_dict())))
  standard = df[(df['model.width'] == 8) & (df['optim.name'] == 'sgd')].sort_values('seed')
  fig = variant_page('standard', standard, steps, table)
  loss_ax, _, sharp_ax, _, _, shape_ax = fig.axes[:6]
  elbows = 0
  for color_index, (_, r) in enumerate(standard.iterrows()):
    g = steps[steps['run_id'] == r['run_id']].sort_values('step')
    assert len(g) == 400 and g['step'].tolist() == list(range(1, 401))
    lines = {ln.get_label(): ln for ln in loss_ax.get_lines()}
    seed = f"seed {r['seed']}"
    drawn = loss_ax.get_lines()
    raw = drawn[drawn.index(lines[f'{seed}: batch loss (bin medians)']) - 1]  # drawn just before its medians
    np.testing.assert_array_equal(raw.get_ydata(), g['step_loss'].to_numpy(float))  # 400 steps: not thinned
    np.testing.assert_array_equal(lines[f'{seed}: validation'].get_ydata(), np.asarray(r['test_loss'], float))
    row = table.set_index('run_id').loc[r['run_id']]
    (a, b, c), _ = optimize.curve_fit(lambda t, a, b, c: a * t ** -b + c, g['step'], g['step_loss'], p0=(2, 0.5, 0.1),
                                      bounds=([-np.inf, 1e-3, 0], [np.inf, 5, np.inf]))
    assert (row['a'], row['b']) == pytest.approx((a, b), rel=1e-3) and row['c'] == pytest.approx(c, abs=1e-4)
    if np.isfinite(row['elbow_step']):  # the power law after the elbow (linear-axes Kneedle; seed 1 has one)
      late = g[g['step'] >= row['elbow_step']]
      (_, b, _), _ = optimize.curve_fit(lambda t, a, b, c: a * t ** -b + c, late['step'], late['step_loss'],
                                        p0=(2, 0.5, 0.1), bounds=([-np.inf, 1e-3, 0], [np.inf, 5, np.inf]))
      assert 1 < row['elbow_step'] < 400 and row['tail_b'] == pytest.approx(b, rel=1e-3)
      elbows += 1
    else:
      assert np.isnan(row['tail_b'])
    [law] = [ln for label, ln in lines.items() if label.startswith(f'{seed}: ') and ' t^-' in label]
    np.testing.assert_allclose(law.get_ydata(), row['a'] * law.get_xdata() ** -row['b'] + row['c'], rtol=1e-9)
    recorded = np.asarray(r['sharpness'], float)
    drawn = sharp_ax.get_lines()[color_index]
    np.testing.assert_array_equal(drawn.get_xdata(), np.asarray(r['step'], float)[np.isfinite(recorded)])
    assert list(drawn.get_xdata()) == [50, 100, 150, 200, 250, 300, 350, 400]
    np.testing.assert_array_equal(drawn.get_ydata(), recorded[np.isfinite(recorded)])
    t, y = np.log(g['step'].to_numpy(float)), np.log(g['step_loss'].to_numpy(float))
    power = [np.mean((y[s:s + 256] - np.polyval(np.polyfit(t[s:s + 256], y[s:s + 256], 1), t[s:s + 256])) ** 2)
             for s in (0, 80)]  # 40 steps an epoch: a window every 80 steps
    power_ax = fig.axes[6]
    np.testing.assert_allclose(power_ax.get_lines()[color_index].get_ydata(), power, rtol=1e-9)
    assert list(shape_ax.get_lines()[color_index].get_xdata()) == [256, 336]
  assert elbows >= 1
  [limit] = [ln for ln in sharp_ax.get_lines() if ln.get_label().startswith('stability threshold')]
  assert limit.get_ydata()[0] == pytest.approx(2 * 1.9 / 0.05)
  cfg = json.loads(standard['config'].iloc[0])
  assert cfg['optim']['momentum'] == 0.9 and 'standard: mlp width 8' in fig.texts[0].get_text()
  from scipy.special import logsumexp
  from ddjax.data import load_dataset
  from ddjax.run import member_features, member_variables
  r = standard.iloc[0]
  ds = load_dataset(cfglib.from_dict(cfg).data)
  idx = np.arange(64) * len(ds.x_train) // 64
  hidden = np.asarray(member_features(out, r['run_id'], 'hidden0', ds.x_train[idx], 'last'), np.float64)
  head = member_variables(out, r['run_id'], 'last')[0]['params']['head']
  logits = hidden @ np.asarray(head['kernel'], np.float64)[:hidden.shape[1]] + np.asarray(head['bias'], np.float64)
  labels = np.asarray(ds.y_train)[idx]
  want = np.mean(logsumexp(logits, axis=1) - logits[np.arange(64), labels])
  assert float(np.asarray(r['train_loss'])[-1]) == pytest.approx(want, rel=1e-5)
