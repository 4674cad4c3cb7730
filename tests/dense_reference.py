"""Plain Flax models (nn.Dense, nn.Conv, nn.BatchNorm) of one fixed width: the independent reference that a masked
member of that width must reproduce. Names match ddjax.nn.models so parameters can be sliced across."""

import flax.linen as nn
import jax
import jax.numpy as jnp


class DenseMLP(nn.Module):
  width: int
  depth: int = 2
  num_classes: int = 10

  @nn.compact
  def __call__(self, x, train=False):
    x = x.reshape(x.shape[0], -1)
    for i in range(self.depth):
      x = nn.relu(nn.Dense(self.width, name=f'dense{i}')(x))
    return nn.Dense(self.num_classes, name='head')(x)


class DenseCNN1D(nn.Module):
  width: int
  num_classes: int = 10

  @nn.compact
  def __call__(self, x, train=False):
    x = x.reshape(x.shape[0], -1, 1)
    for i, (k, s, p) in enumerate(((5, 2, 1), (3, 2, 1), (3, 2, 1))):
      x = nn.relu(nn.Conv(self.width, (k,), s, [(p, p)], name=f'conv{i}')(x))
    return nn.Dense(self.num_classes, name='head')(x.reshape(x.shape[0], -1))


class DenseBlock(nn.Module):
  features: int
  stride: int
  ndim: int = 1
  norm: str = 'batch'  # or 'layer': LayerNorm over the channels of each position; 'none': no norm

  @nn.compact
  def __call__(self, x, train):
    if self.norm == 'batch':
      bn = lambda name: nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name=name)
    elif self.norm == 'none':  # BatchNorm off
      bn = lambda name: (lambda x: x)
    else:
      bn = lambda name: nn.LayerNorm(epsilon=1e-5, use_fast_variance=False, name=name)
    k1, k3, p0, p1 = (1,) * self.ndim, (3,) * self.ndim, [(0, 0)] * self.ndim, [(1, 1)] * self.ndim
    out = nn.relu(bn('bn1')(x))
    shortcut = x
    if self.stride != 1 or x.shape[-1] != self.features:
      shortcut = nn.Conv(self.features, k1, self.stride, p0, use_bias=False, name='shortcut')(out)
    out = nn.Conv(self.features, k3, self.stride, p1, use_bias=False, name='conv1')(out)
    out = nn.relu(bn('bn2')(out))
    out = nn.Conv(self.features, k3, 1, p1, use_bias=False, name='conv2')(out)
    return out + shortcut


class DenseResNet1D(nn.Module):
  width: int
  num_classes: int = 10
  norm: str = 'batch'

  @nn.compact
  def __call__(self, x, train=False):
    x = x[..., None]
    x = nn.Conv(self.width, (3,), 1, [(1, 1)], use_bias=False, name='stem')(x)
    for s, (mult, stride) in enumerate(zip((1, 2, 4), (1, 2, 2))):
      x = DenseBlock(self.width * mult, stride, 1, self.norm, name=f'stage{s}_block0')(x, train)
    return nn.Dense(self.num_classes, name='head')(jnp.mean(x, axis=1))


class DenseResNet18k(nn.Module):
  """The authors' resnet18k.py in Flax: stem conv3 (no BN after), PreActBlocks [2,2,2,2], widths k..8k,
  global average pool (avg_pool(4) on 4x4), Linear with bias."""
  width: int
  num_classes: int = 10

  @nn.compact
  def __call__(self, x, train=False):
    x = nn.Conv(self.width, (3, 3), 1, [(1, 1)] * 2, use_bias=False, name='stem')(x)
    for s, (mult, stride) in enumerate(zip((1, 2, 4, 8), (1, 2, 2, 2))):
      for b in range(2):
        x = DenseBlock(self.width * mult, stride if b == 0 else 1, 2, name=f'stage{s}_block{b}')(x, train)
    return nn.Dense(self.num_classes, name='head')(jnp.mean(x, axis=(1, 2)))


class DenseResNet2dLN(nn.Module):
  """The m-height regressor's conv variant: stem conv3, one LayerNorm pre-activation block per stage of widths k and
  2k (stride 1), global average pool, Dense with bias."""
  width: int
  num_classes: int = 1

  @nn.compact
  def __call__(self, x, train=False):
    x = nn.Conv(self.width, (3, 3), 1, [(1, 1)] * 2, use_bias=False, name='stem')(x)
    for s, mult in enumerate((1, 2)):
      x = DenseBlock(self.width * mult, 1, 2, 'layer', name=f'stage{s}_block0')(x, train)
    return nn.Dense(self.num_classes, name='head')(jnp.mean(x, axis=(1, 2)))


