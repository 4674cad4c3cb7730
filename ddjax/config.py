"""Typed configs, dotted `key=value` overrides and sweep values.

A run is described by a `Config` (one concrete value per key) plus a `sweep` dict that maps dotted keys to
lists of values. Sweep values on the command line (the same forms as Hydra's, plus inclusive ranges):

    a,b,c                  a list; choice(a,b,c) is the same list
    a..b, a..b..s          inclusive range with step 1 or s (integers or floats; numeric keys)
    range(a,b), range(a,b,s), range(b)
                           Python's range: b excluded, step s (default 1, may be negative), floats allowed
    'text', "text"         quotes make one literal element: commas and `..` inside it are text, not a sweep;
                           on a string key the text is kept verbatim (`'none'` is the string none), on other
                           keys the quotes are dropped and the value parsed as usual ('3' is 3 for an int key)

A YAML file (`load_config_file`) sets keys like `key=value` does and may zip swept keys together (`zip:`).
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import json
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import yaml


class ConfigError(ValueError):
  """A bad key or value; its message is a single line meant for the user."""


def _f(default, help: str, choices: tuple | None = None):
  return field(default=default, metadata={'help': help, 'choices': choices})


@dataclass
class DataConfig:
  name: str = _f('mnist1d', 'dataset', ('mnist1d', 'cifar10', 'synthetic_cifar10', 'modular', 'mheight',
                                       'linear_teacher'))
  dir: str | None = _f(None, 'cifar10: the "CIFAR-10 python version" archive or folder (none: tensorflow-datasets)')
  augment: str = _f('auto', 'training-batch augmentation (auto: crop_flip for images, none otherwise)',
                    ('auto', 'none', 'crop_flip'))
  num_samples: int = _f(5000, 'generated examples before the train/test split (mnist1d, synthetic_cifar10, '
                        'linear_teacher)')
  train_split: float = _f(0.8, 'fraction of the generated examples used for training')
  seed: int = _f(42, 'seed of the dataset generator (static: one data set per job)')
  noise: float = _f(0.0, 'probability that a training label is replaced by a random incorrect one')
  noise_seed: int | None = _f(None, 'seed of the label-noise draw (default: seed)')
  op: str = _f('add', 'modular: the operation a op b mod p (div: b != 0, p prime)', ('add', 'sub', 'mul', 'div'))
  p: int = _f(53, 'modular: the modulus (also the number of classes)')
  groups: str = _f('all', "mheight: (n, k, m) groups written n/k/m joined by '+', or all (21 groups)")
  workers: int = _f(0, 'mheight: processes computing heights (0: one per core); cached on disk after')
  dim: int = _f(16, 'linear_teacher: input and output dimension')
  spectrum: str = _f('4/2/1/0.5', "linear_teacher: the teacher's nonzero singular values joined by '/' (its rank is "
                     'their number)')


@dataclass
class ModelConfig:
  name: str = _f('cnn1d', 'architecture', ('mlp', 'cnn1d', 'resnet1d', 'resnet18k', 'embed_mlp', 'transformer',
                                           'resmlp', 'resnet2d_ln', 'deep_linear'))
  width: int = _f(16, 'base width (hidden units, channels of the first stage, or d_model)')
  depth: int = _f(2, 'mlp, deep_linear: hidden layers; resmlp: residual blocks')
  seed: int | None = _f(None, 'seed of the parameter init (default: seed)')
  conv: str = _f('auto', 'convolution form: lax, im2col, or auto (im2col on CPU, lax elsewhere)',
                 ('auto', 'lax', 'im2col'))
  init_scale: float = _f(1.0, 'every parameter at init times this (1: the default init; small: the rich, '
                         'saddle-to-saddle regime; large: lazy training)')


@dataclass
class OptimConfig:
  name: str = _f('adam', 'optimizer', ('adam', 'adamw', 'sgd'))
  lr: float = _f(1e-3, 'learning rate')
  wd: float = _f(0.0, 'weight decay (L2 for adam and sgd, decoupled and scaled by lr for adamw)')
  momentum: float = _f(0.9, 'SGD momentum')
  b1: float = _f(0.9, 'Adam beta1')
  b2: float = _f(0.999, 'Adam beta2')
  eps: float = _f(1e-8, 'Adam epsilon')
  warmup: int = _f(0, 'linear warmup over this many optimizer steps: update t (from 0) gets lr * min(1, t / warmup)')
  schedule: str = _f('constant', 'learning rate after warmup: constant, or a cosine or linear decay towards 0 over '
                     'the rest of the run (as PyTorch: 0 after the last update)', ('constant', 'cosine', 'linear'))


@dataclass
class TrainConfig:
  epochs: int = _f(100, 'training epochs')
  batch_size: int = _f(100, 'minibatch size (the last partial batch of an epoch is dropped; 0: full batch)')
  batch_seed: int | None = _f(None, 'seed of the batch order (default: seed)')
  eval_points: int = _f(30, 'log-spaced evaluation epochs (the last epoch is always evaluated)')
  eval_every: int = _f(0, 'also evaluate every N epochs (0: only the log-spaced grid)')
  eval_batch: int = _f(1000, 'examples per forward pass during evaluation')
  strategy: str = _f('vmap', 'how members of a bucket execute: vmap or map (lax.map)', ('vmap', 'map'))
  map_batch: int = _f(1, 'with strategy=map: members vmapped together in each map step')
  map_from: int = _f(0, 'buckets padded to at least this width execute as strategy=map (chunks of map_batch), '
                     'narrower ones as strategy (0: every bucket as strategy)')
  compute_dtype: str = _f('float32', 'dtype of dense and conv compute (parameters, norms and loss stay float32)',
                          ('float32', 'bfloat16'))
  placement: str = _f('auto', 'bucket: whole buckets onto devices; shard: every bucket over all devices; '
                      'auto: bucket on CPU, shard on several accelerators', ('auto', 'bucket', 'shard'))
  bucket_ratio: float = _f(1.25, 'target padded/useful FLOP ratio of the width buckets')
  max_buckets: int = _f(8, 'most width buckets (compiled programs) per job')
  memory_gb: float = _f(0.0, 'device memory a bucket may use, GiB (0: 90% of the accelerator, half the RAM on CPU)')
  checkpoint_every: int = _f(0, 'checkpoint every N epochs (0: only by time, at the end and on SIGTERM/SIGINT)')
  checkpoint_minutes: float = _f(10.0, 'checkpoint when this many minutes passed since the last one (0: never)')
  checkpoint_keep: int = _f(3, 'checkpoints kept per job (the newest)')
  keep_best: bool = _f(False, "keep each member's parameters at its lowest test (validation) loss in the checkpoint")
  collapse: bool = _f(False, 'record neural collapse (nc1..nc4, ddjax.metrics) of the output layer\'s input on the '
                      'training set at every evaluation (two more passes over it)')
  sharpness: int = _f(0, "record the training loss's top Hessian eigenvalue at every evaluation, by this many "
                      'power-iteration steps on the monitor batch (0: off)')
  hessian_trace: int = _f(0, "record the training loss's Hessian trace at every evaluation, Hutchinson's estimate "
                          'from this many Rademacher probes on the monitor batch (0: off)')
  noise_scale: bool = _f(False, 'record the gradient noise scale (trace_sigma, grad_sq, noise_scale; McCandlish et '
                         'al.) at every evaluation, from per-example gradients on the monitor batch')
  monitor_batch: int = _f(1000, 'training examples, evenly spaced through the training set (with each member\'s own '
                          'labels), that sharpness, hessian_trace and noise_scale use')
  flush_seconds: float = _f(60.0, 'write buffered evaluation rows to a part file at least this often')


@dataclass
class Config:
  seed: int = _f(0, 'base seed of a member (init, batch order and label noise unless set apart)')
  data: DataConfig = field(default_factory=DataConfig)
  model: ModelConfig = field(default_factory=ModelConfig)
  optim: OptimConfig = field(default_factory=OptimConfig)
  train: TrainConfig = field(default_factory=TrainConfig)


# Keys whose values can differ between members of one compiled step; every other key makes separate jobs.
MEMBER_KEYS = frozenset({
    'seed', 'model.width', 'model.seed', 'train.batch_seed', 'data.noise', 'data.noise_seed',
    'optim.lr', 'optim.wd', 'optim.momentum', 'optim.b1', 'optim.b2', 'optim.eps', 'optim.warmup',
    'model.init_scale'})

# Keys that change how a run executes or is stored, never its numbers: left out of run ids, and free to differ
# when a run is resumed (a checkpoint moves its members into whatever buckets the new settings make).
EXECUTION_KEYS = frozenset({
    'data.workers', 'train.flush_seconds', 'train.checkpoint_every', 'train.checkpoint_minutes',
    'train.checkpoint_keep', 'train.memory_gb', 'train.placement', 'train.bucket_ratio', 'train.max_buckets',
    'train.eval_batch', 'train.strategy', 'train.map_batch', 'train.map_from'})

# Keys that came after stores were first written, with the default that gives the old behaviour. A run's identity
# (run ids, what --resume compares) leaves such a key out while it holds that default, so the members of an existing
# store keep their ids, and its runs resume, after ddjax gains the key.
LATER_KEYS = {'optim.warmup': 0, 'optim.schedule': 'constant', 'train.collapse': False, 'model.init_scale': 1.0,
              'data.dim': 16, 'data.spectrum': '4/2/1/0.5', 'train.sharpness': 0, 'train.hessian_trace': 0,
              'train.noise_scale': False, 'train.monitor_batch': 1000}


def identity(flat: dict[str, Any]) -> dict[str, Any]:
  """A flat {key: value} config without its execution-only keys and its later keys at their old defaults."""
  return {k: v for k, v in flat.items()
          if k not in EXECUTION_KEYS and not (k in LATER_KEYS and v == LATER_KEYS[k])}


def fields(cfg: Any, prefix: str = '') -> dict[str, dataclasses.Field]:
  """Dotted key -> dataclass field, for every leaf of a config."""
  out = {}
  for f in dataclasses.fields(cfg):
    value = getattr(cfg, f.name)
    if dataclasses.is_dataclass(value):
      out.update(fields(value, prefix + f.name + '.'))
    else:
      out[prefix + f.name] = f
  return out


def get(cfg: Any, key: str) -> Any:
  for part in key.split('.'):
    cfg = getattr(cfg, part)
  return cfg


def replace(cfg: Any, key: str, value: Any) -> Any:
  """A copy of `cfg` with dotted `key` set to `value`."""
  head, _, rest = key.partition('.')
  if rest:
    return dataclasses.replace(cfg, **{head: replace(getattr(cfg, head), rest, value)})
  return dataclasses.replace(cfg, **{head: value})


def to_dict(cfg: Any) -> dict[str, Any]:
  return dataclasses.asdict(cfg)


def flatten(d: dict[str, Any], prefix: str = '') -> dict[str, Any]:
  """A nested dict (e.g. to_dict of a config, or its JSON) as {dotted key: value}."""
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(flatten(v, f'{prefix}{k}.'))
    else:
      out[prefix + k] = v
  return out


def to_json(cfg: Any) -> str:
  return json.dumps(to_dict(cfg), sort_keys=True)


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
  choices = f.metadata.get('choices')
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

  A value that is one quoted string is a scalar; elements of a list may be quoted (see the module docstring)."""
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
  free_text = tp is str and not f.metadata.get('choices')  # e.g. a path: `..` is text there
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


