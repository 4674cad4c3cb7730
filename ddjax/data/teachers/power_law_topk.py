"""The first k entries of the power-law teacher, the rest 0 (a rank-k teacher)."""

from ddjax.data.teachers.registry import register_teacher
from ddjax.data.teachers.power_law import on_diagonal, power_law_values


def _check(d) -> None:
  if not 1 <= d.topk <= min(d.in_dim, d.out_dim):
    raise ValueError(f'bad value {d.topk!r} for data.topk: the teacher keeps its first k singular values, '
                     f'1 <= k <= min(data.in_dim, data.out_dim) = {min(d.in_dim, d.out_dim)}')


@register_teacher('power_law_topk', options=('scale', 'alpha', 'topk'), validate=_check,
                  help='power_law with only its first data.topk values (the rest 0)')
def power_law_topk(d, rng):
  values = power_law_values(d)
  values[d.topk:] = 0.0
  return on_diagonal(d, values)
