"""Label noise as in Nakkiran et al.: with probability p a label becomes a uniformly random *incorrect* one."""

import jax
import jax.numpy as jnp


def noisy_labels(key: jax.Array, labels: jax.Array, p, num_classes: int) -> jax.Array:
  """Drawn once from `key`; each flipped label is uniform over the num_classes - 1 wrong classes."""
  k_flip, k_shift = jax.random.split(key)
  flip = jax.random.uniform(k_flip, labels.shape) < p
  shift = jax.random.randint(k_shift, labels.shape, 1, num_classes)
  return jnp.where(flip, (labels + shift) % num_classes, labels).astype(labels.dtype)


def noisy_test_error(clean_error, p, num_classes: int):
  """Expected error against labels noised as above: p + c (1 - p K / (K - 1))."""
  return p + clean_error * (1.0 - p * num_classes / (num_classes - 1))
