"""Figures of the representations study (experiments.representations) from its stores DIR/modelwise, DIR/epochwise
and DIR/projector (those that exist).

  python -m plots.representations DIR [--out FIGDIR]

Writes summary.png (the study's overview: double descent, NC1 against width, NC against d, the layer-pair CKA
heatmap, drift, cross-seed CKA) and one figure per experiment: modelwise.png (Exp 1: final test error and NC1-NC4
against width), epochwise.png (Exp 2: test error and NC1 against epoch), projector.png (Exp 3: NC1-NC4 against the
feature dimension d, d = K - 1 marked) and cka.png (Exp 4: 4A heatmaps, 4B drift, 4C cross-seed). Values are each
member's last recorded ones, the mean over seeds where several; NC columns as docs/representations.md maps them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from plots.common import final, load, main, mean_spread, plt, save, save_constrained
from plots.double_descent import _width_axis

PARTS = ('modelwise', 'epochwise', 'projector')
NC = (('nc1_trace', 'NC1  Tr(Σ_W) / Tr(Σ_B)', 'log'), ('nc2_etf', 'NC2  ‖G/‖G‖ − ETF/‖ETF‖‖', 'linear'),
      ('nc3', 'NC3  ‖Ŵ − M̂‖', 'linear'), ('nc4', 'NC4  nearest class centre ≠ network', 'linear'))
OPTIM_STYLE = {'sgd': '-', 'adam': '--', 'adamw': ':'}


def stores(out) -> dict:
  """{part: its results table} for the parts of `out` that hold a results.parquet."""
  return {p: with_keys(load(Path(out) / p)) for p in PARTS if (Path(out) / p / 'results.parquet').exists()}


def layers(df) -> list[str]:
  """The tap points the CKA probes compared per layer (probe.cka.layer or probe.drift.layer A/B/...; one layer
  writes no per-layer columns: none)."""
  probe = json.loads(df['config'].iloc[0]).get('probe', {})
  text = probe.get('cka', {}).get('layer') or probe.get('drift', {}).get('layer') or ''
  names = [name for name in text.split('/') if name]
  return names if len(names) > 1 else []


def describe(df) -> str:
  """What a part trained on, for titles: data, training examples, noise, epochs."""
  cfg = json.loads(df['config'].iloc[0])
  data, train = cfg['data'], cfg['train']
  n = round(data.get('num_samples', 0) * data.get('train_split', 0))
  return (f"{data['name'].upper().replace('MNIST1D', 'MNIST-1D')} ({n:,} train), {data['noise']:.0%} label noise, "
          f"batch {train['batch_size']}, {train['epochs']:,} epochs")


def with_keys(df, keys=('model.name', 'optim.name', 'optim.lr', 'model.width', 'model.proj', 'seed')):
  """The table with a column for each of `keys` (a key that was not swept is only in each member's config)."""
  configs = df['config'].map(json.loads)
  missing = {k: configs.map(lambda c, k=k: c[k.split('.')[0]][k.split('.')[1]] if '.' in k else c[k])
             for k in keys if k not in df.columns}
  return df.assign(**missing) if missing else df


def runs(df):
  """(model, optimizer label, optimizer name, rows) for each model and optimizer of a part."""
  for (model, name, lr), g in df.groupby(['model.name', 'optim.name', 'optim.lr'], sort=False):
    yield model, f'{name.upper() if name == "sgd" else name.capitalize()} lr {lr:g}', name, g


def against(df, x: str, metric: str):
  """x values and the mean (and sd over seeds) of each member's last recorded metric at each."""
  return mean_spread(df, x, final(df, metric)) if metric in df.columns else (np.array([]),) * 3


def layer_pairs(df, small: int, large: int) -> np.ndarray:
  """4A: the L x L linear CKA of the width-`small` member's layer i against the width-`large` member's layer j (the
  first seed), at the last epoch the probe ran: the columns cka_w{large}_{i}_{j}."""
  names = layers(df)
  rows = df[df['model.width'] == small].sort_values('seed')
  if rows.empty:
    return np.full((len(names), len(names)), np.nan)
  row = rows.iloc[:1]
  return np.array([[final(row, f'cka_w{large}_{a}_{b}').iloc[0] if f'cka_w{large}_{a}_{b}' in df.columns else np.nan
                    for b in names] for a in names])


def drift(df, width: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
  """4B: the epochs the drift probe ran at and each layer's CKA against epoch 1, mean over the members of `width`."""
  rows = df[df['model.width'] == width]
  curves = {}
  epochs = np.array([])
  for name in layers(df):
    column = f'drift_cka_{name}'
    if column not in df.columns or rows.empty:
      continue
    values = np.array([np.asarray(v, float) for v in rows[column]])
    seen = np.isfinite(values).all(0)
    epochs = np.asarray(rows['epoch'].iloc[0], float)[seen]
    curves[name] = values[:, seen].mean(0)
  return epochs, curves


def seed_pairs(df, width: int) -> dict[tuple[int, int], dict[str, float]]:
  """4C: {(seed a, seed b): {layer: CKA}} between the members of `width` that differ only in their seed."""
  rows = df[df['model.width'] == width]
  out = {}
  for _, r in rows.iterrows():
    for _, o in rows.iterrows():
      if r['seed'] < o['seed'] and f"cka_seed{o['seed']}_{layers(df)[0]}" in df.columns:
        one = r.to_frame().T
        out[int(r['seed']), int(o['seed'])] = {n: float(final(one, f"cka_seed{o['seed']}_{n}").iloc[0])
                                               for n in layers(df)}
  return out


def study_widths(df) -> tuple[int, int, int]:
  """The widths 4A compares (probe.cka.widths: small/large) and the width with the most seeds (4C)."""
  probe = json.loads(df['config'].iloc[0]).get('probe', {})
  pair = [int(w) for w in str(probe.get('cka', {}).get('widths', '')).split('/') if w]
  widths = sorted(df['model.width'].unique())
  small, large = (pair + [widths[0], widths[-1]])[:2] if len(pair) != 1 else (pair[0], widths[-1])
  seeds = df.groupby('model.width')['seed'].nunique()
  most = [w for w, n in seeds.items() if n == seeds.max()]  # a tie: the one nearest half the largest (32 of 64)
  return small, large, int(min(most, key=lambda w: (abs(np.log2(w / max(widths[-1] / 2, 1))), -w)))


def modelwise_figure(df, path: Path) -> Path:
  models = list(dict.fromkeys(df['model.name']))
  fig, axes = plt.subplots(len(models), 1 + len(NC), figsize=(15, 2.9 * len(models)), squeeze=False)
  for model, label, name, g in runs(df):
    row = axes[models.index(model)]
    style = OPTIM_STYLE.get(name, '-')
    for metric, color, what in (('test_error', 'C0', 'test'), ('train_error', 'C1', 'train (noisy labels)')):
      x, mean, sd = against(g, 'model.width', metric)
      row[0].plot(x, mean, style, color=color, marker='o', ms=3, label=f'{what}, {label}')
      row[0].fill_between(x, mean - sd, mean + sd, color=color, alpha=0.15, lw=0)
    for ax, (metric, _, _) in zip(row[1:], NC):
      x, mean, _ = against(g, 'model.width', metric)
      ax.plot(x, mean, style, color='C2', marker='o', ms=3, label=label)
  for r, model in enumerate(models):
    axes[r, 0].set(title=f'{model}: error at the last epoch', ylabel='error')
    axes[r, 0].legend(fontsize=6)
    for ax, (_, title, scale) in zip(axes[r, 1:], NC):
      ax.set(title=f'{model}: {title}', yscale=scale)
      ax.legend(fontsize=6)
    for ax in axes[r]:
      _width_axis(ax, df['model.width'])
      ax.title.set_fontsize(8)
      ax.set_xlabel('width w')
  fig.suptitle(f'Exp 1, model-wise: final test error and neural collapse of the features against width; '
               f'{describe(df)}; mean over seeds')
  return save(fig, path)


def epochwise_figure(df, path: Path) -> Path:
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
  for model, label, name, g in runs(df):
    for i, (w, wg) in enumerate(g.groupby('model.width')):
      epochs = np.asarray(wg['epoch'].iloc[0], float)
      for ax, metric in zip(axes, ('test_error', 'nc1_trace')):
        if metric not in wg.columns:
          continue
        values = np.mean([np.asarray(v, float) for v in wg[metric]], axis=0)  # over seeds
        seen = np.isfinite(values)
        ax.plot(epochs[seen], values[seen], OPTIM_STYLE.get(name, '-'), color=f'C{i}', label=f'w = {w}, {label}')
  axes[0].set(xscale='log', xlabel='epoch', ylabel='test error (clean labels)', title='test error')
  axes[1].set(xscale='log', yscale='log', xlabel='epoch', ylabel='NC1', title='NC1  Tr(Σ_W) / Tr(Σ_B) of the features')
  axes[0].legend(fontsize=6)
  fig.suptitle(f"Exp 2, epoch-wise: {df['model.name'].iloc[0]}, a critical and a large width; {describe(df)}; "
               'mean over seeds')
  return save(fig, path)


def projector_figure(df, path: Path, k: int = 10) -> Path:
  fig, axes = plt.subplots(1, 1 + len(NC), figsize=(15, 3.0))
  for _, label, name, g in runs(df):
    style = OPTIM_STYLE.get(name, '-')
    for ax, metric in zip(axes, ('test_error',) + tuple(m for m, _, _ in NC)):
      x, mean, _ = against(g, 'model.proj', metric)
      ax.plot(x, mean, style, marker='o', ms=3, color='C3', label=label)
  for ax, (title, scale) in zip(axes, [('test error (clean labels)', 'linear')] + [(t, s) for _, t, s in NC]):
    ax.axvline(k - 1, color='grey', ls=':', lw=1, label=f'd = K − 1 = {k - 1}')
    ax.set(xlabel='projector dimension d', title=title, yscale=scale)
    ax.title.set_fontsize(8)
  axes[0].legend(fontsize=6)
  fig.suptitle(f"Exp 3, generalised neural collapse: {df['model.name'].iloc[0]} at width "
               f"{df['model.width'].iloc[0]}, features projected to d dimensions (one vectorised run); "
               f'{describe(df)}')
  return save(fig, path)


def _heatmap(ax, matrix, names, small, large, title):
  image = ax.imshow(matrix, vmin=0, vmax=1, cmap='magma', origin='lower')
  ax.set_xticks(range(len(names)), names, fontsize=6)
  ax.set_yticks(range(len(names)), names, fontsize=6)
  ax.set(xlabel=f'layer of width {large}', ylabel=f'layer of width {small}', title=title)
  ax.grid(False)
  for (i, j), v in np.ndenumerate(matrix):
    ax.text(j, i, f'{v:.2f}', ha='center', va='center', fontsize=6, color='white' if v < 0.6 else 'black')
  ax.title.set_fontsize(8)
  return image


def _drift_axes(ax, df, width, title):
  epochs, curves = drift(df, width)
  for i, (name, values) in enumerate(curves.items()):
    ax.plot(epochs, values, marker='o', ms=3, color=plt.cm.viridis(i / max(len(curves) - 1, 1)), label=name)
  ax.set(xscale='log', xlabel='epoch', ylabel='CKA with epoch 1', title=title)
  ax.legend(fontsize=6)
  ax.title.set_fontsize(8)


def _seed_axes(ax, df, width, title):
  pairs = seed_pairs(df, width)
  names = layers(df)
  for i, ((a, b), values) in enumerate(pairs.items()):
    ax.bar(np.arange(len(names)) + (i - (len(pairs) - 1) / 2) * 0.8 / max(len(pairs), 1),
           [values[n] for n in names], 0.8 / max(len(pairs), 1), label=f'seeds {a} & {b}')
  ax.set_xticks(range(len(names)), names, fontsize=6)
  ax.set(ylim=(0, 1.05), ylabel='linear CKA', title=title)
  ax.legend(fontsize=6)
  ax.title.set_fontsize(8)


def cka_figure(df, path: Path) -> Path:
  small, large, seeded = study_widths(df)
  groups = list(runs(df))
  fig, axes = plt.subplots(len(groups), 3, figsize=(12, 3.2 * len(groups)), squeeze=False, layout='constrained')
  for row, (model, label, _, g) in zip(axes, groups):
    image = _heatmap(row[0], layer_pairs(g, small, large), layers(df), small, large,
                     f'4A {model}, {label}: w = {small} vs {large}')
    _drift_axes(row[1], g, large, f'4B drift at w = {large}')
    _seed_axes(row[2], g, seeded, f'4C across seeds at w = {seeded}')
  fig.colorbar(image, ax=axes[:, 0].tolist(), shrink=0.6, label='linear CKA', location='left')
  fig.suptitle(f'Exp 4, linear CKA on {_cka_batch(df)} fixed training examples; {describe(df)}')
  return save_constrained(fig, path)


def _cka_batch(df) -> int:
  return json.loads(df['config'].iloc[0]).get('probe', {}).get('cka', {}).get('batch', 256)


def summary_figure(parts: dict, path: Path) -> Path:
  fig, axes = plt.subplots(2, 3, figsize=(13, 7))
  (dd, nc, proj), (heat, drift_ax, seeds) = axes
  if (df := parts.get('modelwise')) is not None:
    small, large, seeded = study_widths(df)
    model = df['model.name'].iloc[0]
    first = df[df['model.name'] == model]
    for _, label, name, g in runs(first):
      for metric, color in (('test_error', 'C0'), ('train_error', 'C1')):
        x, mean, _ = against(g, 'model.width', metric)
        dd.plot(x, mean, OPTIM_STYLE.get(name, '-'), color=color, marker='o', ms=3,
                label=f"{'test' if metric == 'test_error' else 'train (noisy)'}, {label}")
      x, mean, _ = against(g, 'model.width', 'nc1_trace')
      nc.plot(x, mean, OPTIM_STYLE.get(name, '-'), color='C2', marker='o', ms=3, label=label)
    dd.set(title=f'double descent, {model}', ylabel='error at the last epoch')
    nc.set(title=f'NC1 of the features, {model}', yscale='log')
    for ax in (dd, nc):
      _width_axis(ax, df['model.width'])
      ax.set_xlabel('width w')
      ax.legend(fontsize=6)
    model, label, _, g = next(runs(first))
  if df is not None and layers(df):
    image = _heatmap(heat, layer_pairs(g, small, large), layers(df), small, large,
                     f'layer-pair CKA, w = {small} vs {large} ({label})')
    fig.colorbar(image, ax=heat, shrink=0.8)
    _drift_axes(drift_ax, g, large, f'drift from epoch 1, w = {large} ({label})')
    _seed_axes(seeds, g, seeded, f'CKA across seeds, w = {seeded} ({label})')
  if (df := parts.get('projector')) is not None:
    for _, label, name, g in runs(df):
      for metric, color in (('nc1_trace', 'C2'), ('nc2_etf', 'C4')):
        x, mean, _ = against(g, 'model.proj', metric)
        proj.plot(x, mean, OPTIM_STYLE.get(name, '-'), color=color, marker='o', ms=3,
                  label=f"{'NC1' if metric == 'nc1_trace' else 'NC2 (ETF)'}, {label}")
    proj.axvline(9, color='grey', ls=':', lw=1, label='d = K − 1')
    proj.set(title=f"NC against feature dimension d (w = {df['model.width'].iloc[0]})", xlabel='d', yscale='log')
    proj.legend(fontsize=6)
  for ax in axes.flat:
    ax.title.set_fontsize(8)
    if not ax.has_data():  # a part that was not run
      ax.axis('off')
  first = next(iter(parts.values()))
  data = describe(first).rsplit(', ', 1)[0]
  fig.suptitle(f'Double descent, neural collapse and CKA; {data}; '
               + ', '.join(f"{p}: {describe(d).rsplit(', ', 1)[1]}" for p, d in parts.items()))
  return save(fig, path)


def summary_lines(out) -> list[str]:
  """The measured numbers the study's expectations are read against, one line each."""
  from ddjax.analysis import double_descent_peak
  parts, lines = stores(out), []
  if (df := parts.get('modelwise')) is not None:
    small, large, seeded = study_widths(df)
    for model, label, _, g in runs(df):
      x, test, _ = against(g, 'model.width', 'test_error')
      _, train, _ = against(g, 'model.width', 'train_error')
      _, nc1, _ = against(g, 'model.width', 'nc1_trace')
      peak = double_descent_peak(x, test)
      interp = x[train < 0.01]
      shape = (f'minimum {peak.min_y:.3f} at w={peak.min_x:g}, peak {peak.peak_y:.3f} at w={peak.peak_x:g}, '
               f'{peak.last_y:.3f} at w={peak.last_x:g}' if peak else 'no interior peak')
      lines.append(f'{model}, {label}: test error {shape}; train error < 1% from w={interp[0] if len(interp) else "-"}'
                   f"; NC1 {' '.join(f'{v:.3g}' for v in nc1)} at w={'/'.join(f'{w:g}' for w in x)}")
      epochs, curves = drift(g, large)
      if curves:
        lines.append(f'  drift at w={large}, epoch {epochs[-1]:g}: '
                     + ', '.join(f'{n} {v[-1]:.3f}' for n, v in curves.items()))
      if pairs := seed_pairs(g, seeded):
        mean = {n: np.mean([p[n] for p in pairs.values()]) for n in layers(df)}
        lines.append(f'  CKA across seeds at w={seeded}: ' + ', '.join(f'{n} {v:.3f}' for n, v in mean.items()))
  if (df := parts.get('projector')) is not None:
    for _, label, _, g in runs(df):
      d, nc1, _ = against(g, 'model.proj', 'nc1_trace')
      _, nc2, _ = against(g, 'model.proj', 'nc2_etf')
      lines.append(f'projector, {label}: d={"/".join(f"{v:g}" for v in d)}: NC1 '
                   f"{' '.join(f'{v:.3g}' for v in nc1)}; NC2 {' '.join(f'{v:.3f}' for v in nc2)}")
  return lines


def plot_all(out, fig_dir=None) -> list[Path]:
  parts = stores(out)
  if not parts:
    return []
  fig_dir = Path(fig_dir or out)
  fig_dir.mkdir(parents=True, exist_ok=True)
  paths = [summary_figure(parts, fig_dir / 'summary.png')]
  if 'modelwise' in parts:
    paths.append(modelwise_figure(parts['modelwise'], fig_dir / 'modelwise.png'))
    if layers(parts['modelwise']):
      paths.append(cka_figure(parts['modelwise'], fig_dir / 'cka.png'))
  if 'epochwise' in parts:
    paths.append(epochwise_figure(parts['epochwise'], fig_dir / 'epochwise.png'))
  if 'projector' in parts:
    paths.append(projector_figure(parts['projector'], fig_dir / 'projector.png'))
  return paths


if __name__ == '__main__':
  main('plots.representations', __doc__, plot_all,
       nothing='holds none of modelwise/, epochwise/, projector/ (python -m experiments.representations --out DIR)')
