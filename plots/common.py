"""Shared plotting helpers: load a results directory, split members into series, paper-style figures."""

from __future__ import annotations

import argparse
import itertools
import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use('Agg')
import matplotlib as mpl  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ddjax import config as cfglib  # noqa: E402
from ddjax import plugins, results  # noqa: E402
from ddjax.store import experiment_of  # noqa: E402, F401 - plots read it from here too

SEED_KEYS = ('seed', 'model.seed', 'train.batch_seed', 'data.noise_seed')

plt.rcParams.update({'figure.dpi': 150, 'savefig.dpi': 150, 'font.size': 9, 'axes.grid': True,
                     'grid.alpha': 0.3, 'axes.spines.top': False, 'axes.spines.right': False})


def load(out) -> pd.DataFrame:
  return results.load(Path(out))


def series_keys(df: pd.DataFrame, x: str) -> list[str]:
  """Config keys other than x and seeds that take more than one value: one line each."""
  keys = []
  config_keys = cfglib.fields(cfglib.Config())
  for c in df.columns:
    if c not in config_keys or c in SEED_KEYS or c == x:
      continue
    if df[c].nunique(dropna=False) > 1:
      keys.append(c)
  return keys


def series(df: pd.DataFrame, x: str) -> list[tuple[str, pd.DataFrame]]:
  """(label, rows) for each combination of the series_keys' values, e.g. ('data.noise=0.1', ...); one ('', df)
  if only x and seeds vary."""
  keys = series_keys(df, x)
  if not keys:
    return [('', df)]
  return [(', '.join(f'{k}={v}' for k, v in zip(keys, vals if isinstance(vals, tuple) else (vals,))), g)
          for vals, g in df.groupby(keys if len(keys) > 1 else keys[0])]


def width_epoch_grid(g: pd.DataFrame, x: str, metric: str):
  """(x values, epochs, metric[epoch, x]) averaged over the members at each x (seeds); NaN where none has every
  epoch."""
  widths = np.sort(g[x].unique())
  epochs = np.asarray(g['epoch'].iloc[0], float)
  grid = np.full((len(epochs), len(widths)), np.nan)
  for j, w in enumerate(widths):
    rows = [np.asarray(v, float) for v in g.loc[g[x] == w, metric] if len(v) == len(epochs)]
    if rows:
      grid[:, j] = np.mean(rows, axis=0)
  return widths, epochs, grid


def final(df: pd.DataFrame, metric: str) -> pd.Series:
  """The metric at each member's last evaluation that recorded it (NaN before the first; a probe with a cadence of
  its own is NaN at the other evaluations)."""
  def last(v):
    v = np.asarray(v, float)
    v = v[np.isfinite(v)] if len(v) else v
    return float(v[-1]) if len(v) else np.nan
  return df[metric].map(last)


def run_description(df: pd.DataFrame) -> str:
  """What a store trained, for a figure's subtitle: data (training examples), label noise, model, optimizer and
  learning rate, batch, epochs; a key that differs between members reads 'swept'."""
  import json
  configs = [json.loads(c) for c in df['config']] if 'config' in df.columns and len(df) else []
  if not configs:
    return ''

  def value(section, key, fmt=str):
    values = {json.dumps(c[section][key]) for c in configs}
    return fmt(configs[0][section][key]) if len(values) == 1 else f'{section}.{key} swept'

  data = configs[0]['data']
  n = cfglib.train_examples(cfglib.from_dict(configs[0]).data)
  noise = value('data', 'noise', lambda v: f'{v:.0%} label noise' if v else 'no label noise')
  optimizer = value('optim', 'name')
  if 'swept' not in optimizer:
    optimizer += f" lr {value('optim', 'lr', lambda v: f'{v:g}')}"
  subsets = {json.dumps(c['data'].get('subset')) for c in configs}  # data.subset: members' own training sets
  train = (f' (subsets of {n:,} train)' if len(subsets) > 1 else f" ({configs[0]['data']['subset']:,} of {n:,} train)"
           if data.get('subset') else f' ({n:,} train)') if n else ''
  return (f"{data['name']}{train}, {noise}, {value('model', 'name')}, {optimizer}, batch "
          f"{value('train', 'batch_size', lambda v: str(v or 'full'))}, {value('train', 'epochs', lambda v: f'{v:,}')} "
          'epochs')


