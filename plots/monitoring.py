"""The monitoring study's figures and table: one page per variant, and a row per member.

  python -m plots.monitoring RESULTS_DIR [--out DIR]

Needs a store with the step table (probes=step_metrics); the curvature and noise panels draw what the run recorded
(sharpness, hessian_trace, noise_scale). A member's variant is named from its config: `BN off` (model.norm=none),
`narrow` (narrower than the store's widest member), `AdamW`, or `standard`; seeds of a variant share its page.
Writes monitoring-<variant>.png and monitoring-summary.csv.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ddjax import results
from ddjax.analysis.curves import SLOPE_BINS, fit_curve, local_slope, log_binned, loss_shape
from plots.common import final, load, main, plt, save_constrained, series_keys
from plots.monitors import THRESHOLDS

WINDOW = 256  # steps of the step table in each resid_power / psd_tail window
EVERY_EPOCHS = 2  # a window ends every 2 epochs (the plan's noise monitor)


def variant(cfg: dict, widest: int) -> str:
  parts = [name for name, on in (('BN off', cfg['model'].get('norm') == 'none'),
                                 ('narrow', cfg['model']['width'] < widest),
                                 ('AdamW', cfg['optim']['name'] == 'adamw')) if on]
  return ', '.join(parts) or 'standard'


# Keys that name a variant; other swept keys (seeds aside) are added to its name
VARIANT_KEYS = ('model.width', 'model.norm', 'optim.name', 'optim.lr', 'optim.wd')


def variant_names(df: pd.DataFrame) -> pd.Series:
  """run id -> its variant's name: variant(), and `key=value` of every other key swept in the store (seeds aside),
  so members of different configs never share a page."""
  widest = int(df['model.width'].max())
  others = [k for k in series_keys(df, 'seed') if k not in VARIANT_KEYS]
  return pd.Series([', '.join([variant(json.loads(r['config']), widest)] + [f'{k}={r[k]}' for k in others])
                    for _, r in df.iterrows()], index=df['run_id'])


def threshold(cfg: dict) -> tuple[str, str, float] | None:
  """(sharpness column, label, value) of the optimizer's stability threshold on a quadratic, if it has one."""
  for (name, metric), (label, value) in THRESHOLDS.items():
    if name == cfg['optim']['name']:
      return metric, label, value(cfg['optim'])
  return None


def shape_windows(g: pd.DataFrame) -> dict[str, np.ndarray]:
  """resid_power and psd_tail of a member's batch loss over windows of WINDOW recorded steps, one ending every
  EVERY_EPOCHS epochs."""
  t, y = g['step'].to_numpy(float), g['step_loss'].to_numpy(float)
  per_epoch = len(g) / max(g['epoch'].max(), 1) if len(g) else 1  # recorded steps per epoch
  return loss_shape(t, y, window=WINDOW, stride=max(1, round(EVERY_EPOCHS * per_epoch)))


def by_member(steps: pd.DataFrame) -> dict[str, pd.DataFrame]:
  """run id -> its rows of the step table in step order (grouped once, not filtered per member)."""
  return {run: g.sort_values('step') for run, g in steps.groupby('run_id')}


def _fit_columns(fit: dict, prefix: str = '') -> dict[str, float]:
  keys = ('knee_step', 'elbow_step', 'a', 'b', 'se_b', 'c', 'b_loc_1.0')
  return {prefix + k.replace('_1.0', '_end'): fit.get(k, np.nan) for k in keys}


