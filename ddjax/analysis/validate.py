"""A store's audit (`python -m ddjax.analysis validate DIR`): is every member complete, does each have the evaluation
points and step-table rows its cadences promise, are its values finite and its steps increasing?

Expected points come from each member's own config, as the run loop computes them (loop.evaluation_points over its
epochs, with its probes' cadences); NaN is a problem in the always-on probes' columns only (an optional probe is NaN
where it did not run, `drift` before its reference epoch). A run resumed with other probes than it started with
(probes are not in run ids) shows the points of the newer ones. Every check reads the tables; nothing is written.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ddjax import config as cfglib
from ddjax import results
from ddjax.buckets import job_probes
from ddjax.data import dataset_spec
from ddjax.loop import epoch_plan, evaluation_grid, evaluation_points
from ddjax.probes import PROBES


def _uses(cfg: cfglib.Config):
  """The probes a member's job runs (buckets.job_probes): (evaluation probes, step probes). The data's singular
  modes only switch the modes probe on, which runs at every evaluation and adds no point: 0 stands for them."""
  return job_probes(cfg, dataset_spec(cfg.data.name).task, 0)


def _epochs(cfg: cfglib.Config, steps_per_epoch: int):
  """The run's epochs (loop.epoch_plan), from its training examples (where the config tells them, else those that
  `steps_per_epoch` at its batch size imply)."""
  n_train = cfglib.train_examples(cfg.data) or steps_per_epoch * (cfg.train.batch_size or 1)
  if cfg.data.subset and cfg.train.budget == 'epochs':  # its own examples make its epochs (ddjax.data.subset)
    n_train = min(cfg.data.subset, n_train)
  return epoch_plan(cfg, n_train)


def expected_steps(cfg: cfglib.Config, steps_per_epoch: int) -> list[int]:
  """The optimizer steps after which a complete member of `cfg` has an evaluation row."""
  evals, _ = _uses(cfg)
  plan = _epochs(cfg, steps_per_epoch)
  grid, every = evaluation_grid(cfg.train, plan[0].steps_per_epoch, len(plan))
  return [p.first + k for epoch, p in enumerate(plan, 1)
          for k in evaluation_points(evals, grid, every, p.steps_per_epoch, epoch, p.length, p.first)]


def _base_columns() -> set[str]:
  return {c for spec in PROBES.values() if spec.always for c in spec.columns if '<' not in c}


def _steps_per_epoch(r) -> int:
  """Optimizer steps per epoch of a member, from an evaluation row at the end of an epoch (0 if it has none)."""
  for epoch, step in zip(np.asarray(r['epoch'], float), np.asarray(r['step'], float)):
    if epoch >= 1 and epoch == int(epoch) and np.isfinite(step):
      return int(step) // int(epoch)
  return 0


def validate(out: Path) -> pd.DataFrame:
  """A row per member: run_id, complete, evaluations and step rows (found / expected), NaN (in the base probes'
  columns) and inf (anywhere) counts, and `problems` ('' when none). Members read by results.load (each
  evaluation once, the newest attempt)."""
  from ddjax import plugins
  plugins.load_recorded(out)  # a plugin's probes: their cadences add points
  table = results.load(out)
  if 'step' not in table.columns:  # no evaluation row yet
    table = table.assign(step=[np.zeros(0)] * len(table), epoch=[np.zeros(0)] * len(table))
  try:
    counts = results.load_steps(out).groupby('run_id')['step'].agg(['size', 'nunique'])
  except FileNotFoundError:  # no step probe ran
    counts = pd.DataFrame(columns=['size', 'nunique'])
  base = _base_columns()
  rows, expected = [], {}
  for _, r in table.iterrows():
    problems = []
    cfg = cfglib.from_dict(json.loads(r['config']))
    got = [int(s) for s in np.asarray(r['step'], float) if np.isfinite(s)]
    if not bool(r['complete']):
      problems.append('not complete')
    if not got:
      problems.append('no evaluation rows')
    if np.any(np.diff(got) <= 0) or np.any(np.diff(np.asarray(r['epoch'], float)) < 0):
      problems.append('steps or epochs not increasing')
    spe = _steps_per_epoch(r) if bool(r['complete']) else 0
    if bool(r['complete']) and not spe and cfglib.train_examples(cfg.data):  # no row at an epoch's end: the data
      spe = cfglib.train_examples(cfg.data) // (cfg.train.batch_size or cfglib.train_examples(cfg.data))  # tells
    key = (repr(cfg.train), cfg.probes, repr(cfg.probe), spe, cfg.model.name, cfg.optim.name, cfg.data.name)
    if spe and key not in expected:
      expected[key] = expected_steps(cfg, spe)
    want = expected.get(key)
    if want is not None and got != want:
      missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
      problems.append(f'evaluations at steps: {len(missing)} missing {missing[:3]}, {len(extra)} unexpected '
                      f'{extra[:3]}')
    nan = inf = 0
    for c in table.columns:
      v = r[c]
      if isinstance(v, (np.ndarray, list)) and len(v) and np.asarray(v).dtype.kind == 'f':
        v = np.asarray(v, float)
        inf += int(np.isinf(v).sum())
        nan += int(np.isnan(v).sum()) if c in base else 0
    if inf:
      problems.append(f'{inf} infinite value(s)')
    if nan and not bool(r.get('diverged', False)):
      problems.append(f'{nan} NaN value(s) in {", ".join(sorted(base & set(table.columns)))}')
    step_rows = want_rows = 0
    _, step_uses = _uses(cfg)
    if step_uses and spe:
      last = _epochs(cfg, spe)[-1]
      every = np.arange(1, last.first + last.length + 1)
      want_rows = int(np.any([every % u.every.n == 0 for u in step_uses], axis=0).sum())
      step_rows, unique = (int(v) for v in counts.loc[r['run_id']]) if r['run_id'] in counts.index else (0, 0)
      if step_rows != want_rows:
        problems.append(f'{step_rows} step-table rows, {want_rows} expected')
      if unique < step_rows:
        problems.append('a step twice in the step table')
    rows.append({'run_id': r['run_id'], 'complete': bool(r['complete']),
                 'evaluations': f'{len(got)}/{len(want) if want is not None else "?"}',
                 'step_rows': f'{step_rows}/{want_rows}', 'nan': nan, 'inf': inf, 'problems': '; '.join(problems)})
  return pd.DataFrame(rows)
