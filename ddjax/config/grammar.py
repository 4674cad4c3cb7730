"""The command-line grammar: dotted `key=value` overrides, sweep values and zip groups.

A run is described by a `Config` (one concrete value per key) plus a `sweep` dict that maps dotted keys to
lists of values. Sweep values on the command line (the same forms as Hydra's, plus inclusive ranges):

    a,b,c                  a list; choice(a,b,c) is the same list
    a..b, a..b..s          inclusive range with step 1 or s (integers or floats; numeric keys)
    range(a,b), range(a,b,s), range(b)
                           Python's range: b excluded, step s (default 1, may be negative), floats allowed
    [a,b,c]                one value that is a list (keys whose values are lists, written a/b/c: data.spectrum,
                           train.snapshot_epochs), not a sweep
    'text', "text"         quotes make one literal element: commas and `..` inside it are text, not a sweep;
                           on a string key the text is kept verbatim (`'none'` is the string none), on other
                           keys the quotes are dropped and the value parsed as usual ('3' is 3 for an int key)

A YAML file (ddjax.config.files) sets keys the same way.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from typing import Any, Sequence

from ddjax.config.schema import Config, ConfigError, choices_of, fields, replace


def _base_type(tp) -> tuple[type, bool]:
  """(scalar type, whether None is allowed) of a field annotation."""
  if isinstance(tp, str):
    tp = eval(tp, {'int': int, 'float': float, 'str': str, 'bool': bool, 'None': None})
  args = typing.get_args(tp)
  if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
    inner = [a for a in args if a is not type(None)]
    return inner[0], True
  return tp, False


def parse_scalar(key: str, f: dataclasses.Field, text: str, quoted: bool = False) -> Any:
  """Parses one value for field `f`; raises ConfigError naming the key and what is allowed.

  `quoted`: `text` was inside quotes; a string key then takes it verbatim (never none)."""
  tp, nullable = _base_type(f.type)
  if not (quoted and tp is str):
    text = text.strip()
  if nullable and not (quoted and tp is str) and text.lower() in ('none', 'null'):
    return None
  try:
    if quoted and tp is str:
      value = text
    elif tp is bool:
      low = text.lower()
      if low not in ('true', 'false', '1', '0', 'yes', 'no'):
        raise ValueError
      value = low in ('true', '1', 'yes')
    elif tp is int:
      value = int(text)
    elif tp is float:
      value = float(text)
    else:
      value = text.strip('\'"')
  except ValueError:
    allowed = {int: 'an integer', float: 'a number', bool: 'true or false'}.get(tp, 'a string')
    raise ConfigError(f"bad value {text!r} for {key}: expected {allowed}"
                      + (' or none' if nullable else '')) from None
  if tp is float and value is not None and not math.isfinite(value):  # inf would train every member into NaN
    raise ConfigError(f"bad value {text!r} for {key}: expected a finite number")
  choices = choices_of(f)
  if choices and value not in choices:
    raise ConfigError(f"bad value {text!r} for {key}: allowed values are {', '.join(map(str, choices))}")
  return value


def _tokens(key: str, text: str) -> list[tuple[str, bool]]:
  """`text` split on commas outside quotes: (element, quoted) pairs, quotes removed.

  A quote opens only at the start of an element (a quote inside unquoted text is a plain character)."""
  out, i, n = [], 0, len(text)
  while True:
    j = i
    while j < n and text[j].isspace():
      j += 1
    if j < n and text[j] in '\'"':
      end = text.find(text[j], j + 1)
      if end < 0:
        raise ConfigError(f"bad value {text!r} for {key}: unbalanced {text[j]} quote")
      token, quoted, i = text[j + 1:end], True, end + 1
      while i < n and text[i].isspace():
        i += 1
      if i < n and text[i] != ',':
        raise ConfigError(f"bad value {text!r} for {key}: text after a closing quote (quote the whole element)")
    else:
      i = text.find(',', i)
      i = n if i < 0 else i
      token, quoted = text[j:i], False
    out.append((token, quoted))
    if i >= n:
      return out
    i += 1


def _parse_range(key: str, f: dataclasses.Field, text: str, inner: str) -> list[Any]:
  """Hydra's range(start, stop[, step]) (also range(stop)): `stop` is excluded, like Python's range."""
  tp, _ = _base_type(f.type)
  if tp not in (int, float):
    raise ConfigError(f"bad sweep {text!r} for {key}: range() needs a numeric key")
  args = [a.strip() for a in inner.split(',')]
  if not 1 <= len(args) <= 3 or not all(args):
    raise ConfigError(f"bad sweep {text!r} for {key}: expected range(start, stop) or range(start, stop, step)")
  try:
    nums = [tp(a) for a in args]
  except ValueError:
    raise ConfigError(f"bad sweep {text!r} for {key}: range() arguments must be "
                      f"{'integers' if tp is int else 'numbers'}") from None
  if not all(math.isfinite(v) for v in nums):
    raise ConfigError(f"bad sweep {text!r} for {key}: range() arguments must be finite")
  start, stop, step = ([tp(0)] + nums if len(nums) == 1 else nums) + [tp(1)] * (len(nums) < 3)
  if step == 0:
    raise ConfigError(f"bad sweep {text!r} for {key}: the step of range() must not be 0")
  if tp is int:
    values = list(range(start, stop, step))
  else:
    count = max(0, math.ceil((stop - start) / step - 1e-9))
    values = [round(start + i * step, 12) for i in range(count)]
  if not values:
    raise ConfigError(f"bad sweep {text!r} for {key}: empty range (stop is excluded; count down with a step < 0)")
  return values


def parse_values(key: str, f: dataclasses.Field, text: str) -> list[Any] | Any:
  """A scalar for a plain value, a list for a sweep (`a,b,c`, `choice(a,b,c)`, `a..b[..s]`, `range(a,b[,s])`).

  A value that is one quoted string is a scalar; elements of a list may be quoted (see the module docstring).
  `probes` takes one comma-separated list of probe names, and probe options one value each: neither is swept."""
  if f.metadata.get('probe_names'):
    return probe_names(key, text)
  if f.metadata.get('callback_names'):
    return callback_names(key, text)
  if 'probe' in f.metadata:
    if ',' in str(text):
      raise ConfigError(f"bad value {text!r} for {key}: one value (probes do not change training, so their options "
                        "are not swept)")
    from ddjax.probes.registry import parse_option
    try:
      return parse_option(*f.metadata['probe'], str(text).strip().strip('\'"'))
    except ValueError as e:
      raise ConfigError(str(e)) from None
  if (bracket := re.fullmatch(r'\s*\[(.*)\]\s*', str(text), re.S)) is not None:
    return _list_value(key, f, text, bracket[1])
  call = re.fullmatch(r'\s*(range|choice)\s*\((.*)\)\s*', text, re.S)
  if call and call[1] == 'range':
    return _parse_range(key, f, text.strip(), call[2])
  tokens = _tokens(key, call[2] if call else text)
  if call or len(tokens) > 1:
    if any(not t.strip() and not q for t, q in tokens):
      raise ConfigError(f"bad sweep {text!r} for {key}: empty value in the list")
    return [parse_scalar(key, f, t, quoted=q) for t, q in tokens]
  token, quoted = tokens[0]
  if quoted:
    return parse_scalar(key, f, token, quoted=True)
  tp, _ = _base_type(f.type)
  free_text = tp is str and not choices_of(f)  # e.g. a path: `..` is text there
  if '..' in text and not free_text:
    pieces = text.split('..')
    if tp not in (int, float) or len(pieces) not in (2, 3):
      raise ConfigError(f"bad sweep {text!r} for {key}: ranges a..b or a..b..s need a numeric key")
    lo, hi = (parse_scalar(key, f, p) for p in pieces[:2])
    step = parse_scalar(key, f, pieces[2]) if len(pieces) == 3 else 1
    if step is None or lo is None or hi is None or step <= 0 or hi < lo:
      raise ConfigError(f"bad sweep {text!r} for {key}: need a <= b and a step > 0")
    count = int((hi - lo) / step + 1e-9) + 1 if tp is float else (hi - lo) // step + 1
    values = [lo + i * step for i in range(count)]
    return [round(v, 12) for v in values] if tp is float else values
  return parse_scalar(key, f, text)


def _list_value(key: str, f: dataclasses.Field, text: str, inner: str) -> Any:
  """`[a,b,c]`: one value that is a list (the deep-linear-network codebase's form), not a sweep: ddjax's lists are
  one string joined by '/' (data.spectrum=[4,2,1] is 4/2/1, train.snapshot_epochs=[0,10] is 0/10)."""
  tp, _ = _base_type(f.type)
  if tp is not str or choices_of(f):
    raise ConfigError(f"bad value {text!r} for {key}: [a,b,...] is one list value, and {key} takes one "
                      f"{tp.__name__} (a sweep is a,b,...)")
  items = [t.strip().strip('\'"') for t in inner.split(',')]
  if not all(items):
    raise ConfigError(f"bad value {text!r} for {key}: empty element in the list")
  return '/'.join(items)


def _registered(key: str, text: str | list, table: dict, kind: str) -> list[str]:
  """The names of NAME,NAME (or a YAML list), each once, in the order given, every one registered in `table`."""
  names = text if isinstance(text, list) else str(text).strip().strip('\'"').split(',')
  names = list(dict.fromkeys(str(n).strip() for n in names if str(n).strip()))
  for name in names:
    if name not in table:
      near = difflib.get_close_matches(name, table, n=1)
      hint = f'did you mean {near[0]}? ' if near else ''
      raise ConfigError(f"bad value {name!r} for {key}: {hint}registered {kind}s are {', '.join(table)}")
  return names


def probe_names(key: str, text: str | list) -> str:
  """`probes=NAME,NAME`: registered probe names, each once, in the order given, joined by commas."""
  from ddjax.probes.registry import PROBES
  names = _registered(key, text, PROBES, 'probe')
  for name in names:
    if PROBES[name].always:
      raise ConfigError(f"bad value {name!r} for {key}: {name} is always on (leave it out)")
  return ','.join(names)


def callback_names(key: str, text: str | list) -> str:
  """`callbacks=NAME,NAME`: registered callback names, each once, in the order given, joined by commas."""
  from ddjax.callbacks import CALLBACKS
  return ','.join(_registered(key, text, CALLBACKS, 'callback'))


def _unknown_key(key: str, known) -> ConfigError:
  if key.startswith('probe.') and key.count('.') >= 2:
    from ddjax.probes.registry import PROBES, parse_option
    name, option = key.split('.', 2)[1:]
    if name not in PROBES:
      near = difflib.get_close_matches(name, PROBES, n=1)
      hint = f'did you mean {near[0]}? ' if near else ''
      return ConfigError(f"unknown key {key!r}: no probe {name!r}; {hint}registered probes are {', '.join(PROBES)}")
    try:
      parse_option(name, option, '')
    except ValueError as e:
      return ConfigError(str(e))
  known = [k for k in known if not k.startswith('probe.')]  # listed by --help under Probes
  near = difflib.get_close_matches(key, known, n=1)
  if not near and '.' not in key:  # a key without its section: matched against the last part (widht -> model.width)
    last: dict[str, list[str]] = {}
    for k in known:
      last.setdefault(k.rsplit('.', 1)[-1], []).append(k)
    near = [' or '.join(last[m]) for m in difflib.get_close_matches(key, last, n=1, cutoff=0.75)]
  hint = f"did you mean {near[0]}? " if near else ''
  return ConfigError(f"unknown key {key!r}: {hint}known keys: {', '.join(sorted(known))}")


def _assign(cfg: Config, sweep: dict[str, list], key: str, value: Any, text: Any) -> Config:
  """Sets `key` in cfg and sweep (in place): a list is a sweep, a scalar clears any sweep of the key."""
  if isinstance(value, list):
    if not value:
      raise ConfigError(f"bad sweep {text!r} for {key}: no values")
    sweep[key] = value
    return replace(cfg, key, value[0])
  sweep.pop(key, None)
  return replace(cfg, key, value)


def apply_overrides(cfg: Config, sweep: dict[str, list], overrides: list[str]
                    ) -> tuple[Config, dict[str, list]]:
  """Applies `key=value` strings; a list value sets a sweep, a scalar clears any sweep of that key."""
  known = fields(cfg)
  sweep = dict(sweep)
  for item in overrides:
    key, eq, text = item.partition('=')
    key = key.strip()
    if not eq or not key:
      raise ConfigError(f"bad override {item!r}: expected key=value (see --help for the keys)")
    if key not in known:
      raise _unknown_key(key, known)
    cfg = _assign(cfg, sweep, key, parse_values(key, known[key], text), text)
  from ddjax.config.validation import validate
  validate(cfg, sweep)
  return cfg, sweep


def parse_zip(text: str) -> list[str]:
  """The keys of one `--zip a,b[,c]` group: comma-separated dotted keys swept in step with each other."""
  keys = [k.strip() for k in text.split(',')]
  if not all(keys):
    raise ConfigError(f"bad --zip {text!r}: empty key in the list (expected key,key[,...])")
  _check_zip_keys([keys])
  return keys


def _check_zip_keys(zip_groups: Sequence[Sequence[str]]) -> None:
  """Each group has two or more known keys; no key is in two groups."""
  known, seen = fields(Config()), {}
  for group in zip_groups:
    name = f"--zip {','.join(group)}"
    if len(group) < 2:
      raise ConfigError(f"{name}: a zip group needs two or more keys")
    for key in group:
      if key not in known:
        raise ConfigError(f"{name}: {_unknown_key(key, known)}")
      if key in seen:
        where = 'twice in this group' if seen[key] == name else f'also in {seen[key]}'
        raise ConfigError(f"{name}: {key} is {where} (a key can be zipped once)")
      seen[key] = name


def check_zip(sweep: dict[str, list], zip_groups: Sequence[Sequence[str]]) -> None:
  """Zipped keys are known, each in one group, all swept, and of equal length within a group."""
  _check_zip_keys(zip_groups)
  for group in zip_groups:
    name = f"--zip {','.join(group)}"
    scalar = [k for k in group if k not in sweep]
    if scalar:
      raise ConfigError(f"{name}: {', '.join(scalar)} {'is' if len(scalar) == 1 else 'are'} not swept "
                        "(a zipped key needs a list of values)")
    counts = [len(sweep[k]) for k in group]
    if len(set(counts)) > 1:
      first = f"{group[0]} has {counts[0]} value{'s' * (counts[0] != 1)}"
      raise ConfigError(f"{name}: " + ', '.join([first] + [f"{k} has {n}" for k, n in zip(group[1:], counts[1:])]))
