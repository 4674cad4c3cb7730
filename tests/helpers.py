"""Small builders shared by the tests."""

import jax.numpy as jnp

from ddjax.members import member_hp


def hp_for(widths, **overrides):
  """Stacked per-member numbers for members of the given widths (defaults of the config otherwise)."""
  from ddjax import config
  rows = []
  for i, w in enumerate(widths):
    m = {k: config.get(config.Config(), k) for k in config.MEMBER_KEYS}
    m['model.width'] = w
    for k, v in overrides.items():
      m[k] = v[i] if isinstance(v, (list, tuple)) else v
    rows.append(member_hp(m))
  ints = ('width', 'model_seed', 'batch_seed', 'noise_seed')
  return {k: jnp.asarray([r[k] for r in rows], jnp.int32 if k in ints else jnp.float32) for k in rows[0]}


def unstack(tree, i):
  import jax
  return jax.tree.map(lambda x: x[i], tree)
