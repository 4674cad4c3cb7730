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
                    widths: str, similarity: Callable[[np.ndarray], np.ndarray],
                    layers: tuple[str, ...] = ()) -> dict[int, dict[str, float]]:
  """Columns per member (index -> {column: value}) from the summaries of the members that a pairing rule matches:

    seeds   {prefix}_seeds: the mean similarity with the members that differ from it only in their seeds
            (`seed`, `model.seed`, `train.batch_seed`, `data.noise_seed`), over those where it is finite (NaN
            without one); {prefix}_seed{S}: the similarity with the one whose `seed` is S, where those differ
    widths  {prefix}_w{W}: the similarity with the member of width W that is otherwise the same, for each width W
            listed in `widths` ('W/W/...'; empty: every width of the job); NaN where there is none

  `similarity(S)` maps stacked summaries (k, ...) to their k x k similarity matrix. With several `layers` each
  summary holds one per layer (k, L, ...): seeds columns end in _{layer} (a layer against the same layer), widths
  columns in _{layer}_{other's layer} (every pair: the L x L matrix)."""
  out: dict[int, dict[str, float]] = {i: {} for i in summaries}
  members = {i: members[i] for i in summaries}
  n_layers = len(layers)
  for rule in rules(pairing):
    ignore = SEED_KEYS if rule == 'seeds' else ('model.width',)
    listed = sorted({int(w) for w in str(widths).split('/') if w} or {m['model.width'] for m in members.values()})
    for group in _group(members, ignore).values():
      stacked = np.stack([summaries[i] for i in group])
      if n_layers:  # (k, L, ...) -> every (member, layer) against every other: (k, k, L, L)
        sim = similarity(stacked.reshape(len(group) * n_layers, *stacked.shape[2:]))
        sim = sim.reshape(len(group), n_layers, len(group), n_layers).transpose(0, 2, 1, 3)
      else:
        sim = similarity(stacked)[:, :, None, None]
      same = [(f'_{name}' if n_layers else '', l) for l, name in enumerate(layers or ('',))]
      seeds = [members[j].get('seed') for j in group]
      by_seed = len(set(map(repr, seeds))) == len(group)
      for a, i in enumerate(group):
        if rule == 'seeds':
          for tail, l in same:
            others = [sim[a, b, l, l] for b in range(len(group)) if b != a and np.isfinite(sim[a, b, l, l])]
            out[i][f'{prefix}_seeds{tail}'] = float(np.mean(others)) if others else float('nan')
            for b in range(len(group)):
              if by_seed and b != a:
                out[i][f'{prefix}_seed{seeds[b]}{tail}'] = float(sim[a, b, l, l])
        else:
          at = {members[j]['model.width']: b for b, j in enumerate(group)}
          pairs = [(f'_{x}_{y}', lx, ly) for lx, x in enumerate(layers) for ly, y in enumerate(layers)] or [('', 0, 0)]
          for w in listed:
            for tail, lx, ly in pairs:
              out[i][f'{prefix}_w{w}{tail}'] = float(sim[a, at[w], lx, ly]) if w in at else float('nan')
  return out
