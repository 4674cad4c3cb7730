"""Width buckets of a job: each model's padded programs, the memory they need, and where they run.

A job's members are grouped by width into buckets (members.plan_buckets on the model's MAC count); each `Bucket`
holds its members' stacked state (`state_M`), hyperparameters (`hp_M`) and labels, and its compiled programs.
`make_buckets` sizes buckets to the device memory (memory.py, then XLA's own figures) and places them: whole
buckets onto devices (`bucket`), or every bucket's member axis over all devices (`shard`).
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ddjax import callbacks
from ddjax import config as cfglib
from ddjax import memory, parallel
from ddjax.data import dataset_spec
from ddjax.data.subset import orders_needed
from ddjax.members import Job, Plan, group_members, plan_buckets, stack_hp, subset_steps
from ddjax.nn.registry import make_model, model_spec
from ddjax.probes import PROBES, MemoryQuery, Setting, Use, use
from ddjax.best import best_columns
from ddjax.train import StepSpec, bucket_fns


def conv_form(cfg: cfglib.Config) -> str:
  if cfg.model.conv != 'auto':
    return cfg.model.conv
  return 'im2col' if jax.default_backend() == 'cpu' else 'lax'


def strategy(cfg: cfglib.Config, width: int) -> str:
  """How the members of a bucket padded to `width` execute: 'map' from train.map_from on, else train.strategy."""
  return 'map' if cfg.train.map_from and width >= cfg.train.map_from else cfg.train.strategy


def strategy_label(cfg: cfglib.Config) -> str:
  """The job's strategies for the log: 'vmap', 'map:4', or 'vmap, map:4 from width 48'."""
  mapped = 'map' + (f':{cfg.train.map_batch}' if cfg.train.map_batch > 1 else '')
  if cfg.train.strategy == 'map':
    return mapped
  return cfg.train.strategy + (f', {mapped} from width {cfg.train.map_from}' if cfg.train.map_from else '')


def model_options(cfg: cfglib.Config) -> dict:
  """The model.* options the job's model takes (its ModelSpec.options), from the config."""
  return {k: cfglib.get(cfg, f'model.{k}') for k in model_spec(cfg.model.name).options}


def model_for(cfg: cfglib.Config, width: int, input_shape, num_classes: int, conv: str | None = None):
  """The job's model padded to `width`, for inputs of `input_shape` and `num_classes` outputs."""
  return make_model(cfg.model.name, width, input_shape, num_classes, conv or conv_form(cfg), cfg.train.compute_dtype,
                    **model_options(cfg))


