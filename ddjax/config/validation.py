"""Checks that types cannot express: ranges of values, a model that fits its dataset, each dataset's own options
(its registered validator), and batch sizes that fit the training set. Also --help's table of keys."""

from __future__ import annotations

import dataclasses
import itertools
import math

from ddjax.config import axes
from ddjax.config.schema import (LATER_KEYS, MEMBER_KEYS, PROBE_ALIASES, Config, ConfigError, DataConfig, choices_of,
                                 fields, get, is_probe_key, probe_uses, replace, snapshot_epochs)


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
      'train.eval_every_steps': (lambda v: v >= 0, 'must be >= 0 (0: off)'),
      'train.eval_batch': (lambda v: v >= 1, 'must be >= 1'),
      'train.map_batch': (lambda v: v >= 1, 'must be >= 1'),
      'train.map_from': (lambda v: v >= 0, 'must be >= 0 (0: off)'),
      'train.bucket_ratio': (lambda v: v >= 1.0, 'must be >= 1'),
      'train.max_buckets': (lambda v: v >= 1, 'must be >= 1'),
      'train.memory_gb': (lambda v: v >= 0, 'must be >= 0'),
      'train.checkpoint_every': (lambda v: v >= 0, 'must be >= 0'),
      'train.checkpoint_minutes': (lambda v: v >= 0, 'must be >= 0'),
      'train.checkpoint_keep': (lambda v: v >= 1, 'must be >= 1'),
      'train.checkpoint_best': (lambda v: v >= 0, 'must be >= 0 (0: one best state with train.keep_best)'),
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
  rules['model.proj'] = (lambda v: v >= 0, 'must be >= 0 (dimensions; 0: no projector)')
  rules['train.max_steps'] = (lambda v: v >= 0, 'must be >= 0 (0: train.epochs epochs)')
  rules['train.evaluations'] = (lambda v: v >= 0, 'must be >= 0 (0: the epoch grid)')
  rules['data.noise_std'] = (lambda v: 0 <= v < math.inf, 'must be a finite number >= 0')
  rules['model.gamma'] = (lambda v: v is None or math.isfinite(v), 'must be a finite number, or none')
  rules['train.violation'] = (lambda v: 0 <= v < math.inf, 'must be a finite number >= 0 (0: off)')
  rules['model.base_width'] = (lambda v: v >= 1, 'must be >= 1')
  for key, (ok, what) in rules.items():
    for v in sweep.get(key, [get(cfg, key)]):
      if not ok(v):
        raise ConfigError(f"bad value {v!r} for {key}: {what}")
  from ddjax.data.registry import DATASETS
  from ddjax.nn.registry import MODELS
  for model in sweep.get('model.name', [cfg.model.name]):
    for norm in sweep.get('model.norm', [cfg.model.norm]):
      if norm != 'auto' and 'norm' not in MODELS[model].options:
        takes = [name for name, m in MODELS.items() if 'norm' in m.options]
        raise ConfigError(f"bad value {norm!r} for model.norm: {model} has no BatchNorm to set (allowed: auto; "
                          f"models that take it: {', '.join(takes)})")
    for head in sweep.get('model.head', [cfg.model.head]):
      if head != 'linear' and 'head' not in MODELS[model].options:
        takes = [name for name, m in MODELS.items() if 'head' in m.options]
        raise ConfigError(f"bad value {head!r} for model.head: {model} has a linear output (allowed: linear; models "
                          f"that take it: {', '.join(takes)})")
    projs = sweep.get('model.proj', [cfg.model.proj])
    if 0 in projs and max(projs) > 0:
      raise ConfigError(f"bad value 0 in model.proj={','.join(map(str, projs))}: a member without a projector and "
                        'members with one are different models; sweep dimensions >= 1, or run 0 on its own')
    for proj in projs:
      if proj and 'proj' not in MODELS[model].options:
        takes = [name for name, m in MODELS.items() if 'proj' in m.options]
        raise ConfigError(f"bad value {proj!r} for model.proj: {model} has no projector (allowed: 0; models that "
                          f"take it: {', '.join(takes)})")
  axes.validate_param(cfg, sweep)
  _validate_steps_and_inits(cfg, sweep)
  _validate_callbacks(cfg, sweep)
  for data in sweep.get('data.name', [cfg.data.name]):
    spec = DATASETS[data]
    for model in sweep.get('model.name', [cfg.model.name]):
      if spec.inputs not in MODELS[model].inputs:
        takes = [name for name, d in DATASETS.items() if d.inputs in MODELS[model].inputs]
        raise ConfigError(f"model.name={model} does not fit data.name={data}: {model} takes {', '.join(takes)}")
    for aug in sweep.get('data.augment', [cfg.data.augment]):
      if aug == 'crop_flip' and spec.inputs != 'image':
        raise ConfigError(f"bad value 'crop_flip' for data.augment: {data} has no images (allowed: auto, none)")
    if spec.task == 'regress':
      for on in sweep.get('train.collapse', [cfg.train.collapse]):
        if on:
          raise ConfigError(f'bad value True for train.collapse: {data} is a regression task, with no classes to '
                            'collapse (allowed: false)')
      for metric in sweep.get('train.best_metric', [cfg.train.best_metric]):
        if 'error' in metric:
          raise ConfigError(f'bad value {metric!r} for train.best_metric: {data} is a regression task, with no '
                            'errors (allowed: test_loss, train_loss, val_loss)')
      for noise in sweep.get('data.noise', [cfg.data.noise]):
        if noise:
          raise ConfigError(f"bad value {noise!r} for data.noise: {data} is a regression task (allowed: 0)")
    else:
      for key, off in (('data.noise_std', 0.0), ('train.loss', 'auto')):
        for v in sweep.get(key, [get(cfg, key)]):
          if v != off:
            raise ConfigError(f'bad value {v!r} for {key}: {data} is a classification task (allowed: {off}; it '
                              'applies to regression targets)')
  keeps = any(sweep.get('train.keep_best', [cfg.train.keep_best])) or any(
      sweep.get('train.checkpoint_best', [cfg.train.checkpoint_best]))
  for key in ('train.best_metric', 'train.best_mode'):
    if not keeps and any(v != LATER_KEYS[key] for v in sweep.get(key, [get(cfg, key)])):
      raise ConfigError(f'{key} says which states are best, but none are kept: set train.keep_best=true or '
                        'train.checkpoint_best=K')
  _validate_split_keys(cfg, sweep)
  _validate_probes(cfg, sweep)
  # Each combination of the data keys (member keys aside): the dataset's own checks, then the batch size.
  keys = [k for k in fields(cfg) if k.startswith('data.') and k not in MEMBER_KEYS]
  for values in itertools.product(*(sweep.get(k, [get(cfg, k)]) for k in keys)):
    data = dataclasses.replace(cfg.data, **{k.split('.')[1]: v for k, v in zip(keys, values)})
    spec = DATASETS[data.name]
    if spec.validate is not None:
      try:
        spec.validate(data)
      except ValueError as e:
        raise ConfigError(str(e)) from None
    n_train = spec.train_examples(data)
    for b in sweep.get('train.batch_size', [cfg.train.batch_size]):
      if n_train is not None and b > n_train:
        raise ConfigError(f"bad value {b!r} for train.batch_size: larger than the {n_train} training examples")
    axes.validate_subset(cfg, sweep, n_train)


