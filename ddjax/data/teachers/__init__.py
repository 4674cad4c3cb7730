"""Teacher matrices for teacher-student regression (`data.name=teacher`, `data.teacher=NAME`): a registry, one
file per teacher, plugins allowed (`--plugin FILE.py` with `@register_teacher`).

A teacher is `build(d, rng) -> W*` of shape (data.out_dim, data.in_dim), float64, from the data config `d` (its
own options are data.* keys) and a generator seeded by data.seed (for the teachers that draw). The dataset
(ddjax.data.teacher) draws the inputs x ~ N(0, I) from data.seed and sets y = W* x; each member adds its own
noise, data.noise_std x N(0, 1), to its training targets.
"""

from ddjax.data.teachers.registry import TEACHERS, TeacherSpec, register_teacher, registered_teachers, teacher_spec
from ddjax.data.teachers import diagonal, identity, power_law, power_law_topk, random_normal, spectrum  # registers them
