"""Device-memory estimates of a bucket, made before compiling, and the split of buckets that would not fit.

Per member: parameters, gradients and optimizer moments (4 to 5 copies of the parameters, fp32), plus the
activations of one training batch: the outputs of every layer (from an abstract trace with
`capture_intermediates`, nothing is computed) times a factor for what the backward pass keeps (normalised values,
ReLU masks, and for the im2col form its patches). tests/test_memory.py checks the estimate against XLA's own
accounting of the compiled step (measured on CPU: 0.9-1.8x of it, so a split comes early rather than late).
"""

from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp
import numpy as np

ACTIVATION_FACTOR = {'lax': 2.0, 'im2col': 4.0}  # by conv form
RESIDENT_COPIES = {'adam': 3, 'adamw': 3, 'sgd': 2}  # kept between steps: params + optimizer moments
TRANSIENT_COPIES = 2  # during a step: gradients and updates


def _size(tree) -> int:
  return sum(math.prod(x.shape) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def member_bytes(model, width: int, input_shape, batch_size: int, optimizer: str) -> float:
  """Estimated bytes one member of `model` (padded to its max_width) needs while its bucket trains."""
  resident, transient = member_bytes_split(model, width, input_shape, batch_size, optimizer)
  return resident + transient


def member_bytes_split(model, width: int, input_shape, batch_size: int, optimizer: str,
                       input_dtype=jnp.float32) -> tuple[float, float]:
  """(resident, transient) bytes of one member: its state, held on the device for the whole run, and what one
  training step of its bucket needs on top (gradients, updates, activations). `input_dtype`: what the model
  receives (int32 for token inputs)."""
  x = jax.ShapeDtypeStruct((batch_size, *input_shape), input_dtype)
  variables = jax.eval_shape(lambda x: model.init({'params': jax.random.key(0)}, x[:1], width), x)
  _, inter = jax.eval_shape(lambda v, x: model.apply(v, x, width, train=True, capture_intermediates=True,
                                                     mutable=['intermediates', 'batch_stats']), variables, x)
  activations = _size(inter['intermediates'])
  factor = ACTIVATION_FACTOR.get(getattr(model, 'conv', 'lax'), 4.0)
  params = _size(variables['params'])
  return RESIDENT_COPIES[optimizer] * params, TRANSIENT_COPIES * params + factor * activations


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
  per_unit = max(1, int(budget // per_member))
  units = -(-len(group) // multiple)
  pieces = -(-units // per_unit)
  q, r = divmod(units, pieces)
  bounds = np.cumsum([0] + [(q + (i < r)) * multiple for i in range(pieces)]).clip(max=len(group))
  return [group[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
