"""Analysis of training curves, shared by plots and reports: threshold crossings (memorisation and grokking
epochs), train-loss spikes, sudden drops of a loss off a plateau, the model-wise double-descent peak, and Saxe et
al.'s solution for a deep linear network's modes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def crossing_epoch(epochs, values, threshold: float, above: bool = True, after: float = -np.inf,
                   sustained: int = 1) -> float:
  """First evaluation epoch > `after` from which `values` stays >= threshold (above) or <= threshold (not above)
  for `sustained` consecutive evaluations; NaN if it never does."""
  epochs, values = np.asarray(epochs, float), np.asarray(values, float)
  ok = values >= threshold if above else values <= threshold
  ok &= epochs > after
  run = 0
  for i, good in enumerate(ok):
    run = run + 1 if good else 0
    if run >= sustained:
      return float(epochs[i - sustained + 1])
  return float('nan')


@dataclass
class Grokking:
  memorisation_epoch: float  # train metric reaches its threshold
  grokking_epoch: float      # validation metric reaches its threshold, at or after memorisation
  gap: float                 # grokking - memorisation (epochs)


def grokking(epochs, train_metric, val_metric, threshold: float = 0.99, above: bool = True,
             sustained: int = 1) -> Grokking:
  """Memorisation and grokking epochs of accuracy-like (above=True) or loss-like (above=False) metrics."""
  mem = crossing_epoch(epochs, train_metric, threshold, above, sustained=sustained)
  after = mem - 1e-9 if np.isfinite(mem) else np.inf
  grok = crossing_epoch(epochs, val_metric, threshold, above, after=after, sustained=sustained)
  return Grokking(mem, grok, grok - mem)


@dataclass
class Spike:
  start_epoch: float   # first evaluation above factor x the running minimum
  peak_epoch: float    # where the loss is highest within the spike
  height: float        # peak loss / running minimum before the spike
  end_epoch: float     # first evaluation back under factor x that minimum (the last evaluation if never)


def loss_spikes(epochs, loss, factor: float = 2.0, floor: float = 0.0) -> list[Spike]:
  """Spans where loss rises above `factor` times its running minimum (and above `floor`), one Spike each."""
  epochs, loss = np.asarray(epochs, float), np.asarray(loss, float)
  spikes, running_min, current = [], np.inf, None
  for e, v in zip(epochs, loss):
    if current is None and np.isfinite(running_min) and v > factor * running_min and v > floor:
      current = {'start': e, 'peak': e, 'peak_v': v, 'base': running_min}
    elif current is not None:
      if v > current['peak_v']:
        current['peak'], current['peak_v'] = e, v
      if v <= factor * current['base']:
        spikes.append(Spike(current['start'], current['peak'], current['peak_v'] / current['base'], e))
        current = None
    if current is None:
      running_min = min(running_min, v)
  if current is not None:
    spikes.append(Spike(current['start'], current['peak'], current['peak_v'] / current['base'], epochs[-1]))
  return spikes


@dataclass
class Drop:
  epoch: float       # the evaluation where the fall is largest: the plateau ends before it, the new level after it
  before: float      # the median loss over the window before it (the plateau)
  after: float       # the median loss over the window after it
  fall: float        # (before - after) / before


def sudden_drop(epochs, loss, window: float, min_fall: float = 0.3, plateau: float = 0.1) -> Drop | None:
  """The largest sudden fall of a loss curve off a plateau (a validation loss that drops, as in grokking on a
  regression task): at each evaluation, the median of the loss over the `window` epochs before it against the median
  over the `window` epochs after it; the evaluation where that fall, relative to the plateau before, is largest.
  The window before must be a plateau: evaluations in both its halves, the second half's median at most `plateau`
  (relative) below the first half's, so the first descent from the init, still falling, is no drop. None if no fall
  reaches `min_fall` (a curve that only declines, or oscillates). Medians make a single spike on either side neither
  a plateau nor a drop."""
  epochs, loss = np.asarray(epochs, float), np.asarray(loss, float)
  best = None
  for i, e in enumerate(epochs):
    ok = np.isfinite(loss)
    before = loss[(epochs >= e - window) & (epochs < e) & ok]
    after = loss[(epochs > e) & (epochs <= e + window) & ok]
    if len(before) == 0 or len(after) == 0:
      continue
    early = loss[(epochs >= e - window) & (epochs < e - window / 2) & ok]
    late = loss[(epochs >= e - window / 2) & (epochs < e) & ok]
    if len(early) == 0 or len(late) == 0 or np.median(late) < (1.0 - plateau) * np.median(early):
      continue  # no evaluation in one half of the window before it, or still falling into it: not a plateau
    b, a = float(np.median(before)), float(np.median(after))
    fall = (b - a) / b if b > 0 else 0.0
    if best is None or fall > best.fall:
      best = Drop(float(e), b, a, fall)
  return best if best is not None and best.fall >= min_fall else None


def change_across(epochs, values, at: float, window: float) -> float:
  """The mean of `values` over the `window` epochs after `at` minus their mean over the `window` epochs before it
  (NaN where either side has none): e.g. how the train loss moved, step by step, across a validation drop."""
  epochs, values = np.asarray(epochs, float), np.asarray(values, float)
  before = values[(epochs >= at - window) & (epochs < at) & np.isfinite(values)]
  after = values[(epochs > at) & (epochs <= at + window) & np.isfinite(values)]
  return float(after.mean() - before.mean()) if len(before) and len(after) else float('nan')


def default_window(epochs) -> float:
  """The sudden-drop window when none is given: 2% of the run, and at least two evaluation intervals."""
  epochs = np.asarray(epochs, float)
  if len(epochs) < 2:
    return 1.0
  return float(max(epochs[-1] / 50.0, 2.0 * np.median(np.diff(epochs))))


def drop_summary(epochs, val_loss, train_loss, weight_norm, step_epochs=None, step_loss=None,
                 window: float | None = None, min_fall: float = 0.3) -> dict:
  """One member's sudden validation drop (sudden_drop on `val_loss` over `window` epochs, default_window if None)
  and what moved with it: the train loss over the same windows from the step table (`step_epochs`, `step_loss`: every
  optimizer step) where given, else from the evaluations; the weight norm's change; and what came after: the lowest
  validation loss, its epoch, and how far the validation loss rose from it by the end while the train loss fell.
  NaN where there is no drop."""
  epochs, val = np.asarray(epochs, float), np.asarray(val_loss, float)
  window = default_window(epochs) if window is None else float(window)
  drop = sudden_drop(epochs, val, window, min_fall)
  stepped = step_epochs is not None and len(step_epochs) > 0
  t_epochs, t_loss = (step_epochs, step_loss) if stepped else (epochs, train_loss)
  t_epochs, t_loss = np.asarray(t_epochs, float), np.asarray(t_loss, float)
  nan = float('nan')
  out = {'drop_window': window, 'drop_min_fall': min_fall, 'drop_epoch': nan, 'drop_val_before': nan,
         'drop_val_after': nan, 'drop_fall': nan,
         'drop_train_before': nan, 'drop_train_after': nan, 'drop_train_change': nan, 'drop_norm_change': nan,
         'drop_train_from': 'steps' if stepped else 'evaluations'}
  if drop is not None:
    side = lambda lo, hi: t_loss[(t_epochs >= lo) & (t_epochs < hi) & np.isfinite(t_loss)]
    before, after = side(drop.epoch - window, drop.epoch), side(drop.epoch + 1e-9, drop.epoch + window + 1e-9)
    out.update(drop_epoch=drop.epoch, drop_val_before=drop.before, drop_val_after=drop.after, drop_fall=drop.fall,
               drop_train_before=float(before.mean()) if len(before) else nan,
               drop_train_after=float(after.mean()) if len(after) else nan,
               drop_train_change=change_across(t_epochs, t_loss, drop.epoch, window),
               drop_norm_change=change_across(epochs, weight_norm, drop.epoch, window))
  finite = np.isfinite(val)
  if finite.any():
    best = int(np.argmin(np.where(finite, val, np.inf)))
    last = int(np.flatnonzero(finite)[-1])
    out.update(val_min=float(val[best]), val_min_epoch=float(epochs[best]), val_final=float(val[last]),
               val_rise=float(val[last] - val[best]), train_final=float(np.asarray(train_loss, float)[last]))
  return out


def step_spikes(step_epochs, step_loss, smooth: int = 1, factor: float = 10.0, floor: float = 1e-3) -> dict:
  """Train-loss spikes on the step table (loss_spikes on every optimizer step's batch loss, after a running median
  over `smooth` steps, so that one noisy batch is no spike): their count, peak epochs and heights."""
  epochs, loss = np.asarray(step_epochs, float), np.asarray(step_loss, float)
  if smooth > 1 and len(loss) >= smooth:
    windows = np.lib.stride_tricks.sliding_window_view(loss, smooth)
    loss, epochs = np.median(windows, axis=-1), epochs[smooth - 1:]
  spikes = loss_spikes(epochs, loss, factor, floor)
  return {'step_spike_count': len(spikes), 'step_spike_epochs': [s.peak_epoch for s in spikes],
          'step_spike_heights': [s.height for s in spikes]}


@dataclass
class DoubleDescent:
  min_x: float       # the first minimum (before the peak)
  min_y: float
  peak_x: float      # the interior maximum after that minimum
  peak_y: float
  last_x: float      # the largest x
  last_y: float

  @property
  def rise(self) -> float:
    return self.peak_y - self.min_y

  @property
  def second_descent(self) -> float:
    return self.peak_y - self.last_y


def double_descent_peak(x, y) -> DoubleDescent | None:
  """The largest rise of y from a minimum to a later interior maximum, for curves sorted by x; None if y never
  rises again (monotone descent)."""
  x, y = np.asarray(x, float), np.asarray(y, float)
  order = np.argsort(x)
  x, y = x[order], y[order]
  best = None
  for j in range(1, len(y) - 1):  # interior peaks only
    i = int(np.argmin(y[:j]))
    if y[j] > y[i] and (best is None or y[j] - y[i] > best[2]):
      best = (i, j, y[j] - y[i])
  if best is None:
    return None
  i, j, _ = best
  return DoubleDescent(x[i], y[i], x[j], y[j], x[-1], y[-1])


@dataclass
class DataHurts:
  """More data hurt: the error at training-set size n_to is above that at the next smaller size n_from."""
  n_from: float
  n_to: float
  error_from: float
  error_to: float

  @property
  def rise(self) -> float:
    return self.error_to - self.error_from


def more_data_hurts(n, error, min_rise: float = 0.0) -> list[DataHurts]:
  """Each step up in training-set size n (sorted; NaN errors left out) after which the error rose by more than
  `min_rise` (Nakkiran et al.'s sample-wise non-monotonicity)."""
  n, error = np.asarray(n, float), np.asarray(error, float)
  keep = np.isfinite(error)
  order = np.argsort(n[keep])
  n, error = n[keep][order], error[keep][order]
  return [DataHurts(float(n[i]), float(n[i + 1]), float(error[i]), float(error[i + 1])) for i in range(len(n) - 1)
          if error[i + 1] - error[i] > min_rise]


def interpolation_threshold(x, train_error, below: float = 0.01) -> float | None:
  """The smallest x (a width) whose train error is below `below`: where the model starts to fit its training set,
  noisy labels included; None if none does."""
  x, train_error = np.asarray(x, float), np.asarray(train_error, float)
  fits = x[train_error < below]
  return float(fits.min()) if fits.size else None


def window_change(epochs, values, start: float, end: float, pad: int = 1) -> float:
  """values at the evaluation `pad` steps after `end` minus values `pad` steps before `start` (NaN at the edges of
  the curve are clipped to its ends)."""
  epochs, values = np.asarray(epochs, float), np.asarray(values, float)
  i = max(0, int(np.searchsorted(epochs, start)) - pad)
  j = min(len(epochs) - 1, int(np.searchsorted(epochs, end, side='right')) - 1 + pad)
  return float(values[j] - values[i])


def grokking_summary(epochs, train_acc, val_acc, train_loss, weight_norm, threshold: float = 0.99,
                     spike_factor: float = 10.0, spike_floor: float = 1e-3, jump: float = 0.05,
                     above: bool = True) -> dict:
  """One member's grokking analysis: memorisation and grokking epochs (train / validation metric crossing
  `threshold`; accuracy-like with above=True, loss-like with above=False) and their gap; train-loss spikes
  (rises above spike_factor x the running minimum and above spike_floor) with, per spike, the change of the
  weight norm and of the validation metric across it, and how many spikes carry a validation improvement of at
  least `jump`."""
  g = grokking(epochs, train_acc, val_acc, threshold, above)
  spikes = loss_spikes(epochs, train_loss, spike_factor, spike_floor)
  norm_change = [window_change(epochs, weight_norm, s.start_epoch, s.end_epoch) for s in spikes]
  val_change = [window_change(epochs, val_acc, s.start_epoch, s.end_epoch) for s in spikes]
  sign = 1.0 if above else -1.0
  return {
      'memorisation_epoch': g.memorisation_epoch, 'grokking_epoch': g.grokking_epoch, 'grokking_gap': g.gap,
      'spike_count': len(spikes), 'spike_epochs': [s.peak_epoch for s in spikes],
      'spike_heights': [s.height for s in spikes], 'spike_norm_change': norm_change,
      'spike_val_change': val_change,
      'spikes_with_val_jump': int(sum(sign * v >= jump for v in val_change)),
  }


def saxe_mode(t, s: float, u0: float):
  """Strength u(t) of one balanced mode of a two-layer linear network (Saxe, McClelland and Ganguli 2014) under
  gradient flow on 1/2 E||y - W x||^2 with whitened inputs: du/dt = 2u(s - u) from u(0) = u0 in (0, s), so
  u(t) = s / (1 + (s / u0 - 1) exp(-2 s t)). ddjax's loss has no 1/2: there t = 2 lr x steps."""
  return s / (1.0 + (s / u0 - 1.0) * np.exp(-2.0 * s * np.asarray(t, float)))


def saxe_time(s: float, u0: float, uf: float) -> float:
  """The time saxe_mode takes from u0 to uf: ln[uf (s - u0) / (u0 (s - uf))] / (2 s)."""
  return float(np.log(uf * (s - u0) / (u0 * (s - uf))) / (2.0 * s))
