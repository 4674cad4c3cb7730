"""The store's identities and rows: run ids (a hash of a member's resolved config), job ids, each member's row of
keys and metadata, and the run record (run.json)."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from pathlib import Path
from typing import Any

import jax

from ddjax import config as cfglib
from ddjax import plugins
from ddjax.members import Job

PACKAGES = ('jax', 'jaxlib', 'flax', 'optax', 'numpy', 'orbax-checkpoint', 'pyarrow')


def versions() -> dict[str, str]:
  out = {}
  for name in PACKAGES:
    try:
      out[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      pass
  return out


def device_name() -> str:
  d = jax.devices()[0]
  return f'{d.platform}:{d.device_kind} x{jax.device_count()}'


def run_id(cfg: cfglib.Config) -> str:
  """A member's id: a hash of its resolved config (execution-only keys left out). It names its result rows."""
  flat = cfglib.identity({k: cfglib.get(cfg, k) for k in cfglib.fields(cfg)})
  return hashlib.sha1(json.dumps(flat, sort_keys=True, default=str).encode()).hexdigest()[:12]


def job_id(run_ids: list[str]) -> str:
  """A job's id, from its members' ids: it names the job's checkpoint directory and part files."""
  return hashlib.sha1(','.join(sorted(run_ids)).encode()).hexdigest()[:12]


def duplicate_members(jobs: list[Job]) -> str | None:
  """A one-line description of members that would share a run id (the same numbers twice: a repeated sweep value,
  or a swept key that only changes execution), or None."""
  seen = {}
  for job in jobs:
    for i in range(len(job.members)):
      rid = run_id(member_config(job, i))
      if rid in seen:
        (j0, m0), swept = seen[rid], sorted(k for k in job.static if k in cfglib.EXECUTION_KEYS)
        flat = {k: cfglib.get(member_config(job, i), k) for k in cfglib.fields(job.config)}
        ignored = sorted(k for k in job.static if k in cfglib.ignored_keys(flat))
        why = (f'{", ".join(swept)} only change(s) how a run executes, not its results' if swept else
               f'{", ".join(ignored)} change(s) nothing for this member (its other keys ignore it)'
               if ignored else 'a value is repeated in a sweep')
        return f'jobs {j0 + 1} and {job.index + 1} (members {m0} and {i}) would train the same member: {why}'
      seen[rid] = (job.index, i)
  return None


def member_config(job: Job, i: int) -> cfglib.Config:
  """The full config of member i: the job's static keys with the member's own values."""
  cfg = job.config
  for k, v in job.members[i].items():
    cfg = cfglib.replace(cfg, k, v)
  return cfg


def member_rows(job: Job, buckets: list, meta: dict[str, Any]) -> list[dict[str, Any]]:
  """One row per member of `job` (by position): its keys, its bucket (`buckets`: the job's Bucket objects) and
  `meta`."""
  rows = []
  for b, bucket in enumerate(buckets):
    for slot, i in enumerate(bucket.member_ids):
      cfg = member_config(job, i)
      rows.append({'run_id': run_id(cfg), 'job': job.index, 'member': job.position(i), **job.members[i],
                   **job.static, 'bucket': b, 'bucket_slot': slot, 'bucket_width': bucket.width,
                   'config': cfglib.to_json(cfg), **meta})
  return sorted(rows, key=lambda r: r['member'])


def run_record(cfg: cfglib.Config, sweep: dict[str, list], jobs: list[Job]) -> dict[str, Any]:
  """What run.json holds; `--resume` requires the same config and sweep. `plugins`: every plugin file this process
  imported (worker processes and later commands import them again); `contents`: each data.file's content hash."""
  files = {v for v in [cfg.data.file, *sweep.get('data.file', [])] if v}
  return {'config': cfglib.to_dict(cfg), 'sweep': sweep, 'versions': versions(), 'device': device_name(),
          'jobs': len(jobs), 'members': sum(len(j.members) for j in jobs), 'plugins': plugins.loaded(),
          **({'contents': {p: cfglib.file_content(p) for p in sorted(files)}} if files else {})}


def experiment_of(out) -> str | None:
  """The experiment that wrote the store `out`: run.json's `experiment` (recorded since the representations study),
  else told by an older store's config where it can be (modular arithmetic or m-height data: grokking; a deep
  linear model: deep_linear); None where it cannot."""
  try:
    record = json.loads((Path(out) / 'run.json').read_text())
  except (OSError, ValueError):
    return None
  if record.get('experiment'):
    return record['experiment']
  config = record.get('config', {})
  if config.get('data', {}).get('name') in ('modular', 'mheight'):
    return 'grokking'
  if config.get('model', {}).get('name') == 'deep_linear':
    return 'deep_linear'
  return None
