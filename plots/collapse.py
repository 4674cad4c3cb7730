"""Neural-collapse figure from a results directory of a run with train.collapse=true.

  python -m plots.collapse RESULTS_DIR [--out DIR]

Writes collapse.png: NC1, NC2 (equinorm, equiangularity), NC3 and NC4 (ddjax.metrics) and train error against
epoch on log axes, one line per width (mean over seeds), coloured by width; other swept keys get line styles.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import matplotlib as mpl
import numpy as np

from plots.common import load, main, plt, series, width_epoch_grid

X = 'model.width'
STYLES = ('-', '--', ':', '-.')
# (metric, panel title, log y axis): NC1 spans decades; the others are bounded and read better on linear axes
PANELS = (('nc1', 'NC1  Tr(Σ_W Σ_B⁺) / K', True), ('nc2_equinorm', 'NC2  equinorm (std / mean of norms)', False),
          ('nc2_equiangle', 'NC2  equiangularity', False), ('nc3', 'NC3  ‖W/‖W‖ − M/‖M‖‖', False),
          ('nc4', 'NC4  nearest class mean ≠ network', False), ('train_error', 'train error', False))


def collapse_curves(df, path: Path) -> Path:
  """One line per width (colour) and per value of any other swept key (line style), mean over seeds."""
  widths = np.sort(df[X].unique())
  norm = mpl.colors.LogNorm(widths.min(), max(widths.max(), widths.min() + 1))
  groups = series(df, X)
  fig, axes = plt.subplots(2, 3, figsize=(10, 5.6), layout='constrained')
  for ax, (metric, title, log_y) in zip(axes.flat, PANELS):
    for style, (label, g) in zip(itertools.cycle(STYLES), groups):
      group_widths, epochs, grid = width_epoch_grid(g, X, metric)
      for w, curve in zip(group_widths, grid.T):
        ax.plot(epochs, curve, style, color=plt.cm.viridis(norm(w)), lw=1)
    ax.set(xscale='log', yscale='log' if log_y else 'linear', title=title, xlabel='epoch')
    ax.title.set_fontsize(9)
  if len(groups) > 1:  # which line style is which series
    handles = [mpl.lines.Line2D([], [], color='grey', ls=style) for style, _ in zip(itertools.cycle(STYLES), groups)]
    axes.flat[0].legend(handles, [label for label, _ in groups], fontsize=6)
  bar = fig.colorbar(mpl.cm.ScalarMappable(norm=norm, cmap='viridis'), ax=axes, label='width', shrink=0.6)
  ticks = [w for i, w in enumerate(widths) if i == 0 or w >= 1.3 * widths[i - 1]]  # trained widths, not crowded
  bar.set_ticks(ticks, labels=[f'{w:g}' for w in ticks])
  bar.ax.minorticks_off()
  fig.suptitle('Neural collapse on the training set (mean over seeds)')
  fig.savefig(path)  # constrained layout (not save()'s tight_layout) fits a colorbar shared by all panels
  plt.close(fig)
  return path


def plot_all(out, fig_dir=None) -> list[Path]:
  """collapse.png if the run recorded neural collapse, else nothing."""
  df = load(out)
  if 'nc1' not in df.columns:
    return []
  fig_dir = Path(fig_dir or out)
  fig_dir.mkdir(parents=True, exist_ok=True)
  return [collapse_curves(df, fig_dir / 'collapse.png')]


if __name__ == '__main__':
  main('plots.collapse', __doc__, plot_all, nothing='has no neural-collapse columns (run with train.collapse=true)')
