"""Checks of the member axes that other keys constrain: model.param (ddjax.nn.param) and data.subset
(ddjax.data.subset). Each raises ConfigError with one line: the key, the bad value, what is allowed."""

from __future__ import annotations

from ddjax.config.schema import Config, ConfigError, get, probe_uses


def validate_param(cfg: Config, sweep: dict[str, list]) -> None:
  """ntk and mup: not with a projector or model.gamma yet."""
  for param in sweep.get('model.param', [cfg.model.param]):
    if param != 'sp' and (any(sweep.get('model.proj', [cfg.model.proj])) or any(
        g is not None for g in sweep.get('model.gamma', [cfg.model.gamma]))):
      raise ConfigError(f'bad value {param!r} for model.param: not with model.proj (the projector, not the head, '
                        'is the layer whose fan-in grows) or model.gamma (its own init of every weight) yet '
                        '(allowed: sp)')


def validate_subset(cfg: Config, sweep: dict[str, list], n_train: int | None) -> None:
  """data.subset: whole numbers from one batch to the `n_train` training examples (None: known only once loaded),
  on data that is stored (not data.online), with one batch size all run (no batch-size callbacks), for models
  whose probes read labels through the loss (not the linear ones), a full batch without BatchNorm (its statistics
  would see every example), and under budget epochs nothing that counts steps within an epoch (train.max_steps,
  evaluations or probes every N steps, step probes): members of different n take different numbers of them."""
  sizes = [n for n in sweep.get('data.subset', [cfg.data.subset]) if n is not None]
  if not sizes:  # (train.budget then changes nothing, and stays out of run ids)
    return
  from ddjax.callbacks import CALLBACKS, names
  from ddjax.nn.registry import MODELS
  shown = ','.join(map(str, sizes))
  batches = [b for b in sweep.get('train.batch_size', [cfg.train.batch_size]) if b]
  for n in sizes:
    if not isinstance(n, int) or isinstance(n, bool) or n < max([1, *batches]) or (n_train and n > n_train):
      most = f'at most the {n_train} training examples' if n_train else 'at most the training examples'
      raise ConfigError(f'bad value {n!r} for data.subset: each member needs a whole number of examples from one '
                        f'batch ({max([1, *batches])}) to {most}, or none (all of them)')
  why = []
  if any(sweep.get('data.online', [cfg.data.online])):
    why.append('data.online draws every batch afresh, from no training split')
  if any(MODELS[m].linear for m in sweep.get('model.name', [cfg.model.name])):
    why.append("a linear model's modes probe reads every training target")
  if any(CALLBACKS[c].kind == 'phases' for c in names(cfg.callbacks) if c in CALLBACKS):
    why.append(f'callbacks={cfg.callbacks} switches the batch size, and with it every member\'s steps per pass')
  if not all(sweep.get('train.batch_size', [cfg.train.batch_size])) and any(
      'norm' in MODELS[m].options and n != 'none' for m in sweep.get('model.name', [cfg.model.name])
      for n in sweep.get('model.norm', [cfg.model.norm])):
    why.append("a full batch (train.batch_size=0) runs every example through BatchNorm's batch statistics")
  if 'epochs' in sweep.get('train.budget', [cfg.train.budget]) and (counts := _counts_steps(cfg, sweep)):
    why.append(f'{counts} counts steps, which members of different n take different numbers of under '
               'train.budget=epochs (use train.budget=steps)')
  if why:
    raise ConfigError(f'bad value {shown} for data.subset: {why[0]} (allowed: none)')


def _counts_steps(cfg: Config, sweep: dict[str, list]) -> str:
  """What in the config counts optimizer steps within an epoch ('' if nothing does)."""
  from ddjax.probes.registry import PROBES, cadence
  from ddjax.callbacks import CALLBACKS, names
  for key in ('train.max_steps', 'train.eval_every_steps'):
    if any(sweep.get(key, [get(cfg, key)])):
      return key
  for name in names(cfg.callbacks):
    if name in CALLBACKS and CALLBACKS[name].kind == 'lr':
      return f'callback {name}'
  for name, given in probe_uses(cfg).items():
    if PROBES[name].kind == 'step' or cadence(PROBES[name].kind, given.get('every', PROBES[name].every),
                                              f'probe.{name}.every').kind == 'steps':
      return f'probe {name}'
  return ''
