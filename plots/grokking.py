"""Grokking figures, analysis columns and report from a results directory.

  python -m plots.grokking RESULTS_DIR [--out DIR] [--report] [--threshold T] [--write]
                           [--drop-window EPOCHS] [--drop-min-fall F]

Writes curves.png (train and validation accuracy, or log2-MSE for regression, and loss against epoch, log x, per
member, memorisation and grokking epochs and the sudden validation drop marked), weight_norm.png (total and
last-layer weight norm against epoch with train-loss spikes marked), step_loss.png (the step table's train loss with
step-level spikes and the drop, where the run recorded probes=step_metrics) and grokking_vs_wd.png (grokking and
memorisation epoch against weight decay, log-log, with the fitted slope), from the analysis (ddjax.analysis:
grokking_summary, drop_summary, step_spikes per member) that the run stored or, where it has none, computed here.
The validation split is val where the run has one (data.val_per_group, data.val_split), else test. --write stores
the analysis as columns of results.parquet (the store is otherwise only read); --report writes report.md, a short
note with the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from ddjax import analysis, results
from ddjax.plugins import PluginError
from plots.common import (SEED_KEYS, OtherExperiment, add_plugin_option, check_store, incomplete, load, load_plugins,
                          plt, probe_figures, run_description, save, series_keys, wrapped)

WD = 'optim.wd'
ACC_THRESHOLD, LOSS_THRESHOLD = 0.99, 1.0


def is_regression(df: pd.DataFrame) -> bool:
  return 'train_error' not in df.columns


def held(df: pd.DataFrame) -> str:
  """The split the analysis reads as validation: val where the run has a validation split, else test."""
  return 'val' if 'val_loss' in df.columns else 'test'


def steps_of(out, df: pd.DataFrame) -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
  """run id -> (fractional epochs, step losses, steps per epoch) of the step table, for members that recorded one
  (probes=step_metrics). The table's epoch is the 1-based epoch a step belongs to; step s of epoch e is at epoch
  e - 1 + (s - steps before e) / (e's steps per epoch), from the member's epoch plan (timeline.epoch_plan: phases and
  a last epoch that stops part way end an epoch short), where the dataset's training size is known without loading;
  else e - 1 + k / n for the k-th of the epoch's n steps."""
  try:
    steps = results.load_sweep(Path(out), table='steps')
  except (FileNotFoundError, ValueError):
    return {}
  if not len(steps) or 'step_loss' not in steps.columns:
    return {}
  configs = dict(zip(df['run_id'], df['config'])) if 'config' in df.columns else {}
  out_ = {}
  for rid, g in steps.sort_values(['run_id', 'step']).groupby('run_id'):
    epoch, step = g['epoch'].to_numpy(int), g['step'].to_numpy(float)
    plan = _plan(configs.get(rid))
    if plan is not None and epoch.max() <= len(plan):
      first = np.array([p.first for p in plan], float)[epoch - 1]
      spe = np.array([p.steps_per_epoch for p in plan], float)[epoch - 1]
      frac, per_epoch = epoch - 1 + (step - first) / spe, int(np.median(spe))
    else:
      sizes = g.groupby('epoch')['step'].transform('size').to_numpy(float)
      frac, per_epoch = epoch - 1 + (g.groupby('epoch').cumcount().to_numpy() + 1) / sizes, int(np.median(sizes))
    out_[rid] = (frac, g['step_loss'].to_numpy(float), max(1, per_epoch))
  return out_


def _plan(config_json):
  """A member's epoch plan from its stored config (None where the training size needs the data loaded)."""
  if not isinstance(config_json, str):
    return None
  from ddjax import config as cfglib
  from ddjax.data.registry import train_examples
  from ddjax.timeline import epoch_plan
  try:
    cfg = cfglib.from_dict(json.loads(config_json))
    n = train_examples(cfg.data)
    return epoch_plan(cfg, n) if n else None
  except (ValueError, KeyError, cfglib.ConfigError):
    return None


def _metric(df: pd.DataFrame, row, split: str) -> np.ndarray:
  """Accuracy (classification) or loss (regression) curve of one member."""
  if is_regression(df):
    return np.asarray(row[f'{split}_loss'], float)
  return 1.0 - np.asarray(row[f'{split}_error'], float)


def analyse(out, threshold: float | None = None, write: bool = False, window: float | None = None,
            min_fall: float = 0.3) -> pd.DataFrame:
  """The results table with the grokking analysis of every member as columns: threshold crossings and
  evaluation-point spikes (grokking_summary), the sudden validation drop with the train-loss change across it from the
  step table (drop_summary; `window` epochs, default_window if None, falls of at least `min_fall`) and step-level
  spikes (step_spikes, over a running median of one epoch of steps); with `write` also stored in results.parquet
  (the experiment's own run does; a plot command only with --write). The validation split is val where the run has
  one, else test."""
  df = load(out)
  regress, split = is_regression(df), held(df)
  threshold = threshold if threshold is not None else LOSS_THRESHOLD if regress else ACC_THRESHOLD
  steps = steps_of(out, df)
  rows = []
  for _, r in df.iterrows():
    s = analysis.grokking_summary(r['epoch'], _metric(df, r, 'train'), _metric(df, r, split), r['train_loss'],
                                  r['weight_norm'], threshold=threshold, above=not regress)
    for name in dict.fromkeys((split, 'test')):
      s[f'final_{name}_loss'] = float(r[f'{name}_loss'][-1]) if len(r[f'{name}_loss']) else float('nan')
    if not regress:
      for name in dict.fromkeys((split, 'test')):
        s[f'final_{name}_accuracy'] = 1.0 - float(r[f'{name}_error'][-1]) if len(r[f'{name}_error']) else float('nan')
    s['grokking_threshold'] = threshold
    step_epochs, step_loss, per_epoch = steps.get(r['run_id'], (None, None, 1))
    s.update(analysis.drop_summary(r['epoch'], r[f'{split}_loss'], r['train_loss'], r['weight_norm'], step_epochs,
                                   step_loss, window, min_fall))
    if step_epochs is not None:
      s.update(analysis.step_spikes(step_epochs, step_loss, smooth=per_epoch))
    rows.append(s)
  columns = pd.DataFrame(rows, index=df.index)
  if write:
    results.add_columns(out, columns)
    return load(out)
  return results.with_columns(df, columns)


def analysed(out) -> pd.DataFrame:
  """The table with the analysis columns: as stored, or computed (not stored) where the store has none."""
  df = load(out)
  return df if 'grokking_epoch' in df.columns and 'drop_epoch' in df.columns else analyse(out)


def _label(df: pd.DataFrame, row, seeds: bool = True) -> str:
  """key=value for the swept keys (wd last), and with `seeds` the seeds that vary."""
  keys = [k for k in series_keys(df, '') if k != WD] + ([WD] if WD in df.columns else [])
  if seeds:
    keys += [k for k in SEED_KEYS if k in df.columns and df[k].nunique(dropna=False) > 1]
  return ', '.join(f'{k.split(".")[-1]}={row[k]:g}' if isinstance(row[k], float) else f'{k.split(".")[-1]}={row[k]}'
                   for k in dict.fromkeys(keys))


def _legend_labels(df: pd.DataFrame) -> dict:
  """run id -> legend label for the first member of each group of seeds (same keys but the seeds), else None."""
  groups = pd.Series([_label(df, r, seeds=False) for _, r in df.iterrows()], index=df['run_id'])
  sizes, first = groups.value_counts(), ~groups.duplicated()
  return {rid: ((g or 'all') + (f' ({sizes[g]} seeds)' if sizes[g] > 1 else '')) if first[rid] else None
          for rid, g in groups.items()}


def _colours(df: pd.DataFrame) -> dict:
  """One colour per weight decay (or per member when wd does not vary), ordered along viridis."""
  values = sorted(df[WD].unique()) if WD in df.columns else [0]
  cmap = plt.get_cmap('viridis')
  return {v: cmap(0.1 + 0.8 * i / max(1, len(values) - 1)) for i, v in enumerate(values)}


def curves(df: pd.DataFrame, path: Path) -> Path:
  regress, split = is_regression(df), held(df)
  colours = _colours(df)
  fig, (ax_m, ax_l) = plt.subplots(1, 2, figsize=(10, 3.8))
  labels = _legend_labels(df)
  for _, r in df.iterrows():
    c = colours[r[WD]]
    e = np.asarray(r['epoch'], float)
    label = labels[r['run_id']]
    ax_m.plot(e, _metric(df, r, 'train'), '--', color=c, lw=1)
    ax_m.plot(e, _metric(df, r, split), '-', color=c, lw=1.6, label=label, zorder=3)  # above the axis line
    ax_l.plot(e, r['train_loss'], '--', color=c, lw=1)
    ax_l.plot(e, r[f'{split}_loss'], '-', color=c, lw=1.3)
    if split == 'val':
      ax_l.plot(e, r['test_loss'], ':', color=c, lw=1)
    for ax in (ax_m, ax_l):
      if np.isfinite(r['memorisation_epoch']):
        ax.axvline(r['memorisation_epoch'], color=c, ls=':', lw=0.8)
      if np.isfinite(r['grokking_epoch']):
        ax.axvline(r['grokking_epoch'], color=c, ls='-.', lw=0.8)
    if np.isfinite(r.get('drop_epoch', np.nan)):  # the sudden validation drop: before -> after, at its epoch
      ax_l.plot([r['drop_epoch']] * 2, [r['drop_val_before'], r['drop_val_after']], '-', color=c, lw=3, alpha=0.5)
      ax_l.plot(r['drop_epoch'], r['drop_val_after'], 'v', color=c, mec='k', ms=7, zorder=4)
  name = 'log2-MSE' if regress else 'accuracy'
  ax_m.set(xscale='log', xlabel='epoch', ylabel=name,
           title=f'{name}: train (dashed), validation (solid); memorised (:) and grokked (-.)')
  if regress:
    ax_m.set_yscale('log')
  else:  # chance-level validation accuracy (1/p) must not sit on the axis line
    ax_m.set_ylim(-0.04, 1.04)
  ax_l.set(xscale='log', yscale='log', xlabel='epoch', ylabel='loss',
           title='loss: train (dashed), validation (solid)' + (', test (dotted)' if split == 'val' else '') +
           '; v: sudden validation drop')
  ax_l.title.set_fontsize(8)
  styles = [plt.Line2D([], [], color='grey', ls='--', lw=1, label='train'),
            plt.Line2D([], [], color='grey', ls='-', lw=1.6, label='validation')]
  ax_m.legend(handles=ax_m.get_legend_handles_labels()[0] + styles, fontsize=7, loc='best')
  ax_m.title.set_fontsize(8)
  fig.suptitle(wrapped(run_description(df), fig), fontsize=7)
  return save(fig, path)


def weight_norms(df: pd.DataFrame, path: Path) -> Path:
  colours = _colours(df)
  has_last = 'weight_norm_last' in df.columns
  fig, axes = plt.subplots(1, 2 if has_last else 1, figsize=(10 if has_last else 5.5, 3.6), squeeze=False)
  labels = _legend_labels(df)
  for _, r in df.iterrows():
    c = colours[r[WD]]
    e = np.asarray(r['epoch'], float)
    for ax, col in zip(axes[0], ('weight_norm', 'weight_norm_last')):
      y = np.asarray(r[col], float)
      ax.plot(e, y, color=c, lw=1.2, label=labels[r['run_id']])
      spikes = np.isin(e, r['spike_epochs'])
      ax.plot(e[spikes], y[spikes], 'v', color='crimson', ms=5)
      if np.isfinite(r.get('drop_epoch', np.nan)):
        ax.axvline(r['drop_epoch'], color=c, ls='--', lw=0.8)
  axes[0][0].set(xscale='log', xlabel='epoch', ylabel='||W||',
                 title='total weight norm (v: train-loss spikes, --: validation drop)')
  if has_last:
    axes[0][1].set(xscale='log', xlabel='epoch', ylabel='||W_last||', title='last-layer weight norm')
  axes[0][0].legend(fontsize=7)
  return save(fig, path)


def step_losses(df: pd.DataFrame, steps: dict, path: Path) -> Path:
  """The step table's train loss (a running median over an epoch of steps) per member, with its step-level spikes
  (x) and the sudden validation drop (a vertical line, its window shaded)."""
  colours, labels = _colours(df), _legend_labels(df)
  fig, ax = plt.subplots(figsize=(7, 3.8))
  for _, r in df.iterrows():
    if r['run_id'] not in steps:
      continue
    c = colours[r[WD]]
    e, loss, per_epoch = steps[r['run_id']]
    if per_epoch > 1 and len(loss) >= per_epoch:
      loss, e = np.median(np.lib.stride_tricks.sliding_window_view(loss, per_epoch), axis=-1), e[per_epoch - 1:]
    ax.plot(np.maximum(e, e[e > 0].min(initial=1e-3)), loss, '-', color=c, lw=0.8, label=labels[r['run_id']])
    spikes = np.asarray(r['step_spike_epochs'] if 'step_spike_epochs' in r else [], float)
    if len(spikes):
      ax.plot(spikes, np.interp(spikes, e, loss), 'x', color='crimson', ms=6)
    if np.isfinite(r.get('drop_epoch', np.nan)):
      ax.axvline(r['drop_epoch'], color=c, lw=1)
      ax.axvspan(r['drop_epoch'] - r['drop_window'], r['drop_epoch'] + r['drop_window'], color=c, alpha=0.08)
  ax.set(xscale='log', yscale='log', xlabel='epoch', ylabel='train loss (batch, running median over an epoch)',
         title='step-level train loss; x: spikes, |: sudden validation drop (its windows shaded)')
  ax.title.set_fontsize(8)
  ax.legend(fontsize=7)
  return save(fig, path)


def grokking_vs_wd(df: pd.DataFrame, path: Path) -> tuple[Path, float]:
  """Grokking (and memorisation) epoch against weight decay, log-log; returns the fitted slope of grokking."""
  fig, ax = plt.subplots(figsize=(5, 3.6))
  ok = df[np.isfinite(df['grokking_epoch']) & (df[WD] > 0)]
  ax.plot(df[WD], df['memorisation_epoch'], 's', color='grey', ms=4, label='memorisation')
  ax.plot(ok[WD], ok['grokking_epoch'], 'o', color='C0', ms=5, label='grokking')
  slope = float('nan')
  if ok[WD].nunique() >= 2:
    slope, icpt = np.polyfit(np.log(ok[WD]), np.log(ok['grokking_epoch']), 1)
    x = np.geomspace(ok[WD].min(), ok[WD].max(), 20)
    ax.plot(x, np.exp(icpt) * x ** slope, '-', color='C0', lw=1, label=f'fit: epoch ~ wd^{slope:.2f}')
  never = df[~np.isfinite(df['grokking_epoch'])]
  if len(never):
    top = np.nanmax(df['epoch'].map(lambda e: e[-1] if len(e) else np.nan))
    ax.plot(never[WD].clip(lower=1e-6), [top] * len(never), '^', color='crimson', ms=5,
            label='not grokked by the last epoch')
  ax.set(xscale='log', yscale='log', xlabel='weight decay', ylabel='epoch', title='grokking epoch against wd')
  ax.legend(fontsize=7)
  return save(fig, path), slope


def plot_all(out, dest: Path | None = None, table: pd.DataFrame | None = None) -> list[Path]:
  """The figures of `table` (default: analysed(out))."""
  df = analysed(out) if table is None else table
  dest = Path(dest or out)
  dest.mkdir(parents=True, exist_ok=True)
  paths = [curves(df, dest / 'curves.png'), weight_norms(df, dest / 'weight_norm.png')]
  if steps := steps_of(out, df):
    paths.append(step_losses(df, steps, dest / 'step_loss.png'))
  if WD in df.columns and df[WD].nunique() > 1:
    paths.append(grokking_vs_wd(df, dest / 'grokking_vs_wd.png')[0])
  return paths + probe_figures(out, dest)


def _fmt(v) -> str:
  return 'never' if isinstance(v, float) and not np.isfinite(v) else f'{v:g}' if isinstance(v, float) else str(v)


def summary_lines(df: pd.DataFrame) -> list[str]:
  """One line per member: crossings, spikes, the sudden validation drop and the final validation metric."""
  split = held(df)
  final = f'final_{split}_loss' if is_regression(df) else f'final_{split}_accuracy'
  final = final if final in df.columns else 'final_test_accuracy'  # a store analysed before validation splits
  out = []
  for _, r in df.iterrows():
    line = (f'{_label(df, r) or "member " + str(r["member"])}: memorised at epoch {_fmt(r["memorisation_epoch"])}, '
            f'grokked at epoch {_fmt(r["grokking_epoch"])}, {r["spike_count"]} train-loss spike(s)')
    if 'drop_epoch' in r and np.isfinite(r['drop_epoch']):
      line += (f', validation drop at epoch {r["drop_epoch"]:g} ({r["drop_val_before"]:.3g} -> '
               f'{r["drop_val_after"]:.3g}), train loss {r["drop_train_before"]:.3g} -> {r["drop_train_after"]:.3g}')
    elif 'drop_epoch' in r:
      line += ', no sudden validation drop'
    out.append(line + f', final validation {final.split("_", 2)[-1]} {r[final]:.4f}')
  return out


def write_report(out, dest: Path | None = None, table: pd.DataFrame | None = None) -> Path:
  """report.md in the structure of a short scientific note (plots/grokking_report.py)."""
  from plots.grokking_report import write
  df = analysed(out) if table is None else table
  return write(Path(out), Path(dest or out), df, plot_all(out, dest, df))


def main(argv=None):
  parser = argparse.ArgumentParser(prog='python -m plots.grokking', description=__doc__.split('\n\n')[0])
  parser.add_argument('results_dir', type=Path)
  parser.add_argument('--out', type=Path, help='where figures go (default: RESULTS_DIR)')
  parser.add_argument('--report', action='store_true', help='also write report.md, a short note: setup, results '
                      'per weight decay, figures, limitations')
  parser.add_argument('--threshold', type=float, help='accuracy (or log2-MSE) threshold of the analysis')
  parser.add_argument('--write', action='store_true', help='store the analysis as columns of results.parquet')
  parser.add_argument('--drop-window', type=float, help='epochs on each side of a sudden validation drop (default: '
                      '2%% of the run, at least two evaluation intervals)')
  parser.add_argument('--drop-min-fall', type=float, default=0.3,
                      help='smallest relative fall of the validation loss that counts as a drop (default 0.3)')
  add_plugin_option(parser)
  args = parser.parse_args(argv)
  try:
    check_store(args.results_dir, 'grokking')
    load_plugins(args)
    if note := incomplete(load(args.results_dir)):
      print(f'warning: {args.results_dir}: {note}', file=sys.stderr)
    # the run's own analysis, if it stored one, unless the options ask for another
    fresh = args.threshold is not None or args.write or args.drop_window is not None or args.drop_min_fall != 0.3
    table = (analyse(args.results_dir, args.threshold, args.write, args.drop_window, args.drop_min_fall) if fresh
             else analysed(args.results_dir))
  except (FileNotFoundError, PluginError, OtherExperiment) as e:
    parser.exit(2, f'error: {e}\n')
  for line in summary_lines(table):
    print(line)
  for path in plot_all(args.results_dir, args.out, table):
    print(f'figure: {path}')
  if args.report:
    print(f'report: {write_report(args.results_dir, args.out, table)}')


if __name__ == '__main__':
  main()
