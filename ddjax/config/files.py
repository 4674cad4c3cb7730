"""YAML config files (`-c FILE.yaml`): keys nested or dotted, lists are sweeps, an optional `zip:` of key groups."""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

import yaml

from ddjax.config.grammar import _assign, _base_type, _check_zip_keys, _unknown_key, parse_scalar, parse_values
from ddjax.config.schema import Config, ConfigError, choices_of, fields, get
from ddjax.config.validation import validate


class _YamlLoader(yaml.SafeLoader):
  """SafeLoader that refuses a key given twice in one mapping."""

  def construct_mapping(self, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
      if key_node.tag == 'tag:yaml.org,2002:merge':
        continue
      key = self.construct_object(key_node, deep=True)
      try:
        if key in seen:
          raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is given twice", key_node.start_mark)
        seen.add(key)
      except TypeError:  # an unhashable key: the base class reports it
        pass
    return super().construct_mapping(node, deep)


_YAML_TYPES = {bool: 'true or false', int: 'an integer', float: 'a number', str: 'a string',
               list: 'a list', dict: 'a mapping', type(None): 'null'}


def _yaml_scalar(key: str, f: dataclasses.Field, value: Any) -> Any:
  """One YAML scalar checked against field `f`: strings are parsed like command-line text."""
  tp, nullable = _base_type(f.type)
  if isinstance(value, str):
    return parse_scalar(key, f, value)
  ok = (value is None and nullable) or (type(value) is tp) or (tp is float and type(value) is int)
  if not ok:
    allowed = {int: 'an integer', float: 'a number', bool: 'true or false', str: 'a string (quote it)'}[tp]
    got = _YAML_TYPES.get(type(value), type(value).__name__)
    raise ConfigError(f"bad value {value!r} for {key}: expected {allowed}{' or null' if nullable else ''}, "
                      f"got {got}")
  value = float(value) if tp is float and value is not None else value
  if tp is float and value is not None and not math.isfinite(value):
    raise ConfigError(f"bad value {value!r} for {key}: expected a finite number")
  choices = choices_of(f)
  if choices and value not in choices:
    raise ConfigError(f"bad value {value!r} for {key}: allowed values are {', '.join(map(str, choices))}")
  return value


def _yaml_values(key: str, f: dataclasses.Field, value: Any) -> list[Any] | Any:
  """A YAML value for field `f`: a list is a sweep (of `probes`: its names), a string goes through parse_values,
  others are checked."""
  if (f.metadata.get('probe_names') or f.metadata.get('callback_names')) and isinstance(value, list):
    return parse_values(key, f, ','.join(map(str, value)))
  if 'probe' in f.metadata and not isinstance(value, list):
    return parse_values(key, f, str(value).lower() if isinstance(value, bool) else str(value))
  if isinstance(value, list):
    if not value:
      raise ConfigError(f"bad sweep [] for {key}: no values")
    return [_yaml_scalar(key, f, v) for v in value]
  if isinstance(value, str):
    return parse_values(key, f, value)
  return _yaml_scalar(key, f, value)


def _read_yaml(path: str) -> Any:
  try:
    with open(path, encoding='utf-8') as file:
      text = file.read()
  except FileNotFoundError:
    raise ConfigError(f"config file {path}: no such file") from None
  except (OSError, UnicodeDecodeError) as e:
    raise ConfigError(f"config file {path}: cannot read it ({getattr(e, 'strerror', None) or e})") from None
  try:
    return yaml.load(text, Loader=_YamlLoader)
  except yaml.YAMLError as e:
    mark, problem = getattr(e, 'problem_mark', None), getattr(e, 'problem', None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ''
    raise ConfigError(f"config file {path}: invalid YAML{where}: {' '.join(str(problem or e).split())}") from None


SIDES = {'model_a': ('a', 'model'), 'model_b': ('b', 'model'), 'training_a': ('a', 'train'),
         'training_b': ('b', 'train')}


def _merge(into: dict, more: dict) -> dict:
  out = dict(into)
  for k, v in more.items():
    out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
  return out


def _comparative(data: dict, path: str, known: dict, cfg: Config) -> tuple[dict, list[str] | None]:
  """A comparative config (the deep-linear-network codebase's form): `shared` keys, and `model_a` / `model_b` /
  `training_a` / `training_b` overrides (training keys are train.* or optim.* ones, or dotted). Returns the plain
  config: `pair` swept a, b, zipped with each key the two sides give different values (a sweep of two), and that
  zip group; (data, None) for a config without these sections. The keys that differ must be member keys, so that
  the pair trains in lockstep in one job."""
  from ddjax.config.schema import MEMBER_KEYS
  if not any(k in data for k in ('shared', *SIDES)):
    return data, None
  shared = data.pop('shared', None) or {}
  if not isinstance(shared, dict):
    raise ConfigError(f'config file {path}: shared must be a mapping of keys to values')
  sides = {'a': {}, 'b': {}}
  for section, (side, prefix) in SIDES.items():
    given = data.pop(section, None) or {}
    if not isinstance(given, dict):
      raise ConfigError(f'config file {path}: {section} must be a mapping of keys to values')
    for k, v in given.items():
      key = k if '.' in k else f'{prefix}.{k}' if f'{prefix}.{k}' in known or prefix == 'model' else f'optim.{k}'
      if isinstance(v, (list, dict)):
        raise ConfigError(f'config file {path}: {section}.{k} must be one value (sweep shared keys instead)')
      sides[side][key] = v
  base = _merge(shared, data)
  flat_base = {}

  def flatten(mapping, prefix=''):
    for k, v in mapping.items():
      if isinstance(v, dict) and f'{prefix}{k}' not in known:
        flatten(v, f'{prefix}{k}.')
      else:
        flat_base[f'{prefix}{k}'] = v
  flatten(base)
  differ = []
  for key in sorted(set(sides['a']) | set(sides['b'])):
    if key not in known:
      raise _unknown_key(key, known)
    default = flat_base.get(key, get(cfg, key))
    a, b = sides['a'].get(key, default), sides['b'].get(key, default)
    if a == b:
      flat_base[key] = a
      continue
    if key not in MEMBER_KEYS:
      raise ConfigError(f'config file {path}: {key} is {a!r} for a and {b!r} for b, but a pair trains in lockstep '
                        f'in one job, where only member keys may differ ({", ".join(sorted(MEMBER_KEYS))}); run '
                        'the two as separate runs')
    flat_base[key] = [a, b]
    differ.append(key)
  if not differ:
    raise ConfigError(f'config file {path}: model_a/model_b and training_a/training_b give a and b the same config')
  flat_base['pair'] = ['a', 'b']
  return flat_base, ['pair', *differ]


def load_config_file(path: str | os.PathLike, cfg: Config, sweep: dict[str, list]
                     ) -> tuple[Config, dict[str, list], list[list[str]]]:
  """Applies a YAML file of keys -> values; returns (cfg, sweep, zip groups).

  Keys nest (`optim: {lr: 0.1}`) or are dotted (`optim.lr: 0.1`). A list is a sweep; a string is parsed like
  command-line text (`2..8`, `range(1,4)`, `a,b`, `'a,b'`); other values must have the key's type (an integer
  is accepted for a float key). An optional top-level `zip:` lists groups of keys swept in step: [[a, b], ...]
  or ['a,b', ...]. An empty file sets nothing. The zip groups' keys are checked here, their sweeps by check_zip
  once every override is in (expand runs it)."""
  path = os.fspath(path)
  data = _read_yaml(path)
  if data is None:
    data = {}
  if not isinstance(data, dict):
    got = _YAML_TYPES.get(type(data), type(data).__name__)
    raise ConfigError(f"config file {path}: the top level must be a mapping of keys to values, got {got}")
  known, sweep, flat = fields(cfg), dict(sweep), {}
  sections = {k.rsplit('.', i)[0] for k in known for i in range(1, k.count('.') + 1)}  # probe, probe.NAME, data, ...

  def walk(mapping: dict, prefix: str) -> None:
    for k, v in mapping.items():
      key = prefix + str(k)
      if not isinstance(k, str):
        raise ConfigError(f"config file {path}: key {key!r} is not a string")
      if key in sections and (v is None or isinstance(v, dict)):
        walk(v or {}, key + '.')
      elif key in sections:
        raise ConfigError(f"config file {path}: {key} holds keys such as "
                          f"{min(x for x in known if x.startswith(key + '.'))}: give it a mapping")
      elif key in flat:
        raise ConfigError(f"config file {path}: {key} is given twice")
      else:
        flat[key] = v

  zip_spec = data.pop('zip', None) if 'zip' in data and 'zip' not in known else None
  data, pair_group = _comparative(data, path, known, cfg)
  walk(data, '')
  zip_groups = [pair_group] if pair_group else []
  if zip_spec is not None:
    shape = "zip must be a list of key groups, e.g. [[optim.lr, optim.wd]] or ['optim.lr,optim.wd']"
    if not isinstance(zip_spec, list):
      raise ConfigError(f"config file {path}: {shape}")
    for group in zip_spec:
      if isinstance(group, str):
        group = [k.strip() for k in group.split(',')]
      if not isinstance(group, list) or not all(isinstance(k, str) and k.strip() for k in group):
        raise ConfigError(f"config file {path}: {shape}")
      zip_groups.append([k.strip() for k in group])
  try:
    for key, value in flat.items():
      if key not in known:
        raise _unknown_key(key, known)
      cfg = _assign(cfg, sweep, key, _yaml_values(key, known[key], value), value)
    _check_zip_keys(zip_groups)
    validate(cfg, sweep)
  except ConfigError as e:
    raise ConfigError(f"config file {path}: {e}") from None
  return cfg, sweep, zip_groups
