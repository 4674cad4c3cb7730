"""Small builders shared by the tests."""

import jax
import jax.numpy as jnp
import numpy as np

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


def close(a, b, rtol: float = 1e-5):
  """Every leaf of tree a equals b's to rtol, with absolute slack rtol times b's largest magnitude (never below
  1e-6): float32 sums of many terms round relative to their largest term."""
  def check(x, y):
    x, y = np.asarray(x), np.asarray(y)
    np.testing.assert_allclose(x, y, rtol=rtol, atol=max(1e-6, rtol * float(np.abs(y).max(initial=0.0))))
  jax.tree.map(check, a, b)