def _unknown_key(key: str, known) -> ConfigError:
  near = difflib.get_close_matches(key, known, n=1)
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
  validate(cfg, sweep)
  return cfg, sweep


def what_trains(config: dict[str, Any], sweep: dict[str, list], zips: Sequence[Sequence[str]]) -> dict[str, Any]:
  """What a run trains, as {key: value} to compare two runs by (a run record's config dict, sweep and zip groups):
  the fixed keys, and each swept key's values or each zip group's value tuples in a canonical order ('sweep of a
  with b' -> [[a0, b0], [a1, b1], ...] sorted), since members are found by run id, not by position. Execution-only
  keys are left out."""
  config, sweep = json.loads(json.dumps(config, default=str)), json.loads(json.dumps(sweep, default=str))
  keys = {k: v for k, v in identity(flatten(config)).items() if k not in sweep}
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
  choices = f.metadata.get('choices')
  if choices and value not in choices:
    raise ConfigError(f"bad value {value!r} for {key}: allowed values are {', '.join(map(str, choices))}")
  return value


def _yaml_values(key: str, f: dataclasses.Field, value: Any) -> list[Any] | Any:
  """A YAML value for field `f`: a list is a sweep, a string goes through parse_values, others are checked."""
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
  sections = {k.rsplit('.', 1)[0] for k in known if '.' in k}

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
  walk(data, '')
  zip_groups = []
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


