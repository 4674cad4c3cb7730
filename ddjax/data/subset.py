"""data.subset: a member trains on n examples of the training split, the first n of its own permutation of it.

Members of different n share one compiled step. The training split stays whole on the device; a member's labels
mark the examples it does not train on (-1 for a class, NaN for a regression target), which every loss and probe
weights out, so its training metrics are those of its own examples. Its batches come from its own examples only:
`batch_table` gives each step of a job epoch its batch indices and whether the member takes that step.

train.budget says what a job epoch is:
  epochs: one pass over each member's own examples, n // batch steps, the rest of the job's steps (those of its
          largest n) no-ops for it: every member makes train.epochs passes, small ones in fewer steps;
  steps:  the steps of one pass over the whole training split, for every member: a member with n examples makes
          its passes one after another through them (N / n passes per epoch), as many steps as any other.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def kept(key: jax.Array, size, n: int) -> jax.Array:
  """(n,) bool: the examples a member with data.subset=`size` trains on (size <= 0: all), the first `size` of the
  permutation of the n training examples drawn from `key`. Nested: a larger size keeps these and more."""
  rank = jnp.zeros(n, jnp.int32).at[jax.random.permutation(key, n)].set(jnp.arange(n, dtype=jnp.int32))
  return (size <= 0) | (rank < size)


def mask_labels(labels: jax.Array, keep_N: jax.Array, task: str) -> jax.Array:
  """The member's labels with those it does not train on marked: -1 (classes) or NaN (regression targets)."""
  if task == 'regress':
    return jnp.where(keep_N.reshape(-1, *(1,) * (labels.ndim - 1)), labels, jnp.nan)
  return jnp.where(keep_N, labels, -1)


def own(labels: jax.Array, task: str) -> jax.Array:
  """(n,) bool: the examples a member trains on, read back from its labels as mask_labels marked them."""
  if task == 'regress':
    return ~jnp.isnan(labels.reshape(labels.shape[0], -1)[:, 0])
  return labels >= 0


def own_steps(keep_N: jax.Array, batch: int) -> jax.Array:
  """A member's steps per pass over its own examples (the last partial batch dropped; at least 1)."""
  return jnp.maximum(keep_N.sum() // batch, 1)


def batch_table(key: jax.Array, keep_N: jax.Array, epoch, steps: int, batch: int, budget: str,
                n_orders: int) -> tuple[jax.Array, jax.Array]:
  """((steps, batch) example indices, (steps,) whether the member takes each step) for job epoch `epoch` (from 0).

  Pass p of a member visits its own examples in the order of uniform draws from fold_in(key, p) (the others
  sorted after them), `batch` at a time. Under budget 'epochs' job epoch e is the member's pass e and the steps past
  its own are no-ops; under 'steps' job step t (from 0) is the member's step t, of pass t // s at batch t % s (s:
  its steps per pass), so one job epoch may span several passes: `n_orders` bounds how many (the table draws that
  many orders, from the first pass it touches)."""
  n = keep_N.shape[0]
  s = own_steps(keep_N, batch)
  i = jnp.arange(steps)
  t = epoch * (steps if budget == 'steps' else s) + i
  own, j = t // s, t % s

  def order(p):
    u = jax.random.uniform(jax.random.fold_in(key, p), (n,))
    return jnp.argsort(jnp.where(keep_N, u, 2.0))  # stable: ties keep index order

  rows = jnp.minimum(own - own[0], n_orders - 1)
  at = jnp.minimum(j * batch, n - batch)[:, None] + jnp.arange(batch)  # (steps, batch) places in a pass's order

  def fill(k, idx):  # one pass's order at a time: n_orders x n indices are never all held
    return jnp.where((rows == k)[:, None], order(own[0] + k)[at], idx)

  idx = jax.lax.fori_loop(0, n_orders, fill, jnp.zeros((steps, batch), jnp.int32))
  active = i < s if budget == 'epochs' else jnp.ones(steps, bool)
  return idx, active


def orders_needed(steps: int, least_own_steps: int) -> int:
  """Passes one job epoch of `steps` steps can touch under budget 'steps' for a member of at least
  `least_own_steps` steps per pass: its steps start part way into one pass and may end part way into another."""
  return (steps - 1) // max(least_own_steps, 1) + 2
