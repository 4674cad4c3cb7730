"""The config schema: typed dataclasses (one field per key, with its help), which keys are member axes, which only
change execution, and which came later (left out of run ids at their old defaults).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable


class ConfigError(ValueError):
  """A bad key or value; its message is a single line meant for the user."""


def _f(default, help: str, choices: tuple | Callable[[], tuple] | None = None):
  return field(default=default, metadata={'help': help, 'choices': choices})


def _registered_datasets() -> tuple[str, ...]:
  from ddjax.data.registry import DATASETS
  return tuple(DATASETS)


def _registered_teachers() -> tuple[str, ...]:
  from ddjax.data.teachers import TEACHERS
  return tuple(TEACHERS)


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
  train_per_group: int = _f(0, 'mheight: training codes per group, the first of each (0: num_samples x train_split)')
  val_per_group: int = _f(0, 'mheight: validation codes per group, after the training ones; val_loss then drives '
                          'keep_best and the grokking analysis (0: no validation split)')
  test_per_group: int = _f(0, 'mheight, with val_per_group: held-out test codes per group, after those (0: the rest '
                           'of num_samples)')
  val_split: float = _f(0.0, 'modular: fraction of the pairs held out for validation besides the test pairs; '
                        'val_loss and val_error then drive keep_best and the grokking analysis (0: train and test)')
  bound_codewords: int = _f(0, "mheight: per code, the largest m-height of this many random codewords, a lower "
                            'bound of h that train.violation penalises (0: none)')
  file: str = _f('', 'mheight: read the codes from this table instead of generating them (.csv, .parquet, .npz or '
                 '.npy; columns n, k, m, p0, p1, ... and h, inf allowed); run ids use its content, not its path')
  subset: int | None = _f(None, "train on n examples: the first n of the member's permutation of the training split "
                          '(from its noise seed; its label noise drawn on them); none: all of it. See train.budget')
  dim: int = _f(16, 'linear_teacher: input and output dimension')
  spectrum: str = _f('4/2/1/0.5', "linear_teacher, teacher spectrum: the teacher's nonzero singular values joined "
                     "by '/' (its rank is their number)")
  teacher: str = _f('power_law', 'teacher: the teacher matrix W* (a registry: ddjax.data.teachers)',
                    _registered_teachers)
  in_dim: int = _f(5, 'teacher: input dimension')
  out_dim: int = _f(5, 'teacher: output dimension')
  train_size: int = _f(500, 'teacher: training examples')
  test_size: int = _f(500, 'teacher: test examples')
  noise_std: float = _f(0.0, "teacher: each member's training targets get noise_std x N(0, 1), drawn from its "
                        'noise seed (the test targets stay clean)')
  online: bool = _f(False, 'teacher: every optimizer step draws a fresh batch (x ~ N(0, I), its own noise) on the '
                    "device from the member's batch seed; the training set is then only evaluated on (needs "
                    'train.batch_size > 0)')
  scale: float = _f(1.0, 'teacher diagonal, power_law, power_law_topk: the scale of W*')
  alpha: float = _f(1.0, 'teacher power_law, power_law_topk: W* = scale x diag(i^-alpha)')
  topk: int = _f(1, 'teacher power_law_topk: the singular values kept')
  mean: float = _f(0.0, "teacher random_normal: the entries' mean")
  std: float = _f(1.0, "teacher random_normal: the entries' standard deviation")


@dataclass
class ModelConfig:
  name: str = _f('cnn1d', 'architecture', _registered_models)
  width: int = _f(16, 'base width (hidden units, channels of the first stage, or d_model)')
  depth: int = _f(2, 'mlp, deep_linear: hidden layers; resmlp, resnet_ln: residual blocks')
  seed: int | None = _f(None, 'seed of the parameter init (default: seed)')
  conv: str = _f('auto', 'convolution form: lax, im2col, or auto (im2col on CPU, lax elsewhere)',
                 ('auto', 'lax', 'im2col'))
  init_scale: float = _f(1.0, 'every parameter at init times this (1: the default init; small: the rich, '
                         'saddle-to-saddle regime; large: lazy training)')
  norm: str = _f('auto', "the BatchNorm models' normalisation (resnet1d, resnet18k): auto (their own, BatchNorm), "
                 'batch, or none (BatchNorm off)', ('auto', 'batch', 'none'))
  gamma: float | None = _f(None, 'deep_linear, mlp: every weight drawn from N(0, width^-gamma), the init of '
                            'the deep-linear-network literature (times model.init_scale; none: the default init)')
  bias: bool = _f(False, 'deep_linear: biases in every layer (initialised like the weights)')
  param: str = _f('sp', 'parametrization (ddjax.nn.param): sp (standard), ntk or mup (Yang et al.), per-layer init '
                  'and learning-rate multipliers of width / model.base_width', ('sp', 'ntk', 'mup'))
  base_width: int = _f(1, 'ntk, mup: the width at which the parametrization is sp (its multipliers are powers of '
                       'width / base_width)')
  head: str = _f('linear', "resnet_ln: the output, linear, or softplus: log2(1 + softplus(z)), a regression of log2 "
                 'h for h >= 1 (m-heights) that never predicts below 0', ('linear', 'softplus'))
  proj: int = _f(0, 'resnet1d_small, cnn1d_bn: a bias-free linear projector from the features to this many '
                 'dimensions before the classifier, masked like width (0: none)')


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
  max_steps: int = _f(0, 'train this many optimizer steps (0: train.epochs epochs); the last epoch may stop part '
                      'way')
  budget: str = _f('epochs', 'with data.subset: epochs: train.epochs passes over each member\'s own examples '
                   '(fewer steps for fewer examples); steps: as many steps as train.epochs passes over the whole '
                   'training split, for every member (an epoch counts those steps)', ('epochs', 'steps'))
  evaluations: int = _f(0, 'with train.max_steps: evaluate every max_steps / evaluations steps, and only then (0: '
                        'the epoch grid of eval_points and eval_every)')
  loss: str = _f('auto', 'auto: cross-entropy, or for regression the squared error summed over the outputs; '
                 "mse_mean: the squared error's mean over the outputs (PyTorch's MSELoss)", ('auto', 'mse_mean'))
  violation: float = _f(0.0, 'regression with lower bounds (data.bound_codewords): the training loss adds '
                        'violation x relu(bound - prediction)^2 per example (0: off)')
  eval_points: int = _f(30, 'log-spaced evaluation epochs (the last epoch is always evaluated)')
  eval_every: int = _f(0, 'also evaluate every N epochs (0: only the log-spaced grid)')
  eval_every_steps: int = _f(0, 'also evaluate every N optimizer steps, within epochs too (0: off; rows carry '
                             'step, and a fractional epoch)')
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
  snapshot_epochs: str = _f('', "keep every member's state at these epochs, E/E/... (0: at init), apart from the "
                            'rolling checkpoints and never deleted by them; read one with '
                            "ddjax.run.member_variables(DIR, RUN_ID, which=E)")
  keep_best: bool = _f(False, "keep each member's parameters at its best train.best_metric (by default its lowest "
                       'test, or validation, loss) in the checkpoint')
  checkpoint_best: int = _f(0, "keep each member's K best states (by train.best_metric) in the checkpoint, read with "
                            "member_variables(..., 'best:i') (0: one with train.keep_best, else none)")
  best_metric: str = _f('test_loss', 'what the best states are best at (an evaluation column of the base probes); '
                        'with a validation split test_loss and test_error select by val_loss and val_error, so the '
                        'held-out test split never chooses', ('test_loss', 'train_loss', 'test_error', 'train_error',
                                                              'test_error_noisy', 'val_loss', 'val_error'))
  best_mode: str = _f('min', 'best is the lowest (min) or the highest (max) value of train.best_metric',
                      ('min', 'max'))
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


def _registered_callbacks() -> tuple[str, ...]:
  from ddjax.callbacks import CALLBACKS
  return tuple(CALLBACKS)


@dataclass
class CallbackConfig:
  step: int = _f(0, 'switch_batch_size: the optimizer step after which the batch size switches')
  batch_size: int = _f(0, 'switch_batch_size: the batch size from then on')
  schedule: str = _f('', 'multi_switch_batch_size: STEP:BATCH/STEP:BATCH, each switch and its batch size')
  every: int = _f(0, 'lr_decay: every this many optimizer steps ...')
  factor: float = _f(1.0, '... the learning rate is multiplied by this')


@dataclass
class Config:
  seed: int = _f(0, 'base seed of a member (init, batch order and label noise unless set apart)')
  pair: str = _f('', "comparative training: the member's side, a or b, swept zipped with the keys in which the two "
                 'differ (pair=a,b optim.lr=0.1,0.01 --zip pair,optim.lr); each is compared with its partner by the '
                 'comparative probes', ('', 'a', 'b'))
  data: DataConfig = field(default_factory=DataConfig)
  model: ModelConfig = field(default_factory=ModelConfig)
  optim: OptimConfig = field(default_factory=OptimConfig)
  train: TrainConfig = field(default_factory=TrainConfig)
  callbacks: str = field(default='', metadata={
      'help': 'callbacks that change training as it goes, NAME,NAME (one value, not a sweep: switch_batch_size, '
              'multi_switch_batch_size, lr_decay; plugins add more); their options are callback.* keys',
      'callback_names': True})
  callback: CallbackConfig = field(default_factory=CallbackConfig)
  probes: str = field(default='', metadata={
      'help': 'probes to record besides the base ones, NAME,NAME (one value, not a sweep; see Probes below)',
      'probe_names': True})
  probe: dict = field(default_factory=dict, metadata={
      'help': 'probe.NAME.KEY=VALUE: an option of probe NAME, `every` its cadence (see Probes below)',
      'probe_options': True})


# The train.* keys that came before probes: each switches a probe on (and sets one option), and keeps hashing into
# run ids as it always did, so stores written with them keep their ids. key -> (probes, the option it sets or None)
PROBE_ALIASES = {'train.collapse': (('collapse',), None), 'train.sharpness': (('sharpness',), 'iters'),
                 'train.hessian_trace': (('hessian_trace',), 'probes'), 'train.noise_scale': (('noise_scale',), None),
                 'train.monitor_batch': (('sharpness', 'hessian_trace', 'noise_scale'), 'batch')}


def probe_fields() -> dict[str, dataclasses.Field]:
  """A field per option of every registered probe, `probe.NAME.KEY` (`every` first: its cadence). Built once per
  set of registered probes (a run id reads it for every probe key: 75,000 calls for 600 members)."""
  from ddjax.probes.registry import PROBES
  return dict(_probe_fields(tuple((name, id(spec)) for name, spec in PROBES.items())))


@functools.lru_cache(maxsize=4)
def _probe_fields(registered: tuple) -> dict[str, dataclasses.Field]:
  from ddjax.probes.registry import PROBES, Option
  out = {}
  for name, spec in PROBES.items():
    cadence = Option(spec.every, 'cadence: ' + ('every N optimizer steps' if spec.kind == 'step' else
                                                'eval, Nepochs, at:E/E/... or Nsteps'))
    for key, opt in [*([] if spec.always else [('every', cadence)]), *spec.options.items()]:  # always: no cadence
      f = field(default=opt.default, metadata={'help': opt.help, 'choices': opt.choices, 'probe': (name, key)})
      f.name, f.type = key, type(opt.default).__name__
      out[f'probe.{name}.{key}'] = f
  return out


def probe_uses(cfg: Config) -> dict[str, dict[str, Any]]:
  """The probes a config switches on (`probes` and the train.* aliases), each with the options it sets."""
  on = {name: {} for name in cfg.probes.split(',') if name}
  for key, (names, option) in PROBE_ALIASES.items():
    value = get(cfg, key)
    if key == 'train.monitor_batch':
      for name in names:
        if name in on and 'batch' not in cfg.probe.get(name, {}):
          on[name]['batch'] = value
    elif value:
      on.setdefault(names[0], {})
      if option is not None:
        on[names[0]][option] = value
  for name in on:
    on[name].update(cfg.probe.get(name, {}))
  return on


# Keys whose values can differ between members of one compiled step; every other key makes separate jobs.
MEMBER_KEYS = frozenset({
    'seed', 'model.width', 'model.seed', 'train.batch_seed', 'data.noise', 'data.noise_seed',
    'optim.lr', 'optim.wd', 'optim.momentum', 'optim.b1', 'optim.b2', 'optim.eps', 'optim.warmup',
    'model.init_scale', 'model.proj', 'data.noise_std', 'model.gamma', 'pair', 'model.param', 'model.base_width',
    'data.subset'})

# Member keys that the model masks like width (its SIZES): the job's model is padded to the largest of its members.
SIZE_KEYS = ('model.proj',)

# Keys that change how a run executes or is stored, never its numbers: left out of run ids, and free to differ
# when a run is resumed (a checkpoint moves its members into whatever buckets the new settings make).
EXECUTION_KEYS = frozenset({
    'data.workers', 'train.flush_seconds', 'train.checkpoint_every', 'train.checkpoint_minutes',
    'train.checkpoint_keep', 'train.snapshot_epochs', 'train.memory_gb', 'train.placement', 'train.bucket_ratio',
    'train.max_buckets', 'train.eval_batch', 'train.strategy', 'train.map_batch', 'train.map_from'})

# Keys that came after stores were first written, with the default that gives the old behaviour. A run's identity
# (run ids, what --resume compares) leaves such a key out while it holds that default, so the members of an existing
# store keep their ids, and its runs resume, after ddjax gains the key.
LATER_KEYS = {'optim.warmup': 0, 'optim.schedule': 'constant', 'train.collapse': False, 'model.init_scale': 1.0,
              'data.dim': 16, 'data.spectrum': '4/2/1/0.5', 'train.sharpness': 0, 'train.hessian_trace': 0,
              'train.noise_scale': False, 'train.monitor_batch': 1000, 'train.eval_every_steps': 0,
              'train.checkpoint_best': 0, 'train.best_metric': 'test_loss', 'train.best_mode': 'min',
              'model.norm': 'auto', 'model.proj': 0,
              'data.teacher': 'power_law', 'data.in_dim': 5, 'data.out_dim': 5, 'data.train_size': 500,
              'data.test_size': 500, 'data.noise_std': 0.0, 'data.scale': 1.0, 'data.alpha': 1.0, 'data.topk': 1,
              'data.mean': 0.0, 'data.std': 1.0, 'data.online': False, 'model.gamma': None, 'model.bias': False,
              'train.max_steps': 0, 'train.evaluations': 0, 'train.loss': 'auto', 'pair': '', 'callbacks': '',
              'callback.step': 0, 'callback.batch_size': 0, 'callback.schedule': '', 'callback.every': 0,
              'callback.factor': 1.0, 'model.head': 'linear', 'data.train_per_group': 0, 'data.val_per_group': 0,
              'data.test_per_group': 0, 'data.val_split': 0.0, 'data.bound_codewords': 0, 'data.file': '',
              'train.violation': 0.0, 'model.param': 'sp', 'model.base_width': 1,
              'data.subset': None, 'train.budget': 'epochs'}


def snapshot_epochs(text: str) -> tuple[int, ...]:
  """The epochs of train.snapshot_epochs ('E/E/...', '' for none), sorted; ValueError if it is not that form."""
  text = str(text).strip()
  if not re.fullmatch(r'([0-9]+(/[0-9]+)*)?', text):
    raise ValueError(f"bad value {text!r} for train.snapshot_epochs: expected epochs E/E/... (0: at init), e.g. 0/1/10")
  return tuple(sorted({int(e) for e in text.split('/') if e}))


def is_probe_key(key: str) -> bool:
  """Whether `key` only says what a run records (probes, probe.NAME.KEY): never part of a run's identity."""
  return key == 'probes' or key == 'probe' or key.startswith('probe.')


