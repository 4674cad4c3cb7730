"""Parametrizations as numbers per member (model.param): standard (sp), NTK and muP, each a per-layer multiplier of
the default init and of the optimizer's update, functions of the member's width relative to model.base_width.

ddjax's models are written in the standard parametrization (SP): every weight W ~ N(0, c / fan_in) (or the layer's
own init of that variance), used as it is, with one learning rate. A parametrization in "SP form" keeps that forward
pass and changes, per parameter, the init's scale and the learning rate (Yang et al. 2022, Tensor Programs V,
Tables 3 and 8; r = width / base_width, fan-ins of hidden and output layers grow with r, input fan-ins do not):

                      init std x          Adam lr x          SGD lr x
  sp      every       1                   1                  1
  ntk     hidden, out 1                   r^-1/2             r^-1
          input, vec  1                   1                  1
  mup     input W     1                   1                  r
          hidden W    1                   r^-1               1
          output W    r^-1/2              r^-1               r^-1
          vectors     1                   1                  r (their size grows with r), output bias 1

NTK in SP form: W = w / sqrt(fan_in) with w ~ N(0, 1) trained at lr eta moves W by eta / fan_in per gradient unit
under SGD and by eta / sqrt(fan_in) under Adam (whose step ignores the gradient's scale). Vectors are biases, norm
scales and embedding tables (parameters without a fan-in; muP's "input weights and all biases" class). At r = 1
(width = base_width) every parametrization is SP. Attention's 1/d scaling under muP is the model's own (the
transformer reads `param` and `base_width` as MEMBER_ARGS).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ddjax.nn.registry import Role, param_roles

PARAMS = ('sp', 'ntk', 'mup')


def code(name: str) -> int:
  """model.param as the number a member carries (hp['param'])."""
  return PARAMS.index(name)


def _roles(model, params) -> list[Role]:
  return jax.tree.leaves(param_roles(model, params), is_leaf=lambda x: isinstance(x, Role))


def _ratio(hp) -> jax.Array:
  return jnp.asarray(hp['width'], jnp.float32) / jnp.asarray(hp['base_width'], jnp.float32)


def _pick(hp, ntk, mup) -> jax.Array:
  p = hp['param']
  return jnp.where(p == 1, ntk, jnp.where(p == 2, mup, 1.0)).astype(jnp.float32)


def init_multipliers(model, params, hp) -> dict:
  """A tree like `params` of each parameter's init multiplier for the member's parametrization (hp['param'])."""
  r = _ratio(hp)
  out = [_pick(hp, 1.0, r ** -0.5 if role.layer == 'output' and role.fan_in_axes else 1.0)
         for role in _roles(model, params)]
  return jax.tree.unflatten(jax.tree.structure(params), out)


def lr_multipliers(model, params, hp, optimizer: str) -> dict:
  """A tree like `params` of each parameter's learning-rate multiplier for the member's parametrization under
  `optimizer` ('sgd', or Adam: 'adam', 'adamw')."""
  r = _ratio(hp)
  sgd = optimizer == 'sgd'
  out = []
  for role in _roles(model, params):
    kernel, layer = bool(role.fan_in_axes), role.layer
    grows = kernel and layer in ('hidden', 'output')
    ntk = (r ** -1.0 if sgd else r ** -0.5) if grows else 1.0
    if not kernel:
      mup = r if sgd and layer != 'output' else 1.0
    elif layer == 'input':
      mup = r if sgd else 1.0
    elif layer == 'hidden':
      mup = 1.0 if sgd else r ** -1.0
    else:
      mup = r ** -1.0
    out.append(_pick(hp, ntk, mup))
  return jax.tree.unflatten(jax.tree.structure(params), out)
