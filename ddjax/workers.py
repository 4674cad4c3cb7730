"""`--workers N`: the independent jobs of a sweep in N processes on one machine.

Each worker is a fresh (spawned) Python process that takes job indices from a shared queue, so long and short
jobs balance out. On a machine with GPUs worker k sees only GPU k (CUDA_VISIBLE_DEVICES); on a CPU each worker
gets cores / N XLA devices. Every job is written by exactly one worker (its own part files and checkpoints, named
by the job's id); the parent alone writes run.json, sweeps.jsonl and results.parquet. SIGTERM/SIGINT to the parent
is passed on (workers are in their own process groups, so each gets it once): each worker checkpoints after its
epoch and stops, and running the same command again continues.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from pathlib import Path


def _gpus() -> list[str]:
  """The GPUs this process may use, as CUDA_VISIBLE_DEVICES entries (empty on a machine without them)."""
  import jax
  try:
    n = len(jax.devices('gpu'))
  except RuntimeError:
    return []
  visible = os.environ.get('CUDA_VISIBLE_DEVICES')
  return visible.split(',')[:n] if visible else [str(i) for i in range(n)]


def _worker(k: int, n: int, gpus: list[str], jobs, out: str, rerun_items, rerun_before, progress: bool, queue,
            failures, plugin_paths: list[str]) -> None:
  os.setpgrp()  # signals come from the parent only, once (a terminal's Ctrl-C reaches the parent alone)
  if os.environ.pop('DDJAX_PARENT_NO_PREALLOCATE', None):
    os.environ.pop('XLA_PYTHON_CLIENT_PREALLOCATE', None)  # the parent kept its GPU memory free; workers need it
  if gpus:
    os.environ['CUDA_VISIBLE_DEVICES'] = gpus[k]
  else:
    os.environ['XLA_FLAGS'] = (f"{os.environ.get('XLA_FLAGS', '')} "
                               f"--xla_force_host_platform_device_count={max(1, (os.cpu_count() or 1) // n)}")
  from ddjax import loop, plugins
  plugins.load_all(plugin_paths)  # the models and datasets the jobs name
  from ddjax.checkpoint import StopRequested
  log = lambda msg: print(f'[worker {k}] {msg}', flush=True)
  with StopRequested() as stop:
    while (index := queue.get()) is not None:
      if stop:
        break
      try:
        loop.run_jobs([jobs[index]], len(jobs), Path(out), progress, log, rerun_items, stop, bar_position=k,
                        rerun_before=rerun_before)
      except loop.Interrupted:
        break
      except Exception as e:  # noqa: BLE001 - reported to the parent, which fails the sweep after the others
        failures.put(f'job {index + 1}: {type(e).__name__}: {e}')
        raise


def run_workers(jobs, out: Path, workers: int, progress: bool = True, log=print, rerun_items=None,
                rerun_before: int | None = None, plugin_paths: list[str] = ()) -> int | None:
  """Runs `jobs` in `workers` processes; returns the signal number if the run was stopped by one, else None.

  Raises RuntimeError naming the failed jobs if a worker failed."""
  gpus = _gpus()
  if gpus:
    workers = min(workers, len(gpus))
  workers = max(1, min(workers, len(jobs)))
  ctx = multiprocessing.get_context('spawn')
  queue, failures = ctx.Queue(), ctx.Queue()
  for job in jobs:
    queue.put(job.index)
  for _ in range(workers):
    queue.put(None)
  log(f'{len(jobs)} jobs in {workers} worker processes ' + (f'(one per GPU: {", ".join(gpus[:workers])})' if gpus
                                                             else f'(CPU: {max(1, (os.cpu_count() or 1) // workers)} '
                                                                  f'device(s) each)'))
  args = lambda k: (k, workers, gpus, jobs, str(out), rerun_items, rerun_before, progress, queue, failures,
                    list(plugin_paths))
  procs = [ctx.Process(target=_worker, args=args(k), daemon=False) for k in range(workers)]
  stopped = []

  def forward(signum, frame):
    stopped.append(signum)
    for p in procs:
      if p.pid is not None and p.is_alive():
        os.kill(p.pid, signum)

  previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
  try:
    for p in procs:
      p.start()
    for p in procs:
      p.join()
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)
  errors = []
  while not failures.empty():
    errors.append(failures.get())
  if errors:
    raise RuntimeError('; '.join(errors))
  if stopped:
    return stopped[0]
  bad = [k for k, p in enumerate(procs) if p.exitcode != 0]
  if bad:
    raise RuntimeError(f'worker(s) {bad} exited with status {[procs[k].exitcode for k in bad]}')
  return None
