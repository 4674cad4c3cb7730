"""ResNet18k (Nakkiran et al.): parameter count, cost, and masked-vs-dense equivalence in train and eval mode."""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ddjax.nn.layers import CONV_FORMS
from ddjax.nn.models import make_model
from ddjax.train import StepSpec, init_member, train_step
from tests.dense_reference import DenseResNet18k
from tests.helpers import close, hp_for, unstack


def test_parameter_count_and_macs_match_the_paper():
  model = make_model('resnet18k', 64, (32, 32, 3), 10, 'lax')
  shapes = jax.eval_shape(lambda: model.init({'params': jax.random.key(0)}, jnp.zeros((1, 32, 32, 3)), 64))
  assert sum(math.prod(x.shape) for x in jax.tree.leaves(shapes['params'])) == 11_171_146
  # references.md: about 0.56 GMAC at k = 64, 12.2 GMAC for all widths 1..64, 35.5 GMAC all padded to 64.
  assert model.macs(64) / 1e9 == pytest.approx(0.56, abs=0.01)
  assert sum(model.macs(k) for k in range(1, 65)) / 1e9 == pytest.approx(12.2, abs=0.1)
  assert 64 * model.macs(64) / 1e9 == pytest.approx(35.5, abs=0.1)


@functools.cache
def masked_step(padded, form='lax'):
  """One jitted train step per padded width, shared by the widths padded to it (width is a traced input)."""
  spec = StepSpec(make_model('resnet18k', padded, (8, 8, 3), 10, form), 'adam', 8, 10)
  return spec, jax.jit(lambda s, hp, a, b: train_step(spec, s, hp, a, b))


@functools.cache
def masked_grad(padded, form='lax'):
  spec, _ = masked_step(padded, form)

  def loss(p, state, x, y, k):
    logits, _ = spec.model.apply({'params': p, 'batch_stats': state['batch_stats']}, x, k, train=True,
                                 mutable=['batch_stats'])
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
  return jax.jit(lambda state, x, y, k: jax.grad(loss)(state['params'], state, x, y, k))


@functools.cache
def dense_grad_fn(k):
  dense = DenseResNet18k(k)

  def loss(p, stats, x, y):
    logits, _ = dense.apply({'params': p, 'batch_stats': stats}, x, train=True, mutable=['batch_stats'])
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
  return jax.jit(jax.grad(loss))


@functools.cache
def dense_step(k):
  dense = DenseResNet18k(k)
  tx = optax.adam(1e-3)

  @jax.jit
  def step(params, stats, opt, x, y):
    def loss_fn(p):
      logits, mut = dense.apply({'params': p, 'batch_stats': stats}, x, train=True, mutable=['batch_stats'])
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), mut['batch_stats']
    (_, stats), g = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt = tx.update(g, opt, params)
    return optax.apply_updates(params, updates), stats, opt

  return dense, tx, step


def slice_params(tree, dense_tree):
  return jax.tree.map(lambda m, d: m[tuple(slice(0, s) for s in d.shape)], tree, dense_tree)


# lax everywhere; im2col (the CPU default) once, its layers are checked against flax nn.Conv below
@pytest.mark.parametrize('k,padded,form', [(1, 8, 'lax'), (3, 8, 'lax'), (8, 16, 'lax'), (3, 8, 'im2col')])
def test_masked_member_is_the_dense_width_k_model(k, padded, form):
  rng = np.random.default_rng(k)
  x = jnp.asarray(rng.normal(size=(3, 8, 8, 8, 3)), jnp.float32)  # 8x8 images keep the test fast on CPU
  y = jnp.asarray(rng.integers(0, 10, size=(3, 8)), jnp.int32)
  spec, step = masked_step(padded, form)
  model = spec.model
  hp = unstack(hp_for([k], **{'optim.lr': 1e-3}), 0)
  state = init_member(spec, hp, x[0, 0])
  dense, tx, d_step = dense_step(k)
  ref = dense.init(jax.random.key(0), x[0])
  params, stats = slice_params(state['params'], ref['params']), slice_params(state['batch_stats'], ref['batch_stats'])
  for train in (True, False):
    kw = {'mutable': ['batch_stats']} if train else {}
    got = model.apply({'params': state['params'], 'batch_stats': state['batch_stats']}, x[0], k, train=train, **kw)
    want = dense.apply({'params': params, 'batch_stats': stats}, x[0], train=train, **kw)
    close(got[0] if train else got, want[0] if train else want)
  # Gradients directly (Adam below would hide a wrong gradient scale): the active block is the dense model's, and
  # every padded entry's is exactly zero.
  grad, dense_grad = masked_grad(padded, form)(state, x[0], y[0], k), dense_grad_fn(k)(params, stats, x[0], y[0])
  close(slice_params(grad, ref['params']), dense_grad, rtol=1e-4)
  for g, d in zip(jax.tree.leaves(grad), jax.tree.leaves(ref['params'])):
    g = np.array(g)
    g[tuple(slice(0, n) for n in d.shape)] = 0
    assert not g.any()
  opt = tx.init(params)
  for i in range(3):
    state, _ = step(state, hp, x[i], y[i])
    params, stats, opt = d_step(params, stats, opt, x[i], y[i])
  # 18 layers of float32 sums in a different order, through Adam's per-coordinate normalisation: after 3 steps
  # about one entry in 10^4 differs by up to 4e-5 relative (1.4e-6 absolute) from the dense model.
  close(slice_params(state['params'], ref['params']), params, rtol=1e-4)
  close(slice_params(state['batch_stats'], ref['batch_stats']), stats, rtol=1e-4)
  got = model.apply({'params': state['params'], 'batch_stats': state['batch_stats']}, x[0], k)
  close(got, dense.apply({'params': params, 'batch_stats': stats}, x[0]), rtol=1e-4)


@pytest.mark.parametrize('form', ['lax', 'im2col'])
def test_both_conv_forms_are_flax_conv_in_2d(form):
  """The equivalence above runs ResNet18k with lax convolutions; CPU runs pick im2col. Every 2-D convolution
  ResNet18k has (3x3 stride 1 and 2 with padding 1, 1x1 stride 2 shortcuts), on an odd and an even size, gives
  flax's nn.Conv outputs and gradients (input and kernel) in either form."""
  rng = np.random.default_rng(0)
  for size, k, stride, pad in ((8, 3, 1, 1), (8, 3, 2, 1), (7, 3, 2, 1), (8, 1, 2, 0), (7, 1, 2, 0)):
    x = jnp.asarray(rng.normal(size=(2, size, size, 3)), jnp.float32)
    ref = nn.Conv(5, (k, k), stride, [(pad, pad)] * 2, use_bias=False)
    kernel = ref.init(jax.random.key(0), x)['params']['kernel']
    ours = lambda x, w: CONV_FORMS[form](x, w, (stride, stride), (pad, pad))
    theirs = lambda x, w: ref.apply({'params': {'kernel': w}}, x)
    close(ours(x, kernel), theirs(x, kernel))
    loss = lambda f: lambda x, w: jnp.sum(jnp.sin(f(x, w)))
    close(jax.grad(loss(ours), (0, 1))(x, kernel), jax.grad(loss(theirs), (0, 1))(x, kernel))
