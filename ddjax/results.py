"""Results on disk: atomic Parquet part files during a run, one `results.parquet` (a row per member) at the end.

Layout of an output directory:
  run.json                  resolved config, sweep, package versions, device (written before training)
  parts/members-J.parquet   job J's members: their keys, bucket and metadata (one row per member)
  parts/curves-J-S.parquet  job J's metrics at the evaluations up to optimizer step S since the previous part (a row
                            per member and evaluation; long form; written at least every train.flush_seconds)
  parts/steps-J-S.parquet   job J's step table up to optimizer step S (step probes: a row per member and recorded
                            step, float32), flushed with the curves
  results.parquet           one row per member: scalar keys, list columns for curves, `diverged`, metadata
  steps.parquet             the step table of every member (when step probes ran), written with results.parquet

Every file is written to a temporary name, fsynced and renamed, so a kill at any moment leaves readable files.
`load(dir)` reads results.parquet, or assembles the same table from the part files of a run still going.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from ddjax import config as cfglib
from ddjax.atomic import atomic_write_bytes, write_json, write_table  # noqa: F401 - part of this module's API
from ddjax.parts import explained, later_defaults, newest, older_recorded_probes, older_steps, read_parts

# Evaluation columns the engine writes that are kept as their last value (a scalar per member), not as a curve: a
# member's divergence and, with train.keep_best, its best epoch. Probes declare their own (ProbeSpec.last_only).
ENGINE_LAST_ONLY = ('diverged', 'diverged_step', 'best_epoch', 'best_test_loss')


def write_members(out: Path, job_id: str, rows: list[dict[str, Any]]) -> None:
  write_table(Path(out) / 'parts' / f'members-{job_id}.parquet', pa.Table.from_pylist(rows))


def write_curves(out: Path, job_id: str, step: int, rows: list[dict[str, Any]]) -> None:
  """Evaluation rows up to optimizer step `step`; a probe that did not run at a row (its cadence) leaves its columns
  null there, and `epoch` is fractional where a row falls within an epoch."""
  columns = list(dict.fromkeys(k for r in rows for k in r))
  fractional = any(isinstance(r['epoch'], float) for r in rows)
  table = pa.Table.from_pylist([{k: float(r[k]) if k == 'epoch' and fractional else r.get(k) for k in columns}
                                for r in rows])
  write_table(Path(out) / 'parts' / f'curves-{job_id}-{step:012d}.parquet', table)


def write_steps(out: Path, job_id: str, step: int, columns: dict[str, np.ndarray]) -> None:
  write_table(Path(out) / 'parts' / f'steps-{job_id}-{step:012d}.parquet', pa.table(columns))


def append_history(out: Path, record: dict[str, Any]) -> None:
  """One line per invocation of a sweep on this store (sweeps.jsonl), flushed and fsynced."""
  with open(Path(out) / 'sweeps.jsonl', 'a') as f:
    f.write(json.dumps({'time': time.strftime('%Y-%m-%dT%H:%M:%S'), **record}, sort_keys=True, default=str) + '\n')
    f.flush()
    os.fsync(f.fileno())


def member_status(out: Path) -> dict[str, tuple[int, bool]]:
  """Run id -> (start time in ns of its newest attempt in this store, whether that attempt finished)."""
  members = read_parts(out, 'members')
  if members is None or 'attempt' not in members.columns:
    return {}
  members = newest(members)
  return dict(zip(members['run_id'], zip(members['attempt'].astype('int64'), members['complete'].astype(bool))))


def recorded_probes(out: Path) -> dict[str, set[str]]:
  """Run id -> the probes its newest attempt recorded."""
  members = read_parts(out, 'members')
  if members is None:
    return {}
  members = older_recorded_probes(newest(members))
  return {r: set(filter(None, names.split(','))) for r, names in members[['run_id', 'recorded_probes']].values}


def complete_ids(out: Path) -> set[str]:
  """Run ids of the members whose training finished in this store."""
  return {r for r, (_, done) in member_status(out).items() if done}


def newest_attempts(out: Path) -> dict[str, int]:
  """Run id -> the start time (ns) of its newest attempt in this store."""
  return {r: attempt for r, (attempt, _) in member_status(out).items()}


def unfinished_start(out: Path, record: dict[str, Any]) -> int | None:
  """The start (ns) of the newest invocation on this store that trained what `record` trains (the same
  `invocation`) and did not finish (it was interrupted), or None."""
  path = Path(out) / 'sweeps.jsonl'
  if invocation(record) is None or not path.exists():
    return None
  entries = []
  for line in path.read_text().splitlines():
    try:
      entries.append(json.loads(line))
    except ValueError:  # a line cut off by a kill
      continue
  finished = {e['finished_ns'] for e in entries if 'finished_ns' in e}
  same = [e for e in entries if 'start_ns' in e and invocation(e) == invocation(record)]
  if same and same[-1]['start_ns'] not in finished:
    return int(same[-1]['start_ns'])
  return None


def invocation(record: dict[str, Any]) -> str | None:
  """An invocation's identity, from its run record (as sweeps.jsonl holds it): what it trains (config.what_trains:
  no execution-only keys, the sweep in any order) and its --rerun filter. A continuation on another machine, with
  more memory, more workers, the sweep in another order or the same keys from a config file, is the same
  invocation. None without a recorded --rerun filter."""
  if 'config' not in record or 'rerun' not in record:
    return None
  trains = cfglib.what_trains(record['config'], record.get('sweep', {}), record.get('zip', []), record.get('contents'))
  return json.dumps([trains, _rerun_conditions(record['rerun'])], sort_keys=True, default=str)


def _rerun_conditions(items: list[str]) -> list:
  """--rerun items in a canonical form, sorted (key, sorted values) per item: the same filter written in another
  order or notation (`seed=2,1`, `seed=1..2`) is the same invocation."""
  try:
    conditions = cfglib.rerun_conditions(items)
  except cfglib.ConfigError:  # a record of an older ddjax's keys: compared as written
    return sorted(items)
  return sorted((k, sorted(map(json.dumps, vs))) for k, vs in conditions)


def assemble(out: Path) -> pd.DataFrame:
  """One row per member from the part files: member columns plus a list column per curve.

  A member appears once, by run id: its newest attempt (a --rerun replaces older rows). Curves keep the rows of
  that attempt, each evaluation epoch once (a resumed run recomputes those written after its checkpoint). Parts
  with different metrics or float widths unify: missing metrics are NaN, floats widen to float64."""
  members = read_parts(out, 'members')
  if members is None:
    raise FileNotFoundError(f'no results in {out}: neither results.parquet nor part files')
  members = older_recorded_probes(later_defaults(newest(members)))
  curves = read_parts(out, 'curves')
  if curves is None:
    table = members.assign(epoch=[[] for _ in range(len(members))])
    return table.sort_values(['job', 'member']).reset_index(drop=True)
  curves = older_steps(curves.merge(members[['run_id', 'attempt']], on=['run_id', 'attempt']), members)
  at = curves['step'].fillna(-curves['epoch'])  # each evaluation once, by step (by epoch where a step is unknown)
  curves = curves.assign(_at=at).drop_duplicates(['run_id', '_at'], keep='last').sort_values(['run_id', 'epoch'])
  curves = curves.drop(columns='_at')
  from ddjax.probes import PROBES
  best = tuple(f'best_{m}' for m in cfglib.choices_of(cfglib.fields(cfglib.Config())['train.best_metric'])
               if f'best_{m}' not in ENGINE_LAST_ONLY)
  last_only = ENGINE_LAST_ONLY + best + tuple(c for p in PROBES.values() for c in p.last_only)
  scalars = [c for c in last_only if c in curves.columns]
  metric_cols = [c for c in curves.columns if c not in ('run_id', 'attempt')]
  for c in metric_cols:
    if curves[c].dtype.kind == 'f':
      curves[c] = curves[c].astype('float64')
  lists = curves.groupby('run_id', sort=True)[metric_cols].agg(list).reset_index()
  last = curves.groupby('run_id', sort=True)[scalars].last().reset_index()
  lists = lists.drop(columns=scalars).merge(last, on='run_id')
  table = members.merge(lists, on='run_id', how='left')
  for c in metric_cols:  # members not yet evaluated: empty curves
    if c not in scalars:
      table[c] = table[c].map(lambda v: v if isinstance(v, list) else [])
  return table.sort_values(['job', 'member']).reset_index(drop=True)


def assemble_steps(out: Path, members: pd.DataFrame | None = None) -> pd.DataFrame | None:
  """The step table from the part files: the rows of each member's newest attempt, each step once (a resumed run
  recomputes the steps after its checkpoint); None if no step probe ran."""
  steps = read_parts(out, 'steps')
  if steps is None:
    return None
  members = newest(read_parts(out, 'members')) if members is None else members
  steps = steps.merge(members[['run_id', 'attempt']], on=['run_id', 'attempt'])
  return steps.drop_duplicates(['run_id', 'step'], keep='last').sort_values(['run_id', 'step']).reset_index(drop=True)


def load_steps(out: Path) -> pd.DataFrame:
  """The step table of a store (steps.parquet, or the part files of a run still going), with the derived columns
  step_loss_bits (step_loss / ln 2) and step_wd (the member's optim.wd)."""
  out = Path(out)
  parts = sorted((out / 'parts').glob('steps-*.parquet'))
  path = out / 'steps.parquet'
  if path.exists() and (not parts or path.stat().st_mtime >= max(p.stat().st_mtime for p in parts)):
    steps = pd.read_parquet(path)
  else:
    steps = assemble_steps(out)
  if steps is None:
    raise FileNotFoundError(f'{out} has no step table: no step probe ran (probes=step_metrics records one)')
  if 'step_loss' in steps.columns:
    steps['step_loss_bits'] = (steps['step_loss'] / np.log(2.0)).astype(np.float32)
  wd = {r: cfglib.flatten(json.loads(c)).get('optim.wd') for r, c in load(out)[['run_id', 'config']].values}
  steps['step_wd'] = steps['run_id'].map(wd).astype(np.float32)
  return steps


def compact(out: Path) -> Path:
  """Writes results.parquet (and steps.parquet, when step probes ran) from the part files (atomically) and returns
  results.parquet's path."""
  steps = assemble_steps(out)
  if steps is not None:
    write_table(Path(out) / 'steps.parquet', pa.Table.from_pandas(steps, preserve_index=False))
  table = assemble(out)
  path = Path(out) / 'results.parquet'
  write_table(path, pa.Table.from_pandas(table, preserve_index=False))
  return path


def with_columns(table: pd.DataFrame, columns: pd.DataFrame) -> pd.DataFrame:
  """`table` with per-member `columns` (indexed like its rows) added, replacing columns of the same names."""
  return table.drop(columns=[c for c in columns.columns if c in table.columns]).join(columns)


def add_columns(out: Path, columns: pd.DataFrame) -> Path:
  """Writes per-member columns (indexed like load(out)'s rows, e.g. analysis results) into results.parquet,
  replacing columns of the same names; atomically."""
  table = with_columns(load(out), columns)
  path = Path(out) / 'results.parquet'
  write_table(path, pa.Table.from_pandas(table, preserve_index=False))
  return path


def load(out: Path) -> pd.DataFrame:
  """The results table of a finished or running output directory, with the columns parts.explained derives
  (`python -m ddjax.results describe DIR` says what each column is)."""
  out = Path(out)
  parts = sorted((out / 'parts').glob('*.parquet'))
  results = out / 'results.parquet'
  if results.exists() and (not parts or results.stat().st_mtime >= max(p.stat().st_mtime for p in parts)):
    table = pd.read_parquet(results)  # written by any version: its older columns read as assemble's do
    return explained(older_recorded_probes(later_defaults(table))) if 'config' in table.columns else table
  return explained(assemble(out))


def load_sweep(out: Path, backend: str = 'pandas', table: str = 'results', long: bool = False):
  """A table of a sweep store (finished or still going) as a pandas or polars DataFrame: `results` (a row per
  member; with `long`, a row per member and evaluation: long_form) or `steps` (the step table: a row per member and
  recorded step)."""
  if table not in ('results', 'steps'):
    raise ValueError(f'unknown table {table!r}: allowed results, steps')
  table = (long_form(load(out)) if long else load(out)) if table == 'results' else load_steps(out)
  if backend == 'pandas':
    return table
  if backend == 'polars':
    import polars as pl
    return pl.from_arrow(pa.Table.from_pandas(table, preserve_index=False))
  raise ValueError(f'unknown backend {backend!r}: allowed pandas, polars')


def merge(sources: list[Path], dest: Path, keep: str = 'last') -> Path:
  """Merges the tables of several sweep stores into dest/results.parquet: each member (run id) once, from the
  last (or first) source holding it; config keys whose values differ between members but were fixed in a source
  become columns. dest must not hold results already."""
  if keep not in ('last', 'first'):
    raise ValueError(f'bad --keep {keep!r}: allowed last, first')
  dest = Path(dest)
  if (dest / 'results.parquet').exists() or (dest / 'parts').exists():
    raise FileExistsError(f'{dest} already holds results; choose another -o')
  tables = []
  for src in sources:
    table = load(Path(src))
    tables.append(table.assign(source=str(src)))
  table = pd.concat(tables, ignore_index=True)
  table = later_defaults(table)  # configs of every version with every key
  flat = pd.DataFrame([cfglib.flatten(json.loads(c)) for c in table['config']], index=table.index)
  for key in flat.columns:  # promote fixed keys that differ between the merged sweeps (what a run records aside)
    if key not in table.columns and not cfglib.is_probe_key(key) and flat[key].astype(str).nunique(dropna=False) > 1:
      table[key] = flat[key]
  table = table.drop_duplicates('run_id', keep=keep)
  table = table.reset_index(drop=True)
  dest.mkdir(parents=True, exist_ok=True)
  wrote = {json.loads((Path(s) / 'run.json').read_text()).get('experiment') if (Path(s) / 'run.json').exists()
           else None for s in sources}
  write_json(dest / 'run.json', {'merged_from': [str(s) for s in sources], 'keep': keep, 'members': len(table),
                                 **({'experiment': wrote.pop()} if len(wrote) == 1 and None not in wrote else {})})
  path = dest / 'results.parquet'
  write_table(path, pa.Table.from_pandas(table, preserve_index=False))
  return path


def long_form(table: pd.DataFrame) -> pd.DataFrame:
  """One row per (member, evaluation epoch): the member's scalar columns and every metric at that epoch."""
  lists = [c for c in table.columns if len(table) and isinstance(table[c].iloc[0], (list, np.ndarray))]
  scalars = [c for c in table.columns if c not in lists and c not in ('config', 'versions')]
  rows = []
  for _, r in table.iterrows():
    n = len(r['epoch'])
    base = {c: r[c] for c in scalars}
    for j in range(n):
      rows.append({**base, **{c: (r[c][j] if len(r[c]) == n else None) for c in lists}})
  return pd.DataFrame(rows, columns=scalars + lists)


def export(out: Path, fmt: str, dest: Path | None = None, table: str = 'results') -> Path:
  """Writes the long form of a store's table (a row per member and evaluation, each with its epoch, step and
  time_s; cross-entropy losses in bits beside nats), or its step table (`table='steps'`), as CSV or JSON lines
  (atomically); returns the path."""
  if fmt not in ('csv', 'jsonl'):
    raise ValueError(f'bad --format {fmt!r}: allowed csv, jsonl')
  if table == 'steps':
    frame = load_steps(Path(out))
  elif table == 'results':
    frame = long_form(load(Path(out)))
    if 'train_error' in frame.columns:  # classification rows (they have errors): the losses are cross-entropies
      for c in [c for c in ('train_loss', 'test_loss') if c in frame.columns]:
        frame[f'{c}_bits'] = (frame[c].astype(float) / np.log(2.0)).where(frame['train_error'].notna())
  else:
    raise ValueError(f'bad --table {table!r}: allowed results, steps')
  dest = Path(dest) if dest else Path(out) / (f'results.{fmt}' if table == 'results' else f'steps.{fmt}')
  if fmt == 'csv':
    atomic_write_bytes(dest, lambda tmp: frame.to_csv(tmp, index=False))
  else:
    atomic_write_bytes(dest, lambda tmp: frame.to_json(tmp, orient='records', lines=True))
  return dest


def main(argv: list[str] | None = None) -> None:
  """python -m ddjax.results merge A B ... -o C [--keep last|first]
  python -m ddjax.results export DIR --format csv|jsonl [--table results|steps] [-o PATH]
  python -m ddjax.results describe DIR"""
  import argparse
  import sys

  class Parser(argparse.ArgumentParser):
    def error(self, message):
      self.exit(2, f'error: {message} (see --help)\n')

  parser = Parser(prog='python -m ddjax.results', description='Merge, export and describe sweep stores.')
  sub = parser.add_subparsers(dest='command', required=True, parser_class=Parser)
  m = sub.add_parser('merge', help='merge sweep stores run on different machines into a new one')
  m.add_argument('sources', nargs='+', type=Path)
  m.add_argument('-o', '--out', type=Path, required=True)
  m.add_argument('--keep', default='last', help='which copy of a member run in several sources: last or first')
  e = sub.add_parser('export', help='one line per (member, epoch) with every metric')
  e.add_argument('store', type=Path)
  e.add_argument('--format', help='csv or jsonl (default: from the -o suffix, else csv)')
  e.add_argument('-o', '--out', type=Path, help='file to write (default STORE/results.FORMAT or STORE/steps.FORMAT)')
  e.add_argument('--table', default='results', help='results (a line per member and evaluation) or steps (the step '
                 'table)')
  d = sub.add_parser('describe', help='a line per column of the results table: what it is')
  d.add_argument('store', type=Path)
  args = parser.parse_args(argv)
  try:
    if args.command == 'describe':
      if not args.store.is_dir():
        raise FileNotFoundError(f'{args.store} is not a sweep store (no such directory)')
      from ddjax.columns import describe
      print('\n'.join(describe(load(args.store))))
      return
    if args.command == 'merge':
      for src in args.sources:
        if not src.is_dir():
          raise FileNotFoundError(f'{src} is not a sweep store (no such directory)')
      path = merge(args.sources, args.out, args.keep)
      kept = pd.read_parquet(path, columns=['source'])['source'].value_counts()
      print(f'{int(kept.sum())} member(s): ' + ', '.join(f'{n} from {src}' for src, n in kept.items()))
    else:
      if not args.store.is_dir():
        raise FileNotFoundError(f'{args.store} is not a sweep store (no such directory)')
      suffix = args.out.suffix.lstrip('.') if args.out else ''
      fmt = args.format or (suffix if suffix in ('csv', 'jsonl') else 'csv')
      if args.out and suffix in ('csv', 'jsonl') and suffix != fmt:
        raise ValueError(f'-o {args.out} has a .{suffix} suffix but --format is {fmt}')
      if args.out and suffix not in ('csv', 'jsonl') and not args.format:
        raise ValueError(f'-o {args.out}: name the format with a .csv or .jsonl suffix or --format csv|jsonl')
      if args.out and not args.out.parent.is_dir():
        raise FileNotFoundError(f'-o {args.out}: no directory {args.out.parent}')
      path = export(args.store, fmt, args.out, args.table)
  except (ValueError, FileNotFoundError, FileExistsError, OSError) as err:
    print(f'error: {err}', file=sys.stderr)
    raise SystemExit(2) from None
  print(path)


if __name__ == '__main__':
  main()
