"""model.param: sp, ntk and mup as per-layer init and learning-rate multipliers (ddjax.nn.param) against Yang et al.'s
tables, and a muP member against the dense model trained with those multipliers by hand."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ddjax.nn.models import make_model
from ddjax.train import StepSpec, init_member, train_step
from tests.dense_reference import DenseMLP
from tests.helpers import hp_for, unstack
from tests.test_equivalence import K, W, five_batches, train_both_and_compare

# The MLP's layers: dense0 reads the input, dense1 is hidden, head is the output layer.
R = 4.0  # width 8 over base_width 2
SGD_LR = {'ntk': {'dense1/kernel': 1 / R, 'head/kernel': 1 / R},
          'mup': {'dense0/kernel': R, 'dense0/bias': R, 'dense1/bias': R, 'head/kernel': 1 / R}}
ADAM_LR = {'ntk': {'dense1/kernel': R ** -0.5, 'head/kernel': R ** -0.5},
           'mup': {'dense1/kernel': 1 / R, 'head/kernel': 1 / R}}


def _flat(tree) -> dict:
  return {'/'.join(str(getattr(k, 'key', k)) for k in path): np.asarray(v)
          for path, v in jax.tree_util.tree_leaves_with_path(tree)}


@pytest.mark.parametrize('optimizer', ['sgd', 'adam'])
def test_init_and_first_update_follow_the_tables(optimizer):
  """Members sp, ntk, mup of width 8 (base 2) from one seed: ntk starts as sp, mup's output kernel at 1/sqrt(r) of
  it; one step moves each parameter by its multiplier times the plain step: -lr g (SGD) or -lr g / (|g| + eps)
  (Adam's first step), with g the gradient at the member's own init. An sp member in a bucket with others is the
  member of a bucket compiled without the multipliers, and only sp members compile without them."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(16, 40)), jnp.float32)
  y = jnp.asarray(rng.integers(0, 10, size=16), jnp.int32)
  model = make_model('mlp', 8, (40,), 10, 'im2col')
  lr = 0.1 if optimizer == 'sgd' else 1e-2
  hp = hp_for([8, 8, 8], **{'model.param': ['sp', 'ntk', 'mup'], 'model.base_width': 2, 'optim.momentum': 0.0,
                            'optim.lr': lr})
  spec = StepSpec(model, optimizer, 16, 10, param=True)
  state = jax.jit(jax.vmap(lambda h: init_member(spec, h, x[0])))(hp)
  init = [_flat(unstack(state['params'], i)) for i in range(3)]
  for name in init[0]:
    np.testing.assert_array_equal(init[1][name], init[0][name])
    np.testing.assert_allclose(init[2][name], init[0][name] * (R ** -0.5 if name == 'head/kernel' else 1.0),
                               rtol=1e-6)
  new, _ = jax.jit(jax.vmap(lambda s, h: train_step(spec, s, h, x, y)))(state, hp)

  def plain_step(params):
    g = _flat(jax.grad(lambda p: optax.softmax_cross_entropy_with_integer_labels(
        model.apply({'params': p}, x, 8), y).mean())(params))
    return {k: -lr * (v if optimizer == 'sgd' else v / (np.abs(v) + 1e-8)) for k, v in g.items()}
  for i, param in enumerate(['sp', 'ntk', 'mup']):
    step, moved = plain_step(unstack(state['params'], i)), _flat(unstack(new['params'], i))
    table = (SGD_LR if optimizer == 'sgd' else ADAM_LR).get(param, {})
    for name in step:
      np.testing.assert_allclose(moved[name] - init[i][name], table.get(name, 1.0) * step[name], rtol=2e-4,
                                 atol=1e-7, err_msg=f'{param} {name}')
  plain = StepSpec(model, optimizer, 16, 10)  # the same members with the multipliers left out: all sp
  state_sp = jax.jit(jax.vmap(lambda h: init_member(plain, h, x[0])))(hp)
  new_sp, _ = jax.jit(jax.vmap(lambda s, h: train_step(plain, s, h, x, y)))(state_sp, hp)
  # (to float rounding: x 1.0 between the gradient and the update can keep XLA from fusing p - lr g into one
  # rounding; a job of sp members alone compiles without the multipliers, so it is today's program bit for bit)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9), unstack(new['params'], 0),
               unstack(new_sp['params'], 0))
  from ddjax.buckets import shared_by
  from ddjax.members import Job
  job = lambda params: Job(0, None, {}, [{'model.width': 8, 'optim.momentum': 0.0, 'optim.wd': 0.0, 'model.gamma': None,
                                          'model.param': p} for p in params])
  assert not shared_by(job(['sp', 'sp']), [0, 1], 8)['param'] and shared_by(job(['sp', 'mup']), [0, 1], 8)['param']


