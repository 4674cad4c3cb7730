"""Inits other than a layer's own: model.gamma's N(0, width^-gamma) for every weight."""

from __future__ import annotations

import math
import zlib

import jax
import jax.numpy as jnp

from ddjax.nn.layers import invariant_uniform
from ddjax.nn.registry import size_args


def gamma_init(model, params, x, hp, key):
  """The member's parameters drawn from N(0, width^-gamma) (gamma = hp['gamma'], width its own), masked as the
  default init masks them; the default init where hp['gamma_on'] is 0 (model.gamma none). The draws depend only on the
  member's init key `key`, the parameter's path and the element's index (ddjax.nn.layers.invariant_uniform), so padding
  leaves them alone (to float rounding: erfinv may round differently in differently fused programs). The mask: the
  entries that two default inits from different keys leave nonzero."""
  other = model.init({'params': jax.random.fold_in(key, 1)}, x, hp['width'], train=False,
                     **size_args(model, hp))['params']
  std = jnp.asarray(hp['width'], jnp.float32) ** (-0.5 * hp['gamma'])
  draws = jax.random.fold_in(key, 2)

  def draw(path, p, q):
    u = invariant_uniform(jax.random.fold_in(draws, zlib.crc32(jax.tree_util.keystr(path).encode())), p.shape)
    normal = math.sqrt(2.0) * jax.scipy.special.erfinv(jnp.clip(u, -1.0 + 2**-23, 1.0 - 2**-23))
    return jnp.where(hp['gamma_on'] == 0, p, jnp.where((p != 0) | (q != 0), normal * std, 0.0))
  return jax.tree_util.tree_map_with_path(draw, params, other)
