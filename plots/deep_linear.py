"""Figures of a deep-linear-network run (experiments.deep_linear).

  python -m plots.deep_linear RESULTS_DIR [--out DIR]

Writes
- loss.png: train and test loss against optimizer steps, the mean over seeds with a 95% bootstrap band, one line per
  combination of the other swept keys;
- modes.png: each member's strength along the teacher's modes, mode_r / s_r, against t = 2 lr x steps (gradient-flow
  time of the loss ||y - W x||^2, which has no 1/2; with SGD momentum beta the step is lr / (1 - beta); warmup and
  schedules are not counted), one panel per combination of swept keys (seeds overlaid), one colour per mode. For
  two-layer students (model.depth=1) trained by SGD, the dashed lines are Saxe et al.'s balanced-mode solution
  (ddjax.analysis.saxe_mode) started from the mode's mean |strength| over seeds at the first evaluation, for the
  modes the student's width can hold;
- learning_times.png: the time t at which mode r first reaches half of s_r, against s_r, log-log, mean over seeds
  (from a small init, t is about ln(s / u0) / (2 s)).
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np

from ddjax import analysis
from ddjax.plotting import bootstrap_band
from ddjax import config as cfglib
from plots.common import LINE_STYLES, load, main, plt, probe_figures, save, series_keys


def modes(df) -> list[int]:
  """The recorded mode numbers r (columns mode_1, mode_2, ...)."""
  return sorted(int(c.split('_')[1]) for c in df.columns if c.startswith('mode_') and c.split('_')[1].isdigit())


def flow_time(row) -> np.ndarray:
  """t = 2 lr x optimizer steps at each evaluation of a member (one step per epoch at full batch), with the
  heavy-ball step lr / (1 - momentum) for SGD."""
  cfg = json.loads(row['config'])
  n_train = cfglib.train_examples(cfglib.DataConfig(**cfg['data']))
  steps = 1 if not cfg['train']['batch_size'] else n_train // cfg['train']['batch_size']
  lr = row['optim.lr'] / (1 - row['optim.momentum']) if cfg['optim']['name'] == 'sgd' else row['optim.lr']
  return 2.0 * lr * steps * np.asarray(row['epoch'], float)


def half_times(g, r: int) -> np.ndarray:
  """Per member of g: the first t at which mode r reaches half of its singular value (NaN if it never does)."""
  return np.asarray([analysis.crossing_epoch(flow_time(row), row[f'mode_{r}'], 0.5 * row[f'teacher_s{r}'])
                     for _, row in g.iterrows()])


def _two_layer_sgd(g) -> bool:
  """Every member is a two-layer student (depth 1) trained by SGD: Saxe et al.'s solution applies."""
  configs = g['config'].map(json.loads)
  return bool(configs.map(lambda c: c['model']['depth'] == 1 and c['optim']['name'] == 'sgd').all())


def mean_half_times(g, rs) -> list[float]:
  """Per mode: the mean over members of half_times (NaN if no member reaches half strength)."""
  times = [half_times(g, r) for r in rs]
  return [float(np.nanmean(t)) if np.isfinite(t).any() else np.nan for t in times]


def panels(df) -> tuple[list[tuple[str, object]], int]:
  """(label, rows) per combination of the swept keys other than seeds, in rows of the first key's values (the
  columns), and the number of columns."""
  keys = series_keys(df, 'seed')
  if not keys:
    return [('', df)], 1
  order = keys[1:] + keys[:1]  # the first key varies fastest: along a row
  groups = []
  for vals, g in df.groupby(order):
    value = dict(zip(order, vals))
    groups.append((', '.join(f'{k}={value[k]}' for k in keys), g))
  return groups, df[keys[0]].nunique()


def mode_curves(df, path: Path) -> Path:
  groups, ncols = panels(df)
  nrows = math.ceil(len(groups) / ncols)
  fig, axes = plt.subplots(nrows, ncols, figsize=(3.3 * ncols, 2.6 * nrows), squeeze=False)
  rs = modes(df)
  for ax, (label, g) in zip(axes.flat, groups):
    for r in rs:
      colour = f'C{(r - 1) % 10}'
      for i, (_, row) in enumerate(g.iterrows()):
        s = row[f'teacher_s{r}']
        ax.plot(flow_time(row), np.asarray(row[f'mode_{r}']) / s, color=colour, lw=1, alpha=0.7,
                label=f'mode {r} (s = {s:g})' if i == 0 else None)
      if _two_layer_sgd(g) and r <= g['model.width'].min():
        t = flow_time(g.iloc[0])
        u0 = float(np.mean([abs(v[0]) for v in g[f'mode_{r}']]))
        s = g.iloc[0][f'teacher_s{r}']
        if 0 < u0 < s:
          ax.plot(t, analysis.saxe_mode(t - t[0], s, u0) / s, '--', color='k', lw=0.8)
    ax.set(xscale='log', xlabel='t = 2 lr × steps', ylabel='strength / s', title=label or 'all members',
           ylim=(-0.05, 1.1))
    ax.title.set_fontsize(8)
  for ax in axes.flat[len(groups):]:
    ax.axis('off')
  axes.flat[0].legend(fontsize=6, loc='upper left')
  fig.suptitle("Strength of the teacher's modes, every seed (dashed: Saxe et al.'s two-layer solution)")
  return save(fig, path)


