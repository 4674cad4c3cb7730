"""The built-in width-masked models, each registered (ddjax.nn.registry, which states the protocol they follow).

`width` is a traced scalar per member; the masks it implies act on parameters (see layers.py). `macs(width)` gives
multiply-accumulates per example of the dense width-`width` model, the cost model of the width buckets.
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from ddjax.nn.layers import MaskedBatchNorm, MaskedConv, MaskedDense, MaskedEmbed, MaskedLayerNorm, channel_mask
from ddjax.nn.registry import make_model, register_model, tap  # noqa: F401 - make_model: its old home

FLAT = ('signal', 'image', 'grid', 'vector')  # inputs a model that flattens them can read


@register_model('mlp', inputs=FLAT, options=('depth',),
                help='flattened input -> depth x [Dense(n), ReLU] -> Dense; model.depth: hidden layers')
class MLP(nn.Module):
  """x (B, D) -> [Dense(width) -> ReLU] x depth -> Dense(num_classes). With linear=True the layers have no biases and
  nothing between them: a deep linear network (Saxe et al. 2014), x -> x K_1 ... K_{depth+1}, whose end-to-end map
  is the product of its kernels."""
  max_width: int
  num_classes: int = 10
  depth: int = 2
  input_shape: Sequence[int] = (40,)
  conv: str = 'im2col'  # unused; every model takes it
  dtype: str = 'float32'  # compute dtype of dense and conv layers; parameters stay float32
  linear: bool = False  # no biases, no ReLU (model.name=deep_linear)
  bias: bool = False    # with linear: biases after all (model.bias)

  INPUT_LAYERS = ('dense0',)

  @property
  def TAPS(self) -> tuple[str, ...]:  # noqa: N802 - the protocol's name
    return tuple(f'hidden{i}' for i in range(self.depth))  # each hidden layer after its ReLU

  @nn.compact
  def __call__(self, x, width, train: bool = False):
    x = x.reshape(x.shape[0], -1)
    in_mask = jnp.ones(x.shape[-1])
    hidden = channel_mask(self.max_width, width)
    act = (lambda h: h) if self.linear else nn.relu
    for i in range(self.depth):
      dense = MaskedDense(self.max_width, use_bias=not self.linear or self.bias, dtype=self.dtype, name=f'dense{i}')
      x = act(dense(x, in_mask, hidden))
      tap(self, f'hidden{i}', x)
      in_mask = hidden
    head = MaskedDense(self.num_classes, use_bias=not self.linear or self.bias, dtype=self.dtype, name='head')
    return head(x, in_mask, jnp.ones(self.num_classes))

  def kernels(self, params) -> list:
    """The layers' (in, out) kernels, input first (masked entries are zero)."""
    return [params[f'dense{i}']['kernel'] for i in range(self.depth)] + [params['head']['kernel']]

  def macs(self, width: int) -> float:
    d = math.prod(self.input_shape)
    return d * width + (self.depth - 1) * width * width + width * self.num_classes


@register_model('cnn1d', inputs=('signal',), help="MNIST-1D's 3-layer CNN: 3 x [Conv(c), ReLU] -> Dense")
class CNN1D(nn.Module):
  """MNIST-1D's 3-layer CNN: Conv(5,s2,p1)-ReLU-Conv(3,s2,p1)-ReLU-Conv(3,s2,p1)-ReLU-Dense(num_classes)."""
  max_width: int
  num_classes: int = 10
  input_shape: Sequence[int] = (40,)
  conv: str = 'im2col'
  dtype: str = 'float32'

  LAYERS = ((5, 2, 1), (3, 2, 1), (3, 2, 1))  # (kernel, stride, padding)
  INPUT_LAYERS = ('conv0',)
  TAPS = ('relu0', 'relu1', 'relu2')  # each convolution after its ReLU

  @nn.compact
  def __call__(self, x, width, train: bool = False):
    x = x.reshape(x.shape[0], -1, 1) if x.ndim == 2 else x
    in_mask = jnp.ones(x.shape[-1])
    mask = channel_mask(self.max_width, width)
    for i, (k, s, p) in enumerate(self.LAYERS):
      conv = MaskedConv(self.max_width, (k,), s, p, form=self.conv, dtype=self.dtype, name=f'conv{i}')
      x = nn.relu(conv(x, in_mask, mask))
      tap(self, f'relu{i}', x)
      in_mask = mask
    # The head contracts (L, C) directly: a (L, C, classes) kernel is the flatten-then-Dense of PyTorch.
    in_mask = jnp.broadcast_to(mask, x.shape[1:])
    return MaskedDense(self.num_classes, dtype=self.dtype, name='head')(x, in_mask, jnp.ones(self.num_classes))

  def macs(self, width: int) -> float:
    length, cin, total = self.input_shape[0], (self.input_shape[1] if len(self.input_shape) > 1 else 1), 0
    for k, s, p in self.LAYERS:
      length = (length + 2 * p - k) // s + 1
      total += length * k * cin * width
      cin = width
    return total + length * width * self.num_classes


