"""On-device input pipeline: uint8 -> [0, 1], augmentation (random crop with zero padding, horizontal flip, in
the order of torchvision's RandomCrop(32, padding=4) + RandomHorizontalFlip), then per-channel normalisation."""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
from jax import lax

AUGMENTATIONS = ('none', 'crop_flip')


def random_crop_flip(key: jax.Array, x_BxHxWxC: jax.Array, pad: int = 4) -> jax.Array:
  """Each image: zero-pad by `pad`, crop back at a uniform offset in [0, 2 pad], flip left-right with p = 1/2."""
  b, h, w, c = x_BxHxWxC.shape
  k_crop, k_flip = jax.random.split(key)
  offsets = jax.random.randint(k_crop, (b, 2), 0, 2 * pad + 1)
  padded = jnp.pad(x_BxHxWxC, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  crops = jax.vmap(lambda img, o: lax.dynamic_slice(img, (o[0], o[1], 0), (h, w, c)))(padded, offsets)
  flip = jax.random.uniform(k_flip, (b,)) < 0.5
  return jnp.where(flip[:, None, None, None], crops[:, :, ::-1, :], crops)


@dataclass(frozen=True)
class Preprocess:
  """What happens to a gathered batch on the device before the model sees it."""
  mean: tuple[float, ...] | None = None  # per channel, on the [0, 1] scale
  std: tuple[float, ...] | None = None
  augment: str = 'none'                  # 'none' | 'crop_flip' (training batches only)

  def __call__(self, x, key: jax.Array | None = None):
    if x.dtype == jnp.uint8:
      x = x.astype(jnp.float32) / 255.0
    if key is not None and self.augment == 'crop_flip':
      x = random_crop_flip(key, x)
    if self.mean is not None:
      x = (x - jnp.asarray(self.mean, x.dtype)) / jnp.asarray(self.std, x.dtype)
    return x
