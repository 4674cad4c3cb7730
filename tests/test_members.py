"""Invariants 2, 4, 5: init follows the member's own width; members are independent of their neighbours, of their
bucket's padding and of a diverging member; randomness comes from the member's seeds."""

import jax
import jax.numpy as jnp
import flax.linen as nn
import numpy as np
import optax
import pytest

from ddjax.members import best_buckets, padded_ratio, plan_buckets
from ddjax.nn.layers import invariant_uniform
from ddjax.nn.models import make_model
from ddjax.train import StepSpec, bucket_fns
from tests.helpers import hp_for, unstack

EPOCHS = 2


def run_bucket(data, padded, widths, device=0, strategy='vmap', map_batch=1, **overrides):
  """Trains members of `widths` padded to `padded` for EPOCHS epochs on a device; returns (state, metrics) and what
  another epoch needs: (fns, hp, labels, x)."""
  model = make_model('cnn1d', padded, (40,), 10, 'im2col')
  spec = StepSpec(model, 'adam', 40, 10, eval_batch=64, strategy=strategy, map_batch=map_batch)
  fns = bucket_fns(spec)
  dev = jax.devices()[device]
  hp = jax.device_put(hp_for(widths, **{'data.noise': 0.2, 'optim.lr': 3e-3, **overrides}), dev)
  x, y, xt, yt = jax.device_put((data.x_train, data.y_train, data.x_test, data.y_test), dev)
  state, labels = fns.init(hp, x[0]), fns.labels(hp, y)
  for e in range(EPOCHS):
    state, _, _ = fns.epoch(state, hp, labels, x, jax.device_put(jnp.int32(e), dev))
  metrics = fns.evaluate(state, hp, labels, x, xt, yt, jnp.float32(0))
  assert jax.tree.leaves(state)[0].devices() == {dev}
  return state, metrics, (fns, hp, labels, x)


def member_view(run, i, width, padded):
  """Member i's active parameters (every axis of the padded size cut to `width`) and its metrics, from a
  run_bucket result."""
  state, metrics = run[:2]

  def active(p):
    p = np.asarray(p)
    return p[tuple(slice(0, width) if n == padded else slice(None) for n in p.shape)]
  params = jax.tree.map(active, unstack(state['params'], i))
  return params, {k: float(v[i]) for k, v in metrics.items()}


def assert_same_member(a, b):
  (pa, ma), (pb, mb) = a, b
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6), pa, pb)
  for k in ('train_loss', 'test_loss'):
    np.testing.assert_allclose(ma[k], mb[k], rtol=1e-5)
  for k in ('train_error', 'test_error', 'diverged'):
    assert ma[k] == mb[k], k


