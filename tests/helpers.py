"""Small builders shared by the tests."""

import jax.numpy as jnp

from ddjax.members import stack_hp


def hp_for(widths, **overrides):
  """Stacked per-member numbers for members of the given widths (defaults of the config otherwise)."""
  from ddjax import config
  members = []
  for i, w in enumerate(widths):
    m = {k: config.get(config.Config(), k) for k in config.MEMBER_KEYS}
    m['model.width'] = w
    for k, v in overrides.items():
      m[k] = v[i] if isinstance(v, (list, tuple)) else v
    members.append(m)
  return {k: jnp.asarray(v) for k, v in stack_hp(members).items()}


def unstack(tree, i):
  import jax
  return jax.tree.map(lambda x: x[i], tree)
