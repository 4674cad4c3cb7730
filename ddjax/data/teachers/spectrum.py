"""U diag(s) V^T with the singular values data.spectrum and Haar-random orthonormal U, V (linear_teacher's)."""

import math

import numpy as np

from ddjax.data.teachers.registry import register_teacher


def parse_spectrum(text: str) -> list[float]:
  """'4/2/1/0.5' -> [4.0, 2.0, 1.0, 0.5]: distinct positive singular values, largest first. Raises ValueError saying
  what is allowed."""
  values = []
  for part in str(text).split('/'):
    try:
      v = float(part)
    except ValueError:
      v = math.nan
    if not (math.isfinite(v) and v > 0):
      raise ValueError(f'{part.strip()!r} is not a positive number (expected positive singular values joined by /, '
                       'e.g. 4/2/1/0.5)')
    if v in values:
      raise ValueError(f'{part.strip()!r} is given twice (the singular values must differ: a repeated one leaves its '
                       "modes' directions arbitrary, and mode_1, mode_2, ... would mean nothing)")
    values.append(v)
  return sorted(values, reverse=True)


def orthonormal(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
  """k orthonormal columns in R^n, uniformly (Haar) distributed: QR of a Gaussian matrix with R's signs fixed."""
  q, r = np.linalg.qr(rng.standard_normal((n, k)))
  return q * np.sign(np.diag(r))


def _check(d) -> None:
  try:
    values = parse_spectrum(d.spectrum)
  except ValueError as e:
    raise ValueError(f'bad value {d.spectrum!r} for data.spectrum: {e}') from None
  if len(values) > min(d.in_dim, d.out_dim):
    raise ValueError(f'bad value {d.spectrum!r} for data.spectrum: {len(values)} singular values, more than '
                     f'min(data.in_dim, data.out_dim) = {min(d.in_dim, d.out_dim)} allows')


@register_teacher('spectrum', options=('spectrum',), validate=_check,
                  help="U diag(data.spectrum) V^T, random orthonormal U and V")
def spectrum(d, rng):
  s = parse_spectrum(d.spectrum)
  return (orthonormal(rng, d.out_dim, len(s)) * s) @ orthonormal(rng, d.in_dim, len(s)).T