SPLIT_KEYS = ('data.train_per_group', 'data.val_per_group', 'data.test_per_group', 'data.val_split',
              'data.bound_codewords', 'data.file')  # options of some datasets that would change run ids silently


def _validate_split_keys(cfg: Config, sweep: dict[str, list]) -> None:
  """The split and m-height keys only where the dataset reads them; validation metrics only with a validation
  split; train.violation only with lower bounds to penalise."""
  from ddjax.data.registry import DATASETS
  for data in sweep.get('data.name', [cfg.data.name]):
    spec = DATASETS[data]
    for key in SPLIT_KEYS:
      off = LATER_KEYS[key]
      for v in sweep.get(key, [get(cfg, key)]):
        if v != off and key.split('.')[1] not in spec.options:
          takes = [n for n, d in DATASETS.items() if key.split('.')[1] in d.options]
          raise ConfigError(f"bad value {v!r} for {key}: data.name={data} does not read it (allowed: {off!r}; "
                            f"datasets that take it: {', '.join(takes)})")
  bounds = all(sweep.get('data.bound_codewords', [cfg.data.bound_codewords]))
  if any(sweep.get('train.violation', [cfg.train.violation])) and not bounds:
    raise ConfigError('train.violation penalises predictions below a lower bound, and there is none: set '
                      'data.bound_codewords=N (mheight: the largest height of N random codewords per code)')
  for metric in sweep.get('train.best_metric', [cfg.train.best_metric]):
    if metric.startswith('val_'):
      keys = ('data.name', 'data.val_per_group', 'data.val_split')
      for values in itertools.product(*(sweep.get(k, [get(cfg, k)]) for k in keys)):
        d = dataclasses.replace(cfg.data, **{k.split('.')[1]: v for k, v in zip(keys, values)})
        says = DATASETS[d.name].has_validation
        if says is not None and not says(d):
          raise ConfigError(f'bad value {metric!r} for train.best_metric: data.name={d.name} has no validation '
                            'split here (mheight: data.val_per_group=N; modular: data.val_split=F)')


