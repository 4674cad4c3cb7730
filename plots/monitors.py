"""Curvature and gradient-noise figure from a run with train.sharpness, train.hessian_trace or train.noise_scale.

  python -m plots.monitors RESULTS_DIR [--out DIR]

Writes monitors.png: the recorded sharpness (top Hessian eigenvalue of the training loss on the monitor batch),
Hessian trace and gradient noise scale B_simple against epoch on log axes, one line per width (mean over seeds),
coloured by width; other swept keys get line styles. For plain and heavy-ball SGD the sharpness panel marks the
stability threshold of gradient descent on a quadratic, 2 (1 + momentum) / lr, where full-batch training sits at the
edge of stability (Cohen et al. 2021).
"""

from __future__ import annotations

import json
from pathlib import Path

from plots.common import load, main, save_constrained, width_curves

# (metric, panel title, y scale): the unbiased |G|^2 estimate, and so B_simple, can be negative near a minimum
PANELS = (('sharpness', 'sharpness  λ_max(H)', 'log'), ('hessian_trace', 'Hessian trace  Tr(H)', 'log'),
          ('noise_scale', 'gradient noise scale  B_simple', 'symlog'))


def monitor_curves(df, path: Path) -> Path:
  panels = [p for p in PANELS if p[0] in df.columns]
  fig, axes = width_curves(df, panels, 'Curvature and gradient noise (mean over seeds)')
  if 'sharpness' in axes:
    optimizers = {(c['optim']['name'], c['optim']['lr'], c['optim']['momentum'])
                  for c in df['config'].map(json.loads)}
    for name, lr, momentum in sorted(optimizers):
      if name == 'sgd':
        axes['sharpness'].axhline(2 * (1 + momentum) / lr, color='k', ls=':', lw=0.8,
                                  label=f'2(1+β)/lr, lr={lr:g}')
    if any(name == 'sgd' for name, _, _ in optimizers):
      axes['sharpness'].legend(fontsize=6, loc='lower right')
  return save_constrained(fig, path)


def plot_all(out, fig_dir=None) -> list[Path]:
  """monitors.png if the run recorded any of the monitors, else nothing."""
  df = load(out)
  if not any(metric in df.columns for metric, _, _ in PANELS):
    return []
  fig_dir = Path(fig_dir or out)
  fig_dir.mkdir(parents=True, exist_ok=True)
  return [monitor_curves(df, fig_dir / 'monitors.png')]


if __name__ == '__main__':
  main('plots.monitors', __doc__, plot_all, nothing='has no monitor columns (run with train.sharpness=N, '
       'train.hessian_trace=N or train.noise_scale=true)')
