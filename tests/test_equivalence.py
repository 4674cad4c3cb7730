"""Invariant 1: a masked member of width k is the dense width-k model (logits, gradients, 5 optimizer steps).

The reference is a plain Flax model of width k (tests/dense_reference.py) trained with plain optax, its
parameters sliced from the member's active block."""

import flax.traverse_util as tu
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ddjax.nn.models import make_model
from ddjax.nn.registry import size_args
from ddjax.train import StepSpec, init_member, train_step
from tests.dense_reference import DenseCNN1D, DenseMLP, DenseResNet1D, DenseResNet2dLN, DenseResNetLN
from tests.helpers import close, hp_for, unstack

K, W = 3, 8  # member width and padded width
CASES = [('mlp', 'im2col', DenseMLP), ('cnn1d', 'lax', DenseCNN1D), ('cnn1d', 'im2col', DenseCNN1D),
         ('resnet1d', 'lax', DenseResNet1D), ('resnet1d', 'im2col', DenseResNet1D)]


def DenseResNet1DNoNorm(width, num_classes=10):  # noqa: N802 - stands for a class in the parameter list
  return DenseResNet1D(width, num_classes, norm='none')


def active_slice(name, tree, dense_tree):
  """The member's active block of every leaf, shaped like the dense model's leaf."""
  flat, dense = tu.flatten_dict(tree), tu.flatten_dict(dense_tree)
  out = {}
  for path, d in dense.items():
    m = flat[path]
    if name == 'cnn1d' and path == ('head', 'kernel'):  # (L, W, classes) -> the dense model's (L * K, classes)
      out[path] = m[:, :K].reshape(-1, m.shape[-1])
    else:
      out[path] = m[tuple(slice(0, s) for s in d.shape)]
  return tu.unflatten_dict(out)


def _active(name, path, shape, dense_shape):
  keep = np.zeros(shape, bool)
  if name == 'cnn1d' and path == ('head', 'kernel'):
    keep[:, :K] = True
  else:
    keep[tuple(slice(0, s) for s in dense_shape)] = True
  return keep


def inactive_abs_max(name, tree, dense_tree):
  """Largest |value| outside the active block, over all leaves."""
  flat, dense = tu.flatten_dict(tree), tu.flatten_dict(dense_tree)
  worst = 0.0
  for path, d in dense.items():
    m = np.asarray(flat[path])
    worst = max(worst, float(np.abs(m[~_active(name, path, m.shape, d.shape)]).max(initial=0.0)))
  return worst


def with_garbage(name, tree, dense_tree, seed):
  """The tree with every entry outside the active block replaced by a random number (a positive one for running
  variances): invariant 3 says the parameters are masked, so what lies there must not matter."""
  rng = np.random.default_rng(seed)
  flat, dense = tu.flatten_dict(tree), tu.flatten_dict(dense_tree)
  out = dict(flat)
  for path, d in dense.items():
    m = np.array(flat[path])
    junk = rng.uniform(0.5, 2.0, m.shape) if path[-1] == 'var' else rng.normal(0.0, 3.0, m.shape)
    keep = _active(name, path, m.shape, d.shape)
    out[path] = jnp.asarray(np.where(keep, m, junk), m.dtype)
  return tu.unflatten_dict(out)


@pytest.fixture(scope='module')
def batch(tiny_mnist1d):
  return jnp.asarray(tiny_mnist1d.x_train[:32]), jnp.asarray(tiny_mnist1d.y_train[:32])


@pytest.mark.parametrize('name,conv,dense_cls', CASES + [('resnet2d_ln', 'lax', DenseResNet2dLN),
                                                         ('resnet1d:none', 'lax', DenseResNet1DNoNorm)])