def test_member_is_independent_of_neighbours_bucket_device_strategy_and_diverging_member(tiny_mnist1d):
  """The seed-0 width-4 member trained alone, and beside members with other seeds (so other init, labels and batch
  order), in a wider bucket, on another device, under lax.map in chunks, and next to a member that diverges."""
  alone = member_view(run_bucket(tiny_mnist1d, 4, [4]), 0, 4, 4)
  beside = member_view(run_bucket(tiny_mnist1d, 8, [8, 4, 6], seed=[1, 0, 2]), 1, 4, 8)
  other_bucket = member_view(run_bucket(tiny_mnist1d, 16, [4, 16], seed=[0, 3]), 0, 4, 16)
  other_device = member_view(run_bucket(tiny_mnist1d, 8, [8, 4, 6], device=1, seed=[1, 0, 2]), 1, 4, 8)
  mapped = member_view(run_bucket(tiny_mnist1d, 8, [8, 6, 4], strategy='map', map_batch=2, seed=[1, 2, 0]),
                       2, 4, 8)
  nan_run = run_bucket(tiny_mnist1d, 8, [4, 4, 8], seed=[0, 1, 2], **{'optim.lr': [3e-3, 1e30, 3e-3]})
  next_to_nan = member_view(nan_run, 0, 4, 8)
  state, metrics, (fns, hp, labels, x) = nan_run
  for other in (beside, other_bucket, other_device, mapped, next_to_nan):
    assert_same_member(alone, other)
  # The exploding member is flagged and frozen at finite values; the width-8 member beside it trains on.
  assert bool(metrics['diverged'][1]) and not bool(metrics['diverged'][0]) and not bool(metrics['diverged'][2])
  assert 0 <= int(metrics['diverged_step'][1]) < int(state['step'][0])
  assert all(np.isfinite(np.asarray(l)).all() for l in jax.tree.leaves(state['params']))
  assert float(metrics['train_loss'][2]) < np.log(10)
  # The reported metrics are those of the members' own logits: train error on each member's noisy labels, test
  # error and loss on the clean test labels.
  model = make_model('cnn1d', 8, (40,), 10, 'im2col')
  logits = lambda xs: jax.vmap(lambda p, w: model.apply({'params': p}, xs, w))(state['params'], hp['width'])
  train_logits, test_logits = np.asarray(logits(x)), np.asarray(logits(jnp.asarray(tiny_mnist1d.x_test)))
  for i in (0, 2):
    np.testing.assert_allclose(metrics['train_error'][i], np.mean(train_logits[i].argmax(-1) != labels[i]))
    np.testing.assert_allclose(metrics['test_error'][i], np.mean(test_logits[i].argmax(-1) != tiny_mnist1d.y_test))
    test_loss = optax.softmax_cross_entropy_with_integer_labels(test_logits[i], tiny_mnist1d.y_test).mean()
    np.testing.assert_allclose(metrics['test_loss'][i], test_loss, rtol=1e-5)
  assert not np.array_equal(np.asarray(labels[0]), tiny_mnist1d.y_train)  # noisy: the train error is on these
  # Frozen means frozen: another epoch leaves its parameters, optimizer state and step exactly as they were.
  before = unstack(jax.tree.map(np.array, state), 1)  # copies: the epoch donates state
  after = unstack(fns.epoch(state, hp, labels, x, jnp.int32(EPOCHS))[0], 1)
  for k in ('params', 'opt', 'batch_stats', 'step', 'diverged_step'):
    jax.tree.map(np.testing.assert_array_equal, after[k], before[k])


def test_seeds_change_init_batches_and_noise_independently(tiny_mnist1d):
  model = make_model('cnn1d', 4, (40,), 10, 'im2col')
  fns = bucket_fns(StepSpec(model, 'adam', 40, 10))
  hp = hp_for([4, 4, 4, 4], **{'seed': [0, 0, 1, 0], 'model.seed': [None, 5, None, None],
                               'data.noise_seed': [None, None, None, 7], 'data.noise': 0.3})
  x, y = jnp.asarray(tiny_mnist1d.x_train), jnp.asarray(tiny_mnist1d.y_train)
  state, labels = fns.init(hp, x[0]), fns.labels(hp, y)
  k = np.asarray(state['params']['conv1']['kernel'])
  lab = np.asarray(labels)
  assert not np.allclose(k[0], k[1]) and np.array_equal(lab[0], lab[1])      # model.seed: init only
  assert not np.allclose(k[0], k[2]) and not np.array_equal(lab[0], lab[2])  # seed: everything
  assert np.array_equal(k[0], k[3]) and not np.array_equal(lab[0], lab[3])   # data.noise_seed: labels only
  state2 = fns.init(hp, x[0])
  assert np.array_equal(np.asarray(state2['params']['conv1']['kernel']), k)  # derived, never global
  # train.batch_seed: the same init and labels, another batch order, so after one epoch other parameters; the
  # same batch seed gives the same epoch again.
  hp = hp_for([4, 4, 4], **{'train.batch_seed': [None, 9, None], 'data.noise': 0.3})
  state, labels = fns.init(hp, x[0]), fns.labels(hp, y)
  k, lab = np.array(state['params']['conv1']['kernel']), np.asarray(labels)  # a copy: the epoch donates state
  assert np.array_equal(k[0], k[1]) and np.array_equal(lab[0], lab[1])
  k = np.asarray(fns.epoch(state, hp, labels, x, jnp.int32(0))[0]['params']['conv1']['kernel'])
  assert not np.allclose(k[0], k[1]) and np.array_equal(k[0], k[2])


