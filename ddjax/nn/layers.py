"""Width-masked Flax Linen layers.

Every layer gets 0/1 channel masks as inputs next to its activations. A mask multiplies the *parameters* (kernel
rows and columns, bias, norm scale and bias), so masked parameters are exactly zero from init on, get zero
gradient, and nothing flows out of a masked channel. Init draws are scaled by the *active* fan-in, and every draw
depends only on (key, element index), so a member's init does not depend on how far it is padded.
"""

from __future__ import annotations

import itertools
import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax


def channel_mask(padded: int, active) -> jax.Array:
  """1.0 for the first `active` of `padded` channels, 0.0 after."""
  return (jnp.arange(padded) < active).astype(jnp.float32)


def invariant_uniform(key: jax.Array, shape: Sequence[int]) -> jax.Array:
  """U(-1, 1) draws where element i depends only on (key, i): padding a tensor leaves its slice unchanged.

  Uniform rather than Gaussian: a uniform draw is exact bit arithmetic, so the active block is bit-identical however
  far it is padded, whereas a Gaussian's erf_inv can round differently in differently fused programs."""
  index = jnp.indices(tuple(shape)).reshape(len(shape), -1).T

  def draw(ix):
    k = key
    for d in range(len(shape)):
      k = jax.random.fold_in(k, ix[d])
    return jax.random.uniform(k, (), minval=-1.0, maxval=1.0)

  return jax.vmap(draw)(index).reshape(shape)


def std_uniform(std, mask):
  """Padding-invariant U(-sqrt(3), sqrt(3)) * std draws (mean 0, variance std**2), masked."""
  return lambda key, shape: invariant_uniform(key, shape) * (math.sqrt(3.0) * std) * mask


def _fan_in_init(scale, mask):
  """PyTorch's default init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), with the active fan_in, then masked."""
  return lambda key, shape: invariant_uniform(key, shape) * scale * mask


class MaskedDense(nn.Module):
  """Dense layer over the trailing feature axes of x: `in_mask` has the shape of those axes (Din,) or (L, C),
  `out_mask` is (Dout,). A multi-axis input keeps each element's init index independent of the padding."""
  features: int
  use_bias: bool = True
  dtype: str | None = None  # compute dtype (None: the input's); parameters stay float32

  @nn.compact
  def __call__(self, x, in_mask, out_mask):
    mask_IxO = in_mask[..., None] * out_mask
    scale = lax.rsqrt(jnp.maximum(jnp.sum(in_mask), 1.0))
    kernel = self.param('kernel', _fan_in_init(scale, mask_IxO), tuple(in_mask.shape) + (self.features,))
    dtype = self.dtype or x.dtype
    n_in = in_mask.ndim
    y = jnp.tensordot(x.astype(dtype), (kernel * mask_IxO).astype(dtype), axes=n_in)
    if self.use_bias:
      bias = self.param('bias', _fan_in_init(scale, out_mask), (self.features,))
      y = y + (bias * out_mask).astype(dtype)
    return y


class MaskedEmbed(nn.Module):
  """Token lookup in a (num_embeddings, D) table whose columns are masked (D = the mask's length). Init variance 1
  (PyTorch's nn.Embedding, from uniform draws), or 1/active D with scale_by_width (Nanda's transformer)."""
  num_embeddings: int
  scale_by_width: bool = False

  @nn.compact
  def __call__(self, tokens, mask):
    std = lax.rsqrt(jnp.maximum(jnp.sum(mask), 1.0)) if self.scale_by_width else 1.0
    table = self.param('embedding', std_uniform(std, mask), (self.num_embeddings, mask.shape[0]))
    return jnp.take(table * mask, tokens, axis=0)


def _pad_spatial(x, padding: Sequence[int]):
  return jnp.pad(x, [(0, 0)] + [(p, p) for p in padding] + [(0, 0)])


