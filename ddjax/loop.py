"""The epoch loop of a job: train every bucket an epoch at a time, evaluate at log points, write rows and
checkpoints, stop cleanly on a signal; and the loop over a sweep's jobs (skipping members already complete)."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import signal
import time
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np
from jax.experimental import multihost_utils

from ddjax import config as cfglib
from ddjax import parallel, results
from ddjax.buckets import (Bucket, conv_form, epoch_examples, job_plan, make_buckets, model_for, placement,
                           strategy_label)
from ddjax.checkpoint import Checkpoints, relayout
from ddjax.data import load_dataset
from ddjax.members import Job, job_padded_ratio, padded_ratio
from ddjax.parallel import agree_flags, sync, writer
from ddjax.progress import epochs_progress
from ddjax.store import device_name, job_id, member_config, member_rows, run_id, versions
from ddjax.timeline import EpochPlan, epoch_plan, run_length  # noqa: F401 - part of this module's API


def eval_epochs(epochs: int, points: int, every: int) -> list[int]:
  """Log-spaced epochs 1..epochs (the last always included), plus every `every` epochs."""
  grid = {int(round(e)) for e in np.logspace(0, math.log10(epochs), points)} if epochs > 1 else set()
  if every:
    grid |= set(range(every, epochs + 1, every))
  return sorted(grid | {epochs})


def evaluation_grid(train, steps_per_epoch: int, epochs: int | None = None) -> tuple[set[int], int]:
  """(the epochs evaluated at their end, evaluate also every N steps (0: not)): eval_points log-spaced epochs and
  every eval_every epochs, or with train.max_steps and train.evaluations every max_steps / evaluations steps (and
  the last step). `epochs`: the run's (default: run_length's)."""
  epochs = epochs or run_length(train, steps_per_epoch)[0]
  if train.max_steps and train.evaluations:
    return {epochs}, max(1, train.max_steps // train.evaluations)
  return set(eval_epochs(epochs, train.eval_points, train.eval_every)), train.eval_every_steps


def _postfix(rows: list[dict[str, Any]], uses) -> str:
  """The progress bar's figures: the mean over members of the first two columns that the probes `uses` offer for it
  (ProbeSpec.progress) and the rows have."""
  shown = [c for u in uses for c in u.spec.progress if c in rows[0]][:2]
  return ' '.join(f"{c.replace('_', ' ')} {np.nanmean([r[c] for r in rows]):.3g}" for c in shown) + \
      ' (mean over members)' * bool(shown)


class Interrupted(Exception):
  """Training stopped on SIGTERM/SIGINT after checkpointing; `--resume` continues it."""

  def __init__(self, signum: int, job: int | None, epoch: int | None):
    where = (f'after epoch {epoch} of job {job + 1}' if epoch is not None else
             f'before job {job + 1}' if job is not None else 'in every worker')
    super().__init__(f'stopped by signal {signum} {where}; checkpoints saved')
    self.signum, self.job, self.epoch = signum, job, epoch


def evaluation_points(uses, grid: set[int], every_steps: int, steps_per_epoch: int, epoch: int,
                      length: int | None = None, first: int | None = None
                      ) -> dict[int, tuple[tuple[str, ...] | None, bool]]:
  """Where epoch `epoch` evaluates, in order: steps into the epoch -> (the evaluation probes that run there, None for
  all; whether it is an evaluation of the grid or of train.eval_every_steps). Those run the base probes and those of
  cadence `eval`; a probe's own cadence (Nepochs, at:E/..., Nsteps) adds points with the base probes and it, where
  keep_best does not look (so a probe never changes what a run keeps). `length`: the steps the epoch trains (the
  last one of a run of train.max_steps may stop part way; default all); `first`: the optimizer steps before it
  (default (epoch - 1) x steps_per_epoch; phases of other batch sizes change it)."""
  optional = [u for u in uses if not u.spec.always]
  within = every_steps or any(u.every.kind == 'steps' for u in optional)
  length = length or steps_per_epoch
  points = {}
  for k in range(1, length + 1) if within else [length]:
    step, end = ((epoch - 1) * steps_per_epoch if first is None else first) + k, k == length
    evaluation = (end and epoch in grid) or bool(every_steps and step % every_steps == 0)
    names = tuple(u.name for u in optional if u.every.runs_at(step, epoch if end else None, evaluation)
                  or end and u.spec.epochs is not None and epoch in u.spec.epochs(**u.kwargs))
    if evaluation or names:
      which = None if len(names) == len(optional) else tuple(u.name for u in uses if u.spec.always) + names
      points[k] = (which, evaluation)
  return points


def _metric_rows(job: Job, buckets: list[Bucket], epoch: int | float, ids: list[str], attempt: int, which=None,
                 best: bool = True, step: int = 0, clock=lambda: float('nan')) -> list[dict[str, Any]]:
  """The evaluation rows at `epoch` (fractional within an epoch) after optimizer step `step`, with keep_best looking
  at them if `best`; `time_s` from `clock` once they are computed."""
  metrics = [b.evaluate(epoch, which, best) for b in buckets]  # every device evaluates before the host reads
  if jax.process_count() > 1:  # members sharded over hosts: every process gathers all of them
    metrics = multihost_utils.process_allgather(metrics, tiled=True)
  metrics = jax.device_get(metrics)
  seconds = clock()
  # (rows past len(member_ids) are the copies that pad a sharded bucket: never reported)
  across = _across_members(job, buckets, metrics)
  rows = []
  for b, m in zip(buckets, metrics):
    for j, i in enumerate(b.member_ids):
      own, per = b.own_steps[j], b.steps_per_epoch  # data.subset under budget epochs: its own steps, fewer
      at = step if own == per else step // per * own + min(step % per, own)
      row = {'run_id': ids[i], 'attempt': attempt, 'epoch': epoch, 'step': at, 'time_s': seconds}
      for k, v in m.items():
        row[k] = bool(v[j]) if k == 'diverged' else int(v[j]) if k in ('diverged_step', 'best_epoch') else float(v[j])
      rows.append(dict(row, **across.get(i, {})))
  return rows


def _across_members(job: Job, buckets: list[Bucket], metrics: list[dict]) -> dict[int, dict[str, float]]:
  """The columns of the probes across members (ProbeSpec.pairs) that ran, by member index: each compares the
  summaries of the job's members that train now (all buckets; those of a --rerun or of the members not complete
  before, not the ones skipped) and have not diverged. The summaries are removed from `metrics`."""
  out: dict[int, dict[str, float]] = {}
  for u in buckets[0].spec.probes:
    key = 'summary:' + u.name
    if u.spec.pairs is None or key not in metrics[0]:
      continue
    summaries = {i: m[key][j] for b, m in zip(buckets, metrics) for j, i in enumerate(b.member_ids)
                 if not m['diverged'][j]}  # a diverged member is frozen: compared with none
    for i, columns in u.spec.pairs(summaries, dict(enumerate(job.members)), **u.kwargs).items():
      out.setdefault(i, {}).update(columns)
  for m in metrics:
    for key in [k for k in m if k.startswith('summary:')]:
      del m[key]
  return out


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
  if (n := max((m['data.subset'] or 0) for m in job.members)) > len(ds.y_train):  # known only once loaded (cifar10)
    raise cfglib.ConfigError(f'bad value {n!r} for data.subset: more than the {len(ds.y_train)} training examples')
  plan, cost = job_plan(job, ds.input_shape, ds.num_classes, len(ds.y_train))
  model = model_for(cfg, plan[0][0], ds.input_shape, ds.num_classes)
  if n and not cfg.train.batch_size and jax.tree.leaves(jax.eval_shape(  # BatchNorm in a model without model.norm
      lambda x: model.init({'params': jax.random.key(0)}, ds.preprocess(x), plan[0][0], train=False),
      ds.x_train[:1]).get('batch_stats', {})):
    raise cfglib.ConfigError(f'bad value {n!r} for data.subset: a full batch (train.batch_size=0) runs every example '
                             "through BatchNorm's batch statistics (allowed: none)")
  widths = [w for b in plan for w in b]
  padded = job_padded_ratio(job, plan, cost, len(ds.y_train), cfg.train.batch_size)  # widths and data.subset steps
  log(f'job {job.index + 1}/{n_jobs} {job.static or ""}: {len(job.members)} members in {len(plan)} buckets '
      f'padded to {[max(b) for b in plan]}; padded/useful FLOPs {padded:.3f} '
      f'(widths in one bucket: {padded_ratio([widths], cost):.3f}); conv={conv_form(cfg)}, '
      f'strategy={strategy_label(cfg)}, devices={jax.device_count()} ({placement(cfg, len(plan))})'
      + (f', {jax.process_count()} processes' if jax.process_count() > 1 else ''))
  buckets = make_buckets(job, ds, plan, cost, log)
  ckpt_dir, snap_dir = out / 'checkpoints' / jid, out / 'snapshots' / jid
  if fresh:
    if writer():
      shutil.rmtree(ckpt_dir, ignore_errors=True)
      shutil.rmtree(snap_dir, ignore_errors=True)
    sync('fresh-' + jid)
  ckpt = Checkpoints(ckpt_dir, cfg.train.checkpoint_keep)
  snap_epochs = cfglib.snapshot_epochs(cfg.train.snapshot_epochs)
  snapshots = Checkpoints(snap_dir, None) if snap_epochs else None  # kept forever
  layout = [[int(ids[i], 16) for i in b.rows] for b in buckets]  # members by run id, whatever the sweep's order
  widths = [b.width for b in buckets]
  start, before_s, attempt = 0, 0.0, time.time_ns()
  if (restored := ckpt.restore([b.state_M for b in buckets], layout, log)) is not None:
    start, states, before_s, attempt = restored
    for b, st in zip(buckets, states):
      b.state_M = st
    log(f'job {job.index + 1}/{n_jobs}: resumed after epoch {start}')
  recorded = ','.join(u.name for u in buckets[0].spec.probes + buckets[0].spec.step_probes)
  meta = {'job_id': jid, 'attempt': attempt, 'complete': False, 'versions': json.dumps(versions()),
          'recorded_probes': recorded,
          'device': device_name(), 'wall_time_s': float('nan'), 'padded_ratio': padded,
          **dict(ds.info)}
  if writer():
    results.write_members(out, jid, member_rows(job, buckets, meta))
  elapsed = lambda: before_s + time.time() - t0

  plan_e = epoch_plan(cfg, epoch_examples(cfg, ds, job.members))
  epochs = len(plan_e)
  grid, every_steps = evaluation_grid(cfg.train, plan_e[0].steps_per_epoch, epochs)
  phase = 0 if plan_e[0].batch_size == cfg.train.batch_size else -1  # the phase the buckets are compiled for (-1: a
  # switch at step 0 gave phase 0 another batch size than the job's)
  steps = StepTable(buckets, ids, attempt)
  bar = epochs_progress(range(start + 1, epochs + 1), f'job {job.index + 1}/{n_jobs}', start, epochs,
                        progress and writer(), bar_position)
  pending, last_save, rows = None, time.time(), []

  def snapshot(epoch: int) -> None:  # one already there (resumed from before it) is the same state: kept
    if not parallel.agree(epoch in snapshots.manager.all_steps(), 'min'):
      snapshots.save(epoch, [b.state_M for b in buckets], layout, widths, elapsed(), attempt)

  if snap_epochs:
    missed = [e for e in snap_epochs if 0 < start and e <= start and e not in snapshots.manager.all_steps()]
    if missed:
      log(f'job {job.index + 1}/{n_jobs}: no snapshot at epoch(s) {missed} (resumed after epoch {start}); '
          'train the members again (--rerun) to keep them')
  if start == 0 and 0 in snap_epochs:
    snapshot(0)
  buffered, last_flush = [], time.time()

  def flush():  # buffered evaluation rows -> one part file named by its last step; the step table likewise
    nonlocal buffered, last_flush
    if buffered and writer():
      results.write_curves(out, jid, buffered[-1]['step'], buffered)
    steps.flush(out, jid)
    buffered, last_flush = [], time.time()

  try:
    for epoch in bar:
      spe, first, length = plan_e[epoch - 1].steps_per_epoch, plan_e[epoch - 1].first, plan_e[epoch - 1].length
      if plan_e[epoch - 1].phase != phase:  # another batch size: the same state in the new phase's programs
        flush()
        phase = plan_e[epoch - 1].phase
        buckets, layout, widths = switch_phase(job, ds, plan, cost, buckets, layout, ids,
                                               plan_e[epoch - 1].batch_size, log)
        steps.buckets, pending = buckets, None
      points = evaluation_points(buckets[0].spec.probes, grid, every_steps, spe, epoch, length, first)
      cuts = [k for k in points if k < length]
      for a, b in zip([0] + cuts, cuts + [length]):  # segments of the epoch between evaluations within it
        if b - a == spe:
          losses = [bk.train_epoch(epoch - 1) for bk in buckets]  # epoch index e-1 seeds the order of epoch e
        else:
          losses = [bk.train_segment(epoch - 1, a, b) for bk in buckets]
        steps.add(first + a + 1, [step_values for _, step_values in losses], epoch)
        if b < length:
          within = _metric_rows(job, buckets, epoch - 1 + b / spe, ids, attempt, points[b][0], False,
                                first + b, elapsed)
          buffered += within
          if logger is not None:
            logger.log(within, epoch - 1 + b / spe)
      if pending is not None:
        jax.block_until_ready(pending)  # keep one epoch in flight so the bar and ETA stay true
      pending = losses
      if length in points:
        at = epoch if length == spe else epoch - 1 + length / spe
        rows = _metric_rows(job, buckets, at, ids, attempt, *points[length], first + length, elapsed)
        buffered += rows
        if logger is not None:
          logger.log(rows, epoch)
        bar.set_postfix_str(_postfix(rows, buckets[0].spec.probes))
      every, minutes = cfg.train.checkpoint_every, cfg.train.checkpoint_minutes
      save = stop or epoch == epochs or (every and epoch % every == 0) or (
          minutes and time.time() - last_save >= 60 * minutes)
      due = time.time() - last_flush >= cfg.train.flush_seconds
      save, stopping, due = agree_flags(bool(save), bool(stop), due)  # on any process of a multi-host run: on all
      if save or due:
        flush()  # before the checkpoint: rows past a checkpoint are recomputed identically on resume
      if epoch in snap_epochs:  # before the checkpoint: a resume after it finds every snapshot up to it
        snapshot(epoch)
      if save:
        ckpt.save(epoch, [b.state_M for b in buckets], layout, widths, elapsed(), attempt)
        last_save = time.time()
      if stopping and epoch < epochs:
        raise Interrupted(stop.signal or signal.SIGTERM, job.index, epoch)
  finally:
    bar.close()
    ckpt.close()
    if snapshots is not None:
      snapshots.close()
  meta['wall_time_s'], meta['complete'] = elapsed(), True
  if writer():
    results.write_members(out, jid, member_rows(job, buckets, meta))
  diverged = sum(int(r['diverged']) for r in rows)  # rows of the last evaluation (none if resumed when done)
  log(f'job {job.index + 1}/{n_jobs} done in {meta["wall_time_s"]:.1f} s'
      + (f' (training time of every attempt; {time.time() - t0:.1f} s in this one)' if before_s else '')
      + (f'; {diverged} member(s) diverged and were frozen' if diverged else ''))


def switch_phase(job: Job, ds, plan: list[list[int]], cost, buckets: list[Bucket], layout: list[list[int]],
                 ids: list[str], batch_size: int, log) -> tuple[list[Bucket], list[list[int]], list[int]]:
  """The job's buckets compiled for another batch size (a phase of callbacks.phases), holding the state of
  `buckets` (each member moved into its new bucket: the memory budget may group them otherwise): (buckets, their
  layout by run id, their widths)."""
  cfg = job.config
  if jax.process_count() > 1:
    raise ValueError('batch-size phases (callbacks) run on one host: their state moves between programs through it')
  new = make_buckets(dataclasses.replace(job, config=dataclasses.replace(
      cfg, train=dataclasses.replace(cfg.train, batch_size=batch_size))), ds, plan, cost, log)
  new_layout = [[int(ids[i], 16) for i in b.rows] for b in new]
  states = relayout(jax.device_get([b.state_M for b in buckets]), layout, [b.state_M for b in new], new_layout)
  for b, state in zip(new, states):
    b.state_M = state
  log(f'job {job.index + 1}: batch size {batch_size} from here on (a new compiled phase)')
  return new, new_layout, [b.width for b in new]


class StepTable:
  """The step probes' values of a job's buckets, kept on the device epoch by epoch until `flush` writes them as one
  part file of the step table (float32; a row per member and recorded step, at the step probes' cadences)."""

  def __init__(self, buckets: list[Bucket], ids: list[str], attempt: int):
    self.buckets, self.ids, self.attempt = buckets, ids, attempt
    self.uses = buckets[0].spec.step_probes
    self.pending: list[tuple[int, int, list[dict]]] = []

  def add(self, first: int, values: list[dict], epoch: int) -> None:
    """The step values of each bucket from optimizer step `first` (from 1) on, all in epoch `epoch`."""
    if self.uses:
      self.pending.append((first, epoch, values))

  def flush(self, out: Path, jid: str) -> None:
    if not self.pending:
      return
    firsts, epochs = [first for first, _, _ in self.pending], [e for _, e, _ in self.pending]
    values = [v for _, _, v in self.pending]
    self.pending = []
    if jax.process_count() > 1:  # members sharded over hosts: every process gathers all of them (a collective)
      values = multihost_utils.process_allgather(values, tiled=True)
    pending = list(zip(firsts, epochs, jax.device_get(values)))
    if not writer():
      return
    frames = []
    for first, epoch_of, per_bucket in pending:
      length = np.shape(next(iter(next(iter(per_bucket[0].values())).values())))[1]
      step = first + np.arange(length)
      epoch = np.full(length, epoch_of)
      at = {u.name: step % u.every.n == 0 for u in self.uses}  # each probe's cadence
      keep = np.any(list(at.values()), axis=0)
      for b, values in zip(self.buckets, per_bucket):
        members = len(b.member_ids)  # rows past it pad a sharded bucket
        columns = {'run_id': np.repeat([self.ids[i] for i in b.member_ids], keep.sum()),
                   'attempt': np.full(members * keep.sum(), self.attempt, np.int64),
                   'step': np.tile(step[keep], members), 'epoch': np.tile(epoch[keep], members)}
        for name, probe_values in values.items():
          for column, v in probe_values.items():
            v = np.where(at[name], np.asarray(v[:members], np.float32).reshape(members, -1), np.nan)
            columns[column] = v[:, keep].reshape(-1)
        frames.append(columns)
    table = {k: np.concatenate([f.get(k, np.full(len(f['step']), np.nan, np.float32)) for f in frames])
             for k in dict.fromkeys(k for f in frames for k in f)}
    if len(table['step']):
      results.write_steps(out, jid, int(table['step'].max()), table)


def _say_unrecorded(job: Job, done: list[str], out: Path, n_jobs: int, log) -> None:
  """One line if complete members that are skipped did not record a probe this run asks for."""
  recorded = results.recorded_probes(out)
  wanted = set(cfglib.probe_uses(job.config))
  missing = sorted({name for r in done for name in wanted - recorded.get(r, wanted)})
  if missing:
    count = sum(bool(wanted - recorded.get(r, wanted)) for r in done)
    log(f"job {job.index + 1}/{n_jobs}: {count} complete member(s) did not record probe(s) {', '.join(missing)}; "
        'train them again with --rerun KEY=VALUE to record them (probes leave run ids alone)')


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
    if agree_flags(bool(stop))[0]:  # a signal during the previous job's last epoch: its work is saved, start no new one
      raise Interrupted(stop.signal or signal.SIGTERM, job.index, None)
    configs = [member_config(job, i) for i in range(len(job.members))]
    ids = [run_id(c) for c in configs]
    again = [rerun is not None and rerun(c) and status.get(r, (0, False))[0] < cutoff for c, r in zip(configs, ids)]
    todo = [i for i, r in enumerate(ids) if not status.get(r, (0, False))[1] or again[i]]
    if len(todo) < len(configs):
      log(f'job {job.index + 1}/{n_jobs}: {len(configs) - len(todo)} of {len(configs)} members already '
          f'complete in {out}' + ('; skipped' if not todo else ''))
      _say_unrecorded(job, [r for i, r in enumerate(ids) if i not in todo], out, n_jobs, log)
    if todo:
      run_job(job.subset(todo), out, n_jobs, progress, log, any(again), stop, bar_position, logger)
