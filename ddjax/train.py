"""The vmapped train state: one member's functions, lifted to a bucket of members and jitted once.

A member's state is a dict pytree {params, batch_stats, opt, diverged, diverged_step, step}; a bucket stacks it
along a leading member axis M. Per-member numbers (`hp`: width, lr, wd, seeds, noise, ...) are arrays of shape (M,).
Randomness comes only from keys folded from a member's seeds (`member_key`), never from global state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax import lax

from ddjax.data.augment import Preprocess
from ddjax.data.noise import noisy_labels, noisy_test_error
from ddjax.optim import make_optimizer

# Separate random streams per member: init from model_seed, batch order and augmentation from batch_seed (with
# different tags), label noise from noise_seed.
_STREAMS = {'init': ('model_seed', 0), 'batches': ('batch_seed', 1), 'noise': ('noise_seed', 2),
            'augment': ('batch_seed', 3)}


def member_key(hp, stream: str) -> jax.Array:
  seed_name, tag = _STREAMS[stream]
  return jax.random.fold_in(jax.random.key(hp[seed_name]), tag)


@dataclass(frozen=True)
class StepSpec:
  """Everything static about a bucket's program (its shapes and code)."""
  model: nn.Module          # padded to the bucket's maximum width
  optimizer: str            # 'adam' | 'adamw' | 'sgd'
  batch_size: int
  num_classes: int
  eval_batch: int = 1000
  strategy: str = 'vmap'    # 'vmap' | 'map'
  map_batch: int = 1
  preprocess: Preprocess = Preprocess()  # on-device input pipeline (normalisation, augmentation)


def tree_norm(tree) -> jax.Array:
  return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree)))


# ----------------------------------------------------------------------------------------------------------------
# One member.

def init_member(spec: StepSpec, hp, x_example) -> dict[str, Any]:
  x = spec.preprocess(x_example[None])
  variables = spec.model.init({'params': member_key(hp, 'init')}, x, hp['width'], train=False)
  params = variables['params']
  return {
      'params': params,
      'batch_stats': variables.get('batch_stats', {}),
      'opt': make_optimizer(spec.optimizer, hp).init(params),
      'diverged': jnp.zeros((), bool),
      'diverged_step': jnp.full((), -1, jnp.int32),
      'step': jnp.zeros((), jnp.int32),
  }


def member_labels(spec: StepSpec, hp, y_train) -> jax.Array:
  """The member's training labels: noisy with its own probability, drawn once from its noise seed."""
  return noisy_labels(member_key(hp, 'noise'), y_train, hp['noise'], spec.num_classes)


def _loss(spec: StepSpec, params, batch_stats, hp, x, y, train: bool):
  variables = {'params': params, 'batch_stats': batch_stats}
  if train:
    logits, mutated = spec.model.apply(variables, x, hp['width'], train=True, mutable=['batch_stats'])
    batch_stats = mutated.get('batch_stats', batch_stats)
  else:
    logits = spec.model.apply(variables, x, hp['width'], train=False)
  loss = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), y)
  return loss, logits, batch_stats


def train_step(spec: StepSpec, state, hp, x_BxD, y_B, key=None):
  """One optimizer step on a raw batch (preprocessed and, with `key`, augmented here); a member whose loss or
  parameters stop being finite is frozen and flagged."""
  x_BxD = spec.preprocess(x_BxD, key)

  def loss_fn(params):
    loss_B, _, batch_stats = _loss(spec, params, state['batch_stats'], hp, x_BxD, y_B, train=True)
    return loss_B.mean(), batch_stats

  (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state['params'])
  updates, opt = make_optimizer(spec.optimizer, hp).update(grads, state['opt'], state['params'])
  params = optax.apply_updates(state['params'], updates)
  new = dict(state, params=params, batch_stats=batch_stats, opt=opt, step=state['step'] + 1)
  ok = ~state['diverged'] & jnp.isfinite(loss) & jnp.isfinite(tree_norm(params))
  frozen = dict(state, diverged=jnp.ones((), bool),
                diverged_step=jnp.where(state['diverged'], state['diverged_step'], state['step']))
  return jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, frozen), loss


