"""Device-memory estimates of a bucket, made before compiling, and the split of buckets that would not fit.

Per member: parameters, gradients and optimizer moments (4 to 5 copies of the parameters, fp32), plus the
activations of one training batch: the outputs of every layer (from an abstract trace with
`capture_intermediates`, nothing is computed) times a factor for what the backward pass keeps (normalised values,
ReLU masks, and for the im2col form its patches). Evaluation keeps no activations for a backward pass, but runs
larger batches: its peak is a few of the largest layer outputs (and the im2col patches of one), per example.
tests/test_memory.py checks both estimates against XLA's own accounting of the compiled programs (docs/concepts.md gives
the ratios); they err high, so a split comes early rather than late. Once compiled, buckets.make_buckets checks
XLA's own figures too. What probes need at an evaluation beyond that, each probe estimates itself (ProbeSpec.memory,
summed by buckets.probe_bytes).
"""

from __future__ import annotations

import math
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

ACTIVATION_FACTOR = {'lax': 2.0, 'im2col': 4.0}  # by conv form
EVAL_FACTOR = {'lax': 6.0, 'im2col': 24.0}  # evaluation peak over the largest layer output (im2col: 3x3 patches)
RESIDENT_COPIES = {'adam': 3, 'adamw': 3, 'sgd': 2}  # kept between steps: params + optimizer moments
TRANSIENT_COPIES = 2  # during a step: gradients and updates


def tree_bytes(tree) -> int:
  return sum(math.prod(x.shape) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


class MemberBytes(NamedTuple):
  """Estimated bytes of one member: its state, held on the device for the whole run; what one training step of its
  bucket needs on top (gradients, updates, activations); and what evaluation needs per example of a chunk."""
  resident: float
  transient: float
  eval_per_example: float


def member_bytes_split(model, width: int, input_shape, batch_size: int, optimizer: str,
                       input_dtype=jnp.float32) -> MemberBytes:
  """The MemberBytes of one member of `model` padded to `width`; `input_dtype`: what the model receives (int32
  for token inputs)."""
  x = jax.ShapeDtypeStruct((batch_size, *input_shape), input_dtype)
  variables = jax.eval_shape(lambda x: model.init({'params': jax.random.key(0)}, x[:1], width), x)
  _, inter = jax.eval_shape(lambda v, x: model.apply(v, x, width, train=True, capture_intermediates=True,
                                                     mutable=['intermediates', 'batch_stats']), variables, x)
  activations = tree_bytes(inter['intermediates'])
  largest = max(tree_bytes(leaf) for leaf in jax.tree.leaves(inter['intermediates'])) / batch_size
  conv = getattr(model, 'conv', 'lax')
  params = tree_bytes(variables['params'])
  return MemberBytes(RESIDENT_COPIES[optimizer] * params,
                     TRANSIENT_COPIES * params + ACTIVATION_FACTOR.get(conv, 4.0) * activations,
                     EVAL_FACTOR.get(conv, 24.0) * largest)


def eval_chunk(eval_batch: int, members: int, per_example: float, budget: float) -> int:
  """The evaluation chunk (examples per member per forward pass): eval_batch, or fewer if `members` evaluating
  together (per device) would not fit in `budget` bytes; at least 1."""
  return int(min(eval_batch, max(1, budget // max(members * per_example, 1.0))))


def budget_bytes(memory_gb: float, device: jax.Device) -> float:
  """The memory a job may use on one device: memory_gb if set, else 90% of an accelerator's limit, or half
  of the host's RAM for a CPU device."""
  if memory_gb > 0:
    return memory_gb * 2 ** 30
  stats = device.memory_stats() if device.platform != 'cpu' else None
  if stats and stats.get('bytes_limit'):
    return 0.9 * stats['bytes_limit']
  return 0.5 * os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / max(1, jax.local_device_count())


def split_to_fit(group: list[int], per_member: float, budget: float, multiple: int = 1) -> list[list[int]]:
  """`group` cut into as few consecutive chunks as fit, as even as can be: members `multiple` to a unit of
  `budget` (members sharded over that many devices), chunk sizes multiples of `multiple` but the last, at least
  one unit. Even chunks leave no small remainder step, which would use an accelerator poorly."""
  per_unit = max(1, int(budget // max(per_member, 1.0)))
  units = -(-len(group) // multiple)
  pieces = -(-units // per_unit)
  q, r = divmod(units, pieces)
  bounds = np.cumsum([0] + [(q + (i < r)) * multiple for i in range(pieces)]).clip(max=len(group))
  return [group[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
