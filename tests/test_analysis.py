"""ddjax.analysis on curves whose answers are known by construction."""

import numpy as np
import pytest

from ddjax import analysis


def test_crossing_epoch():
  e = [1, 2, 5, 10, 20, 50]
  acc = [0.1, 0.5, 0.995, 0.98, 0.999, 1.0]
  assert analysis.crossing_epoch(e, acc, 0.99) == 5
  assert analysis.crossing_epoch(e, acc, 0.99, sustained=2) == 20
  assert analysis.crossing_epoch(e, acc, 0.99, after=5) == 20
  assert np.isnan(analysis.crossing_epoch(e, acc, 1.01))
  assert analysis.crossing_epoch(e, [3, 2, 1, 0.5, 0.1, 0.01], 0.2, above=False) == 20


def test_grokking_epochs_and_gap():
  e = np.arange(1, 101)
  train = np.minimum(1.0, e / 10)          # memorised at epoch 10
  val = np.where(e >= 70, 1.0, 0.3)        # generalises at epoch 70
  g = analysis.grokking(e, train, val, threshold=0.99)
  assert (g.memorisation_epoch, g.grokking_epoch, g.gap) == (10, 70, 60)
  never = analysis.grokking(e, train, np.full(100, 0.5))
  assert never.memorisation_epoch == 10 and np.isnan(never.grokking_epoch) and np.isnan(never.gap)


def test_loss_spikes():
  e = np.arange(10)
  loss = [1.0, 0.1, 0.05, 0.04, 0.5, 0.9, 0.03, 0.02, 0.3, 0.01]
  spikes = analysis.loss_spikes(e, loss, factor=2.0)
  assert [(s.start_epoch, s.peak_epoch) for s in spikes] == [(4, 5), (8, 8)]
  assert [s.end_epoch for s in spikes] == [6, 9]  # back under 2x the minimum before the spike
  assert spikes[0].height == pytest.approx(0.9 / 0.04) and spikes[1].height == pytest.approx(0.3 / 0.02)
  assert analysis.loss_spikes(e, np.linspace(1, 0.1, 10)) == []


def test_double_descent_peak():
  w = [2, 4, 8, 16, 32, 64, 128]
  err = [0.6, 0.3, 0.25, 0.33, 0.36, 0.31, 0.28]
  dd = analysis.double_descent_peak(w, err)
  assert (dd.min_x, dd.peak_x, dd.last_x) == (8, 32, 128)
  assert dd.rise == pytest.approx(0.11) and dd.second_descent == pytest.approx(0.08)
  assert analysis.double_descent_peak(w, sorted(err, reverse=True)) is None


# ----------------------------------------------------------------------------------------------------------------
# The shape of loss curves (ddjax.analysis.curves).

def test_kneedle_agrees_with_the_kneed_package_and_finds_a_planted_knee():
  """On 300 random curves of the four shapes (noisy or not, uneven x, several sensitivities) the knee is kneed's
  KneeLocator's, None where it finds none; a curve falling steeply to x = 3 and slowly after has its knee at 3."""
  from kneed import KneeLocator
  rng = np.random.default_rng(1)
  shapes = [('convex', 'decreasing', lambda x, r: np.exp(-x * r)), ('convex', 'increasing', lambda x, r: np.exp(x * r)),
            ('concave', 'increasing', lambda x, r: np.log1p(5 * x * r)),
            ('concave', 'decreasing', lambda x, r: -np.exp(x * r))]
  found = 0
  for _ in range(300):
    x = np.unique(rng.uniform(0, 10, rng.integers(8, 60)))
    curve, direction, f = shapes[rng.integers(4)]
    y = f(x, rng.uniform(0.2, 1.0))
    y = y + rng.normal(0, rng.choice([0, 0.01, 0.05, 0.2]), len(x)) * np.ptp(y)
    s = rng.choice([0.5, 1.0, 2.0, 4.0])
    want = KneeLocator(x, y, S=s, curve=curve, direction=direction).knee
    got = analysis.kneedle(x, y, s, curve, direction)
    assert (want is None) == (got is None) and (want is None or got == pytest.approx(want)), (curve, direction, s)
    found += want is not None
  assert found > 250
  x = np.linspace(0, 10, 101)
  assert analysis.kneedle(x, np.where(x < 3, 10 - 3 * x, 1 - 0.05 * (x - 3)), 1.0) == pytest.approx(3.0)