@register_model('embed_mlp', inputs=('tokens',), help='token embeddings of width d, concatenated -> Dense(d), ReLU '
                '-> Dense (grokking)')
class EmbedMLP(nn.Module):
  """Tokens (a, b) -> a shared embedding of width d (variance 1, as PyTorch's nn.Embedding) -> concatenated (2d) ->
  Dense(d) -> ReLU -> Dense(num_classes): the grokking MLP of Kitouni's simple-grokking (d = 128, p = 53)."""
  max_width: int
  num_classes: int = 53
  input_shape: Sequence[int] = (2,)
  conv: str = 'im2col'
  dtype: str = 'float32'

  INPUT_LAYERS = ('embed',)
  TAPS = ('embeddings', 'relu')  # the embeddings (B, 2, d); the hidden layer after its ReLU

  @nn.compact
  def __call__(self, x, width, train: bool = False):
    mask = channel_mask(self.max_width, width)
    e = MaskedEmbed(self.num_classes, name='embed')(x, mask)  # (B, 2, W)
    tap(self, 'embeddings', e)
    h = MaskedDense(self.max_width, dtype=self.dtype, name='hidden')(e, jnp.broadcast_to(mask, e.shape[1:]), mask)
    h = nn.relu(h)
    tap(self, 'relu', h)
    return MaskedDense(self.num_classes, dtype=self.dtype, name='head')(h, mask, jnp.ones(self.num_classes))

  def macs(self, width: int) -> float:
    return 2 * width * width + width * self.num_classes


@register_model('resmlp', inputs=FLAT, options=('depth',), help='residual MLP with LayerNorm; model.depth: '
                'residual blocks')
class ResMLP(nn.Module):
  """Flattened input -> Dense(width) -> depth x [h + Dense(ReLU(Dense(LayerNorm(h))))] -> LayerNorm -> ReLU ->
  Dense(num_classes): a residual MLP with LayerNorm (the m-height regressor's MLP variant)."""
  max_width: int
  num_classes: int = 1
  depth: int = 2
  input_shape: Sequence[int] = (36,)
  conv: str = 'im2col'
  dtype: str = 'float32'

  INPUT_LAYERS = ('stem',)

  @property
  def TAPS(self) -> tuple[str, ...]:  # noqa: N802 - the protocol's name
    return ('stem_out', *(f'block{i}_out' for i in range(self.depth)), 'final')  # post-residual; final: head's input

  @nn.compact
  def __call__(self, x, width, train: bool = False):
    x = x.reshape(x.shape[0], -1)
    mask = channel_mask(self.max_width, width)
    h = MaskedDense(self.max_width, dtype=self.dtype, name='stem')(x, jnp.ones(x.shape[-1]), mask)
    tap(self, 'stem_out', h)
    for i in range(self.depth):
      r = MaskedLayerNorm(name=f'block{i}_ln')(h, mask)
      r = nn.relu(MaskedDense(self.max_width, dtype=self.dtype, name=f'block{i}_dense0')(r, mask, mask))
      h = h + MaskedDense(self.max_width, dtype=self.dtype, name=f'block{i}_dense1')(r, mask, mask)
      tap(self, f'block{i}_out', h)
    h = nn.relu(MaskedLayerNorm(name='final_ln')(h, mask))
    tap(self, 'final', h)
    return MaskedDense(self.num_classes, dtype=self.dtype, name='head')(h, mask, jnp.ones(self.num_classes))

  def macs(self, width: int) -> float:
    return math.prod(self.input_shape) * width + 2 * self.depth * width * width + width * self.num_classes


def _norm(kind: str, name: str):
  """A masked norm layer called as norm(x, mask, train): BatchNorm, LayerNorm (over channels, per position), or
  none (the identity: model.norm=none, the "BN off" variant)."""
  if kind == 'batch':
    return MaskedBatchNorm(name=name)
  if kind == 'none':
    return lambda x, mask, train: x
  ln = MaskedLayerNorm(name=name)
  return lambda x, mask, train: ln(x, mask)


