"""Probes across members: a probe with `pairs` (ProbeSpec.pairs) computes a small summary per member on the device
(for CKA, the centred Gram matrix of a probe batch's features), and the run loop hands the summaries of every member
of the job, from all its buckets, devices and processes, to `pairs` on the host, which compares the members a pairing
rule matches. Only members of one job meet this way (one model, optimizer and dataset); to compare members of
different jobs, read their features after the run (ddjax.run.member_features) and compare those."""

from __future__ import annotations

from typing import Callable

import numpy as np

SEED_KEYS = ('seed', 'model.seed', 'train.batch_seed', 'data.noise_seed')
RULES = ('seeds', 'widths')


def rules(text: str) -> tuple[str, ...]:
  """The pairing rules of an option 'seeds', 'widths' or 'seeds/widths'."""
  return tuple(r for r in str(text).split('/') if r)


def valid_rules(text: str) -> bool:
  return bool(rules(text)) and all(r in RULES for r in rules(text))


def valid_widths(text: str) -> bool:
  return all(w.isdigit() and int(w) >= 1 for w in str(text).split('/') if w)


def _group(members: dict[int, dict], ignore: tuple[str, ...]) -> dict[tuple, list[int]]:
  """Members (index -> member keys) grouped by every member key but those in `ignore`."""
  groups: dict[tuple, list[int]] = {}
  for i, m in members.items():
    groups.setdefault(tuple(sorted((k, repr(v)) for k, v in m.items() if k not in ignore)), []).append(i)
  return groups


def compare_members(summaries: dict[int, np.ndarray], members: dict[int, dict], prefix: str, pairing: str,
                    widths: str, similarity: Callable[[np.ndarray], np.ndarray]) -> dict[int, dict[str, float]]:
  """Columns per member (index -> {column: value}) from the summaries of the members that a pairing rule matches:

    seeds   {prefix}_seeds: the mean similarity with the members that differ from it only in their seeds
            (`seed`, `model.seed`, `train.batch_seed`, `data.noise_seed`), over those where it is finite; NaN
            without one
    widths  {prefix}_w{W}: the similarity with the member of width W that is otherwise the same, for each width W
            listed in `widths` ('W/W/...'; empty: every width of the job); NaN where there is none

  `similarity(S)` maps stacked summaries (k, ...) to their k x k similarity matrix."""
  out: dict[int, dict[str, float]] = {i: {} for i in summaries}
  members = {i: members[i] for i in summaries}
  for rule in rules(pairing):
    ignore = SEED_KEYS if rule == 'seeds' else ('model.width',)
    listed = sorted({int(w) for w in str(widths).split('/') if w} or {m['model.width'] for m in members.values()})
    for group in _group(members, ignore).values():
      sim = similarity(np.stack([summaries[i] for i in group]))
      for a, i in enumerate(group):
        if rule == 'seeds':
          others = [sim[a, b] for b in range(len(group)) if b != a and np.isfinite(sim[a, b])]
          out[i][f'{prefix}_seeds'] = float(np.mean(others)) if others else float('nan')
        else:
          at = {members[j]['model.width']: b for b, j in enumerate(group)}
          for w in listed:
            out[i][f'{prefix}_w{w}'] = float(sim[a, at[w]]) if w in at else float('nan')
  return out