def fields(cfg: Any, prefix: str = '') -> dict[str, dataclasses.Field]:
  """Dotted key -> dataclass field, for every leaf of a config."""
  out = {}
  for f in dataclasses.fields(cfg):
    value = getattr(cfg, f.name)
    if dataclasses.is_dataclass(value):
      out.update(fields(value, prefix + f.name + '.'))
    elif f.metadata.get('probe_options'):
      out.update(probe_fields())
    else:
      out[prefix + f.name] = f
  return out


def get(cfg: Any, key: str) -> Any:
  if key.startswith('probe.'):
    _, name, option = key.split('.', 2)
    given = cfg.probe.get(name, {})
    return given[option] if option in given else probe_fields()[key].default
  for part in key.split('.'):
    cfg = getattr(cfg, part)
  return cfg


def replace(cfg: Any, key: str, value: Any) -> Any:
  """A copy of `cfg` with dotted `key` set to `value`."""
  if key.startswith('probe.'):
    _, name, option = key.split('.', 2)
    return dataclasses.replace(cfg, probe={**cfg.probe, name: {**cfg.probe.get(name, {}), option: value}})
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


def from_dict(d: dict[str, Any]) -> Config:
  """The Config of a nested dict (to_dict's, or a run record's JSON from any version): keys it lacks (added to ddjax
  after it was written) at their defaults."""
  cfg = Config()
  for key, value in flatten(d).items():
    cfg = replace(cfg, key, value)
  return cfg