def test_init_scale_follows_active_width():
  """A width-4 member padded to 64 has the weight scale of a dense width-4 model (PyTorch's default init,
  U(+-1/sqrt(fan_in))), not of a width-64 one, and its active block does not depend on the padding."""
  x = jnp.zeros((1, 40))
  seeds = jnp.arange(200)
  masked = make_model('mlp', 64, (40,), 10, 'im2col')
  init = jax.jit(jax.vmap(lambda k: masked.init({'params': jax.random.key(k)}, x, 4)['params']))
  p64 = init(seeds)
  w = np.asarray(p64['dense1']['kernel'])[:, :4, :4]  # fan_in 4 -> bound 0.5
  ref = jax.vmap(lambda k: nn.Dense(4, kernel_init=nn.initializers.variance_scaling(1 / 3, 'fan_in', 'uniform'))
                 .init(jax.random.key(k), jnp.zeros((1, 4)))['params']['kernel'])(seeds)
  bound = 1 / np.sqrt(4)
  assert np.abs(w).max() <= bound and np.abs(w).max() > 0.95 * bound
  np.testing.assert_allclose(w.std(), bound / np.sqrt(3), rtol=0.05)  # uniform: std = bound / sqrt(3)
  np.testing.assert_allclose(w.std(), float(np.asarray(ref).std()), rtol=0.05)
  np.testing.assert_allclose(np.asarray(p64['head']['kernel'])[:, :4, :].std(), 0.5 / np.sqrt(3), rtol=0.05)
  assert float(np.abs(np.asarray(p64['dense1']['kernel'])[:, 4:, :]).max()) == 0.0
  # Convolutions: fan_in = active input channels x kernel size; the CNN's head reads (length, active channels).
  cnn = make_model('cnn1d', 16, (40,), 10, 'im2col')
  pc = jax.jit(jax.vmap(lambda k: cnn.init({'params': jax.random.key(k)}, x, 4)['params']))(seeds)
  length = pc['head']['kernel'].shape[1]
  for leaf, fan_in in ((pc['conv0']['kernel'][:, :, :, :4], 5), (pc['conv1']['kernel'][:, :, :4, :4], 3 * 4),
                       (pc['conv1']['bias'][:, :4], 3 * 4), (pc['head']['kernel'][:, :, :4, :], length * 4)):
    np.testing.assert_allclose(np.asarray(leaf).std(), 1 / np.sqrt(3 * fan_in), rtol=0.05)
  p8 = jax.jit(jax.vmap(lambda k: make_model('mlp', 8, (40,), 10, 'im2col').init(
      {'params': jax.random.key(k)}, x, 4)['params']))(seeds[:3])
  np.testing.assert_array_equal(np.asarray(p8['dense1']['kernel'])[:, :4, :4], w[:3])


def test_invariant_uniform_is_padding_invariant():
  key = jax.random.key(3)
  small, big = invariant_uniform(key, (3, 4, 5)), invariant_uniform(key, (3, 9, 11))
  np.testing.assert_array_equal(np.asarray(big)[:, :4, :5], np.asarray(small))
  assert -1 <= float(big.min()) and float(big.max()) <= 1


def test_bucket_plan_matches_the_exact_programme_in_design():
  """design.md: cost k^2, widths 1..64 -> 2.93 (1 bucket), 1.80, 1.49, 1.35, 1.27, 1.22 (6), 1.15 (8), 1.12 (10)."""
  cost = lambda w: w * w
  widths = list(range(1, 65))
  expected = {1: 2.93, 2: 1.80, 3: 1.49, 4: 1.35, 5: 1.27, 6: 1.22, 8: 1.15, 10: 1.12}
  for n, ratio in expected.items():
    assert round(padded_ratio(best_buckets(widths, n, cost), cost), 2) == ratio
  plan = plan_buckets(widths, cost, 1.25, 8)
  assert [max(b) for b in plan] == [17, 29, 39, 48, 56, 64]
  assert sorted(w for b in plan for w in b) == widths
  # Brute force over every split into 3 contiguous buckets of a short list agrees with the programme.
  ws = [2, 4, 6, 8, 10, 12, 14, 16, 20]
  brute = min(padded_ratio([ws[:i], ws[i:j], ws[j:]], cost) for i in range(1, 8) for j in range(i + 1, 9))
  assert padded_ratio(best_buckets(ws, 3, cost), cost) == pytest.approx(brute)


