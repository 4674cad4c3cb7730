"""Grokking figures, analysis columns and report from a results directory.

  python -m plots.grokking RESULTS_DIR [--out DIR] [--report] [--threshold T] [--write]

Writes curves.png (train and validation accuracy, or log2-MSE for regression, and loss against epoch, log x, per
member, memorisation and grokking epochs marked), weight_norm.png (total and last-layer weight norm against epoch
with train-loss spikes marked) and grokking_vs_wd.png (grokking and memorisation epoch against weight decay,
log-log, with the fitted slope), from the analysis (ddjax.analysis.grokking_summary per member) that the run stored
or, where it has none, computed here; --write stores it as columns of results.parquet (the store is otherwise only
read); --report writes report.md with the figures and a table.
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


def _metric(df: pd.DataFrame, row, split: str) -> np.ndarray:
  """Accuracy (classification) or loss (regression) curve of one member."""
  if is_regression(df):
    return np.asarray(row[f'{split}_loss'], float)
  return 1.0 - np.asarray(row[f'{split}_error'], float)


def analyse(out, threshold: float | None = None, write: bool = False) -> pd.DataFrame:
  """The results table with the grokking analysis of every member as columns; with `write` also stored in
  results.parquet (the experiment's own run does; a plot command only with --write)."""
  df = load(out)
  regress = is_regression(df)
  threshold = threshold if threshold is not None else LOSS_THRESHOLD if regress else ACC_THRESHOLD
  rows = []
  for _, r in df.iterrows():
    s = analysis.grokking_summary(r['epoch'], _metric(df, r, 'train'), _metric(df, r, 'test'), r['train_loss'],
                                  r['weight_norm'], threshold=threshold, above=not regress)
    s['final_test_loss'] = float(r['test_loss'][-1]) if len(r['test_loss']) else float('nan')
    if not regress:
      s['final_test_accuracy'] = 1.0 - float(r['test_error'][-1]) if len(r['test_error']) else float('nan')
    s['grokking_threshold'] = threshold
    rows.append(s)
  columns = pd.DataFrame(rows, index=df.index)
  if write:
    results.add_columns(out, columns)
    return load(out)
  return results.with_columns(df, columns)


def analysed(out) -> pd.DataFrame:
  """The table with the analysis columns: as stored, or computed (not stored) where the store has none."""
  df = load(out)
  return df if 'grokking_epoch' in df.columns else analyse(out)


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
  regress = is_regression(df)
  colours = _colours(df)
  fig, (ax_m, ax_l) = plt.subplots(1, 2, figsize=(10, 3.8))
  labels = _legend_labels(df)
  for _, r in df.iterrows():
    c = colours[r[WD]]
    e = np.asarray(r['epoch'], float)
    label = labels[r['run_id']]
    ax_m.plot(e, _metric(df, r, 'train'), '--', color=c, lw=1)
    ax_m.plot(e, _metric(df, r, 'test'), '-', color=c, lw=1.6, label=label, zorder=3)  # above the axis line
    ax_l.plot(e, r['train_loss'], '--', color=c, lw=1)
    ax_l.plot(e, r['test_loss'], '-', color=c, lw=1.3)
    for ax in (ax_m, ax_l):
      if np.isfinite(r['memorisation_epoch']):
        ax.axvline(r['memorisation_epoch'], color=c, ls=':', lw=0.8)
      if np.isfinite(r['grokking_epoch']):
        ax.axvline(r['grokking_epoch'], color=c, ls='-.', lw=0.8)
  name = 'log2-MSE' if regress else 'accuracy'
  ax_m.set(xscale='log', xlabel='epoch', ylabel=name,
           title=f'{name}: train (dashed), validation (solid); memorised (:) and grokked (-.)')
  if regress:
    ax_m.set_yscale('log')
  else:  # chance-level validation accuracy (1/p) must not sit on the axis line
    ax_m.set_ylim(-0.04, 1.04)
  ax_l.set(xscale='log', yscale='log', xlabel='epoch', ylabel='loss', title='loss: train (dashed), validation (solid)')
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
  axes[0][0].set(xscale='log', xlabel='epoch', ylabel='||W||', title='total weight norm (v: train-loss spikes)')
  if has_last:
    axes[0][1].set(xscale='log', xlabel='epoch', ylabel='||W_last||', title='last-layer weight norm')
  axes[0][0].legend(fontsize=7)
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
  if WD in df.columns and df[WD].nunique() > 1:
    paths.append(grokking_vs_wd(df, dest / 'grokking_vs_wd.png')[0])
  return paths + probe_figures(out, dest)


def _fmt(v) -> str:
  return 'never' if isinstance(v, float) and not np.isfinite(v) else f'{v:g}' if isinstance(v, float) else str(v)


def summary_lines(df: pd.DataFrame) -> list[str]:
  final = 'final_test_loss' if is_regression(df) else 'final_test_accuracy'
  return [f'{_label(df, r) or "member " + str(r["member"])}: memorised at epoch {_fmt(r["memorisation_epoch"])}, '
          f'grokked at epoch {_fmt(r["grokking_epoch"])}, {r["spike_count"]} train-loss spike(s), '
          f'final validation {final.split("_", 2)[-1]} {r[final]:.4f}' for _, r in df.iterrows()]


def write_report(out, dest: Path | None = None, table: pd.DataFrame | None = None) -> Path:
  """report.md: the setup, a table per member, the fitted wd slope and the figures (of `table`, default
  analysed(out))."""
  out = Path(out)
  dest = Path(dest or out)
  df = analysed(out) if table is None else table
  figures = plot_all(out, dest, df)
  regress = is_regression(df)
  cfg = json.loads((out / 'run.json').read_text())['config'] if (out / 'run.json').exists() else {}
  final = 'final_test_loss' if regress else 'final_test_accuracy'
  metric = 'log2-MSE' if regress else 'accuracy'
  lines = ['# Grokking report', '',
           f"Data: {cfg.get('data', {}).get('name', '?')} {_setup(cfg)}; members: {len(df)}; "
           f"device: {df['device'].iloc[0]}; wall time {df['wall_time_s'].max():.0f} s.", '',
           f'Memorisation / grokking epoch: first evaluation where the train / validation {metric} reaches '
           f"{df['grokking_threshold'].iloc[0]:g} (validation at or after memorisation). Spikes: train loss above "
           f'10x its running minimum (and above 1e-3).', '',
           f'| member | memorisation epoch | grokking epoch | gap | spikes | spikes with a validation jump | '
           f'final validation {metric} |', '|---|---|---|---|---|---|---|']
  for _, r in df.iterrows():
    lines.append(f'| {_label(df, r) or r["member"]} | {_fmt(r["memorisation_epoch"])} | '
                 f'{_fmt(r["grokking_epoch"])} | {_fmt(r["grokking_gap"])} | {r["spike_count"]} | '
                 f'{r["spikes_with_val_jump"]} | {r[final]:.4f} |')
  if WD in df.columns and df[WD].nunique() > 1:
    _, slope = grokking_vs_wd(df, dest / 'grokking_vs_wd.png')
    lines += ['', f'Grokking epoch against weight decay: fitted slope {slope:.2f} on log-log axes '
                  '(-1 is time proportional to 1/wd).']
  lines += [''] + [f'![{p.stem}]({p.name})' for p in figures]
  path = dest / 'report.md'
  results.atomic_write_bytes(path, lambda tmp: Path(tmp).write_text('\n'.join(lines) + '\n'))
  return path


def _setup(cfg: dict) -> str:
  d, m, o, t = (cfg.get(k, {}) for k in ('data', 'model', 'optim', 'train'))
  data = f"op {d.get('op')} mod {d.get('p')}, train fraction {d.get('train_split')}" if d.get('name') == 'modular' \
      else f"groups {d.get('groups')}, {d.get('num_samples')} codes per group" if d.get('name') == 'mheight' else ''
  batch = 'full batch' if not t.get('batch_size') else f"batch {t.get('batch_size')}"
  return (f"({data}); model {m.get('name')} width {m.get('width')}; {o.get('name')} lr {o.get('lr')}, "
          f"{batch}, {t.get('epochs')} epochs")


def main(argv=None):
  parser = argparse.ArgumentParser(prog='python -m plots.grokking', description=__doc__.split('\n\n')[0])
  parser.add_argument('results_dir', type=Path)
  parser.add_argument('--out', type=Path, help='where figures go (default: RESULTS_DIR)')
  parser.add_argument('--report', action='store_true', help='also write report.md')
  parser.add_argument('--threshold', type=float, help='accuracy (or log2-MSE) threshold of the analysis')
  parser.add_argument('--write', action='store_true', help='store the analysis as columns of results.parquet')
  add_plugin_option(parser)
  args = parser.parse_args(argv)
  try:
    check_store(args.results_dir, 'grokking')
    load_plugins(args)
    if note := incomplete(load(args.results_dir)):
      print(f'warning: {args.results_dir}: {note}', file=sys.stderr)
    fresh = args.threshold is not None or args.write  # else the run's own analysis, if it stored one
    table = analyse(args.results_dir, args.threshold, write=args.write) if fresh else analysed(args.results_dir)
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