def wrapped(title: str, fig, fontsize: float = 7) -> str:
  """A subtitle broken into lines that fit the figure's width at `fontsize` points."""
  import textwrap
  chars = int(0.9 * fig.get_figwidth() * 72 / (0.6 * fontsize))  # a character up to 0.6 em wide; a 10% margin
  return textwrap.fill(title, max(chars, 40))


def mean_spread(df: pd.DataFrame, x: str, values: pd.Series):
  """x values, mean and standard deviation over the members (seeds) at each x."""
  g = values.groupby(df[x])
  return np.asarray(g.mean().index), g.mean().to_numpy(), g.std(ddof=0).fillna(0).to_numpy()


LINE_STYLES = ('-', '--', ':', '-.')


def width_curves(df: pd.DataFrame, panels, title: str, x: str = 'model.width'):
  """Metrics against epoch on a log axis, a panel per (metric, panel title, y scale) in rows of three, one line
  per width (colour, mean over seeds) and per value of any other swept key (line style), with a width colour bar:
  (figure, {metric: axes}). Save it with save_constrained."""
  widths = np.sort(df[x].unique())
  norm = mpl.colors.LogNorm(widths.min(), max(widths.max(), widths.min() + 1))
  groups = series(df, x)
  ncols = min(3, len(panels))
  nrows = math.ceil(len(panels) / ncols)
  fig, axes = plt.subplots(nrows, ncols, figsize=(max(10 * ncols / 3, 5), 2.8 * nrows), layout='constrained',
                           squeeze=False)
  for ax, (metric, panel_title, yscale) in zip(axes.flat, panels):
    for style, (label, g) in zip(itertools.cycle(LINE_STYLES), groups):
      group_widths, epochs, grid = width_epoch_grid(g, x, metric)
      for w, curve in zip(group_widths, grid.T):
        seen = np.isfinite(curve)  # a probe with a cadence of its own is NaN at the other evaluations
        ax.plot(epochs[seen], curve[seen], style, color=plt.cm.viridis(norm(w)), lw=1, marker='.' if
                seen.sum() < 3 else None, ms=3)
    ax.set(xscale='log', yscale=yscale, title=panel_title, xlabel='epoch')
    ax.title.set_fontsize(9)
  for ax in axes.flat[len(panels):]:
    ax.axis('off')
  if len(groups) > 1:  # which line style is which series
    handles = [mpl.lines.Line2D([], [], color='grey', ls=style) for style, _ in zip(itertools.cycle(LINE_STYLES),
                                                                                      groups)]
    axes.flat[0].legend(handles, [label for label, _ in groups], fontsize=6)
  bar = fig.colorbar(mpl.cm.ScalarMappable(norm=norm, cmap='viridis'), ax=axes, label='width', shrink=0.6)
  ticks = [w for i, w in enumerate(widths) if i == 0 or w >= 1.3 * widths[i - 1]]  # trained widths, not crowded
  bar.set_ticks(ticks, labels=[f'{w:g}' for w in ticks])
  bar.ax.minorticks_off()
  fig.suptitle(title)
  return fig, {metric: ax for ax, (metric, _, _) in zip(axes.flat, panels)}


def save_constrained(fig, path: Path) -> Path:
  """Saves a figure laid out by constrained layout (save()'s tight_layout would not fit a shared colour bar)."""
  fig.savefig(path)
  plt.close(fig)
  return path


def save(fig, path: Path) -> Path:
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
  return path


def add_plugin_option(parser: argparse.ArgumentParser) -> None:
  parser.add_argument('--plugin', action='append', default=[], metavar='FILE.py',
                      help='import FILE.py first (the store\'s own plugins, from its run.json, are imported anyway)')


