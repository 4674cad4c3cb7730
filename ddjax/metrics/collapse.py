"""Neural collapse (Papyan, Han and Donoho 2020) of one member's last-layer features, in a form that vmaps over
members.

Features of masked channels are zero in every example, so they add nothing to any of these sums: a member padded to
a wider bucket has the metrics of its own width. Reference implementations disagree on normalisation, so each variant
is named:

  nc1            Tr(Sigma_W Sigma_B^+) / K          (Papyan et al.'s definition)
  nc1_sum        Tr(Sigma_W Sigma_B^+)              (the same without / K)
  nc1_trace      Tr(Sigma_W) / Tr(Sigma_B)
  nc2_equinorm   std / mean of the centred class-mean norms (std with K - 1, as torch.std in Papyan et al.'s code)
  nc2_equiangle  mean over class pairs of |cos(mu_i, mu_j) + 1 / (K - 1)| (centred means)
  nc2_etf        || G / ||G||_F - E / ||E||_F ||_F, G the centred means' Gram matrix, E = I - 11^T / K (simplex ETF)
  nc3            || W / ||W||_F - M / ||M||_F ||_F, W the classifier (K x D), M the centred class means (K x D)
  nc3_squared    its square (Papyan et al.'s notebook)
  nc4            share of examples whose nearest class mean is not the network's prediction

Sigma_W = 1/N sum_i (h_i - mu_{y_i})(h_i - mu_{y_i})^T and Sigma_B = 1/K sum_k (mu_k - mu_G)(mu_k - mu_G)^T, with mu_G
the mean of the class means (the global mean for balanced classes). Every class needs examples.

No D x D matrix is formed. With M the centred class means (K x D), Sigma_B^+ = K (M^T M)^+ = K M^+ M^+^T, so
Tr(Sigma_W Sigma_B^+) = K/N sum_i ||M^+^T (h_i - mu_{y_i})||^2: an SVD of M and one projection per example. As in
Papyan et al.'s code, Sigma_B^+ keeps its top K - 1 directions (M's rank), here those above a cutoff relative to the
largest that does not depend on D, so a padded member gets the NC1 of its own width.
"""

from __future__ import annotations

import jax.numpy as jnp


def class_means(h_NxD, y_N, num_classes: int):
  """The class means (K x D); a class with no example has mean 0."""
  onehot_NxK = (y_N[:, None] == jnp.arange(num_classes)[None, :]).astype(h_NxD.dtype)
  return onehot_NxK.T @ h_NxD / jnp.maximum(onehot_NxK.sum(0), 1.0)[:, None]


def _frobenius_normalised(a):
  return a / jnp.maximum(jnp.linalg.norm(a), 1e-30)


def between_class_whitener(means_KxD):
  """A (min(K, D) x D) map P with ||P v||^2 = v^T (M^T M)^+ v, M the centred means, over M's top K - 1 directions
  above 1e-6 of the largest singular value: P = S^-1 V^T from M = U S V^T."""
  centred_KxD = means_KxD - means_KxD.mean(0)
  _, s_R, vt_RxD = jnp.linalg.svd(centred_KxD, full_matrices=False)  # R = min(K, D) singular values, descending
  keep_R = (jnp.arange(s_R.shape[0]) < means_KxD.shape[0] - 1) & (s_R > 1e-6 * s_R[0])
  return jnp.where(keep_R, 1.0 / jnp.where(keep_R, s_R, 1.0), 0.0)[:, None] * vt_RxD


def collapse_metrics(means_KxD, within_sq, within_whitened_sq, w_KxD=None) -> dict:
  """nc1 to nc3 (above) from the class means, Tr(Sigma_W) = mean_i ||h_i - mu_{y_i}||^2 (`within_sq`) and
  mean_i ||P (h_i - mu_{y_i})||^2 with P = between_class_whitener(means) (`within_whitened_sq`); nc3 needs the
  classifier."""
  k = means_KxD.shape[0]
  centred_KxD = means_KxD - means_KxD.mean(0)
  trace_sum = k * within_whitened_sq
  norms_K = jnp.linalg.norm(centred_KxD, axis=1)
  unit_KxD = centred_KxD / jnp.maximum(norms_K, 1e-30)[:, None]
  off_diagonal = 1.0 - jnp.eye(k)
  cos_KxK = unit_KxD @ unit_KxD.T
  etf_KxK = jnp.eye(k) - jnp.ones((k, k)) / k
  out = {
      'nc1': trace_sum / k,
      'nc1_sum': trace_sum,
      'nc1_trace': within_sq / jnp.maximum(jnp.square(centred_KxD).sum() / k, 1e-30),
      'nc2_equinorm': norms_K.std(ddof=1) / jnp.maximum(norms_K.mean(), 1e-30),
      'nc2_equiangle': (jnp.abs(cos_KxK + 1.0 / (k - 1)) * off_diagonal).sum() / off_diagonal.sum(),
      'nc2_etf': jnp.linalg.norm(_frobenius_normalised(centred_KxD @ centred_KxD.T) - _frobenius_normalised(etf_KxK)),
  }
  if w_KxD is not None:
    nc3 = jnp.linalg.norm(_frobenius_normalised(w_KxD.astype(jnp.float32)) - _frobenius_normalised(centred_KxD))
    out.update(nc3=nc3, nc3_squared=nc3 ** 2)
  return out


def nearest_mean_disagrees(h_NxD, means_KxD, logits_NxK):
  """Per example, whether the nearest class mean is not the network's prediction (nc4 is their mean)."""
  # ||h - mu_k||^2 up to ||h||^2, which every class shares: no N x K x D array
  distances_NxK = jnp.square(means_KxD).sum(1)[None, :] - 2.0 * h_NxD @ means_KxD.T
  return jnp.argmin(distances_NxK, 1) != jnp.argmax(logits_NxK, 1)


def neural_collapse(h_NxD, y_N, num_classes: int, w_KxD=None, logits_NxK=None) -> dict:
  """The named NC metrics above of features `h_NxD` with labels `y_N`; nc3 needs the classifier `w_KxD` (the head's
  kernel transposed) and nc4 the network's `logits_NxK`."""
  h_NxD = h_NxD.astype(jnp.float32)
  means_KxD = class_means(h_NxD, y_N, num_classes)
  within_NxD = h_NxD - means_KxD[y_N]
  whitened_NxK = within_NxD @ between_class_whitener(means_KxD).T
  out = collapse_metrics(means_KxD, jnp.square(within_NxD).sum(1).mean(), jnp.square(whitened_NxK).sum(1).mean(),
                         w_KxD)
  if logits_NxK is not None:
    out['nc4'] = jnp.mean(nearest_mean_disagrees(h_NxD, means_KxD, logits_NxK))
  return out