def test_logits_and_gradients_match_dense(name, conv, dense_cls, batch):
  x, y = batch
  if name == 'resnet2d_ln':  # 2-D inputs with channels, like the m-height codes
    x = jnp.asarray(np.random.default_rng(0).normal(size=(32, 6, 6, 8)), jnp.float32)
  name, _, norm = name.partition(':')  # resnet1d:none is resnet1d with model.norm=none (BatchNorm off)
  model = make_model(name, W, x.shape[1:], 10, conv, **({'norm': norm} if norm else {}))
  spec = StepSpec(model, 'adam', 32, 10)
  state = unstack(jax.jit(jax.vmap(lambda hp: init_member(spec, hp, x[0])))(hp_for([K])), 0)  # compiled once
  dense = dense_cls(K, num_classes=10)
  dense_vars = jax.jit(dense.init)(jax.random.key(0), x[:2])
  params = active_slice(name, state['params'], dense_vars['params'])
  stats = active_slice(name, state['batch_stats'], dense_vars.get('batch_stats', {}))
  assert inactive_abs_max(name, state['params'], dense_vars['params']) == 0.0
  # Invariant 3: with random numbers in every masked entry the member is still the dense model, and those entries
  # still get zero gradient (masking only activations would let a masked bias or running mean leak in).
  state = dict(state, params=with_garbage(name, state['params'], dense_vars['params'], 1),
               batch_stats=with_garbage(name, state['batch_stats'], dense_vars.get('batch_stats', {}), 2))

  for train in (False, True):
    kw = {'mutable': ['batch_stats']} if train else {}
    got = jax.jit(lambda v: model.apply(v, x, K, train=train, **kw))(
        {'params': state['params'], 'batch_stats': state['batch_stats']})
    want = jax.jit(lambda v: dense.apply(v, x, train=train, **kw))({'params': params, 'batch_stats': stats})
    close(got[0] if train else got, want[0] if train else want)

  def masked_loss(p):
    logits, _ = model.apply({'params': p, 'batch_stats': state['batch_stats']}, x, K, train=True,
                            mutable=['batch_stats'])
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  def dense_loss(p):
    logits, _ = dense.apply({'params': p, 'batch_stats': stats}, x, train=True, mutable=['batch_stats'])
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  g_masked = jax.jit(jax.grad(masked_loss))(state['params'])
  close(active_slice(name, g_masked, dense_vars['params']), jax.jit(jax.grad(dense_loss))(params))
  assert inactive_abs_max(name, g_masked, dense_vars['params']) == 0.0


def test_resnet_ln_at_depth_5_with_softplus_head_is_the_dense_model():
  """The m-height expert (resnet_ln, 5 blocks, log2(1 + softplus) head): outputs and the gradients of a squared error
  equal the dense width-K model's, with random numbers in every masked entry, which get no gradient."""
  x = jnp.asarray(np.random.default_rng(0).normal(size=(16, 6, 6, 8)), jnp.float32)
  y = jnp.asarray(np.random.default_rng(1).uniform(0, 20, size=(16, 1)), jnp.float32)
  model = make_model('resnet_ln', W, x.shape[1:], 1, 'lax', depth=5, head='softplus')
  state = unstack(jax.jit(jax.vmap(lambda hp: init_member(StepSpec(model, 'adam', 16, 1), hp, x[0])))(hp_for([K])), 0)
  dense = DenseResNetLN(K, num_classes=1, depth=5, head='softplus')
  dense_params = jax.jit(dense.init)(jax.random.key(0), x[:2])['params']
  params = active_slice('resnet_ln', state['params'], dense_params)
  assert inactive_abs_max('resnet_ln', state['params'], dense_params) == 0.0
  garbage = with_garbage('resnet_ln', state['params'], dense_params, 1)
  masked_loss = jax.jit(jax.value_and_grad(lambda p: jnp.mean((model.apply({'params': p}, x, K) - y) ** 2)))
  dense_loss = jax.jit(jax.value_and_grad(lambda p: jnp.mean((dense.apply({'params': p}, x) - y) ** 2)))
  (got, g_masked), (want, g_dense) = masked_loss(garbage), dense_loss(params)
  close(got, want)
  # Ten LayerNorms deep, a float32 gradient that sums 576 terms of both signs rounds to about 1e-4 of its leaf's
  # largest entry (a masking error is of order 1).
  close(active_slice('resnet_ln', g_masked, dense_params), g_dense, rtol=1e-4)
  assert inactive_abs_max('resnet_ln', g_masked, dense_params) == 0.0
  assert float(jnp.min(model.apply({'params': garbage}, x, K))) >= 0.0  # log2(1 + softplus) never predicts below 0