def train_epoch(spec: StepSpec, state, hp, labels_N, x_train, epoch):
  """One epoch as a lax.scan over minibatches in the member's own order (from its batch seed and the epoch);
  augmentation draws come from the member's batch seed, the epoch and the step."""
  n = labels_N.shape[0]
  n_batches = n // spec.batch_size
  key = jax.random.fold_in(member_key(hp, 'batches'), epoch)
  order = jax.random.permutation(key, n)[: n_batches * spec.batch_size].reshape(n_batches, spec.batch_size)
  aug_key = jax.random.fold_in(member_key(hp, 'augment'), epoch)

  def step(state, args):
    i, idx_B = args
    return train_step(spec, state, hp, x_train[idx_B], labels_N[idx_B], jax.random.fold_in(aug_key, i))

  state, loss = lax.scan(step, state, (jnp.arange(n_batches), order))
  return state, loss.mean()


def _dataset_stats(spec: StepSpec, state, hp, x, y):
  """Mean loss and error over (x, y), in chunks of eval_batch, with evaluation-mode BatchNorm."""
  n = x.shape[0]
  chunk = min(spec.eval_batch, n)
  n_chunks = -(-n // chunk)
  pad = n_chunks * chunk - n
  xs = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1)).reshape(n_chunks, chunk, *x.shape[1:])
  ys = jnp.pad(y, (0, pad)).reshape(n_chunks, chunk)
  valid = (jnp.arange(n_chunks * chunk) < n).reshape(n_chunks, chunk)

  def one(args):
    xc, yc, vc = args
    loss, logits, _ = _loss(spec, state['params'], state['batch_stats'], hp, spec.preprocess(xc), yc, train=False)
    wrong = (jnp.argmax(logits, -1) != yc)
    return jnp.sum(loss * vc), jnp.sum(wrong * vc)

  loss_sum, wrong_sum = lax.map(one, (xs, ys, valid))
  return loss_sum.sum() / n, wrong_sum.sum() / n


def evaluate(spec: StepSpec, state, hp, labels_N, x_train, x_test, y_test) -> dict[str, jax.Array]:
  """Train metrics on the member's own (noisy) labels; test metrics on clean labels and on the noisy distribution."""
  train_loss, train_error = _dataset_stats(spec, state, hp, x_train, labels_N)
  test_loss, test_error = _dataset_stats(spec, state, hp, x_test, y_test)
  return {
      'train_loss': train_loss, 'train_error': train_error,
      'test_loss': test_loss, 'test_error': test_error,
      'test_error_noisy': noisy_test_error(test_error, hp['noise'], spec.num_classes),
      'weight_norm': tree_norm(state['params']),
      'diverged': state['diverged'], 'diverged_step': state['diverged_step'],
  }


# ----------------------------------------------------------------------------------------------------------------
# A bucket of members.

def over_members(fn: Callable, n_mapped: int, strategy: str, map_batch: int) -> Callable:
  """Lifts fn(*per_member_args, *shared_args) to stacked members: jax.vmap, or lax.map (in chunks of map_batch)."""
  if strategy == 'vmap':
    return lambda *args: jax.vmap(fn, in_axes=(0,) * n_mapped + (None,) * (len(args) - n_mapped))(*args)
  if strategy == 'map':
    def mapped(*args):
      shared = args[n_mapped:]
      return lax.map(lambda a: fn(*a, *shared), tuple(args[:n_mapped]),
                     batch_size=map_batch if map_batch > 1 else None)
    return mapped
  raise ValueError(f'unknown strategy {strategy!r}; allowed: vmap, map')


@dataclass
class BucketFns:
  init: Callable      # (hp_M, x_example) -> state_M
  labels: Callable    # (hp_M, y_train) -> labels_MxN
  epoch: Callable     # (state_M, hp_M, labels_MxN, x_train, epoch) -> (state_M, loss_M); donates state
  evaluate: Callable  # (state_M, hp_M, labels_MxN, x_train, x_test, y_test) -> metrics of shape (M,)


def bucket_fns(spec: StepSpec, members: jax.sharding.Sharding | None = None) -> BucketFns:
  """The jitted programs of one bucket. Each compiles once per (bucket shape, member count).

  With `members` (a NamedSharding of the member axis), every output with a member axis, optimizer state
  included, is laid out that way; otherwise outputs follow their committed inputs."""
  def lift(fn, n_mapped):
    return over_members(lambda *a: fn(spec, *a), n_mapped, spec.strategy, spec.map_batch)

  out = {} if members is None else {'out_shardings': members}
  return BucketFns(
      init=jax.jit(lift(init_member, 1), **out),
      labels=jax.jit(jax.vmap(lambda hp, y: member_labels(spec, hp, y), in_axes=(0, None)), **out),
      epoch=jax.jit(lift(train_epoch, 3), donate_argnums=0, **out),
      evaluate=jax.jit(lift(evaluate, 3), **out),
  )
