"""Curvature and gradient noise of one member's loss, in forms that vmap over members (references.md, Metrics).

  hvp                      Hessian-vector product: the jvp of the gradient (forward over reverse)
  top_hessian_eigenvalue   the Hessian's largest-magnitude eigenvalue by power iteration (the sharpness)
  lanczos_top_eigenvalue   the same by a fixed number of Lanczos steps (faster to converge)
  hutchinson_trace         Tr(H) ~ mean of v^T H v over Rademacher probes v (variance 2 (||H||_F^2 - sum H_ii^2) per
                           probe)
  gradient_noise           McCandlish et al. (2018): Tr(Sigma), |G|^2 and the simple noise scale B_simple from
                           per-example gradients (in chunks of examples)

Loops have fixed lengths (lax.fori_loop, lax.map): under vmap a while_loop would run until every member stopped.
A member's masked parameters have zero gradient whatever their value, so the Hessian's rows and columns for them
are zero, and every quantity here is the member's own width's.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.flatten_util
import jax.numpy as jnp
import optax
from jax import lax

NOISE_CHUNK = 16  # examples whose per-example gradients the noise-scale monitor holds at once


def _unit(tree):
  return optax.tree.scale(1.0 / jnp.maximum(optax.tree.norm(tree), 1e-30), tree)


def hvp(loss_fn: Callable, params, v):
  """H v, with H the Hessian of the scalar loss_fn(params)."""
  return jax.jvp(jax.grad(loss_fn), (params,), (v,))[1]


def top_hessian_eigenvalue(loss_fn: Callable, params, key, iters: int = 20):
  """(eigenvalue, unit eigenvector) of the Hessian's largest-magnitude eigenvalue, by `iters` steps of power
  iteration from a Gaussian start; the eigenvalue is the Rayleigh quotient v^T H v."""
  v = _unit(optax.tree.random_like(key, params, jax.random.normal))
  v = lax.fori_loop(0, iters, lambda _, v: _unit(hvp(loss_fn, params, v)), v)
  return optax.tree.vdot(v, hvp(loss_fn, params, v)), v


def lanczos_top_eigenvalue(loss_fn: Callable, params, key, iters: int = 20):
  """The Hessian's largest-magnitude eigenvalue by `iters` Lanczos steps from a Gaussian start: the extreme
  eigenvalue of the iters x iters tridiagonal matrix of the three-term recurrence (no reorthogonalisation: lost
  orthogonality repeats converged eigenvalues but does not move the extreme one). A fixed count, so it vmaps; after
  a breakdown (the Krylov space is exhausted, as for a small member) the remaining steps add zeros."""
  flat, unravel = jax.flatten_util.ravel_pytree(params)
  matvec = lambda v: jax.flatten_util.ravel_pytree(hvp(loss_fn, params, unravel(v)))[0]
  v = jax.random.normal(key, flat.shape, flat.dtype)
  v = v / jnp.linalg.norm(v)

  def step(carry, _):
    v, v_prev, beta = carry
    w = matvec(v) - beta * v_prev
    alpha = jnp.vdot(w, v)
    w = w - alpha * v
    norm = jnp.linalg.norm(w)
    alive = norm > 1e-6 * jnp.maximum(jnp.abs(alpha), 1e-30)
    return (jnp.where(alive, w / jnp.where(alive, norm, 1.0), 0.0), v, jnp.where(alive, norm, 0.0)), (alpha, norm)

  _, (alphas, betas) = lax.scan(step, (v, jnp.zeros_like(v), jnp.zeros(())), None, length=iters)
  betas = jnp.where(jnp.cumprod(betas > 1e-6 * jnp.maximum(jnp.abs(alphas), 1e-30)) > 0, betas, 0.0)
  tri = jnp.diag(alphas) + jnp.diag(betas[:-1], 1) + jnp.diag(betas[:-1], -1)
  eig = jnp.linalg.eigvalsh(tri)
  return eig[jnp.argmax(jnp.abs(eig))]


def hutchinson_trace(loss_fn: Callable, params, key, probes: int = 10):
  """Tr(H) estimated as the mean of v^T H v over `probes` Rademacher vectors v."""
  def one(k):
    v = optax.tree.random_like(k, params, jax.random.rademacher)
    return optax.tree.vdot(v, hvp(loss_fn, params, v))

  return lax.map(one, jax.random.split(key, probes)).mean()


def gradient_noise(example_loss_fn: Callable, params, x_B, y_B, weight_B=None, chunk: int | None = None) -> dict:
  """From the per-example gradients g_i of example_loss_fn(params, x_i, y_i) over the B examples with weight 1:
  trace_sigma = sum_i ||g_i - g_mean||^2 / (B - 1), grad_sq = ||g_mean||^2 - trace_sigma / B (an unbiased |G|^2)
  and noise_scale = trace_sigma / grad_sq (B_simple).

  weight_B: 1 for the examples that count, 0 for padding (default: every example). chunk: the per-example gradients
  of this many examples at a time (the batch must be a multiple of it; default: all at once), in two passes over the
  chunks, the mean and then the spread around it, so memory holds one chunk's gradients."""
  total = x_B.shape[0]
  chunk = chunk or total
  weight_B = jnp.ones(total) if weight_B is None else weight_B
  split = lambda a: a.reshape(total // chunk, chunk, *a.shape[1:])
  chunks = (split(x_B), split(y_B), split(weight_B))
  per_example = jax.vmap(jax.grad(example_loss_fn), (None, 0, 0))
  b = weight_B.sum()

  def weighted_sum(args):
    x, y, w = args
    return jax.tree.map(lambda g: jnp.tensordot(w, g, 1), per_example(params, x, y))

  mean = jax.tree.map(lambda g: g.sum(0) / b, lax.map(weighted_sum, chunks))

  def spread(args):
    x, y, w = args
    squares = jax.tree.map(lambda g, m: jnp.square(g - m).reshape(chunk, -1).sum(1), per_example(params, x, y), mean)
    return w @ sum(jax.tree.leaves(squares))

  trace_sigma = lax.map(spread, chunks).sum() / (b - 1)
  grad_sq = optax.tree.norm(mean, squared=True) - trace_sigma / b
  return {'trace_sigma': trace_sigma, 'grad_sq': grad_sq, 'noise_scale': trace_sigma / grad_sq}


def gradient_stats(example_loss_fn: Callable, params, x_N, y_N, weight_N, chunks: int = 1,
                   hessian: bool = True) -> dict:
  """The gradient statistics of the mean loss L = sum_i w_i l_i / sum_i w_i over N examples (per-example losses
  l_i = example_loss_fn(params, x_i, y_i), weights w_i: 1, or 0 for padding), from their per-example gradients g_i:

  trace_gradient_covariance  Tr(Sigma), Sigma = sum_i w_i (g_i - g)(g_i - g)^T / sum_i w_i, g = grad L;
  trace_hessian_covariance   Tr(H Sigma) = sum_i w_i (g_i - g)^T H (g_i - g) / sum_i w_i, H the Hessian of L
                             (one Hessian-vector product per example; only with `hessian`).

  The examples go in `chunks` equal parts (N a multiple of it), one part's gradients in memory at a time."""
  total = x_N.shape[0]
  split = lambda a: a.reshape(chunks, total // chunks, *a.shape[1:])
  n = weight_N.sum()

  def mean_loss(p):
    def part(args):
      x, y, w = args
      return w @ jax.vmap(example_loss_fn, (None, 0, 0))(p, x, y)
    return lax.map(part, (split(x_N), split(y_N), split(weight_N))).sum() / n

  g = jax.grad(mean_loss)(params)

  def part(args):
    x, y, w = args
    d = jax.tree.map(lambda gi, gm: gi - gm, jax.vmap(jax.grad(example_loss_fn), (None, 0, 0))(params, x, y), g)
    squares = w @ sum(jnp.square(leaf).reshape(leaf.shape[0], -1).sum(1) for leaf in jax.tree.leaves(d))
    if not hessian:
      return squares, jnp.zeros(())
    h_d = jax.vmap(lambda v: hvp(mean_loss, params, v))(d)
    quad = sum((a * b).reshape(a.shape[0], -1).sum(1) for a, b in zip(jax.tree.leaves(d), jax.tree.leaves(h_d)))
    return squares, w @ quad

  squares, quads = lax.map(part, (split(x_N), split(y_N), split(weight_N)))
  out = {'trace_gradient_covariance': squares.sum() / n}
  if hessian:
    out['trace_hessian_covariance'] = quads.sum() / n
  return out