class DenseResNetLN(nn.Module):
  """The m-height expert at width k: stem conv3, `depth` LayerNorm pre-activation blocks of width k (stride 1), final
  LayerNorm-ReLU, global average pool, Dense; head 'softplus' outputs log2(1 + softplus(z))."""
  width: int
  num_classes: int = 1
  depth: int = 5
  head: str = 'linear'

  @nn.compact
  def __call__(self, x, train=False):
    x = nn.Conv(self.width, (3, 3), 1, [(1, 1)] * 2, use_bias=False, name='stem')(x)
    for b in range(self.depth):
      x = DenseBlock(self.width, 1, 2, 'layer', name=f'stage0_block{b}')(x, train)
    x = nn.relu(nn.LayerNorm(epsilon=1e-5, use_fast_variance=False, name='final_norm')(x))
    z = nn.Dense(self.num_classes, name='head')(jnp.mean(x, axis=(1, 2)))
    return z if self.head == 'linear' else jnp.log2(1.0 + jax.nn.softplus(z))


class DenseEmbedMLP(nn.Module):
  """Kitouni's grokking MLP at width d: nn.Embed(p, d), both tokens' embeddings concatenated, Dense-ReLU-Dense."""
  width: int
  num_classes: int = 7

  @nn.compact
  def __call__(self, x, train=False):
    e = nn.Embed(self.num_classes, self.width, name='embed')(x).reshape(x.shape[0], -1)
    return nn.Dense(self.num_classes, name='head')(nn.relu(nn.Dense(self.width, name='hidden')(e)))


class DenseResMLP(nn.Module):
  """Residual MLP with pre-LayerNorm blocks and a final LayerNorm-ReLU before the head."""
  width: int
  depth: int = 2
  num_classes: int = 1

  @nn.compact
  def __call__(self, x, train=False):
    h = nn.Dense(self.width, name='stem')(x.reshape(x.shape[0], -1))
    for i in range(self.depth):
      r = nn.LayerNorm(epsilon=1e-5, use_fast_variance=False, name=f'block{i}_ln')(h)
      r = nn.relu(nn.Dense(self.width, name=f'block{i}_dense0')(r))
      h = h + nn.Dense(self.width, name=f'block{i}_dense1')(r)
    h = nn.relu(nn.LayerNorm(epsilon=1e-5, use_fast_variance=False, name='final_ln')(h))
    return nn.Dense(self.num_classes, name='head')(h)


def _conv_bn(x, features, name, train, relu=True):
  x = nn.Conv(features, (3,), 1, [(1, 1)], use_bias=False, name=f'{name}_conv')(x)
  x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name=f'{name}_bn')(x)
  return nn.relu(x) if relu else x


def _head(h, proj, num_classes, bias):
  if proj:
    h = nn.Dense(proj, use_bias=False, name='proj')(h)
  return nn.Dense(num_classes, use_bias=bias, name='head')(h)


class DenseResNet1DSmall(nn.Module):
  """The representations study's small ResNet at width w: Conv-BN-ReLU stem, two ResBlocks (Conv-BN-ReLU-Conv-BN,
  skip added, ReLU), global average pool, an optional bias-free projector to `proj` dimensions, bias-free Linear."""
  width: int
  num_classes: int = 10
  proj: int = 0

  @nn.compact
  def __call__(self, x, train=False):
    x = _conv_bn(x[..., None], self.width, 'stem', train)
    for b in range(2):
      r = _conv_bn(x, self.width, f'block{b}_1', train)
      x = nn.relu(x + _conv_bn(r, self.width, f'block{b}_2', train, relu=False))
    return _head(x.mean(axis=1), self.proj, self.num_classes, False)


class DenseCNN1DBN(nn.Module):
  """[Conv-BN-ReLU-MaxPool(2)] x 2 at w channels, [Conv-BN-ReLU] x 2 at 2w, global average pool, Linear."""
  width: int
  num_classes: int = 10
  proj: int = 0

  @nn.compact
  def __call__(self, x, train=False):
    x = x[..., None]
    for i, (features, pool) in enumerate(((self.width, True), (self.width, True), (2 * self.width, False),
                                          (2 * self.width, False))):
      x = _conv_bn(x, features, f'layer{i}', train)
      if pool:
        x = nn.max_pool(x, (2,), strides=(2,))
    return _head(x.mean(axis=1), self.proj, self.num_classes, True)