def test_power_law_fit_recovers_known_parameters_with_honest_errors():
  """Exact a t^-b + c: recovered to 1e-6; with white noise (sd 0.005, the least-squares model), every parameter
  within 4 standard errors of the truth in each of 5 draws, and the errors small; the local slope of a pure power
  law is its exponent."""
  t = np.arange(1, 3001, dtype=float)
  law = analysis.power_law_fit(t, 3.0 * t ** -0.7 + 0.25)
  assert (law.a, law.b, law.c) == pytest.approx((3.0, 0.7, 0.25), rel=1e-6)
  for seed in range(5):
    noisy = 3.0 * t ** -0.7 + 0.25 + 0.005 * np.random.default_rng(seed).normal(size=t.size)
    law = analysis.power_law_fit(t, noisy)
    for value, se, truth in ((law.a, law.se_a, 3.0), (law.b, law.se_b, 0.7), (law.c, law.se_c, 0.25)):
      assert abs(value - truth) < 4 * se and se < 0.05 * truth
    assert law.rms == pytest.approx(0.005, rel=0.1)
  np.testing.assert_allclose(analysis.local_slope(t, 2.0 * t ** -0.5), 0.5, rtol=1e-9)
  flat = analysis.power_law_fit(t[:20], np.ones(20))  # b undetermined: no standard errors, not false precision
  assert np.isnan([flat.se_a, flat.se_b, flat.se_c]).all()
  noisy = (3.0 * t ** -0.5 + 0.2) * (1 + 0.01 * np.random.default_rng(0).normal(size=t.size))
  tb, yb = analysis.log_binned(t, noisy)  # medians on log-spaced bins: the slope of the curve, not of its noise
  assert len(tb) <= 64 and np.all(np.diff(tb) > 0)
  truth = 1.5 * tb ** -0.5 / (3.0 * tb ** -0.5 + 0.2)
  np.testing.assert_allclose(analysis.local_slope(tb, yb)[len(tb) // 2:], truth[len(tb) // 2:], atol=0.05)


def test_resid_power_and_psd_tail_on_series_with_known_answers():
  """log L = -0.5 log t + noise: resid_power is the noise variance (0 for an exact power law); psd_tail is about 0
  for white-noise residuals and, for random-walk residuals, the slope of their exact spectrum 1 / (4 sin^2(pi f))
  over the same frequencies (about -2 at low frequencies, flatter towards Nyquist)."""
  from scipy import signal
  t = np.arange(1, 4097, dtype=float)
  rng = np.random.default_rng(0)
  assert analysis.resid_power(t, 2 * t ** -0.5) < 1e-20 and np.isnan(analysis.psd_tail(t, 2 * t ** -0.5))
  assert np.isnan(analysis.resid_power([1.0], [1.0])) and np.isnan(analysis.psd_tail([1, 2], [0, 0]))
  white = rng.normal(0, 0.1, t.size)
  assert analysis.resid_power(t, np.exp(-0.5 * np.log(t) + white)) == pytest.approx(0.01, rel=0.1)
  assert abs(analysis.psd_tail(t, np.exp(-0.5 * np.log(t) + white))) < 0.15
  walk = np.cumsum(rng.normal(0, 0.01, t.size))
  f, _ = signal.welch(walk, nperseg=256)
  f = f[1:]
  upper = np.log(f) >= 0.5 * (np.log(f[0]) + np.log(f[-1]))
  exact = np.polyfit(np.log(f[upper]), np.log(1 / (4 * np.sin(np.pi * f[upper]) ** 2)), 1)[0]
  assert analysis.psd_tail(t, np.exp(-0.5 * np.log(t) + walk)) == pytest.approx(exact, abs=0.25)
  shape = analysis.loss_shape(t, np.exp(-0.5 * np.log(t) + white), window=1024)
  assert list(shape['t_end']) == [1024, 2048, 3072, 4096] and np.all(np.abs(shape['psd_tail']) < 0.4)


def test_power_law_floor_is_not_negative_and_fit_curve_knees():
  """A loss falling faster than a power law with a floor: unbounded, c comes out negative; by default c stops at 0
  and (a, b) are those of scipy's curve_fit of a t^-b (no standard error for c on its bound). fit_curve: a curve
  levelling off at c has a knee in log-log and an elbow in linear axes; a curve steepening in log-log all the way
  (exp(-t / 500)) has no log-log knee (NaN, not its first point). loss_shape's windows, one every `stride` points,
  hold NumPy's mean squared residual around the log-log line of each window."""
  from scipy import optimize
  t = np.arange(1, 2001, dtype=float)
  y = 5.0 * t ** -0.6 - 0.05 + 0.002 * np.random.default_rng(0).normal(size=t.size)
  assert analysis.power_law_fit(t, y, c_min=None).c == pytest.approx(-0.05, abs=0.01)
  law = analysis.power_law_fit(t, y)
  (a, b), cov = optimize.curve_fit(lambda t, a, b: a * t ** -b, t, y, p0=(1.0, 1.0))
  assert law.c == 0 and np.isnan(law.se_c)
  assert (law.a, law.b) == pytest.approx((a, b), rel=1e-5)
  assert (law.se_a, law.se_b) == pytest.approx(tuple(np.sqrt(np.diag(cov))), rel=1e-3)  # two free parameters
  levels = analysis.fit_curve(t, 3.0 * t ** -0.5 + 0.2)
  assert 10 < levels['knee_step'] < 1000 and 1 < levels['elbow_step'] < 1000
  assert (levels['a'], levels['b'], levels['c']) == pytest.approx((3.0, 0.5, 0.2), rel=1e-5)
  steepening = analysis.fit_curve(t, np.exp(-t / 500))
  assert np.isnan(steepening['knee_step']) and steepening['b_loc_1.0'] > steepening['b_loc_0.25'] > 0
  noisy = np.exp(-0.5 * np.log(t) + 0.1 * np.random.default_rng(1).normal(size=t.size))
  shape = analysis.loss_shape(t, noisy, window=256, stride=160)
  starts = range(0, t.size - 255, 160)
  assert list(shape['t_end']) == [t[s + 255] for s in starts]
  for s, power in zip(starts, shape['resid_power']):
    lt, ly = np.log(t[s:s + 256]), np.log(noisy[s:s + 256])
    assert power == pytest.approx(np.mean((ly - np.polyval(np.polyfit(lt, ly, 1), lt)) ** 2), rel=1e-9)


def test_validate_and_fit_a_store(tmp_path, capsys):
  """validate: a fresh store with evaluations every 3 steps and the step table every 2 is valid (exit 0, the counts
  its cadences promise); an incomplete member with an infinite loss is reported (exit 1). fit: the knee, power law
  and local slopes of step_loss per member, in a CSV and a figure beside the store, in results.parquet with
  --write only. The exports of the evaluation rows and of the step table."""
  import pandas as pd
  from ddjax import config as cfglib
  from ddjax import results
  from ddjax import run as runlib
  from ddjax.analysis.__main__ import main
  from ddjax.members import expand
  out = tmp_path / 'store'
  cfg, sweep = cfglib.apply_overrides(cfglib.Config(), {}, [
      'model.name=mlp', 'model.width=2,4', 'train.epochs=3', 'train.eval_points=2', 'data.num_samples=300',
      'train.batch_size=40', 'train.eval_every_steps=3', 'probes=step_metrics', 'probe.step_metrics.every=2'])
  runlib.run(cfg, sweep, expand(cfg, sweep), out, progress=False, log=lambda *a: None)
  with pytest.raises(SystemExit) as e:
    main(['validate', str(out)])
  said = capsys.readouterr().out
  assert e.value.code == 0 and 'all 2 members valid' in said
  assert said.count(' 6/6 ') == 2 and said.count(' 9/9 ') == 2  # 6 steps an epoch: evaluations at 3, 6, ..., 18
  main(['fit', str(out), '--metric', 'step_loss'])
  fits = pd.read_csv(out / 'fit-step_loss.csv')
  assert len(fits) == 2 and {'knee_step', 'a', 'b', 'c', 'se_b', 'b_loc_0.5'} <= set(fits.columns)
  assert (out / 'fit-step_loss.png').exists() and 'fit_step_loss_b' not in results.load(out).columns
  from ddjax.analysis.__main__ import fit_figure
  curves, fig = results.load_steps(out), fit_figure(out, 'step_loss', fits)
  lines = fig.axes[0].get_lines()
  for _, f in fits.iterrows():  # each member's curve, labelled by its run id, then its power law dashed over it
    [curve] = [ln for ln in lines if ln.get_label() == f['run_id']]
    law = lines[lines.index(curve) + 1]
    np.testing.assert_array_equal(curve.get_ydata(), curves[curves['run_id'] == f['run_id']]['step_loss'])
    np.testing.assert_allclose(law.get_ydata(), f['a'] * curve.get_xdata() ** -f['b'] + f['c'], rtol=1e-6)
    assert law.get_linestyle() == '--'
  assert fig.axes[0].get_ylabel() == 'step_loss' and 'local slope' in fig.axes[1].get_ylabel()
  main(['fit', str(out), '--metric', 'step_loss', '--write'])
  np.testing.assert_allclose(results.load(out).set_index('run_id').loc[fits['run_id'], 'fit_step_loss_b'], fits['b'])
  # The long-form export: step, epoch and time_s on every row, cross-entropy in bits beside nats; the step table too.
  long = pd.read_csv(results.export(out, 'csv'))
  assert len(long) == 2 * 6 and long[['step', 'epoch', 'time_s']].notna().all().all()
  np.testing.assert_allclose(long['test_loss_bits'], long['test_loss'] / np.log(2), rtol=1e-12)
  steps = pd.read_json(results.export(out, 'jsonl', table='steps'), lines=True)
  assert len(steps) == 2 * 9 and {'step', 'epoch', 'step_loss', 'step_loss_bits'} <= set(steps.columns)
  table = pd.read_parquet(out / 'results.parquet')
  table.loc[0, 'complete'] = False
  table.at[0, 'test_loss'] = np.r_[np.asarray(table.at[0, 'test_loss'])[:-1], np.inf]
  table.to_parquet(out / 'results.parquet')
  with pytest.raises(SystemExit) as e:
    main(['validate', str(out)])
  said = capsys.readouterr().out
  assert e.value.code == 1 and 'not complete' in said and '1 infinite value(s)' in said and '1 of 2 members' in said


def test_sudden_drop_finds_a_planted_drop_and_nothing_in_slow_or_oscillating_curves():
  """sudden_drop on curves shaped like the m-height study's (validation every 5 epochs): a plateau at 3 (noise sd
  0.1, one spike to 10) that falls to 1.3 over 20 epochs at epoch 780 and then creeps back up is found there, with
  the plateau and the new level; a slow exponential decline and an oscillation give none. change_across on a step
  series (50 steps an epoch) measures a train-loss rise planted at the drop; loss_spikes on the step series finds a
  planted step-level spike."""
  from ddjax.analysis import change_across, loss_spikes, sudden_drop
  rng = np.random.default_rng(0)
  epochs = np.arange(5, 3401, 5, dtype=float)
  level = np.where(epochs < 780, 3.0, 1.3 + 0.8 * (epochs - 800).clip(0) / 2600)
  ramp = (epochs >= 780) & (epochs < 800)
  level[ramp] = 3.0 - 1.7 * (epochs[ramp] - 775) / 25
  val = level + rng.normal(0, 0.1, len(epochs))
  val[40] = 10.0  # one spike on the plateau
  drop = sudden_drop(epochs, val, window=50, min_fall=0.3)
  assert drop is not None and 770 <= drop.epoch <= 800
  assert abs(drop.before - 3.0) < 0.1 and abs(drop.after - 1.35) < 0.15 and 0.5 < drop.fall < 0.6
  assert sudden_drop(epochs, 1 + 2 * np.exp(-epochs / 1000) + rng.normal(0, 0.02, len(epochs)), 50) is None
  assert sudden_drop(epochs, 3 + 0.3 * np.sin(epochs / 40), 50) is None
  steps = np.arange(1, 3400 * 50 + 1) / 50  # the step table's epochs
  train = 0.5 * np.exp(-steps / 300) + 0.01 + np.where((steps > 780) & (steps < 900), 0.4, 0.0)
  assert 0.2 < change_across(steps, train, drop.epoch, 50) < 0.45  # the rise, less what of it fell before the drop
  assert abs(change_across(steps, train, 2500.0, 50)) < 0.01  # nothing planted there
  assert np.isnan(change_across(steps, train, 0.0, 50))
  train[100_000] = 5.0  # a one-step spike at epoch 2000
  [spike] = loss_spikes(steps, train, factor=10.0, floor=1e-3)
  assert spike.peak_epoch == pytest.approx(steps[100_000])