def learning_times(df, path: Path) -> Path:
  fig, ax = plt.subplots(figsize=(4.6, 3.6))
  rs = modes(df)
  for (label, g), style, colour in zip(panels(df)[0], itertools.cycle(LINE_STYLES), itertools.cycle(
      [f'C{i}' for i in range(10)])):
    s = [g.iloc[0][f'teacher_s{r}'] for r in rs]
    ax.plot(s, mean_half_times(g, rs), style, marker='o', ms=3, color=colour, lw=1, label=label or 'all members')
  s_all = np.asarray([df.iloc[0][f'teacher_s{r}'] for r in rs])
  reached = any(np.isfinite(np.asarray(line.get_ydata(), float)).any() for line in ax.lines)
  if not reached:
    ax.text(0.5, 0.5, 'no mode reached half strength', ha='center', transform=ax.transAxes)
  ax.set(xscale='log', yscale='log' if reached else 'linear', xlabel='singular value s', ylabel='t at half strength',
         title='Time to learn each mode (mean over seeds)')
  ax.set_xticks(s_all, [f'{v:g}' for v in s_all])
  ax.minorticks_off()
  ax.legend(fontsize=6)
  return save(fig, path)


def loss_curves(df, path: Path) -> Path:
  """loss_figure, saved to `path`."""
  fig = loss_figure(df)
  fig.savefig(path, bbox_inches='tight')
  plt.close(fig)
  return path


def loss_figure(df):
  """Train and test loss against optimizer steps, the mean over seeds with its 95% bootstrap band, one line per
  combination of the other swept keys (colour, then line style), named in one legend beside the panels."""
  groups = panels(df)[0]
  fig, axes = plt.subplots(1, 2, figsize=(10.5, 3.8))
  handles = []
  for i, (label, g) in enumerate(groups):
    colour, style = f'C{i % 10}', LINE_STYLES[(i // 10) % len(LINE_STYLES)]
    steps = np.asarray(g.iloc[0]['step'], float)
    for ax, metric in zip(axes, ('train_loss', 'test_loss')):
      curves = np.stack([np.asarray(v, float)[:len(steps)] for v in g[metric] if len(v) >= len(steps)])
      lo, hi = bootstrap_band(curves)
      line, = ax.plot(steps, np.nanmean(curves, axis=0), style, color=colour, lw=1.2,
                      label=f'{label or "all members"} ({len(curves)} runs)')
      ax.fill_between(steps, lo, hi, color=colour, alpha=0.25, lw=0)
    handles.append(line)
  for ax, metric in zip(axes, ('train loss', 'test loss')):
    ax.set(xscale='log', yscale='log', xlabel='optimizer steps', ylabel=metric,
           title=f'{metric}: mean over seeds, 95% band')
  fig.legend(handles=handles, loc='upper left', bbox_to_anchor=(1.0, 0.95), fontsize=6 if len(groups) > 6 else 7,
             frameon=False)
  fig.tight_layout()
  return fig


def summary_lines(out) -> list[str]:
  """Per combination of swept keys: each mode's mean time to half strength, whether the modes came in order of
  singular value, the final test loss and the imbalance at the first and last evaluation."""
  df = load(out)
  rs = modes(df)
  if not rs:
    return ['no mode strengths recorded (model.name=deep_linear on data.name=linear_teacher records them)']
  lines = []
  for label, g in panels(df)[0]:
    t = mean_half_times(g, rs)
    s = ', '.join(f'{g.iloc[0][f"teacher_s{r}"]:g}' for r in rs)
    done = [v for v in t if np.isfinite(v)]
    order = 'in order of s' if done == sorted(done) else 'not in order of s'
    test = np.mean([v[-1] for v in g['test_loss']])
    imb = [np.mean([v[i] for v in g['imbalance']]) for i in (0, -1)]
    lines.append(f'{label or "all members"}: modes (s = {s}) at half strength at t = '
                 f'{", ".join("never" if not np.isfinite(v) else f"{v:.3g}" for v in t)} ({order}; mean over '
                 f'{len(g)}); final test loss {test:.3g}; imbalance {imb[0]:.3g} -> {imb[1]:.3g}')
  return lines


def plot_all(out, fig_dir=None) -> list[Path]:
  """loss.png, and modes.png and learning_times.png if the run recorded mode strengths (and the figures of its other
  probes)."""
  df = load(out)
  fig_dir = Path(fig_dir or out)
  fig_dir.mkdir(parents=True, exist_ok=True)
  figures = [loss_curves(df, fig_dir / 'loss.png')]
  if modes(df):
    figures += [mode_curves(df, fig_dir / 'modes.png'), learning_times(df, fig_dir / 'learning_times.png')]
  return figures + probe_figures(out, fig_dir)


if __name__ == '__main__':
  main('plots.deep_linear', __doc__, plot_all, experiment='deep_linear',
       nothing='holds no mode strengths (a deep_linear run on a linear teacher)')