def job_plan(job: Job, input_shape, num_classes: int, n_train: int | None = None
             ) -> tuple[list[list[int]], Callable[[int], float]]:
  """The job's width buckets (plan_buckets on the model's MAC count) and that cost function. With `n_train`
  training examples and members of different steps per epoch (data.subset under train.budget=epochs), members are
  first grouped by their steps (plan_buckets on the step counts: train-size buckets, so that small members do not
  pay for the largest n's steps), then each group by width; the plan then carries each bucket's members (Plan)."""
  cfg = job.config
  widths = sorted(m['model.width'] for m in job.members)
  cost = make_model(cfg.model.name, max(widths), input_shape, num_classes, 'lax', **model_options(cfg)).macs
  own = subset_steps(job.members, n_train, cfg.train.batch_size, cfg.train.budget)[0] if n_train else []
  if len(set(own)) <= 1:
    return plan_buckets(widths, cost, cfg.train.bucket_ratio, cfg.train.max_buckets), cost
  plan = Plan()
  by_steps = sorted(range(len(job.members)), key=lambda i: own[i])
  sizes = plan_buckets(sorted(own), float, cfg.train.bucket_ratio, cfg.train.max_buckets)
  share = max(1, cfg.train.max_buckets // len(sizes))  # train.max_buckets bounds the programs of both levels
  for sized in sizes:
    group, by_steps = sorted(by_steps[:len(sized)], key=lambda i: job.members[i]['model.width']), by_steps[len(sized):]
    for b in plan_buckets([job.members[i]['model.width'] for i in group], cost, cfg.train.bucket_ratio, share):
      plan.append(b)
      plan.groups.append(group[:len(b)])
      group = group[len(b):]
  return plan, cost


def job_probes(cfg: cfglib.Config, task: str, modes: int) -> tuple[tuple[Use, ...], tuple[Use, ...]]:
  """(evaluation probes, step probes) of a job on a dataset of `task` with `modes` singular modes: the base ones,
  those the config switches on, and those that switch themselves on for its model and data (ProbeSpec.auto)."""
  setting = Setting(task, model_spec(cfg.model.name).linear, modes, cfg.optim.name)
  on = cfglib.probe_uses(cfg)
  for name, spec in PROBES.items():  # those on by themselves here, with what the user set on top
    if spec.auto is not None and (options := spec.auto(setting)) is not None:
      on[name] = {**options, **on.get(name, {})}
  applies = lambda name: PROBES[name].applies is None or not PROBES[name].applies(setting)
  uses = [use(name, cfg.probe.get(name)) for name, spec in PROBES.items() if spec.always]
  uses += [use(name, given) for name, given in on.items() if applies(name)]
  return tuple(u for u in uses if u.spec.kind == 'eval'), tuple(u for u in uses if u.spec.kind == 'step')


def probe_bytes(uses, model, width: int, input_shape, optimizer: str, dtype=jnp.float32) -> float:
  """What the probes `uses` need on the device per member at an evaluation, beyond a step (their `memory`
  estimates, summed: XLA may hold independent loops at once)."""
  step = lambda batch: memory.member_bytes_split(model, width, input_shape, batch, optimizer, dtype)
  query = MemoryQuery(model, width, tuple(input_shape), optimizer, lambda batch: step(batch).transient,
                      step(1).resident / memory.RESIDENT_COPIES[optimizer],
                      math.prod(input_shape) * jnp.dtype(dtype).itemsize)
  return sum(u.spec.memory(query, **u.kwargs) for u in uses if u.spec.memory is not None)


def member_sizes(cfg: cfglib.Config, plan: list[list[int]], input_shape, num_classes: int, batch: int,
                 task: str = 'classify', modes: int = 0) -> list[memory.MemberBytes]:
  """The estimated bytes of one member of each planned bucket (memory.member_bytes_split), from shapes alone;
  token datasets' inputs are int32 (DatasetSpec.tokens). A member's transient bytes are the larger of a training
  step's and what its probes need at an evaluation (probe_bytes), so buckets split for either."""
  sizes = []
  dtype = jnp.int32 if dataset_spec(cfg.data.name).tokens else jnp.float32
  probes, _ = job_probes(cfg, task, modes)
  for b in plan:
    model = model_for(cfg, max(b), input_shape, num_classes)
    size = memory.member_bytes_split(model, max(b), input_shape, batch, cfg.optim.name, dtype)
    need = probe_bytes(probes, model, max(b), input_shape, cfg.optim.name, dtype)
    kept = sum(memory.tree_bytes(jax.eval_shape(lambda u=u: u.spec.state(**u.kwargs)))  # probes' own state
               for u in probes if u.spec.state is not None)
    if cfg.train.keep_best or cfg.train.checkpoint_best:  # the best states' parameters
      kept += (cfg.train.checkpoint_best or 1) * size.resident / memory.RESIDENT_COPIES[cfg.optim.name]
    sizes.append(size._replace(resident=size.resident + kept, transient=max(size.transient, need)))
  return sizes


def batch_size(cfg: cfglib.Config, ds) -> int:
  return cfg.train.batch_size or len(ds.y_train)  # 0: full batch


def steps_per_epoch(cfg: cfglib.Config, ds, members=()) -> int:
  """Optimizer steps of an epoch of `members` (the last partial batch is dropped): a pass over the training split,
  or with data.subset under train.budget=epochs one over the largest member's examples."""
  return subset_steps(members, len(ds.y_train), cfg.train.batch_size, cfg.train.budget)[1]


def epoch_examples(cfg: cfglib.Config, ds, members=()) -> int:
  """The training examples whose batches make an epoch of `members` (as steps_per_epoch; timeline.epoch_plan)."""
  return steps_per_epoch(cfg, ds, members) * cfg.train.batch_size or len(ds.y_train)


def subset_fields(cfg: cfglib.Config, ds, members: list[dict], job_steps: int) -> dict[str, object]:
  """StepSpec's data.subset fields for a bucket of `members` in a job of `job_steps` steps per epoch
  (ddjax.data.subset): none where no member has a subset."""
  if all(m['data.subset'] is None for m in members):
    return {}
  own, _ = subset_steps(members, len(ds.y_train), cfg.train.batch_size, 'epochs')
  if cfg.train.budget == 'epochs':  # its scan: the steps of its largest member (a train-size bucket's own)
    return {'subset': min(max(own), job_steps) * batch_size(cfg, ds), 'budget': 'epochs'}
  return {'subset': job_steps * batch_size(cfg, ds), 'budget': 'steps',
          'subset_orders': orders_needed(job_steps, min(own))}


def shared_by(job: Job, member_ids: list[int], width: int) -> dict[str, bool]:
  """StepSpec's flags of what the members share (every one at the padded width; any momentum, weight decay,
  model.gamma or model.param other than sp)."""
  members = [job.members[i] for i in member_ids]
  return {'full_width': all(m['model.width'] == width for m in members),
          'momentum': any(m['optim.momentum'] != 0 for m in members),
          'decay': any(m['optim.wd'] != 0 for m in members),
          'gamma': any(m['model.gamma'] is not None for m in members),
          'param': any(m['model.param'] != 'sp' for m in members)}


class Bucket:
  """Members padded to one width: their stacked state, hyperparameters, labels and compiled programs.

  `members` places the member axis (one device, or NamedSharding over a mesh), `data` is the dataset placed
  for it. With a sharded member axis the bucket is padded with copies of its last member to a multiple of the
  device count; only the first len(member_ids) members are ever reported."""

  def __init__(self, job: Job, member_ids: list[int], data, ds, members: jax.sharding.Sharding,
               replicated: jax.sharding.Sharding, eval_batch: int | None = None):
    cfg = job.config
    self.member_ids = member_ids
    self.replicated = replicated
    self.width = max(job.members[i]['model.width'] for i in member_ids)
    self.steps_per_epoch = steps_per_epoch(cfg, ds, job.members)
    own = [job.members[i] for i in member_ids]
    # each member's optimizer steps in an epoch (fewer than steps_per_epoch for a smaller data.subset under budget
    # epochs): the step its rows record
    self.own_steps = subset_steps(own, len(ds.y_train), cfg.train.batch_size, cfg.train.budget)[0]
    self.spec = StepSpec(model_for(cfg, self.width, ds.input_shape, ds.num_classes), cfg.optim.name,
                         batch_size(cfg, ds), ds.num_classes, eval_batch or cfg.train.eval_batch,
                         strategy(cfg, self.width), cfg.train.map_batch, ds.preprocess, ds.task,
                         cfg.train.keep_best or cfg.train.checkpoint_best > 0, cfg.train.checkpoint_best or 1,
                         best_metric(cfg, ds), cfg.train.best_mode, cfg.optim.schedule,
                         cfg.train.max_steps or cfg.train.epochs * max(self.own_steps),
                         *job_probes(cfg, ds.task, ds.modes),
                         **shared_by(job, member_ids, self.width), linear=model_spec(cfg.model.name).linear,
                         loss=cfg.train.loss, online=ds.online, lr_factors=callbacks.lr_factors(cfg),
                         bounds=ds.bounds, violation=cfg.train.violation,
                         **subset_fields(cfg, ds, own, self.steps_per_epoch))
    sharded = isinstance(members, jax.sharding.NamedSharding)
    self.fns = bucket_fns(self.spec, members if sharded else None)
    n_dev = len(members.device_set)
    padded_ids = member_ids + [member_ids[-1]] * (-len(member_ids) % n_dev if sharded else 0)
    self.rows = padded_ids  # the member in each row of the stacked state
    self.hp_M = jax.device_put(stack_hp([job.members[i] for i in padded_ids]), members)
    self.data = data
    self.state_M = self.fns.init(self.hp_M, self.data['x_train'][0])
    self.labels_MxN = self.fns.labels(self.hp_M, self.data['y_train'])

  def train_epoch(self, epoch: int):
    """Dispatches epoch `epoch` (from 0); returns the members' mean batch losses and the step probes' values
    ({column: (M, steps)}), both left on the device."""
    self.state_M, loss, steps = self.fns.epoch(*self._epoch_args(epoch))
    return loss, steps

  def train_segment(self, epoch: int, start: int, stop: int):
    """train_epoch for the epoch's steps start .. stop - 1 only (an evaluation comes after them); the step values
    of those steps."""
    # A segment (a while loop of unknown trip count) dispatched while the previous program still runs took twice as
    # long per step on a 2-core CPU (cell gph: 4.4 against 2.6 ms per step): wait for the state first.
    jax.block_until_ready(self.state_M)
    start_, stop_ = (jax.device_put(np.int32(v), self.replicated) for v in (start, stop))
    self.state_M, loss, steps = self.fns.segment(*self._epoch_args(epoch), start_, stop_)
    return loss, jax.tree.map(lambda v: v[:, start:stop], steps)

  def _epoch_args(self, epoch: int) -> tuple:
    epoch = jax.device_put(np.int32(epoch), self.replicated)
    return self.state_M, self.hp_M, self.labels_MxN, self.data['x_train'], epoch

  def _evaluate_args(self, epoch: float = 0.0) -> tuple:
    d = self.data
    epoch = jax.device_put(np.float32(epoch), self.replicated)
    val = (d['x_val'], d['y_val']) if 'x_val' in d else None
    return self.state_M, self.hp_M, self.labels_MxN, d['x_train'], d['x_test'], d['y_test'], epoch, val

  def compiled_bytes(self, evaluation: bool = True) -> tuple[int, int] | None:
    """Temporary device bytes of this bucket's compiled training epoch and (if `evaluation`, else 0) evaluation, as
    XLA accounts them; None if the backend reports nothing. Compiles them now; the run's calls reuse the
    compilations."""
    programs = [(self.fns.epoch, self._epoch_args(0))]
    programs += [(self.fns.evaluate_program(), self._evaluate_args())] * evaluation
    compiled = [fn.lower(*args).compile() for fn, args in programs]
    try:
      analyses = [c.memory_analysis() for c in compiled]
    except Exception:  # noqa: BLE001 - a backend without memory figures: nothing to check
      return None
    if any(a is None for a in analyses):
      return None
    return analyses[0].temp_size_in_bytes, analyses[1].temp_size_in_bytes if evaluation else 0

  def evaluate(self, epoch: float, which: tuple[str, ...] | None = None, best: bool = True) -> dict[str, jax.Array]:
    """Dispatches the evaluation of the probes named in `which` (None: all) after `epoch` epochs (fractional within
    an epoch) and, with keep_best
    and `best`, the update of the best parameters; the metrics stay on the device until read. Probes that keep a
    state leave their new one in the bucket's state."""
    metrics = self.fns.evaluate(*self._evaluate_args(epoch), which=which)
    if 'probe_state' in metrics:
      metrics = dict(metrics)
      self.state_M = dict(self.state_M, probes={**self.state_M['probes'], **metrics.pop('probe_state')})
    if self.spec.keep_best and best:
      if self.spec.best_metric not in metrics:
        raise ValueError(f'train.best_metric={self.spec.best_metric} is not recorded by this dataset\'s task')
      self.state_M = self.fns.remember_best(self.state_M, metrics[self.spec.best_metric],
                                          jax.device_put(np.int32(int(epoch)), self.replicated))
      metrics = dict(metrics, **best_columns(self.spec, self.state_M['best']))
    return metrics


def best_metric(cfg: cfglib.Config, ds) -> str:
  """What keep_best selects by: train.best_metric, except that with a validation split test_loss and test_error
  select by val_loss and val_error (the held-out test split never chooses)."""
  metric = cfg.train.best_metric
  return metric.replace('test_', 'val_') if ds.x_val is not None and metric in ('test_loss', 'test_error') else metric


def placement(cfg: cfglib.Config, n_buckets: int) -> str:
  """'shard' (member axis over all devices) or 'bucket' (whole buckets onto devices) for a job of `n_buckets`.

  auto: on one CPU process, whole buckets onto devices while there are at least as many buckets as devices (each
  bucket's step keeps about one core busy, and no program waits on another: benchmarks/placement.py), else shard,
  so that a job of fewer buckets (grokking's one, deep linear networks') leaves no core idle; on several
  accelerators, or several processes, always shard."""
  if cfg.train.placement != 'auto':
    return cfg.train.placement
  if jax.process_count() > 1:
    return 'shard'  # one SPMD program over every host's devices
  if jax.local_device_count() == 1:
    return 'bucket'
  if jax.default_backend() == 'cpu':
    return 'shard' if n_buckets < jax.local_device_count() else 'bucket'
  return 'shard'


def make_buckets(job: Job, ds, plan: list[list[int]], cost, log=print,
                 measured: dict[int, memory.MemberBytes] | None = None, rounds: int = 3,
                 check: str = 'train+eval') -> list[Bucket]:
  """Buckets of the member indices of `job` (widths grouped as in `plan`), placed on the local devices.

  Buckets are sized by the estimate (memory.py), then their programs are compiled and XLA's own figure for each
  training step and evaluation is checked against the budget: if one is over (the estimate was low on this
  device), the buckets are made again from the compiled figures (`measured`, per planned bucket), at most
  `rounds` times. `check`: 'train+eval', 'train' (only the training step is compiled and checked) or 'none'. The
  run's calls reuse these compilations."""
  cfg = job.config
  arrays = {'x_train': ds.x_train, 'y_train': ds.y_train, **ds.held_out}
  shard = placement(cfg, len(plan)) == 'shard'
  devices = jax.devices() if shard else jax.local_devices()  # shard: every process's devices, one global mesh
  # Per device: the dataset (a copy on each), every member's resident state (spread evenly), then what the
  # running bucket's step needs; a bucket whose step does not fit in what is left is split.
  sizes = member_sizes(cfg, plan, ds.input_shape, ds.num_classes, batch_size(cfg, ds), ds.task, ds.modes)
  sizes = [(measured or {}).get(p, size) for p, size in enumerate(sizes)]
  resident = sum(len(b) * size.resident for b, size in zip(plan, sizes)) / len(devices)
  # Every process sizes the same buckets of one program: from the smallest budget (its own devices' memory) of all.
  budget = (float(parallel.agree(memory.budget_bytes(cfg.train.memory_gb, jax.local_devices()[0]), 'min'))
            - sum(a.nbytes for a in arrays.values()) - resident)
  if budget <= 0:
    log(f'warning: the members\' state alone (about {gib(resident)} per device) exceeds the memory '
        f'budget; every bucket is split to its smallest')
  per_device = lambda n: -(-n // len(devices)) if shard else n  # members of a bucket of n on one device
  groups, chunks_of, planned = [], [], []  # member groups, each one's evaluation chunk and planned bucket
  eval_batch = min(cfg.train.eval_batch, max(len(ds.y_train), *(len(v) for k, v in ds.held_out.items() if k[0] == 'y')))
  for p, (b, group, size) in enumerate(zip(plan, group_members(job, plan), sizes)):
    chunks = memory.split_to_fit(group, size.transient, budget, len(devices) if shard else 1)
    if len(chunks) > 1:
      log(f'bucket of width {max(b)}: {len(b)} members\' training steps need about '
          f'{gib(len(b) * size.transient)}, more than the {gib(max(budget, 0))} left per device: '
          f'split into {len(chunks)} buckets')
    for chunk in chunks:
      groups.append(chunk)
      planned.append(p)
      chunks_of.append(memory.eval_chunk(eval_batch, per_device(len(chunk)), size.eval_per_example, budget))
      if chunks_of[-1] < eval_batch:
        log(f'bucket of width {max(b)} ({len(chunk)} members): evaluation in chunks of {chunks_of[-1]} examples '
            f'({eval_batch} would need about {gib(per_device(len(chunk)) * eval_batch * size.eval_per_example)})')
  single = None
  if shard:
    mesh = jax.sharding.Mesh(np.asarray(devices), ('members',))
    members = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('members'))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    data = jax.device_put(arrays, replicated)
    buckets = [Bucket(job, g, data, ds, members, replicated, c) for g, c in zip(groups, chunks_of)]
  else:
    widths = [max(job.members[i]['model.width'] for i in g) for g in groups]
    scans = [max(subset_steps([job.members[i] for i in g], len(ds.y_train), cfg.train.batch_size,
                              cfg.train.budget)[0]) for g in groups]  # train-size buckets scan fewer steps
    where = parallel.assign([len(g) * cost(w) * s for g, w, s in zip(groups, widths, scans)], len(devices))
    single = {d: jax.sharding.SingleDeviceSharding(devices[d]) for d in set(where)}
    data = {d: jax.device_put(arrays, sh) for d, sh in single.items()}  # the dataset once per device used
    buckets = [Bucket(job, g, data[w], ds, single[w], single[w], c) for g, w, c in zip(groups, where, chunks_of)]
  if budget <= 0 or check == 'none':
    return buckets
  figures = [b.compiled_bytes(check == 'train+eval') or (np.nan, np.nan) for b in buckets]
  # each process's compilation: the largest figure decides for all (every process gathers, then all decide alike)
  figures = parallel.agree(figures, 'max')
  if np.isnan(figures).any():  # a backend that reports no memory figures
    return buckets
  over = {}  # planned bucket -> XLA's (training bytes per member, evaluation bytes per member and example), where over
  for b, p, (step, evaluation) in zip(buckets, planned, figures.tolist()):
    n = per_device(len(b.rows))
    if step > budget or evaluation > budget:
      log(f'bucket of width {b.width} ({len(b.member_ids)} members): XLA\'s compiled programs need '
          f'{gib(step)} to train and {gib(evaluation)} to evaluate, more than the {gib(budget)} left per device '
          f'(estimated: {gib(n * sizes[p].transient)} and {gib(n * b.spec.eval_batch * sizes[p].eval_per_example)})'
          + (': its buckets are made again from XLA\'s figures' if rounds else '; it may not fit'))
      t, e = over.get(p, (0.0, 0.0))
      over[p] = (max(t, 1.1 * step / n if step > budget else 0.0),
                 max(e, 1.1 * evaluation / (n * b.spec.eval_batch) if evaluation > budget else 0.0))
  if not over or not rounds:
    return buckets
  measured = dict(measured or {})
  for p, (t, e) in over.items():
    size, grow = measured.get(p, sizes[p]), 1.2 if p in measured else 1.0  # over again: at least 20% more
    measured[p] = memory.MemberBytes(size.resident, max(t, grow * size.transient) if t else size.transient,
                                     max(e, grow * size.eval_per_example) if e else size.eval_per_example)
  buckets = b = data = single = None  # their state and data go before the new buckets take theirs
  return make_buckets(job, ds, plan, cost, log, measured=measured, rounds=rounds - 1, check=check)


def gib(n: float) -> str:
  """Bytes for a log line: GiB, or MiB below a tenth of a GiB."""
  return f'{n / 2**30:.2f} GiB' if n >= 2**30 / 10 else f'{n / 2**20:.1f} MiB'