def _scaled(lr_tree):
  """optax: multiply each parameter's update by its entry of `lr_tree` (a per-layer learning rate by hand)."""
  return optax.GradientTransformation(lambda p: optax.EmptyState(),
                                      lambda u, s, p=None: (jax.tree.map(jnp.multiply, u, lr_tree), s))


@pytest.mark.parametrize('optimizer', ['adam', 'sgd'])
def test_mup_member_is_the_dense_model_trained_with_the_formulas(optimizer, tiny_mnist1d):
  """A muP member of width K (base 1: r = K) padded to W trains as the dense width-K MLP under plain optax with the
  muP learning rates of each layer written out: Adam hidden and output kernels lr / K; SGD input kernel and hidden
  biases lr x K, output kernel lr / K."""
  lr = 1e-3 if optimizer == 'adam' else 2e-2
  spec = StepSpec(make_model('mlp', W, (40,), 10, 'im2col'), optimizer, 32, 10, param=True)
  hp = unstack(hp_for([K], **{'optim.lr': lr, 'model.param': 'mup', 'model.base_width': 1}), 0)
  r = float(K)
  if optimizer == 'adam':
    per_layer = {'dense0': {'kernel': 1.0, 'bias': 1.0}, 'dense1': {'kernel': 1 / r, 'bias': 1.0},
                 'head': {'kernel': 1 / r, 'bias': 1.0}}
    tx = optax.chain(optax.adam(lr), _scaled(per_layer))
  else:
    per_layer = {'dense0': {'kernel': r, 'bias': r}, 'dense1': {'kernel': 1.0, 'bias': r},
                 'head': {'kernel': 1 / r, 'bias': 1.0}}
    tx = optax.chain(optax.sgd(lr, momentum=0.9), _scaled(per_layer))
  train_both_and_compare('mlp', spec, hp, DenseMLP(K), tx, *five_batches(tiny_mnist1d))


def test_base_width_is_no_part_of_an_sp_members_identity():
  from ddjax import config as cfglib
  from ddjax.store import run_id
  cfg = cfglib.Config()
  wide = cfglib.replace(cfg, 'model.base_width', 8)
  assert run_id(wide) == run_id(cfg)
  assert run_id(cfglib.replace(wide, 'model.param', 'mup')) != run_id(cfglib.replace(cfg, 'model.param', 'mup'))


def test_coord_check_is_flat_under_mup_and_grows_under_sp_and_ntk():
  """experiments.coord_check (Adam lr 1e-2, widths 32..512, 3 steps, one vectorised run): how far each layer's
  activations move from init does not depend on width under muP (slopes in log-log within 0.1), while under SP the
  logits' move grows as width^1.5 at large width (Adam moves each of hidden1's n^2 weights by O(lr), so hidden1 by
  O(n lr), read out by n weights of size n^-1/2) and under NTK as width^1 (both rates n^-1/2 smaller); at these
  small widths they fall short of it, SP still clearly above NTK."""
  from experiments.coord_check import coord_check
  worst = coord_check([32, 64, 128, 256, 512], steps=3)['worst']
  assert all(abs(v) < 0.1 for v in worst['mup'].values()), worst['mup']
  assert 1.0 < worst['sp']['logits'] < 1.8 and 0.5 < worst['ntk']['logits'] < 1.1, worst
  assert worst['sp']['logits'] > worst['ntk']['logits'] + 0.3 and worst['sp']['hidden1'] > 0.5, worst
