"""Centred kernel alignment (Kornblith et al. 2019) between two representations of the same n examples, x_NxD and
y_NxE, in forms that vmap over members (and over pairs of members).

  linear_cka      ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F) on column-centred X, Y
  rbf_cka         CKA of Gaussian kernels whose width is `threshold` x the median pairwise distance
  debiased_cka    linear CKA from the unbiased HSIC estimator (Song et al. 2012), less biased at small n
  minibatch_cka   Nguyen et al. (2021): unbiased HSIC summed over minibatches, then normalised; for more examples
                  than one n x n kernel holds

Zero feature columns (a member's masked channels) change none of them: a linear kernel X X^T does not see them, nor
do the distances of the RBF kernel.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _centre_kernel(k_NxN):
  """H K H with H = I - 11^T / n."""
  return k_NxN - k_NxN.mean(0, keepdims=True) - k_NxN.mean(1, keepdims=True) + k_NxN.mean()


def _cka_of_kernels(k_NxN, l_NxN):
  kc, lc = _centre_kernel(k_NxN), _centre_kernel(l_NxN)
  return jnp.sum(kc * lc) / (jnp.linalg.norm(kc) * jnp.linalg.norm(lc))


def linear_cka(x_NxD, y_NxE):
  """Linear CKA in feature space (no n x n kernel): ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F), columns centred."""
  x_NxD = x_NxD - x_NxD.mean(0)
  y_NxE = y_NxE - y_NxE.mean(0)
  return (jnp.square(jnp.linalg.norm(y_NxE.T @ x_NxD))
          / (jnp.linalg.norm(x_NxD.T @ x_NxD) * jnp.linalg.norm(y_NxE.T @ y_NxE)))


def rbf_kernel(x_NxD, threshold: float = 1.0):
  """exp(-d_ij^2 / (2 threshold^2 median(d^2))), the median over all n^2 squared distances (diagonal included)."""
  sq_norms_N = jnp.square(x_NxD).sum(1)
  sq_dist_NxN = jnp.maximum(sq_norms_N[:, None] + sq_norms_N[None, :] - 2.0 * x_NxD @ x_NxD.T, 0.0)
  return jnp.exp(-sq_dist_NxN / (2.0 * threshold ** 2 * jnp.median(sq_dist_NxN)))


def rbf_cka(x_NxD, y_NxE, threshold: float = 1.0):
  return _cka_of_kernels(rbf_kernel(x_NxD, threshold), rbf_kernel(y_NxE, threshold))


def hsic_unbiased(k_NxN, l_NxN):
  """Song et al.'s unbiased HSIC estimator (HSIC_1) of two n x n kernels, n >= 4:
  [tr(K~ L~) + 1^T K~ 1 1^T L~ 1 / ((n-1)(n-2)) - 2 / (n-2) 1^T K~ L~ 1] / (n (n-3)), K~ and L~ with zero diagonals."""
  n = k_NxN.shape[0]
  off = 1.0 - jnp.eye(n, dtype=k_NxN.dtype)
  k_NxN, l_NxN = k_NxN * off, l_NxN * off
  k_sums_N, l_sums_N = k_NxN.sum(1), l_NxN.sum(1)
  return ((jnp.sum(k_NxN * l_NxN) + k_sums_N.sum() * l_sums_N.sum() / ((n - 1) * (n - 2))
           - 2.0 / (n - 2) * k_sums_N @ l_sums_N) / (n * (n - 3)))


def debiased_cka(x_NxD, y_NxE):
  """Linear CKA from unbiased HSIC estimates."""
  k, l = x_NxD @ x_NxD.T, y_NxE @ y_NxE.T
  return hsic_unbiased(k, l) / jnp.sqrt(hsic_unbiased(k, k) * hsic_unbiased(l, l))


def minibatch_cka(x_BxNxD, y_BxNxE):
  """Nguyen et al.'s minibatch linear CKA over B batches of n examples: sum_b HSIC_1(K_b, L_b) divided by
  sqrt(sum_b HSIC_1(K_b, K_b) sum_b HSIC_1(L_b, L_b))."""
  k_BxNxN = jnp.einsum('bnd,bmd->bnm', x_BxNxD, x_BxNxD)
  l_BxNxN = jnp.einsum('bne,bme->bnm', y_BxNxE, y_BxNxE)
  hsic = lambda a, b: jax.vmap(hsic_unbiased)(a, b).sum()
  return hsic(k_BxNxN, l_BxNxN) / jnp.sqrt(hsic(k_BxNxN, k_BxNxN) * hsic(l_BxNxN, l_BxNxN))
