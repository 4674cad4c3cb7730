"""Label noise as in Nakkiran et al.: rate p, always an incorrect label, uniform over the wrong classes, drawn once."""

import jax
import jax.numpy as jnp
import numpy as np

from ddjax.data.noise import noisy_labels, noisy_test_error

K, N, P = 10, 50_000, 0.15


def test_rate_incorrect_and_uniform():
  y = jnp.asarray(np.random.default_rng(0).integers(0, K, N), jnp.int32)
  noisy = np.asarray(noisy_labels(jax.random.key(1), y, P, K))
  y = np.asarray(y)
  flipped = noisy != y
  sigma = np.sqrt(P * (1 - P) / N)
  assert abs(flipped.mean() - P) < 4 * sigma
  shift = (noisy[flipped] - y[flipped]) % K  # 1..K-1, each with probability 1/(K-1)
  assert shift.min() >= 1
  counts = np.bincount(shift, minlength=K)[1:]
  expected = flipped.sum() / (K - 1)
  chi2 = ((counts - expected) ** 2 / expected).sum()
  assert chi2 < 26.1  # chi-square, 8 degrees of freedom, p = 0.001
  assert np.array_equal(noisy, np.asarray(noisy_labels(jax.random.key(1), jnp.asarray(y), P, K)))  # drawn once
  assert not np.array_equal(noisy, np.asarray(noisy_labels(jax.random.key(2), jnp.asarray(y), P, K)))
  assert np.array_equal(np.asarray(noisy_labels(jax.random.key(1), jnp.asarray(y), 0.0, K)), y)


def test_noisy_test_error_matches_sampled_noisy_labels():
  """p + c (1 - 10p/9) against a Monte-Carlo noisy test set, for a classifier with clean error c."""
  rng = np.random.default_rng(3)
  y = rng.integers(0, K, N)
  c = 0.3
  pred = np.where(rng.random(N) < c, (y + rng.integers(1, K, N)) % K, y)
  noisy = np.asarray(noisy_labels(jax.random.key(4), jnp.asarray(y, jnp.int32), P, K))
  sampled = (pred != noisy).mean()
  expected = float(noisy_test_error((pred != y).mean(), P, K))
  assert abs(sampled - expected) < 4 * np.sqrt(expected * (1 - expected) / N)
  assert abs(float(noisy_test_error(0.0, P, K)) - P) < 1e-7
