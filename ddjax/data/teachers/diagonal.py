"""scale x diag(1, 2, ..., r) on the leading r = min(in, out) diagonal."""

import numpy as np

from ddjax.data.teachers.registry import register_teacher


@register_teacher('diagonal', options=('scale',), help='data.scale x diag(1, 2, ..., min(in, out))')
def diagonal(d, rng) -> np.ndarray:
  w = np.zeros((d.out_dim, d.in_dim))
  r = min(d.in_dim, d.out_dim)
  w[np.arange(r), np.arange(r)] = d.scale * np.arange(1, r + 1)
  return w
