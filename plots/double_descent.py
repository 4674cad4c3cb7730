"""Double-descent figures from a results directory.

  python -m plots.double_descent RESULTS_DIR [--out DIR]

Writes error_vs_width.png (train and test error at the final epoch, mean and spread over seeds; Figure 1),
heatmap_test_error.png (test error over width and epoch, log epoch axis, train-error contours; Figure 2) and
loss_vs_width.png (with data.subset swept, plots/samplewise.py's figures instead of the heatmap); then each recorded
probe's figure (ProbeSpec.figure): collapse.png with probes=collapse (plots/collapse.py), monitors.png with the
curvature or gradient-noise probes (plots/monitors.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from plots import samplewise
from plots.common import (final, incomplete, load, main, mean_spread, plt, probe_figures, run_description, save,
                          series, width_epoch_grid, wrapped)

X = 'model.width'


def error_vs_width(df, path: Path) -> Path:
  """One colour per metric for a single sweep; with another swept key, one colour per value of it (the metric
  told by the line style), so each value's curves read together."""
  fig, ax = plt.subplots(figsize=(5.5, 3.6))
  groups = series(df, X)
  for i, (label, g) in enumerate(groups):
    for j, (metric, style, name) in enumerate((('test_error', '-', 'test (clean labels)'),
                                               ('test_error_noisy', ':', 'test on noisy labels (from the clean error)'),
                                               ('train_error', '--', 'train (its noisy labels)'))):
      x, mean, std = mean_spread(g, X, final(g, metric))
      color = f'C{j if len(groups) == 1 else i}'
      ax.plot(x, mean, style, color=color, marker='o', ms=3, label=f'{name} {label}'.strip())
      ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.2, lw=0)
  for i, (label, g) in enumerate(groups):  # each series' interpolation threshold: first width under 1% train error
    x, train, _ = mean_spread(g, X, final(g, 'train_error'))
    if (train < 0.01).any():
      ax.axvline(x[np.argmax(train < 0.01)], color='grey' if len(groups) == 1 else f'C{i}', ls=':', lw=1,
                 label=f'train error < 1% {label}'.strip())
  x = np.sort(df[X].unique())
  n_seeds = max(g.groupby(X).size().max() for _, g in series(df, X))  # members per width in a series: seeds
  _width_axis(ax, x)
  ax.set(xlabel='width', ylabel='error at final epoch',
         title=f'Model-wise double descent ({n_seeds} seed{"s" if n_seeds > 1 else ""}: mean, band ± 1 sd)'
               + (f'\n{note}' if (note := incomplete(df)) else ''))
  fig.suptitle(wrapped(run_description(df), fig), fontsize=7)
  ax.legend(fontsize=7, handlelength=3)
  return save(fig, path)


def _width_axis(ax, widths):
  """Log-2 width axis labelled at trained widths at least 30% apart."""
  ticks = []
  for w in np.sort(np.unique(widths)):
    if not ticks or w >= 1.3 * ticks[-1]:
      ticks.append(w)
  ax.set_xscale('log', base=2)
  ax.set_xticks(ticks, [str(int(w)) for w in ticks])
  ax.minorticks_off()


def loss_vs_width(df, path: Path) -> Path:
  fig, ax = plt.subplots(figsize=(5.5, 3.6))
  for label, g in series(df, X):
    for metric, style in (('test_loss', '-'), ('train_loss', '--')):
      x, mean, std = mean_spread(g, X, final(g, metric))
      line, = ax.plot(x, mean, style, marker='o', ms=3, label=f'{metric.replace("_", " ")} {label}'.strip())
      ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2, lw=0)
  _width_axis(ax, df[X].unique())
  ax.set(xlabel='width', ylabel='cross-entropy at final epoch', yscale='log',
         title='Loss against width (mean over seeds, band ± 1 sd)')
  fig.suptitle(wrapped(run_description(df), fig), fontsize=7)
  ax.legend(fontsize=7, handlelength=3)
  return save(fig, path)