def five_batches(tiny_mnist1d):
  return (jnp.asarray(tiny_mnist1d.x_train[:160]).reshape(5, 32, 40),
          jnp.asarray(tiny_mnist1d.y_train[:160]).reshape(5, 32))


def train_both_and_compare(name, spec, hp, dense, tx, xs, ys):
  """Trains the member with train_step and the dense width-K model with plain optax `tx` from the member's active
  init, one step per batch; their parameters, BatchNorm statistics and logits must agree."""
  state = jax.jit(lambda hp, x: init_member(spec, hp, x))(hp, xs[0, 0])
  dense_vars = jax.jit(dense.init)(jax.random.key(0), xs[0, :2])
  params = active_slice(name, state['params'], dense_vars['params'])
  stats = active_slice(name, state['batch_stats'], dense_vars.get('batch_stats', {}))
  opt = tx.init(params)

  @jax.jit
  def dense_step(params, stats, opt, x, y):
    def loss_fn(p):
      logits, mut = dense.apply({'params': p, 'batch_stats': stats}, x, train=True, mutable=['batch_stats'])
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), mut.get('batch_stats', stats)
    (_, stats), g = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt = tx.update(g, opt, params)
    return optax.apply_updates(params, updates), stats, opt

  step = jax.jit(lambda s, x, y: train_step(spec, s, hp, x, y))
  for i in range(len(xs)):
    state, _ = step(state, xs[i], ys[i])
    params, stats, opt = dense_step(params, stats, opt, xs[i], ys[i])
  assert not bool(state['diverged'])
  close(active_slice(name, state['params'], dense_vars['params']), params)
  close(active_slice(name, state['batch_stats'], dense_vars.get('batch_stats', {})), stats)
  assert inactive_abs_max(name, state['params'], dense_vars['params']) == 0.0
  got = spec.model.apply({'params': state['params'], 'batch_stats': state['batch_stats']}, xs[0], K,
                         **size_args(spec.model, hp))
  close(got, dense.apply({'params': params, 'batch_stats': stats}, xs[0]))


@pytest.mark.parametrize('optimizer', ['adam', 'sgd'])
@pytest.mark.parametrize('name,conv,dense_cls', CASES)
def test_five_steps_match_dense(name, conv, dense_cls, optimizer, tiny_mnist1d):
  # Adam divides by sqrt(v): float32 rounding of a near-zero gradient can move a coordinate by up to ~lr, so Adam
  # runs at the presets' lr 1e-3 (a 1e-2 run differs by up to 8e-6 on one of 27 kernel entries).
  lr = 1e-3 if optimizer == 'adam' else 5e-2
  spec = StepSpec(make_model(name, W, (40,), 10, conv), optimizer, 32, 10)
  hp = unstack(hp_for([K], **{'optim.lr': lr}), 0)
  tx = optax.adam(lr) if optimizer == 'adam' else optax.sgd(lr, momentum=0.9)
  train_both_and_compare(name, spec, hp, dense_cls(K), tx, *five_batches(tiny_mnist1d))


@pytest.mark.parametrize('schedule,warmup', [('constant', 3), ('cosine', 2), ('linear', 1)])
def test_scheduled_steps_match_optax_schedules(schedule, warmup, tiny_mnist1d):
  """Warmup and decay reach the optimizer through the member's own step count: five AdamW steps of a member match
  the dense model trained with optax's schedules (another implementation of the same formulas)."""
  lr, wd, steps = 3e-3, 0.1, 5
  warm = optax.linear_schedule(0.0, lr, warmup)
  sched = {'constant': warm,
           'cosine': optax.warmup_cosine_decay_schedule(0.0, lr, warmup, steps, 0.0),
           'linear': optax.join_schedules([warm, optax.linear_schedule(lr, 0.0, steps - warmup)], [warmup])}
  spec = StepSpec(make_model('mlp', W, (40,), 10, 'im2col'), 'adamw', 32, 10, schedule=schedule, total_steps=steps)
  hp = unstack(hp_for([K], **{'optim.lr': lr, 'optim.wd': wd, 'optim.warmup': warmup}), 0)
  train_both_and_compare('mlp', spec, hp, DenseMLP(K), optax.adamw(sched[schedule], weight_decay=wd),
                         *five_batches(tiny_mnist1d))
