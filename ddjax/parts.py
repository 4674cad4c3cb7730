"""Reading a store's part files, and the columns of rows that an older ddjax wrote without them (filled as the rows
after them have them), so a store of any version reads as one table."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from ddjax import config as cfglib


def read_parts(out: Path, prefix: str) -> pd.DataFrame | None:
  # Oldest first (then by name), so that keeping the last of duplicated rows keeps the newest.
  files = sorted((Path(out) / 'parts').glob(f'{prefix}-*.parquet'), key=lambda f: (f.stat().st_mtime_ns, f.name))
  frames = [pq.read_table(f).to_pandas() for f in files]
  frames = [f for f in frames if len(f)]
  return pd.concat(frames, ignore_index=True) if frames else None


def newest(members: pd.DataFrame) -> pd.DataFrame:
  """Each run id's row of its newest attempt (attempts are start times in ns; within one, the completed row):
  independent of file times, so a copied store reads the same."""
  if 'attempt' in members.columns:
    done = members['complete'].astype(bool) if 'complete' in members.columns else False
    members = members.assign(_done=done).sort_values(['attempt', '_done'], kind='stable').drop(columns='_done')
  return members.drop_duplicates('run_id', keep='last')


def later_defaults(frame: pd.DataFrame) -> pd.DataFrame:
  """Rows written before a key existed (config.LATER_KEYS) read it at its default, like the rows after; so does
  their `config` (a member's whole config, which later rows write with every key)."""
  for key, default in cfglib.LATER_KEYS.items():
    if key in frame.columns:
      frame[key] = frame[key].where(frame[key].notna(), default)
  if 'config' in frame.columns:
    now = set(cfglib.flatten(cfglib.to_dict(cfglib.Config())))
    complete = lambda c: set(cfglib.flatten(json.loads(c))) >= now - {'probe'}
    frame['config'] = [c if not isinstance(c, str) or complete(c) else cfglib.to_json(cfglib.from_dict(json.loads(c)))
                       for c in frame['config']]
  return frame


def older_steps(curves: pd.DataFrame, members: pd.DataFrame) -> pd.DataFrame:
  """Evaluation rows written before rows carried `step` get it from the member's config (epoch x optimizer steps per
  epoch), where the config tells the training set's size; `time_s` stays missing."""
  if 'step' in curves.columns and curves['step'].notna().all():
    return curves
  per_epoch = {}
  for run_id, config in members[['run_id', 'config']].values:
    cfg = cfglib.flatten(json.loads(config))
    known = {f.name for f in dataclasses.fields(cfglib.DataConfig)}
    data = cfglib.DataConfig(**{k[5:]: v for k, v in cfg.items() if k.startswith('data.') and k[5:] in known})
    try:
      n = cfglib.train_examples(data)
    except (KeyError, ValueError):  # a dataset no longer registered
      n = None
    batch = cfg.get('train.batch_size', 0)
    per_epoch[run_id] = np.nan if n is None else (n // batch if batch else 1)
  if 'step' in curves.columns:  # where the config cannot tell (cifar10), the run's newer rows can
    newer = curves[curves['step'].notna() & (curves['epoch'] % 1 == 0) & (curves['epoch'] > 0)]
    for run_id, spe in (newer['step'] / newer['epoch']).groupby(newer['run_id']).first().items():
      if np.isnan(per_epoch.get(run_id, 0.0)):
        per_epoch[run_id] = spe
  old = curves['epoch'] * curves['run_id'].map(per_epoch)
  curves['step'] = curves['step'].fillna(old) if 'step' in curves.columns else old
  return curves


def older_recorded_probes(members: pd.DataFrame) -> pd.DataFrame:
  """Rows written before `recorded_probes` existed get what those runs recorded: the base probes, those the train.*
  keys switched on and those that switch themselves on for the member's model and data."""
  from ddjax.data.registry import DATASETS
  from ddjax.nn.registry import MODELS
  from ddjax.probes import PROBES, Setting

  def older(config: str) -> str:
    flat = cfglib.flatten(json.loads(config))
    names = [n for n, p in PROBES.items() if p.always]
    names += [ns[0] for key, (ns, _) in cfglib.PROBE_ALIASES.items() if key != 'train.monitor_batch' and flat.get(key)]
    model, data = MODELS.get(flat.get('model.name')), DATASETS.get(flat.get('data.name'))
    if model is not None and data is not None:
      modes = int(model.linear and data.task == 'regress')  # deep linear networks on a teacher recorded modes
      setting = Setting(data.task, model.linear, modes, flat.get('optim.name', ''))
      names += [n for n, p in PROBES.items() if p.auto is not None and p.auto(setting) is not None]
    return ','.join(names)

  if 'recorded_probes' not in members.columns:
    members = members.assign(recorded_probes=None)
  missing = members['recorded_probes'].isna()
  if missing.any():
    members.loc[missing, 'recorded_probes'] = members.loc[missing, 'config'].map(older)
  return members


SEEDS_RESOLVED = ('model.seed', 'train.batch_seed', 'data.noise_seed')  # each is `seed` where it is None
FINAL = ('train_loss', 'train_error', 'test_loss', 'test_error', 'test_error_noisy', 'val_loss',
         'val_error')  # the base probes' curves


def explained(table: pd.DataFrame) -> pd.DataFrame:
  """The columns a reader asks for beside the stored ones: `<seed key>_resolved`, the seed each member used (the key,
  or `seed` where it is None, so a `--rerun model.seed=S` reads off the table); `attempt_time`, the attempt's start
  as UTC time (`attempt` is its nanoseconds); `final_<curve>`, the last recorded value of each base curve (NaN
  before the first evaluation). A column of that name already there is kept."""
  new = {}
  if 'seed' in table.columns:
    for key in SEEDS_RESOLVED:
      if key in table.columns and f'{key}_resolved' not in table.columns:
        new[f'{key}_resolved'] = table[key].where(table[key].notna(), table['seed']).astype('Int64')
  if 'attempt' in table.columns and 'attempt_time' not in table.columns:
    new['attempt_time'] = pd.to_datetime(table['attempt'], unit='ns', utc=True, errors='coerce')
  for curve in FINAL:
    if curve in table.columns and f'final_{curve}' not in table.columns:
      new[f'final_{curve}'] = table[curve].map(_last_finite)
  return table.assign(**new) if new else table


def _last_finite(values) -> float:
  v = np.asarray(values if values is not None else [], float)
  v = v[np.isfinite(v)]
  return float(v[-1]) if len(v) else float('nan')
