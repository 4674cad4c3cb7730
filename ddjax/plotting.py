"""Curves of runs for notebooks: `plot(runs, metric)` draws the mean over runs with a 95% bootstrap band.

  plot(run)                                  # one member
  plot([r1, r2, ...], metric='test_loss')    # their mean and band
  plot({'lr 0.1': runs_a, 'lr 0.01': runs_b}, metric='train_loss', x='epoch')  # one line per group

`runs` are ddjax.runs.RunResult (load_runs). Returns the matplotlib Axes.
"""

from __future__ import annotations

import numpy as np


def bootstrap_band(curves: np.ndarray, draws: int = 1000, level: float = 0.95,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """The (1 - level) / 2 and (1 + level) / 2 quantiles of the mean of `curves` (runs x points, NaN ignored) over
  `draws` bootstrap resamples of the runs: a confidence band of the mean curve. One run: the curve itself."""
  curves = np.asarray(curves, float)
  if len(curves) == 1:
    return curves[0], curves[0]
  picks = np.random.default_rng(seed).integers(0, len(curves), (draws, len(curves)))
  means = np.stack([np.nanmean(curves[p], axis=0) for p in picks])
  return np.nanquantile(means, (1 - level) / 2, axis=0), np.nanquantile(means, (1 + level) / 2, axis=0)


def _groups(runs) -> dict[str, list]:
  if isinstance(runs, dict):
    return {label: list(v) if isinstance(v, (list, tuple)) else [v] for label, v in runs.items()}
  runs = list(runs) if isinstance(runs, (list, tuple)) else [runs]
  return {'': runs}


def plot(runs, metric: str = 'test_loss', x: str = 'step', ax=None, level: float = 0.95, logx: bool = True,
         logy: bool = True, draws: int = 1000):
  """The mean of `metric` against `x` over each group's runs with its bootstrap band at `level` (one run: its
  curve); runs of a group must share their evaluation points (those of the first are used, longer ones cut)."""
  import matplotlib.pyplot as plt
  if ax is None:
    _, ax = plt.subplots(figsize=(5, 3.5))
  for i, (label, group) in enumerate(_groups(runs).items()):
    if not group:
      raise ValueError(f'group {label!r} has no runs')
    xs = group[0][x]
    curves = np.stack([r[metric][:len(xs)] for r in group if len(r[metric]) >= len(xs)])
    lo, hi = bootstrap_band(curves, draws, level)
    colour = f'C{i % 10}'
    ax.plot(xs, np.nanmean(curves, axis=0), color=colour, lw=1.2,
            label=f'{label + " " if label else ""}({len(curves)} run{"s" * (len(curves) != 1)})')
    if len(curves) > 1:
      ax.fill_between(xs, lo, hi, color=colour, alpha=0.25, lw=0)
  ax.set(xscale='log' if logx else 'linear', yscale='log' if logy else 'linear', xlabel=x.replace('_', ' '),
         ylabel=metric.replace('_', ' '))
  ax.set_title(f'mean over runs, {level:.0%} bootstrap band', fontsize=9)
  ax.legend(fontsize=7)
  return ax
