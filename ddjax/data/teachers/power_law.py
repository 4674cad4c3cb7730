"""scale x diag(i^-alpha), i = 1 .. min(in, out)."""

import numpy as np

from ddjax.data.teachers.registry import register_teacher


def power_law_values(d) -> np.ndarray:
  r = min(d.in_dim, d.out_dim)
  return d.scale * np.arange(1, r + 1, dtype=np.float64) ** -d.alpha


def on_diagonal(d, values) -> np.ndarray:
  w = np.zeros((d.out_dim, d.in_dim))
  w[np.arange(len(values)), np.arange(len(values))] = values
  return w


@register_teacher('power_law', options=('scale', 'alpha'), help='data.scale x diag(i^-data.alpha), i = 1, 2, ...')
def power_law(d, rng) -> np.ndarray:
  return on_diagonal(d, power_law_values(d))
