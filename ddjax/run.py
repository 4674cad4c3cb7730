"""Runs the jobs of a sweep: buckets, the epoch loop, evaluation at log points, part files, compaction."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import math
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils
from tqdm.auto import tqdm

from ddjax import config as cfglib
from ddjax import memory, parallel
from ddjax import results
from ddjax.checkpoint import Checkpoints, StopRequested
from ddjax.data import load_dataset
from ddjax.members import Job, group_members, padded_ratio, plan_buckets, stack_hp
from ddjax.nn.models import make_model
from ddjax.train import ADAM_LIKE, StepSpec, bucket_fns

PACKAGES = ('jax', 'jaxlib', 'flax', 'optax', 'numpy', 'orbax-checkpoint', 'pyarrow')


def versions() -> dict[str, str]:
  out = {}
  for name in PACKAGES:
    try:
      out[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      pass
  return out


def device_name() -> str:
  d = jax.devices()[0]
  return f'{d.platform}:{d.device_kind} x{jax.device_count()}'


def eval_epochs(epochs: int, points: int, every: int) -> list[int]:
  """Log-spaced epochs 1..epochs (the last always included), plus every `every` epochs."""
  grid = {int(round(e)) for e in np.logspace(0, math.log10(epochs), points)} if epochs > 1 else set()
  if every:
    grid |= set(range(every, epochs + 1, every))
  return sorted(grid | {epochs})


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


def model_for(cfg: cfglib.Config, width: int, input_shape, num_classes: int):
  """The job's model padded to `width`, for inputs of `input_shape` and `num_classes` outputs."""
  return make_model(cfg.model.name, width, input_shape, num_classes, conv_form(cfg), cfg.train.compute_dtype,
                    cfg.model.depth)


def job_plan(job: Job, input_shape, num_classes: int) -> tuple[list[list[int]], Callable[[int], float]]:
  """The job's width buckets (plan_buckets on the model's MAC count) and that cost function."""
  cfg = job.config
  widths = sorted(m['model.width'] for m in job.members)
  cost = make_model(cfg.model.name, max(widths), input_shape, num_classes, 'lax', depth=cfg.model.depth).macs
  return plan_buckets(widths, cost, cfg.train.bucket_ratio, cfg.train.max_buckets), cost


def member_sizes(cfg: cfglib.Config, plan: list[list[int]], input_shape, num_classes: int, batch: int,
                 tokens: bool) -> list[memory.MemberBytes]:
  """The estimated bytes of one member of each planned bucket (memory.member_bytes_split), from shapes alone;
  `tokens`: the model reads integer tokens. With the curvature or gradient-noise monitors on, a member's transient
  bytes are the larger of a training step's and the monitors' (memory.monitor_bytes), so buckets split for either."""
  t, dtype, sizes = cfg.train, jnp.int32 if tokens else jnp.float32, []
  for b in plan:
    model = model_for(cfg, max(b), input_shape, num_classes)
    size = memory.member_bytes_split(model, max(b), input_shape, batch, cfg.optim.name, dtype)
    if t.sharpness or t.hessian_trace or t.noise_scale:
      loops = bool(t.sharpness) * (2 if cfg.optim.name in ADAM_LIKE else 1) + bool(t.hessian_trace)
      need = memory.monitor_bytes(model, max(b), input_shape, t.monitor_batch, cfg.optim.name, dtype, loops,
                                  t.noise_scale)
      size = size._replace(transient=max(size.transient, need))
    sizes.append(size)
  return sizes


