"""Width-masked 1-layer transformer for modular arithmetic (Nanda et al. 2023, "Progress measures for grokking").

Input: int tokens (B, 2) = (a, b); the model appends '=' (id p = num_classes), so the vocabulary is p + 1 and the
context is 3. Token + learned positional embedding, one causal attention layer (n_heads heads, no biases: W_Q, W_K,
W_V, W_O), residual add, a ReLU MLP (d_model -> mlp_ratio * d_model -> d_model, with biases), residual add, no
LayerNorm, and an unembedding without bias read at the last ('=') position.

Width masking: `width` = active d_model, a multiple of n_heads. Each head owns a block of max_width // n_heads
columns in the padded q/k/v/o tensors, of which the first width // n_heads are active; the MLP's first
mlp_ratio * width hidden units are active. As in layers.py, masks multiply the parameters, so masked entries are
exactly zero and get zero gradient; attention scores scale by 1/sqrt(active d_head), or under model.param=mup by
sqrt(base d_head) / d_head (muP's 1/d, equal to the standard scale at the base width).

Init: Nanda's variances with the *active* sizes, from padding-invariant uniform draws (layers.std_uniform): kernels
variance 1/fan_in, token and positional embeddings variance 1/d_model, MLP biases zero. (Nanda draws Gaussians and
scales W_out by 1/sqrt(d_model) and W_U by 1/sqrt(p); here every kernel uses its fan-in: d_model, or d_mlp for
W_out.) Every draw depends only on (key, element index), so a member's init is
bit-identical however far it is padded.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from ddjax.nn.layers import MaskedEmbed, channel_mask, std_uniform
from ddjax.nn.registry import tap

N_CTX = 3  # a, b, '='


class MaskedEinsum(nn.Module):
  """y = einsum(spec, x, kernel * mask) [+ bias * bias_mask]; the kernel has mask's shape, variance 1/fan_in."""
  spec: str
  use_bias: bool = False
  dtype: str | None = None  # compute dtype (None: the input's); parameters stay float32

  @nn.compact
  def __call__(self, x, mask, fan_in, bias_mask=None):
    scale = lax.rsqrt(jnp.maximum(jnp.asarray(fan_in, jnp.float32), 1.0))
    kernel = self.param('kernel', std_uniform(scale, mask), tuple(mask.shape))
    dtype = self.dtype or x.dtype
    y = jnp.einsum(self.spec, x.astype(dtype), (kernel * mask).astype(dtype))
    if self.use_bias:
      bias = self.param('bias', lambda k, s: jnp.zeros(s), tuple(bias_mask.shape))
      y = y + (bias * bias_mask).astype(dtype)
    return y


