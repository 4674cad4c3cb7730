"""Comparative training: two configurations a and b trained in lockstep as members of one job (the key `pair`, a
or b, swept zipped with the keys in which they differ; a config file's shared / model_a / model_b / training_a /
training_b sections say the same), compared at every evaluation by probes across members. Each member sends a
summary of its parameters (or of its end-to-end map) and is compared with its partner: the member of the other
label whose every other key (its seeds among them) is the same."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ddjax.metrics.linear import end_to_end
from ddjax.probes.registry import register_probe

PAIR_KEY = 'pair'


def partners(members: dict[int, dict]) -> dict[int, int]:
  """Member index -> its partner's: the member with the other value of `pair` and the same value of every key that
  does not change with `pair`. Which keys change with it, two ways, the one that pairs more members kept: those
  whose values differ between the a and the b members (as a zip gives them), or those with no value that an a and a
  b member share (so a member missing from one side, complete and skipped or diverged, leaves the others' pairing
  alone). A member without exactly one match is left out (no pair swept: all)."""
  labels = {i: m.get(PAIR_KEY, '') for i, m in members.items()}
  sides = sorted(set(labels.values()) - {''})
  if len(sides) != 2:
    return {}
  values = lambda side, k: {repr(m.get(k)) for i, m in members.items() if labels[i] == side}
  keys = set().union(*(m.keys() for m in members.values())) - {PAIR_KEY}
  rules = [sorted(k for k in keys if values(sides[0], k) == values(sides[1], k)),
           sorted(k for k in keys if values(sides[0], k) & values(sides[1], k))]
  return max((_matches(members, labels, sides, shared) for shared in rules), key=len)


def _matches(members, labels, sides, shared) -> dict[int, int]:
  """The pairs of members, one of each side, that agree on every key of `shared` and are alone in that."""
  by_rest: dict[tuple, dict[str, list[int]]] = {}
  for i, m in members.items():
    by_rest.setdefault(tuple(repr(m.get(k)) for k in shared), {}).setdefault(labels[i], []).append(i)
  out = {}
  for group in by_rest.values():
    if [len(group.get(side, [])) for side in sides] == [1, 1]:
      (a,), (b,) = group[sides[0]], group[sides[1]]
      out[a], out[b] = b, a
  return out


def _pairwise(compare: Callable[[np.ndarray, np.ndarray], dict[str, float]]):
  """A probe's `pairs`: compare(own summary, partner's) for every member whose partner also sent one (trains now
  and has not diverged); the pairing is decided on all the job's members."""
  def pairs(summaries, members, **_):
    return {i: compare(np.asarray(summaries[i], np.float64), np.asarray(summaries[j], np.float64))
            for i, j in partners(members).items() if i in summaries and j in summaries}
  return pairs


def _flat(params) -> jax.Array:
  return jnp.concatenate([jnp.ravel(p) for p in jax.tree.leaves(params)])


def _by_layer(params) -> jax.Array:
  """(layers, largest layer's size): each top-level parameter group flattened, zero-padded to the largest."""
  groups = [_flat(params[name]) for name in sorted(params)]
  size = max(g.shape[0] for g in groups)
  return jnp.stack([jnp.pad(g, (0, size - g.shape[0])) for g in groups])


def _cosine(a, b) -> dict[str, float]:
  norm = np.linalg.norm(a) * np.linalg.norm(b)
  return {'param_cosine_sim': float(a @ b / norm) if norm > 0 else float('nan')}


def _applies_linear(setting) -> str:
  return '' if setting.linear else 'it compares end-to-end maps of deep linear networks (model.name=deep_linear)'


@register_probe('param_distance', columns=('param_distance',), figure='plots.comparative',
                pairs=_pairwise(lambda a, b: {'param_distance': float(np.linalg.norm(a - b))}),
                help='comparative training: ||theta_a - theta_b||, the distance between the parameters of the pair')
def param_distance(ctx):
  return _flat(ctx.state['params'])


@register_probe('param_cosine_sim', columns=('param_cosine_sim',), pairs=_pairwise(_cosine), figure='plots.comparative',
                help='comparative training: the cosine similarity of the parameter vectors of the pair')
def param_cosine_sim(ctx):
  return _flat(ctx.state['params'])


@register_probe('layer_distances', columns=('layer_distance_<l>',), figure='plots.comparative',
                pairs=_pairwise(lambda a, b: {f'layer_distance_{l}': float(v)
                                             for l, v in enumerate(np.linalg.norm(a - b, axis=1))}),
                help='comparative training: the distance between the pair\'s parameters of each layer l (its '
                     'parameter groups in name order: dense0, dense1, ..., head)')
def layer_distances(ctx):
  return _by_layer(ctx.state['params'])


@register_probe('frobenius_distance', columns=('frobenius_distance',), applies=_applies_linear,
                figure='plots.comparative',
                pairs=_pairwise(lambda a, b: {'frobenius_distance': float(np.linalg.norm(a - b))}),
                help='comparative training: ||W_a - W_b||_F between the end-to-end maps of the pair')
def frobenius_distance(ctx):
  return end_to_end(ctx.spec.model.kernels(ctx.state['params']))
