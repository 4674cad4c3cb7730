"""One member's results as an object, for notebooks: its config, its evaluation history and its step-table rows.

  from ddjax.runs import load_runs
  runs = load_runs('runs/gph', **{'model.width': 100, 'data.noise_std': 0.0})   # the members with these values
  r = runs[0]
  r.config.optim.lr, r['test_loss'], r.history.tail(), r.steps                   # config, a curve, tables
  from ddjax.plotting import plot
  plot({'width 100': runs}, metric='test_loss')                                  # mean over seeds, 95% band

Reading a store never changes it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ddjax import config as cfglib
from ddjax import results


@dataclass(frozen=True)
class RunResult:
  """One member of a store: `run_id`, `config` (its whole Config), `history` (a row per evaluation: step, epoch,
  time_s and every recorded column) and `row` (its row of results.parquet: scalars such as diverged, the sweep's
  keys, the metadata). `steps` is its step table (empty when no step probe ran)."""
  run_id: str
  config: cfglib.Config
  history: pd.DataFrame
  row: pd.Series = field(repr=False)
  out: Path = field(repr=False)

  def __getitem__(self, metric: str) -> np.ndarray:
    """A column of the history as a float array (a KeyError names the columns there are)."""
    if metric not in self.history.columns:
      raise KeyError(f'{metric!r} is not recorded; the history has {", ".join(self.history.columns)}')
    return np.asarray(self.history[metric], float)

  def get(self, key: str) -> Any:
    """A config key's value, dotted (`optim.lr`, `train.batch_seed`)."""
    return cfglib.get(self.config, key)

  @property
  def steps(self) -> pd.DataFrame:
    table = results.load_steps(self.out)
    return table[table['run_id'] == self.run_id].reset_index(drop=True) if len(table) else table


def _history(row: pd.Series) -> pd.DataFrame:
  n = len(row['epoch'])
  curves = {c: np.asarray(v) for c, v in row.items() if isinstance(v, (list, np.ndarray)) and len(v) == n}
  first = ['step', 'epoch', 'time_s']
  return pd.DataFrame({c: curves[c] for c in first + sorted(set(curves) - set(first)) if c in curves})


def load_runs(out, **where) -> list[RunResult]:
  """The members of a store (finished or still going) whose config keys have the given values (dotted keys, as
  `**{'model.width': 100}`; a list matches any of its values), in the table's order. A key the store does not know
  raises a KeyError naming it."""
  out = Path(out)
  table = results.load(out)
  runs = []
  for _, row in table.iterrows():
    cfg = cfglib.from_dict(json.loads(row['config']))
    for key in where:
      if key not in cfglib.fields(cfg):
        raise KeyError(f'unknown key {key!r}: not a config key (keys are dotted, e.g. model.width)')
    if all(cfglib.get(cfg, k) in (v if isinstance(v, (list, tuple, set)) else [v]) for k, v in where.items()):
      runs.append(RunResult(row['run_id'], cfg, _history(row), row, out))
  return runs
