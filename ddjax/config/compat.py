"""A run's identity (what its run ids hash), what a run trains (for --resume's comparison), and the --rerun filter
of member configs."""

from __future__ import annotations

import json
from typing import Any, Callable, Sequence

from ddjax.config.grammar import parse_values
from ddjax.config.schema import EXECUTION_KEYS, LATER_KEYS, Config, ConfigError, fields, flatten, get, is_probe_key


def ignored_keys(flat: dict[str, Any]) -> set[str]:
  """Keys a config sets that do not change what it trains: train.epochs under train.max_steps, the epoch grid
  of evaluations under train.evaluations, model.base_width under model.param=sp, and train.budget without
  data.subset."""
  out = {'model.base_width'} if flat.get('model.param', 'sp') == 'sp' else set()
  if flat.get('data.subset') is None:
    out.add('train.budget')
  if flat.get('train.max_steps'):
    out.add('train.epochs')
    if flat.get('train.evaluations'):
      out |= {'train.eval_points', 'train.eval_every', 'train.eval_every_steps'}
  return out


def file_content(path: str, contents: dict[str, str] | None = None) -> str:
  """What stands for data.file=`path` in a run's identity: its content hash, as recorded in `contents` (a run record's
  {path: hash} when it started) or as the file is now."""
  from ddjax.data.codes import file_digest
  return (contents or {}).get(path) or file_digest(path)


def identity(flat: dict[str, Any], contents: dict[str, str] | None = None) -> dict[str, Any]:
  """A flat {key: value} config without its execution-only and probe keys, its later keys at their old defaults and
  the keys it ignores (ignored_keys); data.file stands as its content hash (file_content)."""
  ignored = ignored_keys(flat)
  out = {k: v for k, v in flat.items()
         if k not in EXECUTION_KEYS and not is_probe_key(k) and not (k in LATER_KEYS and v == LATER_KEYS[k])
         and k not in ignored}
  if out.get('data.file'):  # the file's content, not its path: a moved file keeps its runs, an edited one does not
    out['data.file'] = file_content(out['data.file'], contents)
  return out


def what_trains(config: dict[str, Any], sweep: dict[str, list], zips: Sequence[Sequence[str]],
                contents: dict[str, str] | None = None) -> dict[str, Any]:
  """What a run trains, as {key: value} to compare two runs by (a run record's config dict, sweep and zip groups):
  the fixed keys, and each swept key's values or each zip group's value tuples in a canonical order ('sweep of a
  with b' -> [[a0, b0], [a1, b1], ...] sorted), since members are found by run id, not by position. Execution-only
  keys are left out; data.file is its content hash (`contents`: the run record's, as it was when the run started)."""
  config, sweep = json.loads(json.dumps(config, default=str)), json.loads(json.dumps(sweep, default=str))
  keys = {k: v for k, v in identity(flatten(config), contents).items() if k not in sweep}
  if 'data.file' in sweep:
    sweep = dict(sweep, **{'data.file': [file_content(v, contents) if v else v for v in sweep['data.file']]})
  zipped = set()
  for group in map(sorted, zips):
    if all(k in sweep for k in group):
      zipped.update(group)
      if not all(k in EXECUTION_KEYS for k in group):
        keys[f'sweep of {" with ".join(group)}'] = sorted(
            (list(p) for p in zip(*(sweep[k] for k in group))), key=json.dumps)
  for key, values in sweep.items():
    if key not in zipped and key not in EXECUTION_KEYS:
      keys[f'sweep of {key}'] = sorted(values, key=json.dumps)
  return keys


def rerun_conditions(items: list[str]) -> list[tuple[str, list]]:
  """--rerun key=value items (values as in a sweep) as (key, allowed values), one per item. Raises ConfigError for
  an unknown key or a bad value."""
  known = fields(Config())
  conditions = []
  for item in items:
    key, eq, text = item.partition('=')
    key = key.strip()
    if not eq or key not in known:
      raise ConfigError(f"bad --rerun {item!r}: expected key=value with a known key"
                        + (f" (unknown key {key!r})" if eq else ''))
    values = parse_values(key, known[key], text)
    conditions.append((key, values if isinstance(values, list) else [values]))
  return conditions


def rerun_filter(items: list[str]) -> Callable[[Config], bool]:
  """--rerun key=value: a member matches when every key has one of the given values (rerun_conditions)."""
  conditions = rerun_conditions(items)
  return lambda member_cfg: all(get(member_cfg, k) in vs for k, vs in conditions)