def validate(cfg: Config, sweep: dict[str, list]) -> None:
  """Checks ranges that types cannot express, for the base config and every swept value."""
  rules = {
      'model.width': (lambda v: v >= 1, 'must be >= 1'),
      'data.noise': (lambda v: 0.0 <= v < 1.0, 'must be in [0, 1)'),
      'data.train_split': (lambda v: 0.0 < v < 1.0, 'must be in (0, 1)'),
      'data.num_samples': (lambda v: v >= 20, 'must be >= 20'),
      'optim.lr': (lambda v: v > 0, 'must be > 0'),
      'optim.wd': (lambda v: v >= 0, 'must be >= 0'),
      'train.epochs': (lambda v: v >= 1, 'must be >= 1'),
      'train.batch_size': (lambda v: v >= 0, 'must be >= 0 (0: full batch)'),
      'data.p': (lambda v: v >= 2, 'must be >= 2'),
      'data.workers': (lambda v: v >= 0, 'must be >= 0'),
      'model.depth': (lambda v: v >= 1, 'must be >= 1'),
      'model.init_scale': (lambda v: v > 0 and math.isfinite(v),
                           'must be a finite number > 0 (every parameter at init times it)'),
      'data.dim': (lambda v: v >= 1, 'must be >= 1'),
      'train.flush_seconds': (lambda v: v >= 0, 'must be >= 0'),
      'train.eval_points': (lambda v: v >= 1, 'must be >= 1'),
      'train.eval_every': (lambda v: v >= 0, 'must be >= 0'),
      'train.eval_batch': (lambda v: v >= 1, 'must be >= 1'),
      'train.map_batch': (lambda v: v >= 1, 'must be >= 1'),
      'train.map_from': (lambda v: v >= 0, 'must be >= 0 (0: off)'),
      'train.bucket_ratio': (lambda v: v >= 1.0, 'must be >= 1'),
      'train.max_buckets': (lambda v: v >= 1, 'must be >= 1'),
      'train.memory_gb': (lambda v: v >= 0, 'must be >= 0'),
      'train.checkpoint_every': (lambda v: v >= 0, 'must be >= 0'),
      'train.checkpoint_minutes': (lambda v: v >= 0, 'must be >= 0'),
      'train.checkpoint_keep': (lambda v: v >= 1, 'must be >= 1'),
      'train.sharpness': (lambda v: v >= 0, 'must be >= 0 (power-iteration steps; 0: off)'),
      'train.hessian_trace': (lambda v: v >= 0, 'must be >= 0 (probes; 0: off)'),
      'train.monitor_batch': (lambda v: v >= 2, 'must be >= 2'),
  }
  seed_ok = (lambda v: v is None or 0 <= v < 2 ** 31, 'must be in [0, 2^31)')
  rules.update({k: seed_ok for k in ('seed', 'model.seed', 'train.batch_seed', 'data.noise_seed', 'data.seed')})
  rules.update({k: (lambda v: 0.0 <= v < 1.0, 'must be in [0, 1)') for k in ('optim.b1', 'optim.b2')})
  rules['optim.momentum'] = (lambda v: 0.0 <= v <= 1.0, 'must be in [0, 1]')
  rules['optim.eps'] = (lambda v: v >= 0, 'must be >= 0')
  rules['optim.warmup'] = (lambda v: v >= 0, 'must be >= 0 (steps; 0: no warmup)')
  for key, (ok, what) in rules.items():
    for v in sweep.get(key, [get(cfg, key)]):
      if not ok(v):
        raise ConfigError(f"bad value {v!r} for {key}: {what}")
  for data in sweep.get('data.name', [cfg.data.name]):
    for model in sweep.get('model.name', [cfg.model.name]):
      if data not in MODEL_DATA[model]:
        raise ConfigError(f"model.name={model} does not fit data.name={data}: {model} takes "
                          f"{', '.join(MODEL_DATA[model])}")
    for aug in sweep.get('data.augment', [cfg.data.augment]):
      if aug == 'crop_flip' and data not in IMAGE_DATA:
        raise ConfigError(f"bad value 'crop_flip' for data.augment: {data} has no images (allowed: auto, none)")
    if data in REGRESSION_DATA:
      for on in sweep.get('train.collapse', [cfg.train.collapse]):
        if on:
          raise ConfigError(f'bad value True for train.collapse: {data} is a regression task, with no classes to '
                            'collapse (allowed: false)')
      for noise in sweep.get('data.noise', [cfg.data.noise]):
        if noise:
          raise ConfigError(f"bad value {noise!r} for data.noise: {data} is a regression task (allowed: 0)")
    if data == 'mheight':
      for groups in sweep.get('data.groups', [cfg.data.groups]):
        from ddjax.data.mheight import parse_groups
        try:
          parse_groups(groups)
        except ValueError as e:
          raise ConfigError(f"bad value {groups!r} for data.groups: {e}") from None
    if data == 'linear_teacher':
      from ddjax.data.teacher import parse_spectrum
      for spectrum in sweep.get('data.spectrum', [cfg.data.spectrum]):
        try:
          values = parse_spectrum(spectrum)
        except ValueError as e:
          raise ConfigError(f"bad value {spectrum!r} for data.spectrum: {e}") from None
        for dim in sweep.get('data.dim', [cfg.data.dim]):
          if len(values) > dim:
            raise ConfigError(f"bad value {spectrum!r} for data.spectrum: {len(values)} singular values, more than "
                              f"data.dim={dim} allows")
    if data == 'modular':
      for op in sweep.get('data.op', [cfg.data.op]):
        for p in sweep.get('data.p', [cfg.data.p]):
          if op == 'div' and any(p % q == 0 for q in range(2, int(p ** 0.5) + 1)):
            raise ConfigError(f"bad value {p!r} for data.p: division mod p needs a prime p")
  keys = ['data.name', 'data.num_samples', 'data.train_split', 'data.p', 'data.op', 'data.groups', 'data.dim']
  for values in itertools.product(*(sweep.get(k, [get(cfg, k)]) for k in keys)):
    data = dataclasses.replace(cfg.data, **{k.split('.')[1]: v for k, v in zip(keys, values)})
    n_train = train_examples(data)
    if data.name in ('modular', 'mheight') and n_train is not None:
      total = train_examples(dataclasses.replace(data, train_split=1.0))
      if n_train < 1 or n_train >= total:
        raise ConfigError(f"bad value {data.train_split!r} for data.train_split: it leaves {n_train} of {total} "
                          f"examples for training; both splits need at least one")
    if data.name == 'linear_teacher' and n_train < data.dim:
      raise ConfigError(f"bad value {data.num_samples!r} for data.num_samples: it leaves {n_train} training examples, "
                        f"fewer than data.dim={data.dim} (the inputs are whitened: they need at least as many)")
    for b in sweep.get('train.batch_size', [cfg.train.batch_size]):
      if n_train is not None and b > n_train:
        raise ConfigError(f"bad value {b!r} for train.batch_size: larger than the {n_train} training examples")


