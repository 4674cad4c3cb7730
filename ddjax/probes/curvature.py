"""Curvature and gradient noise of the training loss (weight decay left out) on a monitor batch of training
examples evenly spaced through the training set (the same at every evaluation; the member's own labels, no
augmentation). Random probes come from the member's batch seed. ddjax.metrics.curvature has the definitions."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from ddjax.metrics.curvature import (NOISE_CHUNK, gradient_noise, gradient_stats, hutchinson_trace,
                                     lanczos_top_eigenvalue, top_hessian_eigenvalue)
from ddjax.optim import ADAM_LIKE
from ddjax.probes.context import chunks
from ddjax.probes.registry import Option, register_probe

BATCH = Option(1000, 'training examples, evenly spaced through the training set, it uses (train.monitor_batch)',
               check=lambda v: v >= 2, must='must be >= 2')


def _hvp_bytes(loops):
  """A loop of Hessian-vector products on the monitor batch holds up to three times what a training step on it
  does (forward over reverse); independent loops may be held at once."""
  return lambda q, batch, **_: 3 * loops(q) * q.step_bytes(batch)


def preconditioned_sharpness(ctx, loss_fn, key, iters: int, top=None) -> jax.Array:
  """The largest-magnitude eigenvalue of P^-1 H for Adam's preconditioner P = diag(sqrt(v_hat) + eps), v_hat its
  bias-corrected second moment (Cohen et al. 2022): power iteration on the Hessian of the loss in the coordinates
  phi = P^(1/2) theta, whose Hessian P^(-1/2) H P^(-1/2) has the same eigenvalues. Full-batch Adam is stable while it
  is below (2 + 2 b1) / ((1 - b1) lr), 38 / lr for b1 = 0.9."""
  state, hp = ctx.state, ctx.hp
  nu, count = optax.tree.get(state['opt'], 'nu'), optax.tree.get(state['opt'], 'count')
  bias = 1.0 - hp['b2'] ** jnp.maximum(count, 1).astype(jnp.float32)
  root_p = jax.tree.map(lambda v: jnp.sqrt(jnp.sqrt(v / bias) + hp['eps']), nu)  # P^(1/2), leaf by leaf
  loss_phi = lambda phi: loss_fn(jax.tree.map(jnp.divide, phi, root_p))
  phi = jax.tree.map(jnp.multiply, state['params'], root_p)
  top = top or (lambda f, p, k, n: top_hessian_eigenvalue(f, p, k, n)[0])  # (lanczos_top_eigenvalue, or power)
  return top(loss_phi, phi, jax.random.fold_in(key, 2), iters)


@register_probe('sharpness', columns=('sharpness', 'preconditioned_sharpness'),
                options={'iters': Option(20, 'power-iteration or Lanczos steps (train.sharpness)',
                                         check=lambda v: v >= 1, must='must be >= 1'), 'batch': BATCH,
                         'method': Option('power', 'power iteration, or Lanczos (a fixed number of steps; converges '
                                                   'in fewer)', ('power', 'lanczos'))},
                figure='plots.monitors', memory=_hvp_bytes(lambda q: 2 if q.optimizer in ADAM_LIKE else 1),
                help="the training loss's top Hessian eigenvalue (largest in magnitude) by power iteration on the "
                     "monitor batch, BatchNorm on the batch's statistics; with Adam also that of P^-1 H, Adam's "
                     'preconditioned Hessian')
def sharpness(ctx, iters: int = 20, batch: int = 1000, method: str = 'power'):
  x, y = ctx.monitor_batch(batch)
  loss = ctx.batch_loss(x, y, train=True)
  top = (lambda f, p, k, n: top_hessian_eigenvalue(f, p, k, n)[0]) if method == 'power' else lanczos_top_eigenvalue
  out = {'sharpness': top(loss, ctx.state['params'], ctx.key, iters)}
  if ctx.spec.optimizer in ADAM_LIKE:
    out['preconditioned_sharpness'] = preconditioned_sharpness(ctx, loss, ctx.key, iters, top)
  return out


@register_probe('hessian_trace', columns=('hessian_trace',),
                options={'probes': Option(10, 'Rademacher probes (train.hessian_trace)', check=lambda v: v >= 1,
                                          must='must be >= 1'), 'batch': BATCH},
                figure='plots.monitors', memory=_hvp_bytes(lambda q: 1),
                help="the training loss's Hessian trace, Hutchinson's estimate on the monitor batch (BatchNorm on "
                     "the batch's statistics)")
def hessian_trace(ctx, probes: int = 10, batch: int = 1000):
  x, y = ctx.monitor_batch(batch)
  loss = ctx.batch_loss(x, y, train=True)
  return {'hessian_trace': hutchinson_trace(loss, ctx.state['params'], jax.random.fold_in(ctx.key, 1), probes)}


def _noise_bytes(q, batch, **_):
  """NOISE_CHUNK per-example gradients, twice a training step's activations of NOISE_CHUNK examples and two copies
  of the monitor batch's inputs."""
  return 2 * q.step_bytes(NOISE_CHUNK) + NOISE_CHUNK * q.resident_bytes + 2 * batch * q.input_bytes