def im2col_conv(x, kernel, strides: Sequence[int], padding: Sequence[int]):
  """Convolution as patches + one matrix product. x: (B, *S, Cin), kernel: (*K, Cin, Cout)."""
  nd = kernel.ndim - 2
  x = _pad_spatial(x, padding)
  ksize = kernel.shape[:nd]
  out = [(x.shape[1 + d] - ksize[d]) // strides[d] + 1 for d in range(nd)]
  patches = []
  for offset in itertools.product(*(range(k) for k in ksize)):
    start = (0,) + tuple(offset) + (0,)
    limit = (x.shape[0],) + tuple(offset[d] + (out[d] - 1) * strides[d] + 1 for d in range(nd)) + (x.shape[-1],)
    patches.append(lax.slice(x, start, limit, (1,) + tuple(strides) + (1,)))
  cols = jnp.concatenate(patches, axis=-1)  # (B, *out, prod(K) * Cin), kernel-position major
  return jnp.dot(cols, kernel.reshape(-1, kernel.shape[-1]))


def lax_conv(x, kernel, strides: Sequence[int], padding: Sequence[int]):
  nd = kernel.ndim - 2
  spatial = 'DHW'[-nd:]
  dn = ('N' + spatial + 'C', spatial + 'IO', 'N' + spatial + 'C')
  return lax.conv_general_dilated(x, kernel, tuple(strides), [(p, p) for p in padding],
                                  dimension_numbers=dn)


CONV_FORMS = {'lax': lax_conv, 'im2col': im2col_conv}


class MaskedConv(nn.Module):
  """N-d convolution with symmetric zero padding (PyTorch semantics), channels last, masked channels."""
  features: int
  kernel_size: Sequence[int]
  strides: Sequence[int] | int = 1
  padding: Sequence[int] | int = 0
  use_bias: bool = True
  form: str = 'im2col'  # 'lax' or 'im2col'; the same numbers either way
  dtype: str | None = None  # compute dtype (None: the input's)

  @nn.compact
  def __call__(self, x, in_mask, out_mask):
    nd = len(self.kernel_size)
    strides = (self.strides,) * nd if isinstance(self.strides, int) else tuple(self.strides)
    padding = (self.padding,) * nd if isinstance(self.padding, int) else tuple(self.padding)
    mask_IxO = in_mask[:, None] * out_mask[None, :]
    scale = lax.rsqrt(jnp.maximum(jnp.sum(in_mask), 1.0) * math.prod(self.kernel_size))
    shape = tuple(self.kernel_size) + (x.shape[-1], self.features)
    kernel = self.param('kernel', _fan_in_init(scale, mask_IxO), shape)
    dtype = self.dtype or x.dtype
    y = CONV_FORMS[self.form](x.astype(dtype), (kernel * mask_IxO).astype(dtype), strides, padding)
    if self.use_bias:
      bias = self.param('bias', _fan_in_init(scale, out_mask), (self.features,))
      y = y + (bias * out_mask).astype(dtype)
    return y


class MaskedBatchNorm(nn.Module):
  """BatchNorm over all but the last axis, with masked scale and bias and running statistics.

  `momentum` follows Flax (0.9 = PyTorch's momentum 0.1); the running variance is the biased batch variance.
  """
  momentum: float = 0.9
  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x, mask, train: bool):
    c = x.shape[-1]
    scale = self.param('scale', lambda k, s: jnp.ones(s) * mask, (c,))
    bias = self.param('bias', lambda k, s: jnp.zeros(s), (c,))
    ra_mean = self.variable('batch_stats', 'mean', lambda: jnp.zeros((c,)))
    ra_var = self.variable('batch_stats', 'var', lambda: jnp.ones((c,)))
    axes = tuple(range(x.ndim - 1))
    if train:
      x32 = x.astype(jnp.float32)
      mean = x32.mean(axes)
      var = jnp.maximum((x32 * x32).mean(axes) - mean * mean, 0.0)
      if not self.is_initializing():
        ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
        ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
    else:
      mean, var = ra_mean.value, ra_var.value
    y = (x - mean) * lax.rsqrt(var + self.epsilon) * (scale * mask) + bias * mask
    return y.astype(x.dtype)


class MaskedLayerNorm(nn.Module):
  """LayerNorm over the last axis whose mean and variance count active features only."""
  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x, mask):
    c = x.shape[-1]
    scale = self.param('scale', lambda k, s: jnp.ones(s) * mask, (c,))
    bias = self.param('bias', lambda k, s: jnp.zeros(s), (c,))
    n = jnp.maximum(mask.sum(), 1.0)
    mean = (x * mask).sum(-1, keepdims=True) / n
    centred = (x - mean) * mask
    var = (centred * centred).sum(-1, keepdims=True) / n
    return centred * lax.rsqrt(var + self.epsilon) * (scale * mask) + bias * mask
