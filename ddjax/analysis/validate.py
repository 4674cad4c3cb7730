"""A store's audit (`python -m ddjax.analysis validate DIR`): is every member complete, does each have the evaluation
points and step-table rows its cadences promise, are its values finite, its steps increasing and its rows unique?

Expected points come from each member's own config, as the run loop computes them (loop.evaluation_points over its
epochs, with its probes' cadences); NaN is a problem in the always-on probes' columns only (an optional probe is NaN
where it did not run, `drift` before its reference epoch). Every check reads the tables; nothing is written.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ddjax import config as cfglib
from ddjax import results
from ddjax.loop import eval_epochs, evaluation_points
from ddjax.probes import PROBES, use


def _uses(cfg: cfglib.Config):
  """The probes a member's config switches on (the base ones first): (evaluation probes, step probes)."""
  uses = [use(name) for name, spec in PROBES.items() if spec.always]
  uses += [use(name, given) for name, given in cfglib.probe_uses(cfg).items() if name in PROBES]
  return [u for u in uses if u.spec.kind == 'eval'], [u for u in uses if u.spec.kind == 'step']


def expected_steps(cfg: cfglib.Config, steps_per_epoch: int) -> list[int]:
  """The optimizer steps after which a complete member of `cfg` has an evaluation row."""
  evals, _ = _uses(cfg)
  grid = set(eval_epochs(cfg.train.epochs, cfg.train.eval_points, cfg.train.eval_every))
  return [(epoch - 1) * steps_per_epoch + k for epoch in range(1, cfg.train.epochs + 1)
          for k in evaluation_points(evals, grid, cfg.train.eval_every_steps, steps_per_epoch, epoch)]


def _base_columns() -> set[str]:
  return {c for spec in PROBES.values() if spec.always for c in spec.columns if '<' not in c}


def validate(out: Path) -> pd.DataFrame:
  """A row per member: run_id, complete, evaluations and step rows (found / expected), NaN (in the base probes'
  columns) and inf (anywhere) counts, and `problems` ('' when none)."""
  table = results.load(out)
  try:
    steps = results.load_steps(out)
  except FileNotFoundError:  # no step probe ran
    steps = None
  base = _base_columns()
  rows = []
  duplicated = set(table['run_id'][table['run_id'].duplicated()])
  for _, r in table.iterrows():
    problems = []
    cfg = cfglib.from_dict(json.loads(r['config']))
    got = [int(s) for s in np.asarray(r['step'])]
    if not bool(r['complete']):
      problems.append('not complete')
    if r['run_id'] in duplicated:
      problems.append('run id twice in the table')
    if len(set(got)) < len(got):
      problems.append('an evaluation step twice')
    if np.any(np.diff(got) <= 0) or np.any(np.diff(np.asarray(r['epoch'], float)) < 0):
      problems.append('steps or epochs not increasing')
    spe = got[-1] // cfg.train.epochs if got and bool(r['complete']) else 0
    want = expected_steps(cfg, spe) if spe else None
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
      total = cfg.train.epochs * spe
      want_rows = sum(1 for s in range(1, total + 1) if any(s % u.every.n == 0 for u in step_uses))
      mine = steps[steps['run_id'] == r['run_id']] if steps is not None else pd.DataFrame({'step': []})
      step_rows = len(mine)
      if step_rows != want_rows:
        problems.append(f'{step_rows} step-table rows, {want_rows} expected')
      if mine['step'].duplicated().any():
        problems.append('a step twice in the step table')
    rows.append({'run_id': r['run_id'], 'complete': bool(r['complete']),
                 'evaluations': f'{len(got)}/{len(want) if want is not None else "?"}',
                 'step_rows': f'{step_rows}/{want_rows}', 'nan': nan, 'inf': inf, 'problems': '; '.join(problems)})
  return pd.DataFrame(rows)