IMAGE_DATA = ('cifar10', 'synthetic_cifar10')
REGRESSION_DATA = ('mheight', 'linear_teacher')
# The data sets each model takes.
MODEL_DATA = {
    'mlp': ('mnist1d', *IMAGE_DATA, *REGRESSION_DATA), 'cnn1d': ('mnist1d',), 'resnet1d': ('mnist1d',),
    'resnet18k': IMAGE_DATA, 'embed_mlp': ('modular',), 'transformer': ('modular',),
    'resmlp': ('mnist1d', *IMAGE_DATA, *REGRESSION_DATA), 'resnet2d_ln': (*IMAGE_DATA, 'mheight'),
    'deep_linear': ('linear_teacher', 'mnist1d', 'mheight'),
}


def train_examples(data: DataConfig) -> int | None:
  """Training examples a data config gives (None where only loading tells: cifar10)."""
  if data.name == 'cifar10':
    return None
  if data.name == 'modular':
    pairs = data.p * (data.p - 1 if data.op == 'div' else data.p)
    return int(pairs * data.train_split)
  n = int(data.num_samples * data.train_split)
  if data.name == 'mheight':
    from ddjax.data.mheight import parse_groups
    return n * len(parse_groups(data.groups))
  return n


def describe(cfg: Config, sweep: dict[str, list]) -> str:
  """One line per key: name, current value or sweep, help text (for --help)."""
  lines, known = [], fields(cfg)
  pad = max(map(len, known))
  for key, f in known.items():
    value = sweep.get(key, get(cfg, key))
    shown = ','.join(map(str, value)) if isinstance(value, list) else str(value)
    if len(shown) > 40:
      shown = shown[:37] + '...'
    tag = ' [member axis]' if key in MEMBER_KEYS else ''
    choices = f" (one of: {', '.join(map(str, f.metadata['choices']))})" if f.metadata.get('choices') else ''
    lines.append(f"  {key:<{pad}} {shown:<40} {f.metadata.get('help', '')}{choices}{tag}")
  return '\n'.join(lines)


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