def batch_size(cfg: cfglib.Config, ds) -> int:
  return cfg.train.batch_size or len(ds.y_train)  # 0: full batch


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
    self.spec = StepSpec(model_for(cfg, self.width, ds.input_shape, ds.num_classes), cfg.optim.name,
                         batch_size(cfg, ds), ds.num_classes, eval_batch or cfg.train.eval_batch,
                         strategy(cfg, self.width), cfg.train.map_batch, ds.preprocess, ds.task, cfg.train.keep_best,
                         cfg.optim.schedule,
                         cfg.train.epochs * (len(ds.y_train) // batch_size(cfg, ds)),
                         cfg.train.collapse and ds.task == 'classify',
                         ds.modes if cfg.model.name == 'deep_linear' else 0, cfg.train.sharpness,
                         cfg.train.hessian_trace, cfg.train.noise_scale, cfg.train.monitor_batch)
    sharded = isinstance(members, jax.sharding.NamedSharding)
    self.fns = bucket_fns(self.spec, members if sharded else None)
    n_dev = len(members.device_set)
    padded_ids = member_ids + [member_ids[-1]] * (-len(member_ids) % n_dev if sharded else 0)
    self.rows = padded_ids  # the member in each row of the stacked state
    self.hp = jax.device_put(stack_hp([job.members[i] for i in padded_ids]), members)
    self.data = data
    self.state = self.fns.init(self.hp, self.data['x_train'][0])
    self.labels = self.fns.labels(self.hp, self.data['y_train'])

  def train_epoch(self, epoch: int):
    self.state, loss = self.fns.epoch(*self._epoch_args(epoch))
    return loss

  def _epoch_args(self, epoch: int) -> tuple:
    return self.state, self.hp, self.labels, self.data['x_train'], jax.device_put(np.int32(epoch), self.replicated)

  def _evaluate_args(self) -> tuple:
    d = self.data
    return self.state, self.hp, self.labels, d['x_train'], d['x_test'], d['y_test']

  def compiled_bytes(self, evaluation: bool = True) -> tuple[int, int] | None:
    """Temporary device bytes of this bucket's compiled training epoch and (if `evaluation`, else 0) evaluation, as
    XLA accounts them; None if the backend reports nothing. Compiles them now; the run's calls reuse the
    compilations."""
    programs = [(self.fns.epoch, self._epoch_args(0))] + [(self.fns.evaluate, self._evaluate_args())] * evaluation
    compiled = [fn.lower(*args).compile() for fn, args in programs]
    try:
      analyses = [c.memory_analysis() for c in compiled]
    except Exception:  # noqa: BLE001 - a backend without memory figures: nothing to check
      return None
    if any(a is None for a in analyses):
      return None
    return analyses[0].temp_size_in_bytes, analyses[1].temp_size_in_bytes if evaluation else 0

  def evaluate(self, epoch: int) -> dict[str, jax.Array]:
    """Dispatches the evaluation (and, with keep_best, the update of the best parameters); the metrics stay on
    the device until read."""
    metrics = self.fns.evaluate(*self._evaluate_args())
    if self.spec.keep_best:
      self.state = self.fns.remember_best(self.state, metrics['test_loss'],
                                          jax.device_put(np.int32(epoch), self.replicated))
      metrics = dict(metrics, best_epoch=self.state['best']['epoch'], best_test_loss=self.state['best']['loss'])
    return metrics


def placement(cfg: cfglib.Config) -> str:
  """'shard' (member axis over all devices) or 'bucket' (whole buckets onto devices)."""
  if cfg.train.placement != 'auto':
    return cfg.train.placement
  if jax.process_count() > 1:
    return 'shard'  # one SPMD program over every host's devices
  return 'bucket' if jax.default_backend() == 'cpu' or jax.local_device_count() == 1 else 'shard'


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
  arrays = {'x_train': ds.x_train, 'y_train': ds.y_train, 'x_test': ds.x_test, 'y_test': ds.y_test}
  shard = placement(cfg) == 'shard'
  devices = jax.devices() if shard else jax.local_devices()  # shard: every process's devices, one global mesh
  # Per device: the dataset (a copy on each), every member's resident state (spread evenly), then what the
  # running bucket's step needs; a bucket whose step does not fit in what is left is split.
  tokens = np.issubdtype(ds.x_train.dtype, np.signedinteger)  # uint8 images reach the model as floats
  sizes = member_sizes(cfg, plan, ds.input_shape, ds.num_classes, batch_size(cfg, ds), tokens)
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
  eval_batch = min(cfg.train.eval_batch, max(len(ds.y_train), len(ds.y_test)))
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
    where = parallel.assign([len(g) * cost(w) for g, w in zip(groups, widths)], len(devices))
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


def run_id(cfg: cfglib.Config) -> str:
  """A member's id: a hash of its resolved config (execution-only keys left out). It names its result rows."""
  flat = cfglib.identity({k: cfglib.get(cfg, k) for k in cfglib.fields(cfg)})
  return hashlib.sha1(json.dumps(flat, sort_keys=True, default=str).encode()).hexdigest()[:12]


def job_id(run_ids: list[str]) -> str:
  """A job's id, from its members' ids: it names the job's checkpoint directory and part files."""
  return hashlib.sha1(','.join(sorted(run_ids)).encode()).hexdigest()[:12]


def duplicate_members(jobs: list[Job]) -> str | None:
  """A one-line description of members that would share a run id (the same numbers twice: a repeated sweep value,
  or a swept key that only changes execution), or None."""
  seen = {}
  for job in jobs:
    for i in range(len(job.members)):
      rid = run_id(member_config(job, i))
      if rid in seen:
        (j0, m0), swept = seen[rid], sorted(k for k in job.static if k in cfglib.EXECUTION_KEYS)
        why = (f'{", ".join(swept)} only change(s) how a run executes, not its results' if swept else
               'a value is repeated in a sweep')
        return f'jobs {j0 + 1} and {job.index + 1} (members {m0} and {i}) would train the same member: {why}'
      seen[rid] = (job.index, i)
  return None


def member_config(job: Job, i: int) -> cfglib.Config:
  """The full config of member i: the job's static keys with the member's own values."""
  cfg = job.config
  for k, v in job.members[i].items():
    cfg = cfglib.replace(cfg, k, v)
  return cfg


def _member_rows(job: Job, buckets: list[Bucket], meta: dict[str, Any]) -> list[dict[str, Any]]:
  rows = []
  for b, bucket in enumerate(buckets):
    for slot, i in enumerate(bucket.member_ids):
      cfg = member_config(job, i)
      rows.append({'run_id': run_id(cfg), 'job': job.index, 'member': job.position(i), **job.members[i],
                   **job.static, 'bucket': b, 'bucket_slot': slot, 'bucket_width': bucket.width,
                   'config': cfglib.to_json(cfg), **meta})
  return sorted(rows, key=lambda r: r['member'])


def _postfix(rows: list[dict[str, Any]]) -> str:
  """Mean train and test error (or loss, for regression) over members, for the progress bar."""
  metric = 'error' if 'train_error' in rows[0] else 'loss'
  train, test = (np.nanmean([r[f'{split}_{metric}'] for r in rows]) for split in ('train', 'test'))
  return f'train {metric} {train:.3g} test {metric} {test:.3g} (mean over members)'


class Interrupted(Exception):
  """Training stopped on SIGTERM/SIGINT after checkpointing; `--resume` continues it."""

  def __init__(self, signum: int, job: int | None, epoch: int | None):
    where = (f'after epoch {epoch} of job {job + 1}' if epoch is not None else
             f'before job {job + 1}' if job is not None else 'in every worker')
    super().__init__(f'stopped by signal {signum} {where}; checkpoints saved')
    self.signum, self.job, self.epoch = signum, job, epoch


def _metric_rows(job: Job, buckets: list[Bucket], epoch: int, ids: list[str], attempt: int) -> list[dict[str, Any]]:
  metrics = [b.evaluate(epoch) for b in buckets]  # every device evaluates before the host reads
  if jax.process_count() > 1:  # members sharded over hosts: every process gathers all of them
    metrics = multihost_utils.process_allgather(metrics, tiled=True)
  metrics = jax.device_get(metrics)
  # (rows past len(member_ids) are the copies that pad a sharded bucket: never reported)
  rows = []
  for b, m in zip(buckets, metrics):
    for j, i in enumerate(b.member_ids):
      row = {'run_id': ids[i], 'attempt': attempt, 'epoch': epoch}
      for k, v in m.items():
        row[k] = bool(v[j]) if k == 'diverged' else int(v[j]) if k in ('diverged_step', 'best_epoch') else float(v[j])
      rows.append(row)
  return rows


def run_job(job: Job, out: Path, n_jobs: int = 1, progress: bool = True, log=print, fresh: bool = False,
            stop=None, bar_position: int = 0, logger=None) -> None:
  """Trains every member of `job` and writes its part files and checkpoints under `out` (named by the job's id).

  Continues from the newest readable checkpoint of this job (same members) unless `fresh`, which starts over as a
  new attempt whose rows replace the old ones. When `stop` becomes true (a signal), saves a checkpoint after the
  current epoch and raises Interrupted."""
  cfg = job.config
  t0 = time.time()
  ids = [run_id(member_config(job, i)) for i in range(len(job.members))]
  jid = job_id(ids)
  ds = load_dataset(cfg.data)
  plan, cost = job_plan(job, ds.input_shape, ds.num_classes)
  widths = [w for b in plan for w in b]
  log(f'job {job.index + 1}/{n_jobs} {job.static or ""}: {len(job.members)} members in {len(plan)} buckets '
      f'padded to {[max(b) for b in plan]}; padded/useful FLOPs {padded_ratio(plan, cost):.3f} '
      f'(one bucket: {padded_ratio([widths], cost):.3f}); conv={conv_form(cfg)}, strategy={strategy_label(cfg)}, '
      f'devices={jax.device_count()} ({placement(cfg)})'
      + (f', {jax.process_count()} processes' if jax.process_count() > 1 else ''))
  buckets = make_buckets(job, ds, plan, cost, log)
  ckpt_dir = out / 'checkpoints' / jid
  if fresh:
    if writer():
      shutil.rmtree(ckpt_dir, ignore_errors=True)
    sync('fresh-' + jid)
  ckpt = Checkpoints(ckpt_dir, cfg.train.checkpoint_keep)
  layout = [[int(ids[i], 16) for i in b.rows] for b in buckets]  # members by run id, whatever the sweep's order
  widths = [b.width for b in buckets]
  start, before_s, attempt = 0, 0.0, time.time_ns()
  if (restored := ckpt.restore([b.state for b in buckets], layout, log)) is not None:
    start, states, before_s, attempt = restored
    for b, st in zip(buckets, states):
      b.state = st
    log(f'job {job.index + 1}/{n_jobs}: resumed after epoch {start}')
  meta = {'job_id': jid, 'attempt': attempt, 'complete': False, 'versions': json.dumps(versions()),
          'device': device_name(), 'wall_time_s': float('nan'), 'padded_ratio': padded_ratio(plan, cost),
          **dict(ds.info)}
  if writer():
    results.write_members(out, jid, _member_rows(job, buckets, meta))
  elapsed = lambda: before_s + time.time() - t0

  epochs = cfg.train.epochs
  evals = set(eval_epochs(epochs, cfg.train.eval_points, cfg.train.eval_every))
  bar = tqdm(range(start + 1, epochs + 1), desc=f'job {job.index + 1}/{n_jobs}', unit='epoch', initial=start,
             total=epochs, disable=not progress or not writer(), file=sys.stderr, dynamic_ncols=True, mininterval=1.0,
             position=bar_position)
  pending, last_save, rows = None, time.time(), []
  buffered, last_flush = [], time.time()

  def flush():  # buffered evaluation rows -> one part file named by its last epoch
    nonlocal buffered, last_flush
    if buffered and writer():
      results.write_curves(out, jid, buffered[-1]['epoch'], buffered)
    buffered, last_flush = [], time.time()

  try:
    for epoch in bar:
      losses = [b.train_epoch(epoch - 1) for b in buckets]  # epoch index e-1 seeds the order of epoch e
      if pending is not None:
        jax.block_until_ready(pending)  # keep one epoch in flight so the bar and ETA stay true
      pending = losses
      if epoch in evals:
        rows = _metric_rows(job, buckets, epoch, ids, attempt)
        buffered += rows
        if logger is not None:
          logger.log(rows, epoch)
        bar.set_postfix_str(_postfix(rows))
      every, minutes = cfg.train.checkpoint_every, cfg.train.checkpoint_minutes
      save = stop or epoch == epochs or (every and epoch % every == 0) or (
          minutes and time.time() - last_save >= 60 * minutes)
      save, stopping = agree(bool(save), bool(stop))  # a save or stop on any process of a multi-host run
      if save or time.time() - last_flush >= cfg.train.flush_seconds:
        flush()  # before the checkpoint: rows past a checkpoint are recomputed identically on resume
      if save:
        ckpt.save(epoch, [b.state for b in buckets], layout, widths, elapsed(), attempt)
        last_save = time.time()
      if stopping and epoch < epochs:
        raise Interrupted(stop.signal or signal.SIGTERM, job.index, epoch)
  finally:
    bar.close()
    ckpt.close()
  meta['wall_time_s'], meta['complete'] = elapsed(), True
  if writer():
    results.write_members(out, jid, _member_rows(job, buckets, meta))
  diverged = sum(int(r['diverged']) for r in rows)  # rows of the last evaluation (none if resumed when done)
  log(f'job {job.index + 1}/{n_jobs} done in {meta["wall_time_s"]:.1f} s'
      + (f' (training time of every attempt; {time.time() - t0:.1f} s in this one)' if before_s else '')
      + (f'; {diverged} member(s) diverged and were frozen' if diverged else ''))


def member_variables(out: Path, run: str, which: str = 'best') -> tuple[dict[str, Any], int]:
  """One member's {'params', 'batch_stats'} (member `run`: its run id) from the newest checkpoint of its job: at
  its lowest test loss (which='best', runs with train.keep_best) or at the checkpoint's epoch ('last'); with the
  width they are padded to (the bucket's). Apply them with make_model(..., that width) and the member's width."""
  table = results.load(out)
  rows = table[table['run_id'] == run]
  if rows.empty:
    raise KeyError(f'no member with run id {run!r} in {out}')
  row = rows.iloc[0]
  ckpt = Checkpoints(Path(out) / 'checkpoints' / row['job_id'])
  try:
    step = ckpt.manager.latest_step()
    if step is None:
      raise FileNotFoundError(f'no checkpoint of job {row["job_id"]} in {out}')
    saved = ckpt.manager.restore(step, args=ocp.args.StandardRestore())
  finally:
    ckpt.close()
  bucket, slot, width = int(row['bucket']), int(row['bucket_slot']), int(row['bucket_width'])
  if 'layout' in saved:  # where the checkpoint itself has the member (the table may be a moment behind it)
    rows_of = [np.asarray(ids).tolist() for ids in saved['layout']]
    bucket = next(b for b, ids in enumerate(rows_of) if int(run, 16) in ids)
    slot, width = rows_of[bucket].index(int(run, 16)), int(saved['widths'][bucket])
  tree = saved['buckets'][bucket]
  if which == 'best':
    if 'best' not in tree:
      raise ValueError(f'{out} was trained without train.keep_best: only which="last" is available')
    tree = tree['best']
  pick = lambda t: jax.tree.map(lambda x: np.asarray(x)[slot], t)
  return {'params': pick(tree['params']), 'batch_stats': pick(tree.get('batch_stats', {}))}, width


Rerun = Callable[[cfglib.Config], bool] | list[str] | None


def run_jobs(jobs: list[Job], n_jobs: int, out: Path, progress: bool = True, log=print, rerun: Rerun = None,
             stop=None, bar_position: int = 0, logger=None, rerun_before: int | None = None) -> None:
  """Trains the members of `jobs` that `out` does not hold complete, and those that `rerun` selects (a filter of
  member configs, or --rerun key=value strings) whose newest attempt started before `rerun_before` (ns; default
  now): so an interrupted rerun, run again, continues instead of starting over."""
  if isinstance(rerun, list):
    rerun = cfglib.rerun_filter(rerun) if rerun else None
  status = results.member_status(out)  # run id -> (newest attempt, finished)
  cutoff = rerun_before if rerun_before is not None else time.time_ns()
  for job in jobs:
    if agree(bool(stop))[0]:  # a signal during the previous job's last epoch: its work is saved, start no new one
      raise Interrupted(stop.signal or signal.SIGTERM, job.index, None)
    configs = [member_config(job, i) for i in range(len(job.members))]
    ids = [run_id(c) for c in configs]
    again = [rerun is not None and rerun(c) and status.get(r, (0, False))[0] < cutoff for c, r in zip(configs, ids)]
    todo = [i for i, r in enumerate(ids) if not status.get(r, (0, False))[1] or again[i]]
    if len(todo) < len(configs):
      log(f'job {job.index + 1}/{n_jobs}: {len(configs) - len(todo)} of {len(configs)} members already '
          f'complete in {out}' + ('; skipped' if not todo else ''))
    if todo:
      run_job(job.subset(todo), out, n_jobs, progress, log, any(again), stop, bar_position, logger)


def run(cfg: cfglib.Config, sweep: dict[str, list], jobs: list[Job], out: Path, progress: bool = True,
        log=print, rerun: Rerun = None, record: dict | None = None, workers: int = 1,
        wandb_project: str | None = None) -> Path:
  """Runs every job into the sweep store `out` and compacts the results; returns the path of results.parquet.

  Members already complete in `out` (same run id) are skipped, unless `rerun` selects them (a filter of member
  configs, or --rerun key=value strings): those train again from scratch and their new rows replace the old. A job
  interrupted earlier continues from its checkpoint. With workers > 1, jobs run in that many processes
  (ddjax.workers). With `wandb_project`, process 0 also logs every evaluation to Weights & Biases. On
  SIGTERM/SIGINT the current job checkpoints after its epoch and Interrupted is raised."""
  out = Path(out)
  if not writer():  # another process of a multi-host run: it trains its shard, process 0 writes
    log = lambda *a: None
  record = record or run_record(cfg, sweep, jobs)
  if rerun is not None and not callable(rerun):
    record = dict(record, rerun=sorted(rerun))  # names the invocation (results.invocation)
  started = time.time_ns()
  rerun_before = results.unfinished_start(out, record) if rerun else None  # continuing an interrupted rerun
  rerun_before = rerun_before or started
  if writer():
    out.mkdir(parents=True, exist_ok=True)
    if not (out / 'run.json').exists():
      results.write_json(out / 'run.json', record)
    results.append_history(out, dict(record, start_ns=started))
  sync('store-ready')
  if workers > 1 and len(jobs) > 1:
    if callable(rerun):
      raise ValueError('with workers > 1, pass rerun as key=value strings')
    from ddjax.workers import run_workers
    if (signum := run_workers(jobs, out, workers, progress, log, rerun, rerun_before)) is not None:
      raise Interrupted(signum, None, None)
  else:
    logger = None
    if wandb_project is not None and writer():
      from ddjax.wandb_log import WandbLogger
      logger = WandbLogger(out, record, wandb_project)
    try:
      with StopRequested() as stop:
        run_jobs(jobs, len(jobs), out, progress, log, rerun, stop, logger=logger, rerun_before=rerun_before)
    finally:
      if logger is not None:
        logger.finish()
  sync('trained')
  if writer():
    results.append_history(out, {'finished_ns': started})
  path = results.compact(out) if writer() else out / 'results.parquet'
  sync('compacted')
  return path


def writer() -> bool:
  """Whether this process writes the store (process 0; the only one outside a multi-host run)."""
  return jax.process_index() == 0


def agree(*flags: bool) -> tuple[bool, ...]:
  """Each flag true on every process of a multi-host run if it is true on any (a stop or save that one process
  decided alone would leave the others waiting in orbax's barrier; a signal to any process stops all); the flags
  themselves with one process."""
  return tuple(bool(f) for f in parallel.agree(flags, 'max'))


def sync(name: str) -> None:
  """A barrier over the processes of a multi-host run (nothing with one process)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def run_record(cfg: cfglib.Config, sweep: dict[str, list], jobs: list[Job]) -> dict[str, Any]:
  """What run.json holds; `--resume` requires the same config and sweep."""
  return {'config': cfglib.to_dict(cfg), 'sweep': sweep, 'versions': versions(), 'device': device_name(),
          'jobs': len(jobs), 'members': sum(len(j.members) for j in jobs)}