class PreActBlock(nn.Module):
  """BN-ReLU-conv3(s)-BN-ReLU-conv3; shortcut conv1x1(s) on relu(bn1(x)) when shape changes, else x."""
  features: int
  stride: int
  ndim: int
  conv: str
  dtype: str = 'float32'
  norm: str = 'batch'  # 'batch' | 'layer' | 'none'

  @nn.compact
  def __call__(self, x, in_mask, out_mask, train: bool):
    k3, k1 = (3,) * self.ndim, (1,) * self.ndim
    out = nn.relu(_norm(self.norm, 'bn1')(x, in_mask, train))
    if self.stride != 1 or x.shape[-1] != self.features:
      shortcut = MaskedConv(self.features, k1, self.stride, 0, use_bias=False, form=self.conv, dtype=self.dtype,
                            name='shortcut')(out, in_mask, out_mask)
    else:
      shortcut = x
    out = MaskedConv(self.features, k3, self.stride, 1, use_bias=False, form=self.conv, dtype=self.dtype,
                     name='conv1')(out, in_mask, out_mask)
    out = nn.relu(_norm(self.norm, 'bn2')(out, out_mask, train))
    out = MaskedConv(self.features, k3, 1, 1, use_bias=False, form=self.conv, dtype=self.dtype,
                     name='conv2')(out, out_mask, out_mask)
    return out + shortcut