def test_sharded_bucket_lays_every_leaf_over_the_member_axis(tiny_mnist1d):
  """placement=shard: params, batch_stats and optimizer state (count included) are NamedSharding('members')
  over both devices, and the members' numbers equal a single-device run."""
  from ddjax import config as cfglib
  from ddjax.members import expand
  from ddjax.buckets import make_buckets
  cfg, sweep = cfglib.apply_overrides(cfglib.Config(), {}, [
      'model.name=resnet1d', 'model.width=2,3,4', 'train.batch_size=40', 'train.placement=shard',
      'train.keep_best=true'])
  job = expand(cfg, sweep)[0]
  cost = lambda w: w * w
  (bucket,) = make_buckets(job, tiny_mnist1d, [[2, 3, 4]], cost)
  bucket.train_epoch(0)
  leaves = jax.tree.leaves(bucket.state_M)
  assert any('count' in str(p) for p, _ in jax.tree_util.tree_leaves_with_path(bucket.state_M['opt']))
  for leaf in leaves:
    assert leaf.shape[0] == 4  # 3 members padded to a multiple of 2 devices
    assert isinstance(leaf.sharding, jax.sharding.NamedSharding) and leaf.sharding.spec[0] == 'members'
    assert len(leaf.sharding.device_set) == 2
  job_single = expand(cfglib.replace(cfg, 'train.placement', 'bucket'), sweep)[0]
  (single,) = make_buckets(job_single, tiny_mnist1d, [[2, 3, 4]], cost)
  single.train_epoch(0)
  a, b = jax.device_get(bucket.evaluate(1)), jax.device_get(single.evaluate(1))
  for k in ('train_loss', 'test_loss', 'weight_norm', 'best_test_loss'):
    np.testing.assert_allclose(a[k][:3], b[k], rtol=1e-5)
  for leaf in jax.tree.leaves(bucket.state_M['best']):  # the best-validation copy is sharded like the rest
    assert leaf.sharding.spec[0] == 'members'


def test_bfloat16_compute_keeps_float32_parameters(tiny_mnist1d):
  """train.compute_dtype=bfloat16: convolutions and matmuls in bf16, parameters and optimizer state in fp32,
  logits within bf16 rounding of the fp32 model, and training still lowers the loss."""
  x = jnp.asarray(tiny_mnist1d.x_train[:40])
  f32 = make_model('resnet1d', 8, (40,), 10, 'im2col')
  bf16 = make_model('resnet1d', 8, (40,), 10, 'im2col', 'bfloat16')
  variables = f32.init({'params': jax.random.key(0)}, x[:1], 6)
  a = np.asarray(f32.apply(variables, x, 6))
  b = np.asarray(bf16.apply(variables, x, 6))
  hlo = jax.jit(lambda v, x: bf16.apply(v, x, 6)).lower(variables, x).as_text()
  dots = [line.rsplit(' : ', 1)[1] for line in hlo.splitlines() if 'stablehlo.dot_general' in line]
  assert len(dots) >= 8  # every conv (as im2col) and the head is a matrix product with bf16 operands
  assert all(sig.split('->')[0].count('xbf16>') == 2 for sig in dots), dots
  np.testing.assert_allclose(b.astype(np.float32), a, atol=0.05 * np.abs(a).max())
  spec = StepSpec(bf16, 'adam', 40, 10)
  fns = bucket_fns(spec)
  hp = hp_for([6], **{'optim.lr': 3e-3})
  xs, ys = jnp.asarray(tiny_mnist1d.x_train), jnp.asarray(tiny_mnist1d.y_train)
  state, labels = fns.init(hp, xs[0]), fns.labels(hp, ys)
  losses = []
  for e in range(4):
    state, loss, _ = fns.epoch(state, hp, labels, xs, jnp.int32(e))
    losses.append(float(loss[0]))
  assert all(l.dtype == jnp.float32 for l in jax.tree.leaves(state['params']) + jax.tree.leaves(state['opt'])
             if jnp.issubdtype(l.dtype, jnp.floating))
  assert losses[-1] < losses[0] and np.isfinite(losses).all()