def dataset_spec_options(names) -> set[str]:
  """The data.* options every one of the datasets `names` takes."""
  from ddjax.data.registry import DATASETS
  return set.intersection(*(set(DATASETS[n].options) for n in names))


GAMMA_MODELS = ('deep_linear', 'mlp')  # models whose every parameter model.gamma may draw (dense layers only)


def last_epoch(cfg: Config, sweep: dict[str, list]) -> int:
  """The last epoch of the longest run of the sweep: train.epochs, or where train.max_steps and the batch-size
  phases end it (ddjax.timeline.epoch_plan, from the training examples the data config gives; train.epochs where
  only loading tells them)."""
  from ddjax.timeline import epoch_plan
  epochs = max(sweep.get('train.epochs', [cfg.train.epochs]))
  if not any(sweep.get('train.max_steps', [cfg.train.max_steps])) or not (n_train := _examples(cfg.data)):
    return epochs
  runs = [replace(replace(cfg, 'train.max_steps', m), 'train.batch_size', b)
          for m in sweep.get('train.max_steps', [cfg.train.max_steps])
          for b in sweep.get('train.batch_size', [cfg.train.batch_size])]
  try:
    return max(len(epoch_plan(c, n_train)) if c.train.max_steps else epochs for c in runs)
  except ValueError as e:  # a batch size past the training set
    raise ConfigError(str(e)) from None


def _examples(data: DataConfig) -> int | None:
  """train_examples, or None where the data config is itself bad (its own check, later, says how)."""
  try:
    return train_examples(data)
  except ValueError:
    return None


def _validate_callbacks(cfg: Config, sweep: dict[str, list]) -> None:
  """The callbacks' options; batch-size switches need train.max_steps and train.evaluations (their steps, not
  epochs, are the run's time) and switch within the run."""
  from ddjax.callbacks import CALLBACKS, names, parse_schedule
  on = names(cfg.callbacks)
  rules = {'callback.step': ('switch_batch_size', lambda v: v >= 1, 'must be >= 1 (the step of the switch)'),
           'callback.batch_size': ('switch_batch_size', lambda v: v >= 1, 'must be >= 1 (the new batch size)'),
           'callback.every': ('lr_decay', lambda v: v >= 1, 'must be >= 1 (steps between decays)'),
           'callback.factor': ('lr_decay', lambda v: 0 < v < math.inf, 'must be a finite number > 0')}
  for key, (name, ok, what) in rules.items():
    for v in sweep.get(key, [get(cfg, key)]):
      if name in on and not ok(v):
        raise ConfigError(f'bad value {v!r} for {key}: {what}')
  for text in sweep.get('callback.schedule', [cfg.callback.schedule]):
    if 'multi_switch_batch_size' in on:
      try:
        if not parse_schedule(text):
          raise ValueError('no switch given (STEP:BATCH/STEP:BATCH)')
      except ValueError as e:
        raise ConfigError(f'bad value {text!r} for callback.schedule: {e}') from None
  if any(CALLBACKS[n].kind == 'phases' for n in on):
    from ddjax.callbacks import phases
    n_train = _examples(cfg.data)
    for _, batch in phases(cfg) if n_train else ():
      if batch > n_train:
        raise ConfigError(f'bad value {batch!r} for a batch size of callbacks={cfg.callbacks}: more than the '
                          f'{n_train} training examples (allowed: 1 to {n_train})')
    for steps in sweep.get('train.max_steps', [cfg.train.max_steps]):
      for evaluations in sweep.get('train.evaluations', [cfg.train.evaluations]):
        if not steps or not evaluations:
          raise ConfigError(f'callbacks={cfg.callbacks} switches the batch size, which counts the run in steps: set '
                            'train.max_steps and train.evaluations')


