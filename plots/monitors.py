"""Curvature and gradient-noise figure from a run with train.sharpness, train.hessian_trace or train.noise_scale.

  python -m plots.monitors RESULTS_DIR [--out DIR]

Writes monitors.png: the recorded sharpness (top Hessian eigenvalue of the training loss on the monitor batch), for
Adam also the preconditioned sharpness (of P^-1 H), the Hessian trace and the gradient noise scale B_simple against
epoch on log axes, one line per width (mean over seeds), coloured by width; other swept keys get line styles. The
sharpness panels mark the stability threshold of the optimizer on a quadratic, where full-batch training sits at the
edge of stability: 2 (1 + momentum) / lr for SGD (Cohen et al. 2021), (2 + 2 b1) / ((1 - b1) lr) for Adam's
preconditioned sharpness (Cohen et al. 2022).
"""

from __future__ import annotations

import json
from pathlib import Path

from plots.common import load, main, save_constrained, width_curves

# (metric, panel title, y scale): the unbiased |G|^2 estimate, and so B_simple, can be negative near a minimum
PANELS = (('sharpness', 'sharpness  λ_max(H)', 'log'),
          ('preconditioned_sharpness', 'Adam: preconditioned sharpness  λ_max(P⁻¹H)', 'log'),
          ('hessian_trace', 'Hessian trace  Tr(H)', 'log'), ('noise_scale', 'gradient noise scale  B_simple', 'symlog'))
# The stability threshold of full-batch training on a quadratic, per (optimizer, its sharpness metric)
THRESHOLDS = {('sgd', 'sharpness'): ('2(1+β)/lr', lambda o: 2 * (1 + o['momentum']) / o['lr']),
              ('adam', 'preconditioned_sharpness'): ('(2+2β₁)/((1−β₁)lr)',
                                                     lambda o: (2 + 2 * o['b1']) / ((1 - o['b1']) * o['lr']))}
THRESHOLDS[('adamw', 'preconditioned_sharpness')] = THRESHOLDS[('adam', 'preconditioned_sharpness')]


def monitor_curves(df, path: Path) -> Path:
  panels = [p for p in PANELS if p[0] in df.columns]
  fig, axes = width_curves(df, panels, 'Curvature and gradient noise (mean over seeds)')
  optimizers = {json.dumps(c['optim'], sort_keys=True) for c in df['config'].map(json.loads)}
  for metric, ax in axes.items():
    lines = {}
    for optim in map(json.loads, sorted(optimizers)):
      if (optim['name'], metric) in THRESHOLDS:
        name, value = THRESHOLDS[(optim['name'], metric)]
        lines[f'{name}, lr={optim["lr"]:g}'] = value(optim)
    for label, value in lines.items():
      ax.axhline(value, color='k', ls=':', lw=0.8, label=label)
    if lines:
      ax.legend(fontsize=6, loc='lower right')
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
