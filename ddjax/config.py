"""Typed configs, dotted `key=value` overrides and sweep values.

A run is described by a `Config` (one concrete value per key) plus a `sweep` dict that maps dotted keys to
lists of values. Sweep values on the command line:

    a,b,c        a list
    a..b         inclusive integer range (also a..b..s with step s, integers or floats)
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any


class ConfigError(ValueError):
  """A bad key or value; its message is a single line meant for the user."""


def _f(default, help: str, choices: tuple | None = None):
  return field(default=default, metadata={'help': help, 'choices': choices})


@dataclass
class DataConfig:
  name: str = _f('mnist1d', 'dataset', ('mnist1d', 'cifar10', 'synthetic_cifar10', 'modular', 'mheight'))
  dir: str | None = _f(None, 'cifar10: the "CIFAR-10 python version" archive or folder (none: tensorflow-datasets)')
  augment: str = _f('auto', 'training-batch augmentation (auto: crop_flip for images, none otherwise)',
                    ('auto', 'none', 'crop_flip'))
  num_samples: int = _f(5000, 'generated examples before the train/test split (mnist1d, synthetic_cifar10)')
  train_split: float = _f(0.8, 'fraction of the generated examples used for training')
  seed: int = _f(42, 'seed of the dataset generator (static: one data set per job)')
  noise: float = _f(0.0, 'probability that a training label is replaced by a random incorrect one')
  noise_seed: int | None = _f(None, 'seed of the label-noise draw (default: seed)')
  op: str = _f('add', 'modular: the operation a op b mod p (div: b != 0, p prime)', ('add', 'sub', 'mul', 'div'))
  p: int = _f(53, 'modular: the modulus (also the number of classes)')
  groups: str = _f('all', "mheight: (n, k, m) groups written n/k/m joined by '+', or all (21 groups)")
  workers: int = _f(0, 'mheight: processes computing heights (0: one per core); cached on disk after')


@dataclass
class ModelConfig:
  name: str = _f('cnn1d', 'architecture', ('mlp', 'cnn1d', 'resnet1d', 'resnet18k', 'embed_mlp', 'transformer',
                                           'resmlp', 'resnet2d_ln'))
  width: int = _f(16, 'base width (hidden units, channels of the first stage, or d_model)')
  depth: int = _f(2, 'mlp: hidden layers; resmlp: residual blocks')
  seed: int | None = _f(None, 'seed of the parameter init (default: seed)')
  conv: str = _f('auto', 'convolution form: lax, im2col, or auto (im2col on CPU, lax elsewhere)',
                 ('auto', 'lax', 'im2col'))


@dataclass
class OptimConfig:
  name: str = _f('adam', 'optimizer', ('adam', 'adamw', 'sgd'))
  lr: float = _f(1e-3, 'learning rate')
  wd: float = _f(0.0, 'weight decay (L2 for adam and sgd, decoupled and scaled by lr for adamw)')
  momentum: float = _f(0.9, 'SGD momentum')
  b1: float = _f(0.9, 'Adam beta1')
  b2: float = _f(0.999, 'Adam beta2')
  eps: float = _f(1e-8, 'Adam epsilon')


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
    'optim.lr', 'optim.wd', 'optim.momentum', 'optim.b1', 'optim.b2', 'optim.eps'})


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


def parse_scalar(key: str, f: dataclasses.Field, text: str) -> Any:
  """Parses one value for field `f`; raises ConfigError naming the key and what is allowed."""
  tp, nullable = _base_type(f.type)
  text = text.strip()
  if nullable and text.lower() in ('none', 'null'):
    return None
  try:
    if tp is bool:
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


def parse_values(key: str, f: dataclasses.Field, text: str) -> list[Any] | Any:
  """A scalar for a plain value, a list for a sweep (`a,b,c`, `a..b`, `a..b..s`)."""
  if ',' in text:
    parts = [p for p in text.split(',')]
    if any(not p.strip() for p in parts):
      raise ConfigError(f"bad sweep {text!r} for {key}: empty value in the list")
    return [parse_scalar(key, f, p) for p in parts]
  if '..' in text:
    tp, _ = _base_type(f.type)
    pieces = text.split('..')
    if tp not in (int, float) or len(pieces) not in (2, 3):
      raise ConfigError(f"bad sweep {text!r} for {key}: ranges a..b or a..b..s need a numeric key")
    lo, hi = (parse_scalar(key, f, p) for p in pieces[:2])
    step = parse_scalar(key, f, pieces[2]) if len(pieces) == 3 else 1
    if step <= 0 or hi < lo:
      raise ConfigError(f"bad sweep {text!r} for {key}: need a <= b and a step > 0")
    count = int((hi - lo) / step + 1e-9) + 1 if tp is float else (hi - lo) // step + 1
    values = [lo + i * step for i in range(count)]
    return [round(v, 12) for v in values] if tp is float else values
  return parse_scalar(key, f, text)


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
      near = difflib.get_close_matches(key, known, n=1)
      hint = f"did you mean {near[0]}? " if near else ''
      raise ConfigError(f"unknown key {key!r}: {hint}known keys: {', '.join(sorted(known))}")
    value = parse_values(key, known[key], text)
    if isinstance(value, list):
      if not value:
        raise ConfigError(f"bad sweep {text!r} for {key}: no values")
      sweep[key] = value
      cfg = replace(cfg, key, value[0])
    else:
      sweep.pop(key, None)
      cfg = replace(cfg, key, value)
  validate(cfg, sweep)
  return cfg, sweep


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
      'train.flush_seconds': (lambda v: v >= 0, 'must be >= 0'),
      'train.eval_points': (lambda v: v >= 1, 'must be >= 1'),
      'train.eval_every': (lambda v: v >= 0, 'must be >= 0'),
      'train.eval_batch': (lambda v: v >= 1, 'must be >= 1'),
      'train.map_batch': (lambda v: v >= 1, 'must be >= 1'),
      'train.bucket_ratio': (lambda v: v >= 1.0, 'must be >= 1'),
      'train.max_buckets': (lambda v: v >= 1, 'must be >= 1'),
      'train.memory_gb': (lambda v: v >= 0, 'must be >= 0'),
      'train.checkpoint_every': (lambda v: v >= 0, 'must be >= 0'),
      'train.checkpoint_minutes': (lambda v: v >= 0, 'must be >= 0'),
      'train.checkpoint_keep': (lambda v: v >= 1, 'must be >= 1'),
  }
  seed_ok = (lambda v: v is None or 0 <= v < 2 ** 31, 'must be in [0, 2^31)')
  rules.update({k: seed_ok for k in ('seed', 'model.seed', 'train.batch_seed', 'data.noise_seed', 'data.seed')})
  rules.update({k: (lambda v: 0.0 <= v < 1.0, 'must be in [0, 1)') for k in ('optim.b1', 'optim.b2')})
  rules['optim.momentum'] = (lambda v: 0.0 <= v <= 1.0, 'must be in [0, 1]')
  rules['optim.eps'] = (lambda v: v >= 0, 'must be >= 0')
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
    if data == 'mheight':
      for noise in sweep.get('data.noise', [cfg.data.noise]):
        if noise:
          raise ConfigError(f"bad value {noise!r} for data.noise: mheight is a regression task (allowed: 0)")
      for groups in sweep.get('data.groups', [cfg.data.groups]):
        from ddjax.data.mheight import parse_groups
        try:
          parse_groups(groups)
        except ValueError as e:
          raise ConfigError(f"bad value {groups!r} for data.groups: {e}") from None
    if data == 'modular':
      for op in sweep.get('data.op', [cfg.data.op]):
        for p in sweep.get('data.p', [cfg.data.p]):
          if op == 'div' and any(p % q == 0 for q in range(2, int(p ** 0.5) + 1)):
            raise ConfigError(f"bad value {p!r} for data.p: division mod p needs a prime p")
  keys = ['data.name', 'data.num_samples', 'data.train_split', 'data.p', 'data.op', 'data.groups']
  for values in itertools.product(*(sweep.get(k, [get(cfg, k)]) for k in keys)):
    data = dataclasses.replace(cfg.data, **{k.split('.')[1]: v for k, v in zip(keys, values)})
    n_train = train_examples(data)
    for b in sweep.get('train.batch_size', [cfg.train.batch_size]):
      if n_train is not None and b > n_train:
        raise ConfigError(f"bad value {b!r} for train.batch_size: larger than the {n_train} training examples")


IMAGE_DATA = ('cifar10', 'synthetic_cifar10')
# The data sets each model takes.
MODEL_DATA = {
    'mlp': ('mnist1d', *IMAGE_DATA, 'mheight'), 'cnn1d': ('mnist1d',), 'resnet1d': ('mnist1d',),
    'resnet18k': IMAGE_DATA, 'embed_mlp': ('modular',), 'transformer': ('modular',),
    'resmlp': ('mnist1d', *IMAGE_DATA, 'mheight'), 'resnet2d_ln': (*IMAGE_DATA, 'mheight'),
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
  lines = []
  for key, f in fields(cfg).items():
    value = sweep.get(key, get(cfg, key))
    shown = ','.join(map(str, value)) if isinstance(value, list) else str(value)
    if len(shown) > 40:
      shown = shown[:37] + '...'
    tag = ' [member axis]' if key in MEMBER_KEYS else ''
    lines.append(f"  {key:<20} {shown:<40} {f.metadata.get('help', '')}{tag}")
  return '\n'.join(lines)
