"""The config schema: typed dataclasses (one field per key, with its help), which keys are member axes, which only
change execution, and which came later (left out of run ids at their old defaults).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Callable


class ConfigError(ValueError):
  """A bad key or value; its message is a single line meant for the user."""


def _f(default, help: str, choices: tuple | Callable[[], tuple] | None = None):
  return field(default=default, metadata={'help': help, 'choices': choices})


def _registered_datasets() -> tuple[str, ...]:
  from ddjax.data.registry import DATASETS
  return tuple(DATASETS)


def _registered_models() -> tuple[str, ...]:
  from ddjax.nn.registry import MODELS
  return tuple(MODELS)


def choices_of(f: dataclasses.Field) -> tuple | None:
  """The values a key allows (None: any of its type); registries give model.name's and data.name's."""
  choices = f.metadata.get('choices')
  return choices() if callable(choices) else choices


@dataclass
class DataConfig:
  name: str = _f('mnist1d', 'dataset', _registered_datasets)
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
  name: str = _f('cnn1d', 'architecture', _registered_models)
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
                      'auto: on a CPU bucket when a job has at least as many buckets as devices, else shard; shard '
                      'on several accelerators', ('auto', 'bucket', 'shard'))
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
