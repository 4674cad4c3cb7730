"""Runs a sweep into its store: the run record, the jobs (in this process or in worker processes), compaction.

The pieces live in their own modules (buckets, loop, store, checkpoint); this module keeps the names callers have
always imported from ddjax.run.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from ddjax import config as cfglib
from ddjax import plugins, results
from ddjax.buckets import Bucket, conv_form, job_plan, make_buckets, member_sizes, placement  # noqa: F401
from ddjax.checkpoint import StopRequested, member_variables  # noqa: F401
from ddjax.loop import Interrupted, Rerun, eval_epochs, run_job, run_jobs  # noqa: F401
from ddjax.members import Job, member_hp
from ddjax.parallel import sync, writer
from ddjax.store import duplicate_members, job_id, member_config, run_id, run_record, versions  # noqa: F401


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
    plugin_paths = [p['path'] for p in record.get('plugins', plugins.loaded())]
    if (signum := run_workers(jobs, out, workers, progress, log, rerun, rerun_before, plugin_paths)) is not None:
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


def member_features(out: Path, run: str, layer: str, x, which: str | int = 'last'):
  """Member `run`'s representation at the tap point `layer` of its model (`--help` lists each model's) for raw
  inputs `x` (preprocessed as in training), in evaluation mode, with its state `which` (as member_variables: 'last',
  'best', 'best:i' or an epoch that a snapshot or checkpoint holds). Masked channels are zero, so the
  features are those of the member's own width. To compare members of different jobs (other architectures or
  optimizers), call this for each and compare the arrays, e.g. with ddjax.metrics.similarity."""
  import jax.numpy as jnp
  import numpy as np
  from ddjax.buckets import model_for
  from ddjax.data import load_dataset
  from ddjax.nn.registry import padded_sizes, taps
  variables, padded = member_variables(out, run, which)  # imports the store's plugins
  row = results.load(out).set_index('run_id').loc[run]
  cfg = cfglib.from_dict(json.loads(row['config']))
  ds = load_dataset(cfg.data)
  model = model_for(cfg, padded, ds.input_shape, ds.num_classes)  # built with the member's own sizes (proj)
  hp = member_hp({k: cfglib.get(cfg, k) for k in cfglib.MEMBER_KEYS})
  own = {k: hp[k] for k in (*getattr(model, 'SIZES', ()), *getattr(model, 'MEMBER_ARGS', ()))}
  model = model.clone(**padded_sizes(model, variables['params']))  # padded as its job was
  return np.asarray(taps(model, variables, ds.preprocess(jnp.asarray(x)), int(row['model.width']), [layer],
                         **own)[layer])
