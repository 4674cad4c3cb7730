"""Results on disk: atomic Parquet part files during a run, one `results.parquet` (a row per member) at the end.

Layout of an output directory:
  run.json                  resolved config, sweep, package versions, device (written before training)
  parts/members-J.parquet   job J's members: their keys, bucket and metadata (one row per member)
  parts/curves-J-E.parquet  job J's metrics at the evaluations up to epoch E since the previous part (a row per
                            member and evaluation; long form; written at least every train.flush_seconds)
  results.parquet           one row per member: scalar keys, list columns for curves, `diverged`, metadata

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
import pyarrow.parquet as pq

from ddjax import config as cfglib

# Evaluation columns kept as their last value (a scalar per member), not as a curve.
LAST_ONLY = ('diverged', 'diverged_step', 'best_epoch', 'best_test_loss')


def _fsync_dir(path: Path) -> None:
  try:
    fd = os.open(path, os.O_RDONLY)
  except OSError:
    return
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def atomic_write_bytes(path: Path, write) -> None:
  """Calls write(tmp_path), fsyncs, renames to `path`."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f'.{path.name}.{os.getpid()}.tmp')
  write(tmp)
  with open(tmp, 'rb') as f:
    os.fsync(f.fileno())
  os.replace(tmp, path)
  _fsync_dir(path.parent)


def write_table(path: Path, table: pa.Table) -> None:
  atomic_write_bytes(path, lambda tmp: pq.write_table(table, tmp))


def write_json(path: Path, obj: Any) -> None:
  def write(tmp):
    with open(tmp, 'w') as f:
      json.dump(obj, f, indent=1, sort_keys=True, default=str)
  atomic_write_bytes(path, write)


def write_members(out: Path, job_id: str, rows: list[dict[str, Any]]) -> None:
  write_table(Path(out) / 'parts' / f'members-{job_id}.parquet', pa.Table.from_pylist(rows))


def write_curves(out: Path, job_id: str, epoch: int, rows: list[dict[str, Any]]) -> None:
  write_table(Path(out) / 'parts' / f'curves-{job_id}-{epoch:08d}.parquet', pa.Table.from_pylist(rows))


def append_history(out: Path, record: dict[str, Any]) -> None:
  """One line per invocation of a sweep on this store (sweeps.jsonl), flushed and fsynced."""
  with open(Path(out) / 'sweeps.jsonl', 'a') as f:
    f.write(json.dumps({'time': time.strftime('%Y-%m-%dT%H:%M:%S'), **record}, sort_keys=True, default=str) + '\n')
    f.flush()
    os.fsync(f.fileno())


def _read_parts(out: Path, prefix: str) -> pd.DataFrame | None:
  # Oldest first (then by name), so that keeping the last of duplicated rows keeps the newest.
  files = sorted((Path(out) / 'parts').glob(f'{prefix}-*.parquet'), key=lambda f: (f.stat().st_mtime_ns, f.name))
  frames = [pq.read_table(f).to_pandas() for f in files]
  frames = [f for f in frames if len(f)]
  return pd.concat(frames, ignore_index=True) if frames else None


def member_status(out: Path) -> dict[str, tuple[int, bool]]:
  """Run id -> (start time in ns of its newest attempt in this store, whether that attempt finished)."""
  members = _read_parts(out, 'members')
  if members is None or 'attempt' not in members.columns:
    return {}
  members = _newest(members)
  return dict(zip(members['run_id'], zip(members['attempt'].astype('int64'), members['complete'].astype(bool))))


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
  trains = cfglib.what_trains(record['config'], record.get('sweep', {}), record.get('zip', []))
  return json.dumps([trains, _rerun_conditions(record['rerun'])], sort_keys=True, default=str)


def _rerun_conditions(items: list[str]) -> list:
  """--rerun items in a canonical form, sorted (key, sorted values) per item: the same filter written in another
  order or notation (`seed=2,1`, `seed=1..2`) is the same invocation."""
  try:
    conditions = cfglib.rerun_conditions(items)
  except cfglib.ConfigError:  # a record of an older ddjax's keys: compared as written
    return sorted(items)
  return sorted((k, sorted(map(json.dumps, vs))) for k, vs in conditions)


def _newest(members: pd.DataFrame) -> pd.DataFrame:
  """Each run id's row of its newest attempt (attempts are start times in ns; within one, the completed row):
  independent of file times, so a copied store reads the same."""
  if 'attempt' in members.columns:
    done = members['complete'].astype(bool) if 'complete' in members.columns else False
    members = members.assign(_done=done).sort_values(['attempt', '_done'], kind='stable').drop(columns='_done')
  return members.drop_duplicates('run_id', keep='last')


def _later_defaults(frame: pd.DataFrame) -> pd.DataFrame:
  """Rows written before a key existed (config.LATER_KEYS) read it at its default, like the rows after."""
  for key, default in cfglib.LATER_KEYS.items():
    if key in frame.columns:
      frame[key] = frame[key].where(frame[key].notna(), default)
  return frame