@register_probe('noise_scale', columns=('trace_sigma', 'grad_sq', 'noise_scale'),
                options={'batch': BATCH}, memory=_noise_bytes, figure='plots.monitors',
                help='the gradient noise scale (McCandlish et al.: trace_sigma, the per-example gradient variance; '
                     "grad_sq, the squared mean gradient; noise_scale, their ratio) from per-example gradients on "
                     "the monitor batch, BatchNorm on its running statistics")
def noise_scale(ctx, batch: int = 1000):
  x, y = ctx.monitor_batch(batch)

  def example_loss(params, x1, y1):
    (loss, _, _), _ = ctx.loss(params, ctx.state['batch_stats'], x1[None], y1[None], False)
    return loss[0]

  xs, ys, valid = chunks(x, y, NOISE_CHUNK)
  x_pad, y_pad = xs.reshape(-1, *xs.shape[2:]), ys.reshape(-1, *ys.shape[2:])
  weight = ctx.target_weight(y_pad) * valid.reshape(-1)
  return gradient_noise(example_loss, ctx.state['params'], x_pad, y_pad, weight, xs.shape[1])


CHUNKS = Option(1, 'parts the training set is split into, one part\'s per-example gradients in memory at a time (it '
                'must divide the training set)', check=lambda v: v >= 1, must='must be >= 1')


def _training_set_stats(ctx, chunks: int, hessian: bool):
  """gradient_stats of the training loss on the whole training set with the member's own labels (no augmentation,
  BatchNorm on its running statistics)."""
  x, y = ctx.spec.preprocess(ctx.x_train), ctx.labels_N
  if x.shape[0] % chunks:
    raise ValueError(f'probe option chunks={chunks} does not divide the {x.shape[0]} training examples')

  def example_loss(params, x1, y1):
    (loss, _, _), _ = ctx.loss(params, ctx.state['batch_stats'], x1[None], y1[None], False)
    return loss[0]

  return gradient_stats(example_loss, ctx.state['params'], x, y, ctx.target_weight(y), chunks, hessian)


@register_probe('grad_norm_squared', columns=('grad_norm_squared',),
                help="||grad L||^2 of the test loss on the whole test set, exactly")
def grad_norm_squared(ctx):
  loss = ctx.batch_loss(ctx.spec.preprocess(ctx.x_test), ctx.y_test, train=False)
  return {'grad_norm_squared': optax.tree.norm(jax.grad(loss)(ctx.state['params']), squared=True)}


@register_probe('trace_gradient_covariance', columns=('trace_gradient_covariance',), options={'chunks': CHUNKS},
                help='Tr(Sigma), the trace of the covariance of the per-example gradients of the training loss over '
                     'the whole training set')
def trace_gradient_covariance(ctx, chunks: int = 1):
  return _training_set_stats(ctx, chunks, hessian=False)


@register_probe('trace_hessian_covariance', columns=('trace_hessian_covariance',), options={'chunks': CHUNKS},
                help='Tr(H Sigma) on the whole training set: H the Hessian of the training loss, Sigma the '
                     'per-example gradient covariance (a Hessian-vector product per example)')
def trace_hessian_covariance(ctx, chunks: int = 1):
  return {'trace_hessian_covariance': _training_set_stats(ctx, chunks, hessian=True)['trace_hessian_covariance']}


@register_probe('gradient_stats', columns=('grad_norm_squared', 'trace_gradient_covariance',
                                           'trace_hessian_covariance'), options={'chunks': CHUNKS},
                help='grad_norm_squared, trace_gradient_covariance and trace_hessian_covariance in one pass')
def gradient_stats_probe(ctx, chunks: int = 1):
  return {**grad_norm_squared(ctx), **_training_set_stats(ctx, chunks, hessian=True)}
