"""Deep linear networks (Saxe, McClelland and Ganguli 2014; Arora, Cohen and Hazan 2018), per member.

The end-to-end map of a linear network is the product of its kernels. Its strength along the singular modes of the
training set's input-output correlation X^T Y / N is what Saxe et al.'s solutions describe: each mode's strength
follows its own sigmoid from a small init. Gradient flow conserves W_{l+1}^T W_{l+1} - W_l W_l^T between adjacent
layers; the imbalance is its Frobenius norm over all pairs. Masked entries of the kernels are zero, so a padded
member gives the numbers of its own width.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def input_output_modes(x_NxI: jax.Array, y_NxO: jax.Array, rank: int):
  """The top `rank` singular modes of X^T Y / N: (input directions I x R, singular values R, output directions O x R).
  The singular values should be distinct: a repeated one leaves its directions free within their subspace."""
  u_IxI, s, vt_OxO = jnp.linalg.svd(x_NxI.T @ y_NxO / x_NxI.shape[0], full_matrices=False)
  return u_IxI[:, :rank], s[:rank], vt_OxO[:rank].T


def end_to_end(kernels) -> jax.Array:
  """The (in, out) matrix of x -> x K_1 K_2 ... K_L."""
  return functools.reduce(jnp.matmul, kernels)


def mode_strengths(kernels, in_IxR: jax.Array, out_OxR: jax.Array) -> jax.Array:
  """a_r^T W b_r for each mode r (W the end-to-end map): the singular value the network gives mode r."""
  return jnp.einsum('ir,io,or->r', in_IxR, end_to_end(kernels), out_OxR)


def imbalance(kernels) -> jax.Array:
  """sqrt(sum_l ||W_{l+1}^T W_{l+1} - W_l W_l^T||_F^2) with W_l = K_l^T (out x in): zero for balanced layers, constant
  under gradient flow, drifting by O(lr) under gradient descent."""
  terms = [jnp.sum(jnp.square(k_next @ k_next.T - k.T @ k)) for k, k_next in zip(kernels, kernels[1:])]
  return jnp.sqrt(sum(terms)) if terms else jnp.zeros(())


def gram_norms(kernels) -> list[jax.Array]:
  """||W_l W_l^T||_F per layer, W_l = K_l^T (out x in): ||K_l^T K_l||_F."""
  return [jnp.linalg.norm(k.T @ k) for k in kernels]


def balance_diffs(kernels) -> list[jax.Array]:
  """||W_l W_l^T - W_{l+1}^T W_{l+1}||_F per pair of adjacent layers (W_l = K_l^T): the terms of `imbalance`."""
  return [jnp.linalg.norm(k.T @ k - k_next @ k_next.T) for k, k_next in zip(kernels, kernels[1:])]


def relative_rank(s: jax.Array) -> jax.Array:
  """The effective rank of a matrix of singular values s (Roy and Vetterli 2007: exp of the entropy of s / sum s)
  divided by the number of singular values: 1 for equal ones, 1 / n for rank one, 0 for the zero matrix."""
  p = s / jnp.maximum(s.sum(), 1e-30)
  entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0))
  return jnp.where(s.sum() > 0, jnp.exp(entropy) / s.shape[0], 0.0)