def _validate_steps_and_inits(cfg: Config, sweep: dict[str, list]) -> None:
  for evaluations in sweep.get('train.evaluations', [cfg.train.evaluations]):
    for steps in sweep.get('train.max_steps', [cfg.train.max_steps]) if evaluations else ():
      if not 1 <= evaluations <= steps:
        raise ConfigError(f'bad value {evaluations!r} for train.evaluations: it spreads evaluations over '
                          f'train.max_steps={steps} steps (allowed: 1 to max_steps, with max_steps >= 1)')
  if any(sweep.get('data.online', [cfg.data.online])):
    if 'online' not in dataset_spec_options(sweep.get('data.name', [cfg.data.name])):
      raise ConfigError('bad value True for data.online: only data.name=teacher draws fresh examples (allowed: '
                        'false)')
    if 0 in sweep.get('train.batch_size', [cfg.train.batch_size]):
      raise ConfigError('bad value 0 for train.batch_size: data.online=true draws batches of an explicit size '
                        '(allowed: >= 1)')
  for model in sweep.get('model.name', [cfg.model.name]):
    if model not in GAMMA_MODELS and any(g is not None for g in sweep.get('model.gamma', [cfg.model.gamma])):
      raise ConfigError(f"bad value for model.gamma: {model} keeps its own init (allowed: none; models that take it: "
                        f"{', '.join(GAMMA_MODELS)})")
    if model != 'deep_linear' and any(sweep.get('model.bias', [cfg.model.bias])):
      raise ConfigError(f'bad value True for model.bias: {model} sets its own biases (allowed: false; deep_linear '
                        'takes it)')


def _validate_probes(cfg: Config, sweep: dict[str, list]) -> None:
  """Probe keys are not swept; each probe switched on applies to every model and dataset of the sweep, and an option
  naming a tap point names one of the model's; epochs that snapshots and probes name are within the run."""
  from ddjax.data.registry import DATASETS
  from ddjax.nn.registry import MODELS
  from ddjax.probes.registry import PROBES, Setting
  for key in sweep:
    if is_probe_key(key):
      raise ConfigError(f"bad sweep of {key}: probes do not change training, so they are not swept (one value)")
  uses = probe_uses(cfg)
  for key, (names, option) in PROBE_ALIASES.items():
    given = [f'probe.{n}.{option}' for n in names if option in cfg.probe.get(n, {})]
    if given and any(v != LATER_KEYS[key] for v in sweep.get(key, [get(cfg, key)])):
      raise ConfigError(f"{key} and {given[0]} both set the same option: set one of them")
  from ddjax.probes.registry import cadence, use
  last = last_epoch(cfg, sweep)
  where = (f'train.epochs={last}' if not any(sweep.get('train.max_steps', [cfg.train.max_steps])) else
           f'{last}, where train.max_steps ends')
  for text in sweep.get('train.snapshot_epochs', [cfg.train.snapshot_epochs]):
    try:
      epochs = snapshot_epochs(text)
    except ValueError as e:
      raise ConfigError(str(e)) from None
    if epochs and epochs[-1] > last:
      raise ConfigError(f'bad value {text!r} for train.snapshot_epochs: epoch {epochs[-1]} is after the last '
                        f'({where})')
  for name, given in uses.items():
    every = cadence(PROBES[name].kind, given.get('every', PROBES[name].every), f'probe.{name}.every')
    if every.kind == 'at' and max(every.epochs) > last:
      raise ConfigError(f"bad value {given['every']!r} for probe.{name}.every: epoch {max(every.epochs)} is after "
                        f"the last ({where})")
    if PROBES[name].epochs is not None and max(PROBES[name].epochs(**use(name, given).kwargs), default=0) > last:
      raise ConfigError(f"probe {name} runs at epoch {max(PROBES[name].epochs(**use(name, given).kwargs))}, after "
                        f"the last ({where}): set its options to an earlier one")
  for data in sweep.get('data.name', [cfg.data.name]):
    for model in sweep.get('model.name', [cfg.model.name]):
      for optimizer in sweep.get('optim.name', [cfg.optim.name]):
        setting = Setting(DATASETS[data].task, MODELS[model].linear, 0, optimizer)
        for name in uses:
          why = PROBES[name].applies(setting) if PROBES[name].applies is not None else ''
          if why:
            raise ConfigError(f"probe {name} cannot run with model.name={model}, data.name={data}: {why}")
        for name, given in {**cfg.probe, **uses}.items():  # options of probes not switched on are checked too
          spec = PROBES[name]
          for option, value in given.items():
            if spec.options.get(option) is None or not spec.options[option].tap or not value:
              continue
            proj = max(sweep.get('model.proj', [cfg.model.proj]))
            for depth in sweep.get('model.depth', [cfg.model.depth]):
              taps = model_taps(model, dataclasses.replace(cfg.data, name=data), depth, proj)
              names = str(value).split('/')
              if len(names) > 1 and not spec.options[option].several:
                raise ConfigError(f"bad value {value!r} for probe.{name}.{option}: one tap point of "
                                  f"{', '.join(taps) or '(none)'}")
              if '' in names or len(set(names)) < len(names):
                raise ConfigError(f"bad value {value!r} for probe.{name}.{option}: tap points A/B/..., each once")
              if bad := [v for v in str(value).split('/') if v not in taps]:  # one tap point, or several A/B/...
                raise ConfigError(f"bad value {bad[0]!r} for probe.{name}.{option}: {model} at model.depth={depth} "
                                  f"has the tap points {', '.join(taps) or '(none)'}")


