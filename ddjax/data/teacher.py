"""A linear teacher for deep linear networks (Saxe, McClelland and Ganguli 2014): whitened Gaussian inputs x and
targets y = W* x, where W* = U diag(s) V^T has a chosen spectrum s and random orthonormal U, V (from the data seed).

The training inputs are whitened exactly (X^T X / N = I), so the input-output correlation X^T Y / N of the training
set is W*^T and its singular modes are the teacher's; test inputs are fresh N(0, I) draws, so the test loss estimates
||W - W*||_F^2 for a network computing x -> W x.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ddjax.data.registry import Dataset, register_dataset
from ddjax.data.teachers import registered_teachers, teacher_spec
from ddjax.data.teachers.spectrum import orthonormal, parse_spectrum  # noqa: F401 - (and ddjax.data.teacher's API)


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


MAX_MODES = 8  # singular modes the `modes` probe reports by default on data.name=teacher (its rank, at most this)


def _check_teacher_data(d) -> None:
  if d.teacher not in registered_teachers():
    raise ValueError(f"bad value {d.teacher!r} for data.teacher: allowed: {', '.join(registered_teachers())}")
  for key in ('in_dim', 'out_dim', 'train_size', 'test_size'):
    if getattr(d, key) < 1:
      raise ValueError(f'bad value {getattr(d, key)!r} for data.{key}: must be at least 1')
  if (check := teacher_spec(d.teacher).validate) is not None:
    check(d)


def _teacher_options() -> tuple[str, ...]:
  return ('teacher', 'in_dim', 'out_dim', 'train_size', 'test_size', 'noise_std', 'online', 'scale', 'alpha', 'topk',
          'mean', 'std', 'spectrum')


@register_dataset('teacher', shape=lambda d: ((d.in_dim,), d.out_dim), inputs='vector', task='regress',
                  options=_teacher_options(), validate=_check_teacher_data, train_examples=lambda d: d.train_size,
                  help='y = W* x + data.noise_std x N(0, 1) for a teacher W* of the registry data.teacher '
                       '(teacher-student regression)')
def _load_teacher(d) -> Dataset:
  return teacher_data(d)


def teacher_data(d) -> Dataset:
  """data.train_size and data.test_size inputs x ~ N(0, I) of dimension data.in_dim (from data.seed) and their
  clean targets W* x (each member adds its own noise to the training targets: train.member_labels). `info`: the
  teacher's rank and its largest singular values (teacher_s1, ...); `modes`: its rank, at most MAX_MODES."""
  w_OxI = np.asarray(teacher_spec(d.teacher).build(d, np.random.default_rng([d.seed, 1])), np.float64)
  if w_OxI.shape != (d.out_dim, d.in_dim):
    raise ValueError(f'teacher {d.teacher!r} gave a matrix of shape {w_OxI.shape}, not (data.out_dim, data.in_dim) = '
                     f'{(d.out_dim, d.in_dim)}')
  rng = np.random.default_rng([d.seed, 2])
  x_train, x_test = rng.standard_normal((d.train_size, d.in_dim)), rng.standard_normal((d.test_size, d.in_dim))
  s = np.linalg.svd(w_OxI, compute_uv=False)
  rank = int((s > s.max(initial=0.0) * max(w_OxI.shape) * np.finfo(np.float64).eps).sum())
  modes = min(rank, MAX_MODES)
  arrays = [a.astype(np.float32) for a in (x_train, x_train @ w_OxI.T, x_test, x_test @ w_OxI.T)]
  info = (('rank', rank),) + tuple((f'teacher_s{i + 1}', float(v)) for i, v in enumerate(s[:modes]))
  online = LinearSampler(tuple(map(tuple, w_OxI.astype(np.float32).tolist()))) if d.online else None
  return Dataset(*arrays, num_classes=d.out_dim, task='regress', info=info, modes=modes, online=online)


@dataclass(frozen=True)
class LinearSampler:
  """data.online: n fresh examples x ~ N(0, I) and their clean targets W* x, drawn on the device from `key`."""
  w_OxI: tuple[tuple[float, ...], ...]

  def __call__(self, key, n: int):
    import jax
    import jax.numpy as jnp
    w = jnp.asarray(self.w_OxI, jnp.float32)
    x = jax.random.normal(key, (n, w.shape[1]), jnp.float32)
    return x, x @ w.T
