"""python -m ddjax.analysis validate DIR | fit DIR --metric step_loss [--write]

validate  prints each member's audit (ddjax.analysis.validate) and exits with status 1 if any member has a problem.
fit       fits each member's curve of a metric against optimizer steps (a step-table column such as step_loss, or an
          evaluation column such as test_loss) with ddjax.analysis.fit_curve: Kneedle's knee in log-log axes and
          its elbow in linear axes, the power law a t^-b + c (c >= 0) with standard errors and the local slope
          b_loc at a quarter, half and the end of the curve (of log-binned medians: a batch loss is noisy). Prints
          them, writes DIR/fit-METRIC.csv and DIR/fit-METRIC.png; with --write also adds them as columns of
          results.parquet.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from ddjax import results
from ddjax.analysis.curves import SLOPE_BINS, fit_curve, local_slope, log_binned


def member_curves(out: Path, metric: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """run id -> (steps, values) of `metric`, from the step table or the evaluation rows, whichever has it."""
  table = results.load(out)
  if metric in table.columns:
    return {r['run_id']: (np.asarray(r['step'], float), np.asarray(r[metric], float)) for _, r in table.iterrows()}
  try:
    steps = results.load_steps(out)
  except FileNotFoundError:
    steps = pd.DataFrame()
  if metric not in steps.columns:
    known = sorted(c for c in set(table.columns) | set(steps.columns) if c.endswith(('loss', 'error')))
    raise SystemExit(f"error: no metric {metric!r} in {out}; loss-like ones there: {', '.join(known)}")
  return {run: (g['step'].to_numpy(float), g[metric].to_numpy(float)) for run, g in steps.groupby('run_id')}


def fit_members(out: Path, metric: str, sensitivity: float = 1.0) -> pd.DataFrame:
  return pd.DataFrame([{'run_id': run, **fit_curve(t, y, sensitivity)} for run, (t, y) in
                       member_curves(out, metric).items()])


def fit_figure(out: Path, metric: str, fits: pd.DataFrame, most: int = 8):
  """The figure of `fit`: each member's curve (up to `most`), its power law dashed and its knee dotted; its local
  slope on the right."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  curves = member_curves(out, metric)
  fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
  for (_, f), color in zip(fits.head(most).iterrows(), plt.cm.viridis(np.linspace(0, 0.9, most))):
    t, y = curves[f['run_id']]
    ok = np.isfinite(y) & (t > 0) & (y > 0)
    ax.loglog(t[ok], y[ok], color=color, lw=1, label=f['run_id'])
    if np.isfinite(f.get('b', np.nan)):
      ax.loglog(t[ok], f['a'] * t[ok] ** -f['b'] + f['c'], '--', color=color, lw=0.8)
    for knee, style in (('knee_step', ':'), ('elbow_step', '-.')):
      if np.isfinite(f.get(knee, np.nan)):
        ax.axvline(f[knee], color=color, ls=style, lw=0.8)
    tb, yb = log_binned(t[ok], y[ok], SLOPE_BINS)
    bx.semilogx(tb, local_slope(tb, yb), color=color, lw=1)
  ax.set(xlabel='optimizer step', ylabel=metric,
         title=f'{metric}: power-law fits (dashed), knees (dotted), elbows (dash-dot)')
  bx.set(xlabel='optimizer step', ylabel='local slope  -d log L / d log t', title='local slope')
  ax.legend(fontsize=7)
  return fig


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(prog='python -m ddjax.analysis', description=__doc__.split('\n')[0])
  sub = parser.add_subparsers(dest='command', required=True)
  check = sub.add_parser('validate', help="audit a store's members")
  check.add_argument('dir', type=Path)
  fit = sub.add_parser('fit', help="knee, power law and local slope of each member's curve")
  fit.add_argument('dir', type=Path)
  fit.add_argument('--metric', default='step_loss')
  fit.add_argument('--sensitivity', type=float, default=1.0, help="Kneedle's S")
  fit.add_argument('--write', action='store_true', help='also add the fits as columns of results.parquet')
  args = parser.parse_args(argv)
  if not (args.dir / 'run.json').exists():
    raise SystemExit(f'error: {args.dir} is not a ddjax store (no run.json)')
  pd.set_option('display.width', 200)
  if args.command == 'validate':
    from ddjax.analysis.validate import validate
    report = validate(args.dir)
    print(report.to_string(index=False))
    bad = int((report['problems'] != '').sum())
    print(f'{bad} of {len(report)} members with problems' if bad else f'all {len(report)} members valid')
    sys.exit(1 if bad else 0)
  fits = fit_members(args.dir, args.metric, args.sensitivity)
  print(fits.to_string(index=False))
  csv, png = args.dir / f'fit-{args.metric}.csv', args.dir / f'fit-{args.metric}.png'
  fits.to_csv(csv, index=False)
  fig = fit_figure(args.dir, args.metric, fits)
  fig.savefig(png, dpi=150)
  import matplotlib.pyplot as plt
  plt.close(fig)
  print(f'wrote {csv} and {png}')
  if args.write:
    table = results.load(args.dir)
    columns = fits.set_index('run_id').add_prefix(f'fit_{args.metric}_').reindex(table['run_id'])
    print(f'added {len(columns.columns)} columns to {results.add_columns(args.dir, columns.set_index(table.index))}')


if __name__ == '__main__':
  main()
