"""Neural-collapse figure from a results directory of a run with probes=collapse (or train.collapse=true).

  python -m plots.collapse RESULTS_DIR [--out DIR]

Writes collapse.png: NC1, NC2 (equinorm, equiangularity), NC3 and NC4 (ddjax.metrics) and train error against
epoch on log axes, one line per width (mean over seeds), coloured by width; other swept keys get line styles.
"""

from __future__ import annotations

from pathlib import Path

from plots.common import load, main, save_constrained, width_curves

# (metric, panel title, y scale): NC1 spans decades; the others are bounded and read better on linear axes
PANELS = (('nc1', 'NC1  Tr(Σ_W Σ_B⁺) / K', 'log'), ('nc2_equinorm', 'NC2  equinorm (std / mean of norms)', 'linear'),
          ('nc2_equiangle', 'NC2  equiangularity', 'linear'), ('nc3', 'NC3  ‖W/‖W‖ − M/‖M‖‖', 'linear'),
          ('nc4', 'NC4  nearest class mean ≠ network', 'linear'), ('train_error', 'train error', 'linear'))


def collapse_curves(df, path: Path) -> Path:
  """One line per width (colour) and per value of any other swept key (line style), mean over seeds; NC3 only where
  it was recorded (collapse at the output layer's input)."""
  where = f' at {_layer(df)}' if _layer(df) else ''
  fig, _ = width_curves(df, [p for p in PANELS if p[0] in df.columns],
                        f'Neural collapse on the training set{where} (mean over seeds)')
  return save_constrained(fig, path)


def _layer(df) -> str:
  """The tap point collapse was measured at (probe.collapse.layer), '' for the output layer's input."""
  import json
  config = json.loads(df['config'].iloc[0]) if 'config' in df.columns and len(df) else {}
  return config.get('probe', {}).get('collapse', {}).get('layer', '')


def plot_all(out, fig_dir=None) -> list[Path]:
  """collapse.png if the run recorded neural collapse, else nothing."""
  df = load(out)
  if 'nc1' not in df.columns:
    return []
  fig_dir = Path(fig_dir or out)
  fig_dir.mkdir(parents=True, exist_ok=True)
  return [collapse_curves(df, fig_dir / 'collapse.png')]


if __name__ == '__main__':
  main('plots.collapse', __doc__, plot_all, nothing='has no neural-collapse columns (run with probes=collapse)')
