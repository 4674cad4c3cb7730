"""A linear teacher for deep linear networks (Saxe, McClelland and Ganguli 2014): whitened Gaussian inputs x and
targets y = W* x, where W* = U diag(s) V^T has a chosen spectrum s and random orthonormal U, V (from the data seed).

The training inputs are whitened exactly (X^T X / N = I), so the input-output correlation X^T Y / N of the training
set is W*^T and its singular modes are the teacher's; test inputs are fresh N(0, I) draws, so the test loss estimates
||W - W*||_F^2 for a network computing x -> W x.
"""

from __future__ import annotations

import math

import numpy as np

from ddjax.data.registry import Dataset, register_dataset


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


def _check_teacher(d) -> None:
  try:
    values = parse_spectrum(d.spectrum)
  except ValueError as e:
    raise ValueError(f'bad value {d.spectrum!r} for data.spectrum: {e}') from None
  if len(values) > d.dim:
    raise ValueError(f'bad value {d.spectrum!r} for data.spectrum: {len(values)} singular values, more than '
                     f'data.dim={d.dim} allows')
  n_train = int(d.num_samples * d.train_split)
  if n_train < d.dim:
    raise ValueError(f'bad value {d.num_samples!r} for data.num_samples: it leaves {n_train} training examples, '
                     f'fewer than data.dim={d.dim} (the inputs are whitened: they need at least as many)')


@register_dataset('linear_teacher', shape=lambda d: ((d.dim,), d.dim), inputs='vector', task='regress',
                  options=('dim', 'spectrum'), validate=_check_teacher,
                  help='y = W* x for a teacher W* of singular values data.spectrum (deep linear networks)')
def _load_linear_teacher(d) -> Dataset:
  return linear_teacher(d.dim, d.spectrum, d.num_samples, d.train_split, d.seed)


def linear_teacher(dim: int = 16, spectrum: str = '4/2/1/0.5', num_samples: int = 5000, train_split: float = 0.8,
                   seed: int = 42) -> Dataset:
  """Inputs and targets of dimension `dim`; targets y = W* x with W* of singular values `spectrum` (its rank is their
  number). `info` carries the rank and the singular values (teacher_s1, teacher_s2, ...); `modes` = the rank."""
  rng = np.random.default_rng(seed)
  s = np.asarray(parse_spectrum(spectrum))
  out_RxO, in_RxI = orthonormal(rng, dim, len(s)).T, orthonormal(rng, dim, len(s)).T
  w_OxI = (out_RxO.T * s) @ in_RxI
  n_train = int(num_samples * train_split)
  q_NxI, _ = np.linalg.qr(rng.standard_normal((n_train, dim)))
  x_train = q_NxI * math.sqrt(n_train)  # exactly white: X^T X / N = I
  x_test = rng.standard_normal((num_samples - n_train, dim))
  arrays = [a.astype(np.float32) for a in (x_train, x_train @ w_OxI.T, x_test, x_test @ w_OxI.T)]
  info = (('rank', len(s)),) + tuple((f'teacher_s{i + 1}', float(v)) for i, v in enumerate(s))
  return Dataset(*arrays, num_classes=dim, task='regress', info=info, modes=len(s))