def summary(out) -> pd.DataFrame:
  """A row per member: its variant and seed; the fit of its batch-loss curve (ddjax.analysis.fit_curve: knee_step,
  elbow_step, a, b, se_b, c, b_loc_end), the power law of its steps from the elbow on (tail_b, tail_se_b, tail_c)
  and the fit of its validation loss (as the first, with val_); medians of its windows'
  resid_power and psd_tail; its last validation loss and error; its last curvature and noise monitors and the
  largest sharpness over its optimizer's stability threshold."""
  df, steps = load(out), results.load_steps(out)
  names, members = variant_names(df), by_member(steps)
  monitors = [m for m in ('test_loss', 'test_error', 'sharpness', 'preconditioned_sharpness', 'hessian_trace',
                          'trace_sigma') if m in df.columns]
  last = {m: final(df, m) for m in monitors}
  rows = []
  for i, r in df.iterrows():
    cfg = json.loads(r['config'])
    g = members.get(r['run_id'], steps.iloc[:0])
    shape = shape_windows(g)
    fit = _fit_columns(fit_curve(g['step'], g['step_loss']))
    late = g[g['step'] >= fit['elbow_step']] if np.isfinite(fit['elbow_step']) else g.iloc[:0]
    tail = fit_curve(late['step'], late['step_loss'])  # the power law after the early fall
    row = {'variant': names[r['run_id']], 'seed': r['seed'], 'run_id': r['run_id'], 'steps': len(g), **fit,
           'tail_b': tail.get('b', np.nan), 'tail_se_b': tail.get('se_b', np.nan), 'tail_c': tail.get('c', np.nan),
           **_fit_columns(fit_curve(r['step'], r['test_loss']), 'val_'),
           'resid_power': float(np.nanmedian(shape['resid_power'])) if len(shape['t_end']) else np.nan,
           'psd_tail': float(np.nanmedian(shape['psd_tail'])) if len(shape['t_end']) else np.nan,
           **{m: last[m][i] for m in monitors}}
    if (limit := threshold(cfg)) and limit[0] in df.columns:
      row['threshold'] = limit[2]
      row['max_sharpness_ratio'] = float(np.nanmax(np.asarray(r[limit[0]], float), initial=np.nan)) / limit[2]
    rows.append(row)
  return pd.DataFrame(rows).sort_values(['variant', 'seed'], kind='stable').reset_index(drop=True)


def _slope(t, y):
  ts, ys = log_binned(t, y, SLOPE_BINS)
  return ts, local_slope(ts, ys)


