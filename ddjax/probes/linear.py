"""Deep linear networks: strengths of the data's singular modes and the layers' imbalance; the seed codebase's
layer metrics (Gram norms, balance differences, the end-to-end map's norm, singular values and relative rank)."""

from __future__ import annotations

import jax.numpy as jnp

from ddjax.metrics.linear import (balance_diffs, end_to_end, gram_norms, imbalance, input_output_modes,
                                mode_strengths, relative_rank)
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


def _kernels(ctx):
  return ctx.spec.model.kernels(ctx.state['params'])


@register_probe('gram_norms', columns=('gram_norm_<l>',), applies=_applies,
                help='||W_l W_l^T||_F of each layer l (from 0, the input layer; W_l the (out, in) weight)')
def gram_norms_probe(ctx):
  return {f'gram_norm_{l}': v for l, v in enumerate(gram_norms(_kernels(ctx)))}


@register_probe('balance_diffs', columns=('balance_diff_<l>',), applies=_applies,
                help='||W_l W_l^T - W_{l+1}^T W_{l+1}||_F of each pair of adjacent layers l, l + 1 (constant under '
                     'gradient flow; imbalance, of the modes probe, is their root sum of squares)')
def balance_diffs_probe(ctx):
  return {f'balance_diff_{l}': v for l, v in enumerate(balance_diffs(_kernels(ctx)))}


@register_probe('end_to_end_weight_norm', columns=('end_to_end_norm',), applies=_applies,
                help='||W_L ... W_1||_F, the Frobenius norm of the end-to-end map')
def end_to_end_weight_norm(ctx):
  return {'end_to_end_norm': jnp.linalg.norm(end_to_end(_kernels(ctx)))}


@register_probe('singular_values', columns=('sv_<i>',), applies=_applies,
                options={'count': Option(5, 'singular values reported, largest first (at most min(in, out))',
                                         check=lambda v: v >= 1, must='must be >= 1')},
                help='the largest singular values of the end-to-end map, sv_1 the largest')
def singular_values(ctx, count: int = 5):
  s = jnp.linalg.svd(end_to_end(_kernels(ctx)), compute_uv=False)
  return {f'sv_{i + 1}': s[i] for i in range(min(count, s.shape[0]))}


@register_probe('relative_rank', columns=('relative_rank',), applies=_applies,
                help='the effective rank of the end-to-end map (exp of the entropy of its normalised singular '
                     'values, Roy and Vetterli 2007) over min(in, out): 1 for equal singular values, 1 / min(in, '
                     'out) for rank one')
def relative_rank_probe(ctx):
  return {'relative_rank': relative_rank(jnp.linalg.svd(end_to_end(_kernels(ctx)), compute_uv=False))}
