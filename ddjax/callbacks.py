"""Callbacks: what a run changes while it trains (the deep-linear-network codebase's callbacks), a registry with
plugins allowed (`--plugin FILE.py` with `@register_callback`). `callbacks=NAME,NAME` switches them on; their
options are `callback.*` keys. Unlike probes they change training, so both enter run ids.

Two kinds:
  phases  build(c) -> [(step, batch size), ...]: from each step on, the run trains with that batch size. A new
          batch size changes the compiled step's shapes: the run goes on in a new compiled phase with the same
          state (parameters, optimizer, step count), checkpointed and resumed across the switch.
  lr      build(c) -> a hashable callable step -> factor: the learning rate of update `step` (from 0) is multiplied
          by it (on top of warmup and schedules), for every member.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import jax.numpy as jnp

from ddjax import plugins


@dataclass(frozen=True)
class CallbackSpec:
  name: str
  build: Callable
  kind: str                        # 'phases' | 'lr'
  options: tuple[str, ...] = ()    # the callback.* keys it reads
  help: str = ''

  @property
  def module(self) -> str:
    return self.build.__module__


CALLBACKS: dict[str, CallbackSpec] = {}


def register_callback(name: str, *, kind: str, options: Sequence[str] = (), help: str = '') -> Callable:
  """Decorator registering `build(callback config)` as the callback `name` (see the module docstring)."""
  if kind not in ('phases', 'lr'):
    raise ValueError(f'callback {name!r}: kind must be phases or lr, not {kind!r}')

  def register(build):
    return plugins.add(CALLBACKS, 'callback', name, CallbackSpec(name, build, kind, tuple(options), help), build)
  return register


def names(text: str) -> list[str]:
  return [n.strip() for n in str(text).split(',') if n.strip()]


def parse_schedule(text: str) -> list[tuple[int, int]]:
  """'S:B/S:B' (or 'S:B,S:B') -> [(step, batch size), ...] sorted by step; ValueError saying the form."""
  out = []
  for part in str(text).replace(',', '/').split('/'):
    if not part.strip():
      continue
    step, _, batch = part.partition(':')
    if not (step.strip().isdigit() and batch.strip().isdigit() and int(batch) >= 1):
      raise ValueError(f'{part.strip()!r} is not STEP:BATCH (the step after which the batch size switches, and the '
                       'new batch size >= 1), e.g. 2000:50/4000:10')
    out.append((int(step), int(batch)))
  return sorted(out)


def phases(cfg) -> list[tuple[int, int]]:
  """[(first step, batch size), ...] of a run: its own batch size from step 0, then each switch the phase callbacks
  of `cfg.callbacks` make (a later switch at the same step wins). One phase without them."""
  switches = {}
  for name in names(cfg.callbacks):
    spec = plugins.lookup(CALLBACKS, 'callback', name)
    if spec.kind == 'phases':
      switches.update(dict(spec.build(cfg.callback)))
  out = [(0, cfg.train.batch_size)]
  for step, batch in sorted(switches.items()):
    if step == 0:
      out[0] = (0, batch)
    elif batch != out[-1][1]:
      out.append((step, batch))
  return out


def lr_factors(cfg) -> tuple[Callable, ...]:
  """The lr callbacks' factors (hashable callables step -> factor) of `cfg.callbacks`."""
  return tuple(plugins.lookup(CALLBACKS, 'callback', n).build(cfg.callback) for n in names(cfg.callbacks)
               if plugins.lookup(CALLBACKS, 'callback', n).kind == 'lr')


@register_callback('switch_batch_size', kind='phases', options=('step', 'batch_size'),
                   help='after callback.step optimizer steps, train with batch size callback.batch_size')
def switch_batch_size(c):
  return [(c.step, c.batch_size)]


@register_callback('multi_switch_batch_size', kind='phases', options=('schedule',),
                   help='switch the batch size at each step of callback.schedule, STEP:BATCH/STEP:BATCH')
def multi_switch_batch_size(c):
  return parse_schedule(c.schedule)


@dataclass(frozen=True)
class StepDecay:
  """lr x factor^(step // every)."""
  every: int
  factor: float

  def __call__(self, step):
    return jnp.asarray(self.factor, jnp.float32) ** (jnp.asarray(step, jnp.int32) // self.every).astype(jnp.float32)


@register_callback('lr_decay', kind='lr', options=('every', 'factor'),
                   help='multiply the learning rate by callback.factor every callback.every optimizer steps')
def lr_decay(c):
  return StepDecay(c.every, c.factor)