class PreActResNet(nn.Module):
  """Pre-activation ResNet with stage widths width * stage_mults (ResNet18k: ndim=2, blocks 2,2,2,2, mults 1,2,4,8).

  Stem conv3 (no bias, nothing after it), stages of PreActBlocks, global average pool, Dense with bias.
  """
  max_width: int
  num_classes: int = 10
  input_shape: Sequence[int] = (40,)
  conv: str = 'im2col'
  stage_blocks: Sequence[int] = (1, 1, 1)
  stage_mults: Sequence[int] = (1, 2, 4)
  stage_strides: Sequence[int] = (1, 2, 2)
  ndim: int = 1
  dtype: str = 'float32'
  norm: str = 'batch'  # 'batch' | 'layer' (LayerNorm over the channels of each position) | 'none'
  final_norm: bool = False  # norm and ReLU after the last block, before the pool (resnet_ln)
  head_kind: str = 'linear'  # 'linear' | 'softplus' (regression of log2 h: log2(1 + softplus(z)) >= 0)

  INPUT_LAYERS = ('stem',)

  @property
  def TAPS(self) -> tuple[str, ...]:  # noqa: N802 - the protocol's name
    blocks = [f'stage{s}_block{b}_out' for s, n in enumerate(self.stage_blocks) for b in range(n)]
    return ('stem_out', *blocks, *(('final',) if self.final_norm else ()), 'pool')  # pool: the head's input

  @nn.compact
  def __call__(self, x, width, train: bool = False):
    if x.ndim == self.ndim + 1:
      x = x[..., None]
    k3 = (3,) * self.ndim
    mask = channel_mask(self.max_width, width)
    x = MaskedConv(self.max_width, k3, 1, 1, use_bias=False, form=self.conv, dtype=self.dtype, name='stem')(
        x, jnp.ones(x.shape[-1]), mask)
    tap(self, 'stem_out', x)
    for s, (blocks, mult, stride) in enumerate(zip(self.stage_blocks, self.stage_mults, self.stage_strides)):
      out_mask = channel_mask(self.max_width * mult, width * mult)
      for b in range(blocks):
        x = PreActBlock(self.max_width * mult, stride if b == 0 else 1, self.ndim, self.conv,
                        self.dtype, self.norm, name=f'stage{s}_block{b}')(x, mask, out_mask, train)
        tap(self, f'stage{s}_block{b}_out', x)
        mask = out_mask
    if self.final_norm:
      x = nn.relu(_norm(self.norm, 'final_norm')(x, mask, train))
      tap(self, 'final', x)
    x = x.mean(axis=tuple(range(1, 1 + self.ndim)))
    tap(self, 'pool', x)
    return output_head(self.head_kind, MaskedDense(self.num_classes, dtype=self.dtype, name='head')(
        x, mask, jnp.ones(self.num_classes)))

  def macs(self, width: int) -> float:
    spatial = list(self.input_shape[:self.ndim])
    cin = self.input_shape[self.ndim] if len(self.input_shape) > self.ndim else 1
    k3 = 3 ** self.ndim
    total = math.prod(spatial) * k3 * cin * width
    cin = width
    for blocks, mult, stride in zip(self.stage_blocks, self.stage_mults, self.stage_strides):
      for b in range(blocks):
        s = stride if b == 0 else 1
        cout = width * mult
        spatial = [(n + 2 - 3) // s + 1 for n in spatial]
        pix = math.prod(spatial)
        total += pix * k3 * cin * cout + pix * k3 * cout * cout
        if s != 1 or cin != cout:
          total += pix * cin * cout
        cin = cout
    return total + cin * self.num_classes


def output_head(kind: str, z):
  """model.head: the output layer's z as it is (linear), or log2(1 + softplus(z)) (softplus): a regression of
  log2 h for a quantity h >= 1 (an m-height) through h = 1 + softplus(z), so predictions are never below 0."""
  if kind == 'linear':
    return z
  return jnp.log2(1.0 + nn.softplus(z.astype(jnp.float32)))


def batch_norm(norm: str) -> str:
  """model.norm of a BatchNorm model: auto (its own, BatchNorm), batch, or none."""
  return 'batch' if norm == 'auto' else norm


@register_model('resnet1d', inputs=('signal',), options=('norm',),
                help='pre-activation ResNet with stages c, 2c, 4c (MNIST-1D)')
def resnet1d(max_width: int, num_classes: int = 10, input_shape: Sequence[int] = (40,), conv: str = 'im2col',
             dtype: str = 'float32', norm: str = 'auto') -> PreActResNet:
  return PreActResNet(max_width=max_width, num_classes=num_classes, input_shape=tuple(input_shape), conv=conv,
                      dtype=dtype, norm=batch_norm(norm))


@register_model('resnet18k', inputs=('image',), options=('norm',),
                help="Nakkiran et al.'s pre-activation ResNet18 with stages k, 2k, 4k, 8k")
def resnet18k(max_width: int, num_classes: int = 10, input_shape: Sequence[int] = (32, 32, 3),
              conv: str = 'lax', dtype: str = 'float32', norm: str = 'auto') -> PreActResNet:
  """Nakkiran et al.'s pre-activation ResNet18 with stage widths k, 2k, 4k, 8k (k = 64: 11,171,146 parameters)."""
  return PreActResNet(max_width=max_width, num_classes=num_classes, input_shape=tuple(input_shape), conv=conv,
                      stage_blocks=(2, 2, 2, 2), stage_mults=(1, 2, 4, 8), stage_strides=(1, 2, 2, 2), ndim=2,
                      dtype=dtype, norm=batch_norm(norm))


@register_model('resnet2d_ln', inputs=('image', 'grid'), help='small pre-activation conv ResNet with LayerNorm '
                '(m-height)')
def resnet2d_ln(max_width: int, num_classes: int = 1, input_shape: Sequence[int] = (6, 6, 8),
               conv: str = 'lax', dtype: str = 'float32') -> PreActResNet:
  """A small pre-activation conv ResNet with LayerNorm for small 2-D inputs (the m-height regressor's conv variant):
  stages of widths k, 2k, one block each, stride 1 (the input is only a few positions wide)."""
  return PreActResNet(max_width=max_width, num_classes=num_classes, input_shape=tuple(input_shape), conv=conv,
                      stage_blocks=(1, 1), stage_mults=(1, 2), stage_strides=(1, 1), ndim=2, dtype=dtype,
                      norm='layer')


@register_model('resnet_ln', inputs=('image', 'grid'), options=('depth', 'head'),
                help='constant-width pre-activation conv ResNet with LayerNorm, model.depth blocks (the m-height '
                     'expert: 64 x 5)')
def resnet_ln(max_width: int, num_classes: int = 1, input_shape: Sequence[int] = (6, 6, 8), conv: str = 'lax',
              dtype: str = 'float32', depth: int = 5, head: str = 'linear') -> PreActResNet:
  """The m-height project's expert: stem conv3 to `width` channels, `depth` pre-activation blocks of that width
  (LayerNorm-ReLU-conv3-LayerNorm-ReLU-conv3 plus the identity, stride 1), LayerNorm-ReLU, global average pool,
  Dense; `head='softplus'` outputs log2(1 + softplus(z)) (output_head)."""
  return PreActResNet(max_width=max_width, num_classes=num_classes, input_shape=tuple(input_shape), conv=conv,
                      stage_blocks=(depth,), stage_mults=(1,), stage_strides=(1,), ndim=2, dtype=dtype, norm='layer',
                      final_norm=True, head_kind=head)


@register_model('transformer', inputs=('tokens',), help="Nanda et al.'s one-layer transformer, d_model = width "
                '(grokking)')
def _transformer(**kw):
  from ddjax.nn.transformer import Transformer
  return Transformer(**kw)


@register_model('deep_linear', inputs=('vector', 'signal', 'grid'), options=('depth', 'bias'), linear=True,
                help='model.depth bias-free hidden layers and a bias-free output layer, nothing between '
                     'them')
def deep_linear(**kw) -> MLP:
  """A deep linear network (Saxe et al. 2014): MLP(linear=True)."""
  return MLP(linear=True, **kw)


from ddjax.nn import small_cnns  # noqa: E402, F401 - registers resnet1d_small and cnn1d_bn
