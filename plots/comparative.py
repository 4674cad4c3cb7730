"""Figures of comparative training (pairs of members a and b trained in lockstep; ddjax.probes.comparative).

  python -m plots.comparative RESULTS_DIR [--out DIR]

Writes comparative.png: each recorded comparison (param_distance, param_cosine_sim, frobenius_distance, and the
layer distances, a line per layer) against optimizer steps, the mean over the pairs (their seeds) with a 95%
bootstrap band, one line per combination of the keys the pairs share that take several values. A pair's two
members hold the same values; the a members' rows are drawn.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from ddjax.plotting import bootstrap_band
from plots.common import load, main, plt, save, series

COLUMNS = ('param_distance', 'param_cosine_sim', 'frobenius_distance')


def layer_columns(df) -> list[str]:
  return sorted((c for c in df.columns if c.startswith('layer_distance_')), key=lambda c: int(c.rsplit('_', 1)[1]))


def _curves(g, column: str) -> tuple[np.ndarray, np.ndarray]:
  steps = np.asarray(g.iloc[0]['step'], float)
  return steps, np.stack([np.asarray(v, float)[:len(steps)] for v in g[column] if len(v) >= len(steps)])


def comparison_curves(df, path: Path) -> Path:
  panels = [c for c in COLUMNS if c in df.columns] + (['layer distances'] if layer_columns(df) else [])
  fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.2), squeeze=False)
  a = df[df['pair'] == 'a']
  for ax, panel in zip(axes.flat, panels):
    columns = layer_columns(df) if panel == 'layer distances' else [panel]
    lines = [(label, g, c) for label, g in series(a.drop(columns='pair'), 'step') for c in columns]
    for (label, g, column), colour in zip(lines, itertools.cycle([f'C{i}' for i in range(10)])):
      steps, curves = _curves(g, column)
      lo, hi = bootstrap_band(curves)
      name = ', '.join(x for x in (label, column.replace('layer_distance_', 'layer ') if len(columns) > 1 else '')
                       if x)
      ax.plot(steps, np.nanmean(curves, axis=0), color=colour, lw=1.2, label=f'{name or "all pairs"} '
              f'({len(curves)} pairs)')
      ax.fill_between(steps, lo, hi, color=colour, alpha=0.25, lw=0)
    ax.set(xscale='log', xlabel='optimizer steps', title=panel.replace('_', ' '))
    ax.legend(fontsize=6)
  fig.suptitle('Comparative training: a against b, mean over pairs with a 95% bootstrap band', fontsize=9)
  return save(fig, path)


def plot_all(out, fig_dir=None) -> list[Path]:
  """comparative.png if the run trained pairs and compared them, else nothing."""
  df = load(out)
  if 'pair' not in df.columns or not (set(COLUMNS) & set(df.columns) or layer_columns(df)):
    return []
  fig_dir = Path(fig_dir or out)
  fig_dir.mkdir(parents=True, exist_ok=True)
  return [comparison_curves(df, fig_dir / 'comparative.png')]


if __name__ == '__main__':
  main('plots.comparative', __doc__, plot_all, nothing='has no comparisons of pairs (train pairs with pair=a,b and '
       'the probes param_distance, param_cosine_sim, layer_distances, frobenius_distance)')
