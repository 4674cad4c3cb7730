"""The teacher registry (ddjax.data.teachers)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from ddjax import plugins


@dataclass(frozen=True)
class TeacherSpec:
  name: str
  build: Callable                 # (data config, np.random.Generator) -> (out_dim, in_dim) float64
  options: tuple[str, ...] = ()   # the data.* keys it reads besides in_dim and out_dim
  validate: Callable | None = None  # (data config) -> None; raises ValueError('bad value ... for data.KEY: why')
  help: str = ''

  @property
  def module(self) -> str:
    return self.build.__module__


TEACHERS: dict[str, TeacherSpec] = {}


def register_teacher(name: str, *, options: Sequence[str] = (), validate: Callable | None = None,
                     help: str = '') -> Callable:
  """Decorator registering `build(d, rng) -> W*` as `data.teacher=NAME`."""
  def register(build):
    return plugins.add(TEACHERS, 'teacher', name, TeacherSpec(name, build, tuple(options), validate, help), build)
  return register


def teacher_spec(name: str) -> TeacherSpec:
  return plugins.lookup(TEACHERS, 'teacher', name)


def registered_teachers() -> tuple[str, ...]:
  return tuple(TEACHERS)