def assemble(out: Path) -> pd.DataFrame:
  """One row per member from the part files: member columns plus a list column per curve.

  A member appears once, by run id: its newest attempt (a --rerun replaces older rows). Curves keep the rows of
  that attempt, each evaluation epoch once (a resumed run recomputes those written after its checkpoint). Parts
  with different metrics or float widths unify: missing metrics are NaN, floats widen to float64."""
  members = _read_parts(out, 'members')
  if members is None:
    raise FileNotFoundError(f'no results in {out}: neither results.parquet nor part files')
  members = _later_defaults(_newest(members))
  curves = _read_parts(out, 'curves')
  if curves is None:
    table = members.assign(epoch=[[] for _ in range(len(members))])
    return table.sort_values(['job', 'member']).reset_index(drop=True)
  curves = curves.merge(members[['run_id', 'attempt']], on=['run_id', 'attempt'])
  curves = curves.drop_duplicates(['run_id', 'epoch'], keep='last').sort_values(['run_id', 'epoch'])
  scalars = [c for c in LAST_ONLY if c in curves.columns]
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


def compact(out: Path) -> Path:
  """Writes results.parquet from the part files (atomically) and returns its path."""
  table = assemble(out)
  path = Path(out) / 'results.parquet'
  write_table(path, pa.Table.from_pandas(table, preserve_index=False))
  return path


def add_columns(out: Path, columns: pd.DataFrame) -> Path:
  """Writes per-member columns (indexed like load(out)'s rows, e.g. analysis results) into results.parquet,
  replacing columns of the same names; atomically."""
  table = load(out)
  table = table.drop(columns=[c for c in columns.columns if c in table.columns]).join(columns)
  path = Path(out) / 'results.parquet'
  write_table(path, pa.Table.from_pandas(table, preserve_index=False))
  return path


def load(out: Path) -> pd.DataFrame:
  """The results table of a finished or running output directory."""
  out = Path(out)
  parts = sorted((out / 'parts').glob('*.parquet'))
  results = out / 'results.parquet'
  if results.exists() and (not parts or results.stat().st_mtime >= max(p.stat().st_mtime for p in parts)):
    return pd.read_parquet(results)
  return assemble(out)


def load_sweep(out: Path, backend: str = 'pandas'):
  """The results table of a sweep store (finished or still going) as a pandas or polars DataFrame."""
  table = load(out)
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
  flat = pd.DataFrame([cfglib.flatten(json.loads(c)) for c in table['config']], index=table.index)
  flat, table = _later_defaults(flat), _later_defaults(table)
  for key in flat.columns:  # promote fixed keys that differ between the merged sweeps
    if key not in table.columns and flat[key].astype(str).nunique(dropna=False) > 1:
      table[key] = flat[key]
  table = table.drop_duplicates('run_id', keep=keep)
  table = table.reset_index(drop=True)
  dest.mkdir(parents=True, exist_ok=True)
  write_json(dest / 'run.json', {'merged_from': [str(s) for s in sources], 'keep': keep, 'members': len(table)})
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


def export(out: Path, fmt: str, dest: Path | None = None) -> Path:
  """Writes the long form of a store's table as CSV or JSON lines (atomically); returns the path."""
  if fmt not in ('csv', 'jsonl'):
    raise ValueError(f'bad --format {fmt!r}: allowed csv, jsonl')
  frame = long_form(load(Path(out)))
  dest = Path(dest) if dest else Path(out) / f'results.{fmt}'
  if fmt == 'csv':
    atomic_write_bytes(dest, lambda tmp: frame.to_csv(tmp, index=False))
  else:
    atomic_write_bytes(dest, lambda tmp: frame.to_json(tmp, orient='records', lines=True))
  return dest


def main(argv: list[str] | None = None) -> None:
  """python -m ddjax.results merge A B ... -o C [--keep last|first]
  python -m ddjax.results export DIR --format csv|jsonl [-o PATH]"""
  import argparse
  import sys

  class Parser(argparse.ArgumentParser):
    def error(self, message):
      self.exit(2, f'error: {message} (see --help)\n')

  parser = Parser(prog='python -m ddjax.results', description='Merge and export sweep stores.')
  sub = parser.add_subparsers(dest='command', required=True, parser_class=Parser)
  m = sub.add_parser('merge', help='merge sweep stores run on different machines into a new one')
  m.add_argument('sources', nargs='+', type=Path)
  m.add_argument('-o', '--out', type=Path, required=True)
  m.add_argument('--keep', default='last', help='which copy of a member run in several sources: last or first')
  e = sub.add_parser('export', help='one line per (member, epoch) with every metric')
  e.add_argument('store', type=Path)
  e.add_argument('--format', help='csv or jsonl (default: from the -o suffix, else csv)')
  e.add_argument('-o', '--out', type=Path, help='file to write (default STORE/results.FORMAT)')
  args = parser.parse_args(argv)
  try:
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
      path = export(args.store, fmt, args.out)
  except (ValueError, FileNotFoundError, FileExistsError, OSError) as err:
    print(f'error: {err}', file=sys.stderr)
    raise SystemExit(2) from None
  print(path)


if __name__ == '__main__':
  main()
