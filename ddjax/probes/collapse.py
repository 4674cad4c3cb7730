"""Neural collapse (ddjax.metrics.collapse) of a layer's features on the training set."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from ddjax.metrics.collapse import between_class_whitener, collapse_metrics, nearest_mean_disagrees
from ddjax.probes.context import chunks
from ddjax.probes.registry import Option, register_probe


def _applies(setting) -> str:
  return '' if setting.task == 'classify' else 'a regression task has no classes to collapse'


@register_probe('collapse', columns=('nc1', 'nc1_sum', 'nc1_trace', 'nc2_equinorm', 'nc2_equiangle', 'nc2_etf', 'nc3',
                                     'nc3_squared', 'nc4'),
                options={'layer': Option('', "the model's tap point whose features collapse (empty: the output "
                                             "layer's input; --help lists each model's)", tap=True)},
                applies=_applies, figure='plots.collapse',
                help="neural collapse NC1-NC4 (ddjax.metrics.collapse) of a layer's features on the training set "
                     "with the member's own labels, in two passes (class means, then within-class spread); NC3 "
                     "(class means against the output layer's weights) at the output layer's input only")
def collapse(ctx, layer: str = ''):
  """Two passes of eval_batch chunks: class means, then the within-class spread (plain and whitened by the class
  means) and the nearest-mean predictions; no D x D array. Masked channels' features are zero, so a member gets
  the metrics of its own width."""
  layer = layer or None
  xs, ys, valid = chunks(ctx.x_train, ctx.labels_N, ctx.spec.eval_batch)
  valid = valid & (ys >= 0)  # data.subset marks the examples a member does not train on with -1
  ys = jnp.maximum(ys, 0)
  k = ctx.spec.num_classes

  def sums(carry, args):
    xc, yc, vc = args
    _, h_BxD = ctx.features(xc, layer)
    onehot_BxK = jax.nn.one_hot(yc, k) * vc[:, None]
    return (carry[0] + onehot_BxK.T @ h_BxD, carry[1] + onehot_BxK.sum(0)), None

  d = jax.eval_shape(lambda xc: ctx.features(xc, layer)[1], xs[0]).shape[1]
  (sum_KxD, count_K), _ = lax.scan(sums, (jnp.zeros((k, d)), jnp.zeros(k)), (xs, ys, valid))
  means_KxD = sum_KxD / jnp.maximum(count_K, 1.0)[:, None]
  whitener_RxD = between_class_whitener(means_KxD)

  def within(carry, args):
    xc, yc, vc = args
    logits_BxK, h_BxD = ctx.features(xc, layer)
    within_BxD = h_BxD - means_KxD[yc]
    wrong_B = nearest_mean_disagrees(h_BxD, means_KxD, logits_BxK)
    terms = (jnp.square(within_BxD).sum(1), jnp.square(within_BxD @ whitener_RxD.T).sum(1), wrong_B)
    return tuple(c + jnp.sum(a * vc) for c, a in zip(carry, terms)), None

  (within_sq, whitened_sq, wrong), _ = lax.scan(within, (jnp.zeros(()),) * 3, (xs, ys, valid))
  n = jnp.maximum(count_K.sum(), 1.0)
  w_KxD = ctx.state['params']['head']['kernel'].reshape(-1, k).T if layer is None else None  # NC3: the head's input
  return dict(collapse_metrics(means_KxD, within_sq / n, whitened_sq / n, w_KxD), nc4=wrong / n)
