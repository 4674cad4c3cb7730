"""Deep linear networks: strengths of the data's singular modes and the layers' imbalance."""

from __future__ import annotations

from ddjax.metrics.linear import imbalance, input_output_modes, mode_strengths
from ddjax.probes.registry import Option, register_probe


def _auto(setting):
  """On by itself for a linear model on a dataset with singular modes (linear_teacher: its rank)."""
  return {'count': setting.modes} if setting.linear and setting.modes else None


def _applies(setting) -> str:
  return '' if setting.linear else 'it reads a deep linear network (model.name=deep_linear)'


@register_probe('modes', columns=('mode_<r>', 'imbalance'), auto=_auto, applies=_applies,
                options={'count': Option(1, 'singular modes reported (default on linear_teacher: its rank)',
                                         check=lambda v: v >= 1, must='must be >= 1')},
                help="a deep linear network's strength along each of the top singular modes of the training set's "
                     "input-output correlation (mode_1 the largest), and its layers' imbalance")
def modes(ctx, count: int = 1):
  x_NxI = ctx.x_train.reshape(ctx.x_train.shape[0], -1)
  in_IxR, _, out_OxR = input_output_modes(x_NxI, ctx.labels_N.reshape(x_NxI.shape[0], -1), count)
  kernels = ctx.spec.model.kernels(ctx.state['params'])
  strengths_R = mode_strengths(kernels, in_IxR, out_OxR)
  return {**{f'mode_{r + 1}': strengths_R[r] for r in range(count)}, 'imbalance': imbalance(kernels)}
