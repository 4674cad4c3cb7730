"""Files written atomically: to a temporary name, fsynced, renamed (and the directory fsynced), so a kill at any
moment leaves either the old file or the new one, never part of one."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq


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
