"""A sweep -> jobs (one per combination of static keys) x members (one per combination of member keys).

Member keys (width, seeds, lr, wd, label noise, ...) can differ inside one compiled step; every other key changes
shapes or the program and makes a separate job. Zipped keys (`--zip a,b`) vary together instead of crosswise.
Within a job, widths are grouped into buckets padded to their own maximum; `plan_buckets` picks contiguous
buckets by an exact dynamic programme over the cost model.
"""

from __future__ import annotations


import itertools
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from ddjax import config as cfglib
from ddjax.nn.param import code as param_code

# Per-member scalars that the train step reads and the config key of each; member_hp adds the three seeds.
HP_KEYS = {
    'width': 'model.width', 'noise': 'data.noise', 'lr': 'optim.lr', 'wd': 'optim.wd',
    'momentum': 'optim.momentum', 'b1': 'optim.b1', 'b2': 'optim.b2', 'eps': 'optim.eps', 'warmup': 'optim.warmup',
    'init_scale': 'model.init_scale', 'proj': 'model.proj', 'noise_std': 'data.noise_std', 'gamma': 'model.gamma',
    'param': 'model.param', 'base_width': 'model.base_width', 'subset': 'data.subset',
}


@dataclass
class Job:
  index: int
  config: cfglib.Config            # static keys resolved; member keys hold the first member's values (SIZE_KEYS:
                                   # the largest, the padding)
  static: dict[str, object]        # the swept static keys of this job (and member keys zipped with them)
  members: list[dict[str, object]]  # per member: every member key's value (dotted names)
  positions: list[int] | None = None  # each member's index in the full job (when this is a subset of it)

  def position(self, i: int) -> int:
    return self.positions[i] if self.positions is not None else i

  def subset(self, indices: Sequence[int]) -> 'Job':
    """The same job with only members `indices` (they keep their positions in the full job)."""
    return Job(self.index, self.config, self.static, [self.members[i] for i in indices],
               [self.position(i) for i in indices])


def member_hp(member: dict[str, object]) -> dict[str, float | int]:
  """The numbers the step needs: hyperparameters plus the three derived seeds."""
  hp = {name: member[key] for name, key in HP_KEYS.items()}
  hp['gamma_on'] = int(hp['gamma'] is not None)  # none: the model's default init (a flag, not NaN: a multi-host
  hp['gamma'] = hp['gamma'] or 0.0                # device_put checks every process has the same values, NaN != NaN)
  hp['param'] = param_code(hp['param'])           # sp, ntk, mup: 0, 1, 2
  hp['subset'] = hp['subset'] or 0                # none: the whole training split
  seed = member['seed']
  hp['model_seed'] = member['model.seed'] if member['model.seed'] is not None else seed
  hp['batch_seed'] = member['train.batch_seed'] if member['train.batch_seed'] is not None else seed
  hp['noise_seed'] = member['data.noise_seed'] if member['data.noise_seed'] is not None else seed
  return hp


INT_HP = ('width', 'model_seed', 'batch_seed', 'noise_seed', 'proj', 'gamma_on', 'param', 'subset')


def stack_hp(members: list[dict[str, object]]) -> dict[str, np.ndarray]:
  """member_hp of each member, stacked along a leading member axis (int32 widths and seeds, float32 otherwise)."""
  rows = [member_hp(m) for m in members]
  return {k: np.asarray([r[k] for r in rows], np.int32 if k in INT_HP else np.float32) for k in rows[0]}


def expand(cfg: cfglib.Config, sweep: dict[str, list], zip_groups: Sequence[Sequence[str]] = ()) -> list[Job]:
  """Cartesian product of the sweep, split into jobs over static keys.

  Keys of one zip group take their i-th values together (one axis of the product). A group of member keys only
  makes members; a group with any static key makes jobs, and its member keys are then fixed per job. Axes keep
  the sweep's key order (a group sits at its first key)."""
  cfglib.check_zip(sweep, zip_groups)
  grouped = {k: tuple(g) for g in zip_groups for k in g}
  axes, seen = [], set()
  for key in sweep:
    keys = grouped.get(key, (key,))
    if keys not in seen:
      seen.add(keys)
      axes.append((keys, list(zip(*(sweep[k] for k in keys)))))
      if len(set(axes[-1][1])) < len(axes[-1][1]):  # the same members twice: the same numbers, one run id
        repeated = next(v for i, v in enumerate(axes[-1][1]) if v in axes[-1][1][:i])
        value = ','.join(map(str, repeated))
        raise cfglib.ConfigError(f'{" with ".join(keys)} repeats {value} in its sweep: give each value once')
  static = [a for a in axes if any(k not in cfglib.MEMBER_KEYS for k in a[0])]
  member = [a for a in axes if all(k in cfglib.MEMBER_KEYS for k in a[0])]
  jobs = []
  for i, combo in enumerate(itertools.product(*(values for _, values in static))):
    fixed = {k: v for (keys, _), row in zip(static, combo) for k, v in zip(keys, row)}
    job_cfg = cfg
    for k, v in fixed.items():
      job_cfg = cfglib.replace(job_cfg, k, v)
    members = []
    for mcombo in itertools.product(*(values for _, values in member)):
      m = {k: cfglib.get(job_cfg, k) for k in sorted(cfglib.MEMBER_KEYS)}
      for (keys, _), row in zip(member, mcombo):
        m.update(zip(keys, row))
      members.append(m)
    for k in cfglib.SIZE_KEYS:  # masked like width: the job's model is padded to the largest
      job_cfg = cfglib.replace(job_cfg, k, max(m[k] for m in members))
    jobs.append(Job(i, job_cfg, fixed, members))
  return jobs