def heatmap(df, path: Path, metric: str = 'test_error') -> Path:
  """Figure 2: the metric over width and (log) epoch, averaged over seeds, with train-error contours and the
  interpolation threshold (the first width whose final train error is below 1%) marked; one panel per value of
  another swept key, all on one colour scale, set by the late epochs (the last third of the evaluations: the
  double-descent ridge) so that the early epochs' larger errors saturate rather than wash it out."""
  groups = series(df, X)
  grids = [width_epoch_grid(g, X, metric) for _, g in groups]
  late = np.concatenate([grid[-max(1, len(grid) // 3):][np.isfinite(grid[-max(1, len(grid) // 3):])]
                         for _, _, grid in grids])
  vmin, vmax = (late.min(), late.max()) if late.size else (None, None)
  fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 3.8), squeeze=False)
  for ax, (label, g), (widths, epochs, grid) in zip(axes[0], groups, grids):
    e_edges = np.concatenate([[epochs[0] / 1.2], np.sqrt(epochs[1:] * epochs[:-1]), [epochs[-1] * 1.2]])
    w_edges = np.arange(len(widths) + 1) - 0.5
    mesh = ax.pcolormesh(w_edges, e_edges, grid, cmap='viridis', shading='flat', vmin=vmin, vmax=vmax)
    _, _, train = width_epoch_grid(g, X, 'train_error')
    fitted = np.flatnonzero(train[-1] < 0.01) if len(train) else []
    if len(fitted):  # the interpolation threshold
      ax.axvline(fitted[0], color='w', ls='--', lw=1)
      right = fitted[0] > len(widths) / 2  # the label on the side with room
      ax.annotate(f'train error < 1% from width {widths[fitted[0]]:g}', (fitted[0], epochs[0]), color='w',
                  fontsize=6, xytext=(-3 if right else 3, 3), textcoords='offset points',
                  ha='right' if right else 'left')
    if min(train.shape) >= 2 and np.isfinite(train).all():  # contours need a 2x2 grid at least
      cs = ax.contour(np.arange(len(widths)), epochs, train, levels=[0.01, 0.1], colors='w', linewidths=0.8)
      ax.clabel(cs, fmt={0.01: 'train 1%', 0.1: 'train 10%'}, fontsize=6)
    ax.set_yscale('log')
    ax.grid(False)
    step = -(-len(widths) // 10)  # at most 10 labels, so they never run together
    ax.set_xticks(np.arange(len(widths))[::step], [str(w) for w in widths[::step]])
    ax.set(xlabel='width', ylabel='epoch', title=f'{metric.replace("_", " ")} {label}'.strip())
    names = {'test_error': 'test error (clean labels)', 'test_error_noisy': 'test error (noisy labels)'}
    fig.colorbar(mesh, ax=ax, label=names.get(metric, metric.replace('_', ' ')), extend='both')
  fig.suptitle(wrapped(f'{run_description(df)}; mean over seeds; colour range from the last third of the '
                       'evaluations', fig), fontsize=7)
  return save(fig, path)


def plot_all(out, fig_dir=None) -> list[Path]:
  df = load(out)
  fig_dir = Path(fig_dir or out)
  fig_dir.mkdir(parents=True, exist_ok=True)
  if samplewise.varies(df):  # data.subset swept: width x training-set size instead of width x epoch
    paths = [error_vs_width(df, fig_dir / 'error_vs_width.png'), *samplewise.plot_all(out, fig_dir),
             loss_vs_width(df, fig_dir / 'loss_vs_width.png')]
    return paths + probe_figures(out, fig_dir)
  paths = [error_vs_width(df, fig_dir / 'error_vs_width.png'),
           heatmap(df, fig_dir / 'heatmap_test_error.png'),
           loss_vs_width(df, fig_dir / 'loss_vs_width.png')]
  return paths + probe_figures(out, fig_dir)


if __name__ == '__main__':
  main('plots.double_descent', __doc__, plot_all, experiment='double_descent')
