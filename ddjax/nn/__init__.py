from ddjax.nn.layers import (MaskedBatchNorm, MaskedConv, MaskedDense, MaskedLayerNorm, channel_mask,
                             invariant_uniform)
from ddjax.nn.models import CNN1D, MLP, MODELS, PreActResNet, make_model