class MaskedAttention(nn.Module):
  """Causal multi-head self-attention without biases over x (B, T, D); heads are blocks of D // n_heads columns."""
  n_heads: int
  dtype: str | None = None

  @nn.compact
  def __call__(self, x, d_mask, width, param=0, base_width=1):
    d_pad, h = x.shape[-1], self.n_heads
    dh_pad = d_pad // h
    dh = width // h  # active d_head
    head_mask = jnp.broadcast_to(channel_mask(dh_pad, dh), (h, dh_pad))
    in_mask = d_mask[:, None, None] * head_mask[None]    # (D, H, Dh)
    out_mask = head_mask[:, :, None] * d_mask[None, None]  # (H, Dh, D)
    fan_in = jnp.sum(d_mask)
    proj = lambda name: MaskedEinsum('btd,dhk->bthk', dtype=self.dtype, name=name)(x, in_mask, fan_in)
    q, k, v = proj('query'), proj('key'), proj('value')
    scale = lax.rsqrt(jnp.maximum(dh, 1).astype(jnp.float32))
    # muP (ddjax.nn.param code 2): scores by 1/d_head, in SP form times sqrt(base d_head) so the base width is SP
    base = jnp.asarray(base_width, jnp.float32) / h
    scale = jnp.where(jnp.asarray(param) == 2, jnp.sqrt(base) / jnp.maximum(dh, 1).astype(jnp.float32), scale)
    scores = jnp.einsum('bqhk,bshk->bhqs', q, k).astype(jnp.float32) * scale
    t = x.shape[1]
    causal = jnp.tril(jnp.ones((t, t), bool))
    scores = jnp.where(causal, scores, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    z = jnp.einsum('bhqs,bshk->bqhk', weights, v)
    return MaskedEinsum('bqhk,hkd->bqd', dtype=self.dtype, name='out')(z, out_mask, jnp.sum(head_mask))


class Transformer(nn.Module):
  """Nanda et al.'s 1-layer modular-arithmetic transformer; `width` = d_model (a multiple of n_heads).

  x (B, 2) int tokens (a, b) -> logits (B, num_classes) at the '=' position. Parameters at max_width W (H heads,
  p = num_classes): embed/embedding (p+1, W), pos_embed (3, W), attn/{query,key,value}/kernel (W, H, W/H),
  attn/out/kernel (H, W/H, W), mlp_in/{kernel (W, rW), bias (rW,)}, mlp_out/{kernel (rW, W), bias (W,)},
  head/kernel (W, p) (the unembedding; every model names its output layer head), with r = mlp_ratio.
  """
  max_width: int
  num_classes: int = 113
  input_shape: Sequence[int] = (2,)
  conv: str = 'lax'  # unused; every model takes it
  dtype: str = 'float32'  # compute dtype of the matrix products; parameters stay float32
  n_heads: int = 4
  mlp_ratio: int = 4

  INPUT_LAYERS = ('embed', 'pos_embed')
  # The residual stream (B, 3, d) after the embeddings, after attention's residual add and after the MLP's; mlp_relu:
  # the MLP's hidden layer after its ReLU (B, 3, r d).
  TAPS = ('resid_embed', 'resid_attn', 'mlp_relu', 'resid_mlp')
  MEMBER_ARGS = ('param', 'base_width')  # model.param's code and model.base_width: muP scales attention by 1/d

  def __post_init__(self):
    if self.n_heads < 1 or self.max_width % self.n_heads:
      raise ValueError(f'Transformer: max_width={self.max_width} must be a multiple of n_heads={self.n_heads}')
    super().__post_init__()

  @nn.compact
  def __call__(self, x, width, train: bool = False, param=0, base_width=1):
    if isinstance(width, int) and width % self.n_heads:
      raise ValueError(f'Transformer: width={width} must be a multiple of n_heads={self.n_heads}')
    if x.ndim != 2 or x.shape[-1] != N_CTX - 1:
      raise ValueError(f'Transformer: expected tokens of shape (B, {N_CTX - 1}), got {x.shape}')
    p, d_pad = self.num_classes, self.max_width
    tokens = jnp.concatenate([x.astype(jnp.int32), jnp.full((x.shape[0], 1), p, jnp.int32)], axis=1)
    d_mask = channel_mask(d_pad, width)
    mlp_mask = channel_mask(self.mlp_ratio * d_pad, self.mlp_ratio * width)
    d_active = jnp.sum(d_mask)

    pos = self.param('pos_embed', std_uniform(lax.rsqrt(jnp.maximum(d_active, 1.0)), d_mask), (N_CTX, d_pad))
    h = MaskedEmbed(p + 1, scale_by_width=True, name='embed')(tokens, d_mask) + pos * d_mask
    h = h.astype(self.dtype)
    tap(self, 'resid_embed', h)

    h = h + MaskedAttention(self.n_heads, dtype=self.dtype, name='attn')(h, d_mask, width, param, base_width)
    tap(self, 'resid_attn', h)

    mlp_in = MaskedEinsum('btd,dm->btm', use_bias=True, dtype=self.dtype, name='mlp_in')
    mlp_out = MaskedEinsum('btm,md->btd', use_bias=True, dtype=self.dtype, name='mlp_out')
    hidden = nn.relu(mlp_in(h, d_mask[:, None] * mlp_mask[None], d_active, mlp_mask))
    tap(self, 'mlp_relu', hidden)
    h = h + mlp_out(hidden, mlp_mask[:, None] * d_mask[None], jnp.sum(mlp_mask), d_mask)
    tap(self, 'resid_mlp', h)

    unembed = MaskedEinsum('bd,dc->bc', dtype=self.dtype, name='head')
    return unembed(h[:, -1], jnp.broadcast_to(d_mask[:, None], (d_pad, p)), d_active)

  def param_roles(self, params) -> dict:
    """ddjax.nn.registry.Role of each parameter: q, k and v kernels (d, H, d_head) take fan-in d (axis 0); the
    attention output (H, d_head, d) takes H x d_head (axes 0, 1); embeddings have none."""
    import jax
    from ddjax.nn.registry import Role
    axes = {'query': (0,), 'key': (0,), 'value': (0,), 'out': (0, 1)}

    def role(path, leaf):
      names = [getattr(k, 'key', str(k)) for k in path]
      layer = 'output' if names[0] == 'head' else 'input' if names[0] in self.INPUT_LAYERS else 'hidden'
      fan_in = axes[names[1]] if names[0] == 'attn' else (0,) if names[-1] == 'kernel' else ()
      return Role(layer, fan_in)
    return jax.tree_util.tree_map_with_path(role, params)

  def macs(self, width: int) -> float:
    """Per example, all 3 positions through attention and MLP (scores and values over the full 3x3, as computed),
    unembedding at the last position only; embedding lookups are free."""
    if width % self.n_heads:
      raise ValueError(f'Transformer: width={width} must be a multiple of n_heads={self.n_heads}')
    t, d = N_CTX, width
    attention = 4 * t * d * d + 2 * t * t * d  # q, k, v, out projections; scores; weighted values
    mlp = 2 * t * d * self.mlp_ratio * d
    return attention + mlp + d * self.num_classes