def model_taps(model: str, data: DataConfig, depth: int, proj: int = 0) -> tuple[str, ...]:
  """The tap points of model `model` (at `depth`, with a projector of `proj` dimensions where it takes one) on dataset
  `data`, from the module alone (nothing is built)."""
  from ddjax.data.registry import dataset_shape
  from ddjax.nn.registry import make_model
  shape, classes = dataset_shape(data)
  return tuple(getattr(make_model(model, 2, shape, classes, 'lax', depth=depth, proj=proj), 'TAPS', ()))


def train_examples(data: DataConfig) -> int | None:
  """Training examples a data config gives (None where only loading tells: cifar10)."""
  from ddjax.data.registry import DATASETS
  return DATASETS[data.name].train_examples(data)


def describe(cfg: Config, sweep: dict[str, list]) -> str:
  """One line per key: name, current value or sweep, help text (for --help). A dataset's own options come after
  the other keys, under its name; each model's options are named in model.name's line."""
  from ddjax.data.registry import DATASETS
  from ddjax.nn.registry import MODELS
  known = fields(cfg)
  owner = {f'data.{o}': name for name, spec in DATASETS.items() for o in spec.options}
  pad = max(map(len, known))

  def line(key: str) -> str:
    f = known[key]
    value = sweep.get(key, get(cfg, key))
    shown = ','.join(map(str, value)) if isinstance(value, list) else str(value)
    if len(shown) > 40:
      shown = shown[:37] + '...'
    tag = ' [member axis]' if key in MEMBER_KEYS else ''
    choices = f" (one of: {', '.join(map(str, choices_of(f)))})" if choices_of(f) else ''
    return f"  {key:<{pad}} {shown:<40} {f.metadata.get('help', '')}{choices}{tag}"

  lines = [line(k) for k in known if k not in owner and not is_probe_key(k)]
  lines.append('\nModels (model.name=NAME; registered in ddjax/nn or by --plugin), with their tap points for '
               f'probes at model.depth={cfg.model.depth}:')
  for name, m in MODELS.items():
    lines.append(f'  {name:<{pad}} {m.help}')
    try:
      data = cfg.data if cfg.data.name in DATASETS and DATASETS[cfg.data.name].inputs in m.inputs else \
          dataclasses.replace(cfg.data, name=next(d for d, s in DATASETS.items() if s.inputs in m.inputs))
      lines.append(f"  {'':<{pad}}   taps: {', '.join(model_taps(name, data, cfg.model.depth)) or '(none)'}")
    except Exception:  # noqa: BLE001 - a model that cannot be built without its data: no line
      pass
  lines.append('\nDatasets (data.name=NAME; registered in ddjax/data or by --plugin), with their own options:')
  for name, spec in DATASETS.items():
    lines.append(f'  {name:<{pad}} {spec.help}')
    lines += ['  ' + line(f'data.{o}') for o in spec.options if f'data.{o}' in known]
  from ddjax.probes.registry import describe_probes
  lines.append('\nProbes (probes=NAME,NAME; probe.NAME.KEY=VALUE; registered in ddjax/probes or by --plugin):')
  lines += describe_probes()
  return '\n'.join(lines)
