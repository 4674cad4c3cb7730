"""The representations study's two MNIST-1D networks (docs/representations.md), with BatchNorm after every
convolution and tap points `layer0`..`layer3` at the four stages the study compares:

  resnet1d_small  Conv(1->w, k3) + BN + ReLU (layer0); two ResBlocks Conv-BN-ReLU-Conv-BN, skip added, ReLU (layer1,
                  layer2); global average pooling (layer3, the features h in R^w); Linear(w -> classes), no bias
  cnn1d_bn        [Conv + BN + ReLU + MaxPool(2)] x 2 at w channels (layer0, layer1), [Conv + BN + ReLU] x 2 at 2w
                  channels (layer2, layer3); global average pooling (features); Linear(2w -> classes)

Convolutions have kernel 3, stride 1, padding 1 and no bias (BatchNorm follows each). With `model.proj=d` > 0, a
bias-free linear projector maps the pooled features to dimension d before the classifier (generalised neural
collapse): d is a member key masked like width, so the padded model is built with the job's largest d (`proj`) and
each member is called with its own (`proj=` its traced d).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from ddjax.nn.layers import MaskedBatchNorm, MaskedConv, MaskedDense, channel_mask
from ddjax.nn.registry import register_model, tap


def conv_bn_relu(module: nn.Module, x, in_mask, out_mask, features: int, name: str, train: bool, relu: bool = True):
  """Conv(k3, s1, p1, no bias) -> BatchNorm (-> ReLU), masked: submodules `{name}_conv` and `{name}_bn`."""
  y = MaskedConv(features, (3,), 1, 1, use_bias=False, form=module.conv, dtype=module.dtype,
                 name=f'{name}_conv')(x, in_mask, out_mask)
  y = MaskedBatchNorm(name=f'{name}_bn')(y, out_mask, train)
  return nn.relu(y) if relu else y


def projected_head(module: nn.Module, h, mask, proj):
  """The classifier on features `h` (masked by `mask`): through the bias-free projector `proj` (d active of
  module.proj) first when module.proj > 0. `proj` None: every padded dimension active."""
  if module.proj:
    d_mask = channel_mask(module.proj, module.proj if proj is None else proj)
    h = MaskedDense(module.proj, use_bias=False, dtype=module.dtype, name='proj')(h, mask, d_mask)
    tap(module, 'projected', h)
    mask = d_mask
  return MaskedDense(module.num_classes, use_bias=module.head_bias, dtype=module.dtype, name='head')(
      h, mask, jnp.ones(module.num_classes))


class _SmallCNN(nn.Module):
  max_width: int
  num_classes: int = 10
  input_shape: Sequence[int] = (40,)
  conv: str = 'im2col'
  dtype: str = 'float32'
  proj: int = 0  # padded projector dimension (the job's largest model.proj); 0: no projector

  INPUT_LAYERS = ('stem_conv',)

  @property
  def SIZES(self) -> tuple[str, ...]:  # noqa: N802 - the protocol's name
    return ('proj',) if self.proj else ()

  @property
  def TAPS(self) -> tuple[str, ...]:  # noqa: N802 - the protocol's name
    return ('layer0', 'layer1', 'layer2', 'layer3') + self._extra_taps + (('projected',) if self.proj else ())

  def _signal(self, x):
    return x.reshape(x.shape[0], -1, 1) if x.ndim == 2 else x


@register_model('resnet1d_small', inputs=('signal',), options=('proj',),
                help='Conv-BN-ReLU stem, 2 ResBlocks (Conv-BN-ReLU-Conv-BN + skip, ReLU) at width w, average pool, '
                     'bias-free Linear; model.proj: a projector to d dimensions first (representations study)')
class ResNet1DSmall(_SmallCNN):
  head_bias: bool = False
  _extra_taps = ()

  @nn.compact
  def __call__(self, x, width, train: bool = False, proj=None):
    x = self._signal(x)
    mask = channel_mask(self.max_width, width)
    x = conv_bn_relu(self, x, jnp.ones(x.shape[-1]), mask, self.max_width, 'stem', train)
    tap(self, 'layer0', x)
    for b in range(2):
      r = conv_bn_relu(self, x, mask, mask, self.max_width, f'block{b}_1', train)
      r = conv_bn_relu(self, r, mask, mask, self.max_width, f'block{b}_2', train, relu=False)
      x = nn.relu(x + r)
      tap(self, f'layer{b + 1}', x)
    h = x.mean(axis=1)
    tap(self, 'layer3', h)
    return projected_head(self, h, mask, proj)

  def macs(self, width: int) -> float:
    length = self.input_shape[0]
    return length * 3 * (width + 4 * width * width) + width * max(self.proj, 0) + width * self.num_classes


@register_model('cnn1d_bn', inputs=('signal',), options=('proj',),
                help='[Conv-BN-ReLU-MaxPool] x 2 at w, [Conv-BN-ReLU] x 2 at 2w, average pool, Linear; model.proj: a '
                     'projector to d dimensions first (representations study)')
class CNN1DBN(_SmallCNN):
  head_bias: bool = True
  _extra_taps = ('features',)
  INPUT_LAYERS = ('layer0_conv',)

  @nn.compact
  def __call__(self, x, width, train: bool = False, proj=None):
    x = self._signal(x)
    narrow, wide = channel_mask(self.max_width, width), channel_mask(2 * self.max_width, 2 * width)
    layers = ((jnp.ones(x.shape[-1]), narrow, self.max_width, True), (narrow, narrow, self.max_width, True),
              (narrow, wide, 2 * self.max_width, False), (wide, wide, 2 * self.max_width, False))
    for i, (in_mask, out_mask, features, pool) in enumerate(layers):
      x = conv_bn_relu(self, x, in_mask, out_mask, features, f'layer{i}', train)
      if pool:
        x = nn.max_pool(x, (2,), strides=(2,))
      tap(self, f'layer{i}', x)
    h = x.mean(axis=1)
    tap(self, 'features', h)
    return projected_head(self, h, wide, proj)

  def macs(self, width: int) -> float:
    length = self.input_shape[0]
    convs = length * 3 * width + length // 2 * 3 * width * width + length // 4 * 3 * (2 * width * width
                                                                                    + 4 * width * width)
    return convs + 2 * width * max(self.proj, 0) + 2 * width * self.num_classes
