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


def test_mnist1d_is_generated_offline_with_the_global_rng_left_alone(tmp_path, monkeypatch):
  """The mnist1d package reseeds random and np.random while it generates: ddjax's wrapper puts them back."""
  import random
  from ddjax.data.datasets import mnist1d
  monkeypatch.setenv('DDJAX_CACHE', str(tmp_path))
  random.seed(5)
  np.random.seed(7)
  before = random.random(), np.random.rand()
  random.seed(5)
  np.random.seed(7)
  ds = mnist1d(num_samples=100, train_split=0.8, seed=11)
  assert (random.random(), np.random.rand()) == before
  assert ds.x_train.shape == (80, 40) and ds.x_test.shape == (20, 40) and ds.x_train.dtype == np.float32
  assert set(np.unique(ds.y_train)) <= set(range(10)) and len(np.unique(ds.y_train)) > 5
  again = mnist1d(num_samples=100, train_split=0.8, seed=11)  # from the cache file now
  assert len(list(tmp_path.glob('mnist1d-*.npz'))) == 1
  np.testing.assert_array_equal(again.x_train, ds.x_train)
