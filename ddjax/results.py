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
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

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


def write_members(out: Path, job: int, rows: list[dict[str, Any]]) -> None:
  write_table(Path(out) / 'parts' / f'members-{job:04d}.parquet', pa.Table.from_pylist(rows))


def write_curves(out: Path, job: int, epoch: int, rows: list[dict[str, Any]]) -> None:
  write_table(Path(out) / 'parts' / f'curves-{job:04d}-{epoch:08d}.parquet', pa.Table.from_pylist(rows))


def _read_parts(out: Path, prefix: str) -> pd.DataFrame | None:
  # Oldest first (then by name), so that keeping the last of duplicated rows keeps the newest.
  files = sorted((Path(out) / 'parts').glob(f'{prefix}-*.parquet'), key=lambda f: (f.stat().st_mtime_ns, f.name))
  frames = [pq.read_table(f).to_pandas() for f in files]
  return pd.concat(frames, ignore_index=True) if frames else None


def assemble(out: Path) -> pd.DataFrame:
  """One row per member from the part files: member columns plus a list column per curve."""
  members = _read_parts(out, 'members')
  if members is None:
    raise FileNotFoundError(f'no results in {out}: neither results.parquet nor part files')
  curves = _read_parts(out, 'curves')
  if curves is None:
    return members.assign(epoch=[[] for _ in range(len(members))])
  # A resumed run recomputes the evaluations written after its checkpoint: the same numbers, kept once.
  curves = curves.drop_duplicates(['job', 'member', 'epoch'], keep='last').sort_values(['job', 'member', 'epoch'])
  scalars = [c for c in LAST_ONLY if c in curves.columns]
  metric_cols = [c for c in curves.columns if c not in ('job', 'member')]
  lists = curves.groupby(['job', 'member'], sort=True)[metric_cols].agg(list).reset_index()
  last = curves.groupby(['job', 'member'], sort=True)[scalars].last().reset_index()
  lists = lists.drop(columns=scalars).merge(last, on=['job', 'member'])
  table = members.merge(lists, on=['job', 'member'], how='left')
  for c in metric_cols:  # members of a job not yet evaluated: empty curves
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
