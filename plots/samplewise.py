"""Sample-wise double descent figures from a results directory whose members differ in data.subset.

  python -m plots.samplewise RESULTS_DIR [--out DIR]

(python -m plots.double_descent draws them too when data.subset varies.) Writes samplewise_heatmap.png: the final
test error (mean over seeds) over width x training-set size, the interpolation threshold traced (per size, the
narrowest width whose final train error is below 1%) and the cells where more data hurt (the error above the next
smaller size's at that width by more than twice the standard error of their difference) outlined; and
samplewise_curves.png: test error against training-set size, a line per width, those rising steps drawn bold.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ddjax import analysis
from ddjax import config as cfglib
from plots.common import final, load, main, plt, run_description, save, series_keys, wrapped

X, N = 'model.width', 'data.subset'


def sizes(df: pd.DataFrame) -> pd.Series:
  """Each member's training-set size: its data.subset, or (none) every training example its data config gives."""
  full = cfglib.train_examples(cfglib.from_dict(json.loads(df['config'].iloc[0])).data) if len(df) else None
  return df[N].astype(float).fillna(np.nan if full is None else full) if N in df.columns else pd.Series(full, df.index)


def grid(df: pd.DataFrame, metric: str, stat: str = 'sd') -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """(widths, sizes, mean[size, width], spread[size, width]) of the final `metric` over the members (seeds) of each
  cell; spread 'sd' (the members' standard deviation) or 'se' (the standard error of the mean, 0 for one member);
  NaN where a cell has none."""
  values = pd.DataFrame({'w': df[X].to_numpy(), 'n': sizes(df).to_numpy(), 'v': final(df, metric).to_numpy()})
  cells = values.groupby(['n', 'w'])['v']
  spread = cells.std(ddof=0) if stat == 'sd' else (cells.std(ddof=1) / np.sqrt(cells.count())).fillna(0.0)
  widths, ns = np.sort(values['w'].unique()), np.sort(values['n'].unique())
  table = lambda s: s.unstack().reindex(index=ns, columns=widths).to_numpy(float)
  return widths, ns, table(cells.mean()), table(spread)


def thresholds(df: pd.DataFrame, below: float = 0.01) -> dict[float, float | None]:
  """Per training-set size, the interpolation threshold: the narrowest width whose mean final train error < below."""
  widths, ns, train, _ = grid(df, 'train_error')
  return {n: analysis.interpolation_threshold(widths, row, below) for n, row in zip(ns, train)}


def hurts(df: pd.DataFrame) -> dict[float, list[analysis.DataHurts]]:
  """Per width, the steps up in training-set size after which the mean final test error rose by more than twice the
  standard error of the difference of the two cells' means (over seeds; any rise with one seed)."""
  widths, ns, mean, se = grid(df, 'test_error', 'se')
  out = {}
  for j, w in enumerate(widths):
    error = dict(zip(ns, np.nan_to_num(se[:, j])))
    rises = [h for h in analysis.more_data_hurts(ns, mean[:, j])
             if h.rise > 2 * np.hypot(error[h.n_from], error[h.n_to])]
    if rises:
      out[w] = rises
  return out


