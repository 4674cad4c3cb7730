"""The probe registry: every measurement a run records is a probe, a named unit that says what it reads, when it runs,
which columns it writes and what device memory it needs beyond a training step.

Two kinds:
  eval  runs at evaluation points on a member's state (`measure(ctx, **options)`, ctx an EvalContext: the state,
        the member's data, its loss, its features at any tap point) and writes columns of the evaluation rows;
  step  runs inside the epoch's scan after every optimizer step (`measure(ctx, **options)`, ctx a StepContext: the
        batch loss, the gradients, the state before and after) and writes columns of the step table; the values
        stay on the device until a flush.

A probe is switched on by `probes=NAME,NAME` and configured by `probe.NAME.KEY=VALUE` (its options, plus `every`,
its cadence). Probes never change training, so neither enters run ids.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple

from ddjax import plugins


@dataclass(frozen=True)
class Option:
  """One option of a probe (`probe.NAME.KEY=VALUE`): its default (whose type is the option's type), help text, and
  the values it allows (choices, or a check with what it must be)."""
  default: Any
  help: str
  choices: tuple | None = None
  check: Callable[[Any], bool] | None = None
  must: str = ''
  tap: bool = False                    # the value names one of the model's tap points ('' for the default)
  several: bool = False                # with tap: or several, A/B/...


@dataclass(frozen=True)
class ProbeSpec:
  name: str
  measure: Callable
  help: str
  columns: tuple[str, ...]             # what it writes; '<...>' marks a part named at run time (a layer, a mode)
  kind: str = 'eval'                   # 'eval' | 'step'
  every: str = 'eval'                  # default cadence (cadence() below)
  options: dict[str, Option] = field(default_factory=dict)
  last_only: tuple[str, ...] = ()      # columns kept as their last value per member, not as a curve
  memory: Callable | None = None       # (MemoryQuery, **options) -> device bytes per member beyond a step
  applies: Callable | None = None      # (Setting) -> '' if it can run there, else why not (one line)
  auto: Callable | None = None         # (Setting) -> options with which it switches itself on there, or None
  always: bool = False                 # on in every run (the base measurements)
  module: str = ''
  figure: str = ''                     # a module whose plot_all(out, fig_dir) draws its columns (plots add it)
  state: Callable | None = None        # (**options) -> its state's init value per member (a pytree), kept beside
                                       # the train state and checkpointed with it; measure then returns (values,
                                       # new state) and reads ctx.probe_state
  epochs: Callable | None = None       # (**options) -> epochs at whose end it also runs (a reference it takes)
  progress: tuple[str, ...] = ()       # columns the progress bar may show (the mean over members; the first two)
  pairs: Callable | None = None        # a probe across members (probes/cross.py): measure returns a summary per
                                       # member, and pairs(summaries, members, **options) -> {member: {column:
                                       # value}} compares them on the host (summaries, members: by member index)


PROBES: dict[str, ProbeSpec] = {}


class Setting(NamedTuple):
  """What decides whether a probe applies to a job: the dataset's task, whether the model is linear, the dataset's
  singular modes (deep linear networks), the optimizer."""
  task: str
  linear: bool
  modes: int
  optimizer: str


class MemoryQuery(NamedTuple):
  """What a probe's memory estimate may use: the model padded to a bucket's width, its input shape and dtype, the
  optimizer, and `step_bytes(batch)`: the transient bytes of a training step on `batch` examples (memory.py)."""
  model: Any
  width: int
  input_shape: tuple
  optimizer: str
  step_bytes: Callable[[int], float]
  resident_bytes: float                # one member's parameters (one copy)
  input_bytes: float                   # one example's input


def register_probe(name: str, *, help: str, columns: tuple[str, ...] | list[str], kind: str = 'eval',
                   every: str | None = None, options: dict[str, Option] | None = None, last_only=(),
                   memory=None, applies=None, auto=None, always: bool = False, figure: str = '', state=None,
                   epochs=None, pairs=None, progress=()):
  """Decorator registering `measure` as the probe `name` (see the module docstring); a plugin file may register
  probes too."""
  if kind not in ('eval', 'step'):
    raise ValueError(f'probe {name!r}: kind must be eval or step, not {kind!r}')
  if (state is not None or pairs is not None) and kind != 'eval':
    raise ValueError(f'probe {name!r}: only evaluation probes keep a state or compare members')
  if state is not None and pairs is not None:
    raise ValueError(f'probe {name!r}: a probe across members keeps no state')
  every = every or ('eval' if kind == 'eval' else '1')
  options = dict(options or {})
  if 'every' in options:
    raise ValueError(f"probe {name!r}: 'every' is every probe's cadence option, not one of its own")
  cadence(kind, every, f'probe {name!r}')  # its default must parse

  def register(measure):
    spec = ProbeSpec(name, measure, help, tuple(columns), kind, every, options, tuple(last_only), memory, applies,
                     auto, always, measure.__module__, figure, state, epochs, tuple(progress), pairs)
    return plugins.add(PROBES, 'probe', name, spec, measure)
  return register


def probe_spec(name: str) -> ProbeSpec:
  return plugins.lookup(PROBES, 'probe', name)


class Cadence(NamedTuple):
  """When a probe runs. eval probes: 'eval' (every evaluation), every `n` epochs, at listed `epochs`, or every `n`
  optimizer steps (within epochs too); step probes: every `n` optimizer steps."""
  kind: str                      # 'eval' | 'epochs' | 'at' | 'steps'
  n: int = 0
  epochs: tuple[int, ...] = ()

  def runs_at(self, step: int, epoch: int | None, evaluation: bool) -> bool:
    """Whether it runs at optimizer step `step` (`epoch`: the epoch that ends there, else None), where the run
    evaluates anyway if `evaluation`."""
    return ((self.kind == 'eval' and evaluation) or (self.kind == 'steps' and step % self.n == 0)
            or (epoch is not None and (self.kind == 'epochs' and epoch % self.n == 0
                                       or self.kind == 'at' and epoch in self.epochs)))


def cadence(kind: str, text: str, key: str) -> Cadence:
  """Parses a cadence for a probe of `kind`; raises ValueError naming `key` and the forms allowed.

  eval probes: eval | Nepochs (every N epochs, e.g. 2epochs) | at:E/E/E (those epochs) | Nsteps (every N optimizer
  steps, within epochs too); step probes: N (every N optimizer steps; 1: every step)."""
  text = str(text).strip()
  if kind == 'step':
    if re.fullmatch(r'[1-9][0-9]*', text):
      return Cadence('steps', int(text))
    raise ValueError(f"bad value {text!r} for {key}: a step probe runs every N optimizer steps (N >= 1)")
  if text == 'eval':
    return Cadence('eval')
  if m := re.fullmatch(r'([1-9][0-9]*)\s*epochs?', text):
    return Cadence('epochs', int(m[1]))
  if m := re.fullmatch(r'at:([1-9][0-9]*(?:/[1-9][0-9]*)*)', text):
    return Cadence('at', 0, tuple(sorted({int(e) for e in m[1].split('/')})))
  if m := re.fullmatch(r'([1-9][0-9]*)\s*steps?', text):
    return Cadence('steps', int(m[1]))
  raise ValueError(f"bad value {text!r} for {key}: allowed eval (every evaluation), Nepochs (e.g. 2epochs), "
                   "at:E/E/... (listed epochs) or Nsteps (e.g. 500steps)")


def parse_option(name: str, key: str, text: Any) -> Any:
  """The value of `probe.NAME.KEY` from its text (or a value from a YAML file); ValueError in one line if bad."""
  spec = probe_spec(name)
  full = f'probe.{name}.{key}'
  if spec.always and (key == 'every' or not spec.options):
    raise ValueError(f"unknown key {full!r}: probe {name} is always on, at every evaluation"
                     + (f"; its options are {', '.join(spec.options)}" if spec.options else ', and has no options'))
  if key == 'every':
    cadence(spec.kind, text, full)
    return str(text).strip()
  if key not in spec.options:
    allowed = ', '.join([*([] if spec.always else ['every']), *spec.options])
    raise ValueError(f"unknown key {full!r}: probe {name} has the options {allowed}")
  opt = spec.options[key]
  tp = type(opt.default)
  raw = str(text).strip()
  try:
    if tp is bool:
      if raw.lower() not in ('true', 'false', '1', '0', 'yes', 'no'):
        raise ValueError
      value = raw.lower() in ('true', '1', 'yes')
    elif tp is int:
      value = int(raw)
    elif tp is float:
      value = float(raw)
      if not math.isfinite(value):
        raise ValueError
    else:
      value = raw.strip('\'"')
  except ValueError:
    what = {bool: 'true or false', int: 'an integer', float: 'a finite number'}.get(tp, 'a string')
    raise ValueError(f"bad value {raw!r} for {full}: expected {what}") from None
  if opt.choices is not None and value not in opt.choices:
    raise ValueError(f"bad value {raw!r} for {full}: allowed values are {', '.join(map(str, opt.choices))}")
  if opt.check is not None and not opt.check(value):
    raise ValueError(f"bad value {raw!r} for {full}: {opt.must}")
  return value


class Use(NamedTuple):
  """A probe switched on in a job: its name, options (sorted (key, value) pairs, defaults filled in) and cadence.
  Hashable, so it can be part of a compiled program's static spec."""
  name: str
  options: tuple
  every: Cadence

  @property
  def spec(self) -> ProbeSpec:
    return probe_spec(self.name)

  @property
  def kwargs(self) -> dict[str, Any]:
    return dict(self.options)


def use(name: str, given: dict[str, Any] | None = None) -> Use:
  """A Use of probe `name` with the options `given` (the rest at their defaults)."""
  spec = probe_spec(name)
  given = dict(given or {})
  every = cadence(spec.kind, given.pop('every', spec.every), f'probe.{name}.every')
  options = {k: o.default for k, o in spec.options.items()}
  options.update(given)
  return Use(name, tuple(sorted(options.items())), every)


def describe_probes() -> list[str]:
  """--help's lines: each registered probe, its kind and default cadence, columns and options."""
  lines = []
  for name, spec in PROBES.items():
    when = 'always on' if spec.always else f'every {spec.every}' if spec.kind == 'step' else f'every={spec.every}'
    lines.append(f'  {name} ({spec.kind} probe, {when}): {spec.help}')
    lines.append(f"      columns: {', '.join(spec.columns)}")
    for key, opt in spec.options.items():
      choices = f" (one of: {', '.join(map(str, opt.choices))})" if opt.choices else ''
      lines.append(f'      probe.{name}.{key}={opt.default}  {opt.help}{choices}')
  return lines