def load_plugins(args) -> None:
  """The --plugin files (a bad one raises plugins.PluginError, one line), then the plugins the store was run with:
  figures read the table, not the models, so one that is missing is only a warning."""
  plugins.load_all(args.plugin)
  try:
    plugins.load_recorded(args.results_dir)
  except plugins.PluginError as e:
    print(f'warning: {e}', file=sys.stderr)


def probe_figures(out, fig_dir=None) -> list[Path]:
  """The figures of the probes whose columns the run recorded (ProbeSpec.figure: a module with plot_all), each
  module once; an experiment's plots add them after its own."""
  import importlib
  from ddjax.probes import PROBES
  columns = set(load(out).columns)
  modules = dict.fromkeys(p.figure for p in PROBES.values() if p.figure and columns & set(p.columns))
  return [path for module in modules for path in importlib.import_module(module).plot_all(out, fig_dir)]


class OtherExperiment(ValueError):
  """A plot command given a store that another experiment wrote."""


def check_store(out, experiment: str) -> None:
  """Raises OtherExperiment (one line: which experiment wrote it, the command that draws it) unless `out` was written
  by `experiment` or cannot tell."""
  wrote = experiment_of(out)
  if wrote is not None and wrote != experiment and wrote not in READS.get(experiment, ()):
    where = Path(out).parent if wrote == 'representations' else out  # a part of the study's directory
    raise OtherExperiment(f'{out} holds a {wrote} run, not a {experiment} one: its figures are '
                          f'{plot_command(wrote)} {where}')


READS = {'double_descent': ('representations',)}  # plots that also draw another experiment's stores (its parts)


def plot_command(experiment: str) -> str:
  """How to draw an experiment's figures, as a hint prints it: `ddjax plot` under the ddjax command, else this
  interpreter (its full path: it has the packages) with -m plots.NAME."""
  import os
  import shlex
  if os.environ.get('DDJAX_COMMAND'):
    return f"{shlex.quote(os.environ['DDJAX_COMMAND'])} plot"
  return f'{shlex.quote(sys.executable)} -m plots.{experiment}'


def incomplete(df: pd.DataFrame) -> str:
  """'' where every member completed, else what "final" means in a figure of this store: the members still
  incomplete and the epoch their last evaluation reached."""
  if 'complete' not in df.columns or df['complete'].astype(bool).all():
    return ''
  import json
  open_rows = df[~df['complete'].astype(bool)]
  reached = [float(np.asarray(e)[-1]) for e in open_rows['epoch'] if len(e)]
  total = json.loads(df['config'].iloc[0])['train']['epochs'] if 'config' in df.columns else '?'
  return (f'incomplete: {len(open_rows)} of {len(df)} members stopped at epoch {min(reached, default=0):g} of '
          f'{total}, and "final" is their last evaluation')


def main(module: str, doc: str, plot_all, nothing: str | None = None, experiment: str | None = None) -> None:
  """The command line of a plotting module, `python -m MODULE RESULTS_DIR [--out DIR]`: prints the figures that
  plot_all(results_dir, out) wrote; `nothing` is the error when it wrote none. With `experiment`, a store another
  experiment wrote is a one-line error, and an incomplete store a one-line warning."""
  parser = argparse.ArgumentParser(prog=f'python -m {module}', description=doc.split('\n')[0])
  parser.add_argument('results_dir', type=Path)
  parser.add_argument('--out', type=Path, help='where to write the figures (default: RESULTS_DIR)')
  add_plugin_option(parser)
  args = parser.parse_args()
  try:
    if experiment:
      check_store(args.results_dir, experiment)
    load_plugins(args)
    if experiment and (note := incomplete(load(args.results_dir))):
      print(f'warning: {args.results_dir}: {note}', file=sys.stderr)
    paths = plot_all(args.results_dir, args.out)
  except (FileNotFoundError, plugins.PluginError, OtherExperiment) as e:
    parser.exit(2, f'error: {e}\n')
  if not paths and nothing:
    parser.exit(2, f'error: {args.results_dir} {nothing}\n')
  for path in paths:
    print(path)