class Plan(list):
  """A job's buckets as lists of widths (what plan_buckets gives) that also says which members each holds, where
  members are grouped by more than their width (train-size buckets: buckets.job_plan)."""

  def __init__(self, *args):
    super().__init__(*args)
    self.groups: list[list[int]] = []


def group_members(job: Job, plan: list[list[int]]) -> list[list[int]]:
  """Member indices of `job` in the buckets of `plan` (lists of widths from plan_buckets), narrowest first (or as
  a Plan says)."""
  if isinstance(plan, Plan):
    return plan.groups
  order = sorted(range(len(job.members)), key=lambda i: job.members[i]['model.width'])
  groups, start = [], 0
  for b in plan:
    groups.append(order[start:start + len(b)])
    start += len(b)
  return groups


def padded_ratio(buckets: Sequence[Sequence[int]], cost: Callable[[int], float]) -> float:
  """Padded/useful cost of members with these widths, each bucket padded to its maximum."""
  padded = sum(len(b) * cost(max(b)) for b in buckets)
  useful = sum(cost(w) for b in buckets for w in b)
  return padded / useful


def subset_steps(members: Sequence[dict], n_train: int, batch: int, budget: str) -> tuple[list[int], int]:
  """(each member's optimizer steps in an epoch of the job, the epoch's steps) for members with data.subset (none:
  all n_train examples) at batch size `batch` (0: full batch, one step), under train.budget (ddjax.data.subset)."""
  if not batch:
    return [1] * len(members), 1
  own = [max((m.get('data.subset') or n_train) // batch, 1) for m in members]
  steps = n_train // batch if budget == 'steps' or not own else max(own)
  return ([steps] * len(own) if budget == 'steps' else own), steps


def job_padded_ratio(job: Job, plan: list[list[int]], cost: Callable[[int], float], n_train: int, batch: int) -> float:
  """Padded/useful FLOPs of a job's buckets over an epoch: each bucket padded to its widest member and to the steps
  of its member with the most, each member useful for its own width and steps (fewer for a smaller data.subset
  under train.budget=epochs)."""
  own, steps = subset_steps(job.members, n_train, batch, job.config.train.budget)
  groups = group_members(job, plan)  # a bucket scans the steps of its largest member (train-size buckets)
  padded = sum(len(g) * cost(max(b)) * max(own[i] for i in g) for b, g in zip(plan, groups))
  return padded / sum(cost(job.members[i]['model.width']) * own[i] for g in groups for i in g)


def best_buckets(widths: Sequence[int], n_buckets: int, cost: Callable[[int], float]) -> list[list[int]]:
  """The contiguous split of sorted `widths` (repeats allowed) into at most n_buckets with least padded cost."""
  distinct = sorted(set(widths))
  count = [sum(1 for w in widths if w == d) for d in distinct]
  n, inf = len(distinct), float('inf')
  n_buckets = min(n_buckets, n)
  prefix = [0] + list(itertools.accumulate(count))
  # best[b][j]: least cost of the first j distinct widths in b buckets; cut[b][j]: start of the last bucket.
  best = [[inf] * (n + 1) for _ in range(n_buckets + 1)]
  cut = [[0] * (n + 1) for _ in range(n_buckets + 1)]
  best[0][0] = 0.0
  for b in range(1, n_buckets + 1):
    for j in range(1, n + 1):
      for i in range(j):
        c = best[b - 1][i] + (prefix[j] - prefix[i]) * cost(distinct[j - 1])
        if c < best[b][j]:
          best[b][j], cut[b][j] = c, i
  b = min(range(1, n_buckets + 1), key=lambda k: (best[k][n], k))
  bounds, j = [], n
  while j > 0:
    i = cut[b][j]
    bounds.append((i, j))
    j, b = i, b - 1
  return [[w for w in sorted(widths) if distinct[i] <= w <= distinct[j - 1]] for i, j in reversed(bounds)]


def plan_buckets(widths: Sequence[int], cost: Callable[[int], float], target_ratio: float = 1.25,
                 max_buckets: int = 8) -> list[list[int]]:
  """The fewest buckets whose padded/useful cost is <= target_ratio (at most max_buckets)."""
  for n in range(1, max_buckets + 1):
    buckets = best_buckets(widths, n, cost)
    if padded_ratio(buckets, cost) <= target_ratio or n >= len(set(widths)):
      break
  return buckets