def _thin(t, y, most: int = 2000):
  step = max(1, -(-len(t) // most))
  return t[::step], y[::step]


def variant_page(name: str, members: pd.DataFrame, steps: pd.DataFrame, table: pd.DataFrame):
  """One page: loss with power law and knee, local slope, sharpness against the stability threshold, Hessian
  trace, gradient variance, and the loss's residual power and PSD tail; a colour per seed."""
  fig, axes = plt.subplots(3, 2, figsize=(8.3, 10.5), layout='constrained')
  (loss_ax, slope_ax), (sharp_ax, trace_ax), (noise_ax, shape_ax) = axes
  power_ax = shape_ax.twinx()
  cfg = json.loads(members['config'].iloc[0])
  colors, groups = plt.cm.tab10(np.arange(len(members)) % 10), by_member(steps)
  for color, (_, r) in zip(colors, members.iterrows()):
    if r['run_id'] not in groups:  # (a member trained before without the step table)
      continue
    g = groups[r['run_id']]
    t, y = g['step'].to_numpy(float), g['step_loss'].to_numpy(float)
    fit = table.loc[table['run_id'] == r['run_id']].iloc[0]
    label = f"seed {r['seed']}"
    loss_ax.loglog(*_thin(t, y), color=color, lw=0.3, alpha=0.25)
    tb, yb = log_binned(t, y)
    loss_ax.loglog(tb, yb, color=color, lw=1.2, label=f'{label}: batch loss (bin medians)')
    t_eval = np.asarray(r['step'], float)
    loss_ax.loglog(t_eval, np.asarray(r['test_loss'], float), '.', color=color, ms=2, label=f'{label}: validation')
    if np.isfinite(fit['b']):
      loss_ax.loglog(tb, fit['a'] * tb ** -fit['b'] + fit['c'], '--', color='k', lw=0.8,
                     label=f"{label}: {fit['a']:.2g} t^-{fit['b']:.2f} + {fit['c']:.2g}")
    for knee, style, what in (('knee_step', ':', 'knee (log-log)'), ('elbow_step', '-.', 'elbow')):
      if np.isfinite(fit[knee]):
        loss_ax.axvline(fit[knee], color=color, ls=style, lw=1, label=f'{label}: {what} at step {fit[knee]:.0f}')
    slope_ax.semilogx(*_slope(t, y), color=color, lw=1, label=label)
    for metric, ax, style in (('sharpness', sharp_ax, '-'), ('preconditioned_sharpness', sharp_ax, '--'),
                              ('hessian_trace', trace_ax, '-'), ('trace_sigma', noise_ax, '-'),
                              ('grad_sq', noise_ax, ':')):
      if metric in members.columns:
        v = np.asarray(r[metric], float)
        seen = np.isfinite(v)  # a monitor at its own cadence is NaN at the other evaluations
        if seen.any():  # (a column of another variant's members: all NaN here)
          ax.plot(t_eval[seen], v[seen], style, color=color, lw=1, marker='.', ms=3)
    shape = shape_windows(g)
    shape_ax.plot(shape['t_end'], shape['psd_tail'], '-', color=color, marker='.', ms=3)
    power_ax.plot(shape['t_end'], shape['resid_power'], ':', color=color, marker='x', ms=3)
  if (limit := threshold(cfg)) is not None:
    sharp_ax.axhline(limit[2], color='r', ls='-.', lw=0.8, label=f'stability threshold {limit[1]} = {limit[2]:.3g}')
  handles = [plt.Line2D([], [], color='grey', ls=s) for s in ('-', '--')]
  sharp_ax.legend(handles + sharp_ax.get_legend_handles_labels()[0],
                  ['λ_max(H)', 'λ_max(P⁻¹H) (Adam)'] + sharp_ax.get_legend_handles_labels()[1], fontsize=6)
  noise_ax.legend([plt.Line2D([], [], color='grey', ls=s) for s in ('-', ':')],
                  ['gradient variance Tr Σ (trace_sigma)', '|mean gradient|² (grad_sq)'], fontsize=6)
  shape_ax.legend([plt.Line2D([], [], color='grey', ls='-', marker='.'), plt.Line2D([], [], color='grey', ls=':',
                                                                                    marker='x')],
                  ['psd_tail (left)', 'resid_power (right)'], fontsize=6)
  loss_ax.legend(fontsize=5)
  slope_ax.legend(fontsize=6)
  loss_ax.set(xlabel='optimizer step', ylabel='loss (nats)',
              title='loss: power law (dashed), knee (dotted), elbow (dash-dot)')
  slope_ax.set(xlabel='optimizer step', ylabel='-d log L / d log t',
               title=f'local slope of the batch loss ({SLOPE_BINS} log-spaced bins)')
  sharp_ax.set(xlabel='optimizer step', ylabel='top Hessian eigenvalue', yscale='log', title='sharpness')
  trace_ax.set(xlabel='optimizer step', ylabel='Tr H (Hutchinson)', title='Hessian trace')
  noise_ax.set(xlabel='optimizer step', title='gradient noise (monitor batch)')
  noise_ax.set_yscale('symlog', linthresh=1e-2)  # grad_sq, an unbiased estimate, goes below 0 near a minimum
  shape_ax.set(xlabel='optimizer step (window end)', ylabel='PSD slope of log-loss residuals',
               title=f'loss shape over {WINDOW}-step windows')
  power_ax.set(ylabel='resid_power', yscale='log')
  for ax in axes.flat:
    ax.title.set_fontsize(9)
  model, optim = cfg['model'], cfg['optim']
  fig.suptitle(f"{name}: {model['name']} width {model['width']}, norm {model.get('norm', 'auto')}, {optim['name']} "
               f"lr {optim['lr']:g} wd {optim['wd']:g}; {len(members)} seed(s)", fontsize=10)
  return fig


def plot_all(out, fig_dir=None) -> list[Path]:
  """monitoring-<variant>.png for each variant and monitoring-summary.csv; nothing without a step table."""
  df = load(out)
  try:
    steps = results.load_steps(out)
  except FileNotFoundError:
    return []
  if 'step_loss' not in steps.columns:
    return []
  fig_dir = Path(fig_dir or out)
  fig_dir.mkdir(parents=True, exist_ok=True)
  table = summary(out)
  names = variant_names(df)
  paths = []
  for name, members in df.groupby(df['run_id'].map(names), sort=False):
    slug = name.lower().replace(', ', '-').replace(' ', '_')
    fig = variant_page(name, members.sort_values('seed'), steps, table)
    paths.append(save_constrained(fig, fig_dir / f'monitoring-{slug}.png'))
  table.to_csv(fig_dir / 'monitoring-summary.csv', index=False)
  return paths + [fig_dir / 'monitoring-summary.csv']


if __name__ == '__main__':
  main('plots.monitoring', __doc__, plot_all,
       nothing='has no step table (run with probes=step_metrics)')