def groups(df: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
  """(label, rows) per combination of the keys other than width, data.subset and seeds that vary (one panel each,
  never averaged together); [('', df)] when only those vary."""
  keys = [k for k in series_keys(df, X) if k != N]
  if not keys:
    return [('', df)]
  return [(', '.join(f'{k}={v}' for k, v in zip(keys, vals if isinstance(vals, tuple) else (vals,))), g)
          for vals, g in df.groupby(keys if len(keys) > 1 else keys[0])]


def summary(df: pd.DataFrame) -> str:
  """Lines for the terminal and the docs: the threshold per size, and where (and by how much) more data hurt (a
  block per panel of `groups`)."""
  return '\n'.join(_summary(g, label) for label, g in groups(df))


def _summary(df: pd.DataFrame, label: str) -> str:
  lead = f'{label}: ' if label else ''
  lines = [lead + 'interpolation threshold (train error < 1%): ' + ', '.join(
      f'n={n:g}: width {w:g}' if w is not None else f'n={n:g}: none' for n, w in thresholds(df).items())]
  found = hurts(df)
  if not found:
    lines.append(lead + 'more data never raised the test error by more than twice its standard error over seeds')
  widths, ns, mean, se = grid(df, 'test_error', 'se')
  rises = [(h.rise, w, h, 2 * np.hypot(se[list(ns).index(h.n_from), j], se[list(ns).index(h.n_to), j]))
           for j, w in enumerate(widths) for h in analysis.more_data_hurts(ns, mean[:, j])]
  if rises:
    _, w, h, noise = max(rises, key=lambda r: r[0])
    lines.append(f'{lead}largest rise with more data: width {w:g}, n={h.n_from:g} -> {h.n_to:g}, test error '
                 f'{h.error_from:.3f} -> {h.error_to:.3f} (+{h.rise:.3f}; twice its standard error {noise:.3f})')
  for w, rises in found.items():
    worst = max(rises, key=lambda h: h.rise)
    lines.append(f'{lead}width {w:g}: more data hurt {len(rises)} time(s); most from n={worst.n_from:g} to '
                 f'{worst.n_to:g}, test error {worst.error_from:.3f} -> {worst.error_to:.3f} (+{worst.rise:.3f})')
  return '\n'.join(lines)


def heatmap(df: pd.DataFrame, path: Path) -> Path:
  """A panel per group (one colour scale): the mean final test error per (width, n) cell, the threshold traced, the
  cells where more data hurt outlined."""
  panels = groups(df)
  means = [grid(g, 'test_error')[2] for _, g in panels]
  vmin, vmax = np.nanmin([np.nanmin(m) for m in means]), np.nanmax([np.nanmax(m) for m in means])
  fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 4.4), squeeze=False)
  for ax, (label, g) in zip(axes[0], panels):
    widths, ns, mean, _ = grid(g, 'test_error')
    mesh = ax.pcolormesh(np.arange(len(widths) + 1) - 0.5, np.arange(len(ns) + 1) - 0.5, mean, cmap='viridis',
                         shading='flat', vmin=vmin, vmax=vmax)
    col = {w: j for j, w in enumerate(widths)}
    row = {n: i for i, n in enumerate(ns)}
    traced = [(col[w], row[n]) for n, w in thresholds(g).items() if w is not None]
    if traced:
      x, y = zip(*traced)
      ax.plot(x, y, 'w--o', ms=3, lw=1.2, label='interpolation threshold (train error < 1%)')
      ax.plot([], [], '--o', color='0.4', ms=3, lw=1.2, label='interpolation threshold (train error < 1%)')
    found = hurts(g)
    for w, rises in found.items():
      for h in rises:
        ax.add_patch(plt.Rectangle((col[w] - 0.5, row[h.n_to] - 0.5), 1, 1, fill=False, ec='r', lw=1.5))
    ax.plot([], [], 's', mfc='none', mec='r', label='more data hurt (above the next smaller n' +
            ('' if found else '; none here') + ')')
    ax.set_xticks(np.arange(len(widths)), [f'{w:g}' for w in widths])
    ax.set_yticks(np.arange(len(ns)), [f'{n:g}' for n in ns])
    ax.grid(False)
    ax.set(xlabel='width', ylabel='training examples (data.subset)',
           title=label or 'Sample-wise double descent: test error over width and data')
    handles, labels = ax.get_legend_handles_labels()  # the white line drawn, its grey stand-in in the legend
    keep = [i for i, text in enumerate(labels) if labels.index(text) != i or not text.startswith('interp')]
    ax.legend([handles[i] for i in keep], [labels[i] for i in keep], fontsize=6, loc='upper left',
              bbox_to_anchor=(0.0, -0.14), ncol=2, frameon=False)
    fig.colorbar(mesh, ax=ax, label='test error (clean labels), final')
  fig.suptitle(wrapped(f'{run_description(df)}; {_budget(df)}; mean over seeds', fig), fontsize=7)
  return save(fig, path)


def curves(df: pd.DataFrame, path: Path) -> Path:
  """A panel per group: test error against n, a line per width, the rises where more data hurt drawn bold."""
  panels = groups(df)
  fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 4.0), squeeze=False, sharey=True)
  for ax, (label, g) in zip(axes[0], panels):
    widths, ns, mean, sd = grid(g, 'test_error')
    found = hurts(g)
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(widths)))
    for j, (w, c) in enumerate(zip(widths, colors)):
      ax.plot(ns, mean[:, j], '-o', color=c, ms=3, lw=0.9, label=f'width {w:g}')
      ax.fill_between(ns, mean[:, j] - sd[:, j], mean[:, j] + sd[:, j], color=c, alpha=0.12, lw=0)
      for h in found.get(w, []):
        i = list(ns).index(h.n_from)
        ax.plot(ns[i:i + 2], mean[i:i + 2, j], '-', color=c, lw=3)
    ax.plot([], [], 'k-', lw=3, label='more data hurt')
    ax.set(xlabel='training examples (data.subset)', ylabel='test error (clean labels), final',
           title=label or 'Test error against training-set size (mean, band ± 1 sd over seeds)')
    ax.legend(fontsize=6, ncol=2)
  fig.suptitle(wrapped(f'{run_description(df)}; {_budget(df)}', fig), fontsize=7)
  return save(fig, path)


def _budget(df: pd.DataFrame) -> str:
  budgets = {json.loads(c)['train'].get('budget', 'epochs') for c in df['config']}
  if len(budgets) > 1:
    return 'train.budget swept'
  return ('every member takes the same steps (train.budget=steps)' if budgets == {'steps'} else
          'every member makes the same passes over its own examples (train.budget=epochs)')


def varies(df: pd.DataFrame) -> bool:
  """Whether the members differ in data.subset (these figures apply)."""
  return N in df.columns and sizes(df).nunique() > 1


def plot_all(out, fig_dir=None) -> list[Path]:
  df = load(out)
  fig_dir = Path(fig_dir or out)
  fig_dir.mkdir(parents=True, exist_ok=True)
  return [heatmap(df, fig_dir / 'samplewise_heatmap.png'), curves(df, fig_dir / 'samplewise_curves.png')]


if __name__ == '__main__':
  main('plots.samplewise', __doc__, plot_all, experiment='double_descent')
