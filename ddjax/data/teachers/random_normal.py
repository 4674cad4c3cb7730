"""Entries drawn i.i.d. from N(mean, std^2) (from data.seed)."""

from ddjax.data.teachers.registry import register_teacher


@register_teacher('random_normal', options=('mean', 'std'), help='entries i.i.d. N(data.mean, data.std^2)')
def random_normal(d, rng):
  return d.mean + d.std * rng.standard_normal((d.out_dim, d.in_dim))
