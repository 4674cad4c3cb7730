from ddjax.nn.layers import (MaskedBatchNorm, MaskedConv, MaskedDense, MaskedLayerNorm, channel_mask,
                             invariant_uniform)
from ddjax.nn.models import CNN1D, MLP, PreActResNet
from ddjax.nn.registry import MODELS, ModelSpec, WidthMaskedModel, make_model, param_roles, register_model, taps
