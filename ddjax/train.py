"""The vmapped train state: one member's functions, lifted to a bucket of members and jitted once.

A member's state is a dict pytree {params, batch_stats, opt, diverged, diverged_step, step}; a bucket stacks it
along a leading member axis M. Per-member numbers (`hp`: width, lr, wd, seeds, noise, ...) are arrays of shape (M,).
Randomness comes only from keys folded from a member's seeds (`member_key`), never from global state.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax import lax

from ddjax.data.augment import Preprocess
from ddjax.data.noise import noisy_labels, noisy_test_error
from ddjax.metrics.collapse import between_class_whitener, collapse_metrics, nearest_mean_disagrees
from ddjax.metrics.curvature import NOISE_CHUNK, gradient_noise, hutchinson_trace, top_hessian_eigenvalue
from ddjax.metrics.linear import imbalance, input_output_modes, mode_strengths
from ddjax.optim import ADAM_LIKE, make_optimizer, scheduled_lr

# Separate random streams per member: init from model_seed, batch order, augmentation and the curvature monitors'
# probes from batch_seed (with different tags), label noise from noise_seed.
_STREAMS = {'init': ('model_seed', 0), 'batches': ('batch_seed', 1), 'noise': ('noise_seed', 2),
            'augment': ('batch_seed', 3), 'monitor': ('batch_seed', 4)}


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
  task: str = 'classify'    # 'classify': cross-entropy, error | 'regress': squared error, non-finite targets skipped
  keep_best: bool = False   # carry each member's parameters at its lowest test loss in the state
  schedule: str = 'constant'  # learning rate after warmup (optim.scheduled_lr): 'constant' | 'cosine' | 'linear'
  total_steps: int = 0      # optimizer steps of the whole run (where cosine and linear reach 0)
  collapse: bool = False    # also evaluate neural collapse of the head's input on the training set
  modes: int = 0            # deep linear networks: report the strength of this many singular modes of the data
  sharpness: int = 0        # monitors on monitor_batch evenly spaced training examples: power-iteration steps,
  hessian_trace: int = 0    # Hutchinson probes,
  noise_scale: bool = False  # and the gradient noise scale (0 / False: off)
  monitor_batch: int = 1000


def tree_norm(tree) -> jax.Array:
  return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree)))


def weight_norms(params) -> dict[str, jax.Array]:
  """Total norm, the output layer's norm and one norm per top-level layer (masked entries are zero, so only active
  parameters count)."""
  out = {'weight_norm': tree_norm(params)}
  if 'head' in params:  # every model names its output layer head
    out['weight_norm_last'] = tree_norm(params['head'])
  out.update({f'norm_{name}': tree_norm(sub) for name, sub in params.items()})
  return out


# ----------------------------------------------------------------------------------------------------------------
# One member.

def init_member(spec: StepSpec, hp, x_example) -> dict[str, Any]:
  x = spec.preprocess(x_example[None])
  variables = spec.model.init({'params': member_key(hp, 'init')}, x, hp['width'], train=False)
  params = jax.tree.map(lambda p: p * hp['init_scale'], variables['params'])
  state = {
      'params': params,
      'batch_stats': variables.get('batch_stats', {}),
      'opt': make_optimizer(spec.optimizer, hp).init(params),
      'diverged': jnp.zeros((), bool),
      'diverged_step': jnp.full((), -1, jnp.int32),
      'step': jnp.zeros((), jnp.int32),
      'update_norm': jnp.zeros((), jnp.float32),  # norm of the last optimizer update
  }
  if spec.keep_best:
    state['best'] = {'params': params, 'batch_stats': state['batch_stats'], 'loss': jnp.full((), jnp.inf),
                     'epoch': jnp.zeros((), jnp.int32)}
  return state


def member_labels(spec: StepSpec, hp, y_train) -> jax.Array:
  """The member's training labels: noisy with its own probability, drawn once from its noise seed (classification;
  regression targets are the same for every member)."""
  if spec.task == 'regress':
    return y_train
  return noisy_labels(member_key(hp, 'noise'), y_train, hp['noise'], spec.num_classes)


def target_weight(spec: StepSpec, y) -> jax.Array:
  """Per example: 1 if it counts in the loss, 0 for a regression target that is not finite (an infinite m-height)."""
  if spec.task == 'regress':
    return jnp.isfinite(y.reshape(y.shape[0], -1)).all(-1).astype(jnp.float32)
  return jnp.ones(y.shape[0], jnp.float32)


def _loss(spec: StepSpec, params, batch_stats, hp, x, y, train: bool):
  """Per-example (loss, wrong, weight): cross-entropy and misclassification, or the squared error summed over the
  outputs, ||out - y||^2, with weight 0 where a target is not finite (an infinite m-height); `wrong` is 0 for
  regression."""
  variables = {'params': params, 'batch_stats': batch_stats}
  if train:
    out, mutated = spec.model.apply(variables, x, hp['width'], train=True, mutable=['batch_stats'])
    batch_stats = mutated.get('batch_stats', batch_stats)
  else:
    out = spec.model.apply(variables, x, hp['width'], train=False)
  out = out.astype(jnp.float32)
  weight = target_weight(spec, y)
  if spec.task == 'regress':
    y_BxO = y.reshape(out.shape)  # a single output's targets come as (B,)
    loss = jnp.square(out - jnp.where(weight[:, None] > 0, y_BxO, 0.0)).sum(-1) * weight
    return (loss, jnp.zeros_like(loss), weight), batch_stats
  loss = optax.softmax_cross_entropy_with_integer_labels(out, y)
  return (loss, (jnp.argmax(out, -1) != y).astype(jnp.float32), weight), batch_stats


def train_step(spec: StepSpec, state, hp, x_B, y_B, key=None):
  """One optimizer step on a raw batch (preprocessed and, with `key`, augmented here); a member whose loss or
  parameters stop being finite is frozen and flagged."""
  x_B = spec.preprocess(x_B, key)  # (B, *input_shape)

  def loss_fn(params):
    (loss_B, _, weight_B), batch_stats = _loss(spec, params, state['batch_stats'], hp, x_B, y_B, train=True)
    return loss_B.sum() / jnp.maximum(weight_B.sum(), 1.0), batch_stats

  (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state['params'])
  lr = scheduled_lr(spec.schedule, hp['lr'], hp['warmup'], state['step'], spec.total_steps)
  updates, opt = make_optimizer(spec.optimizer, dict(hp, lr=lr)).update(grads, state['opt'], state['params'])
  params = optax.apply_updates(state['params'], updates)
  new = dict(state, params=params, batch_stats=batch_stats, opt=opt, step=state['step'] + 1,
             update_norm=tree_norm(updates))
  ok = ~state['diverged'] & jnp.isfinite(loss) & jnp.isfinite(tree_norm(params))
  frozen = dict(state, diverged=jnp.ones((), bool),
                diverged_step=jnp.where(state['diverged'], state['diverged_step'], state['step']))
  return jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, frozen), loss


def train_epoch(spec: StepSpec, state, hp, labels_N, x_train, epoch):
  """One epoch as a lax.scan over minibatches in the member's own order (from its batch seed and the epoch);
  augmentation draws come from the member's batch seed, the epoch and the step."""
  n = labels_N.shape[0]
  n_batches = n // spec.batch_size
  aug_key = jax.random.fold_in(member_key(hp, 'augment'), epoch)
  if spec.batch_size == n:  # full batch: one step on the data as it is (no order to draw, no gathered copy)
    return train_step(spec, state, hp, x_train, labels_N, jax.random.fold_in(aug_key, 0))
  key = jax.random.fold_in(member_key(hp, 'batches'), epoch)
  order = jax.random.permutation(key, n)[: n_batches * spec.batch_size].reshape(n_batches, spec.batch_size)

  def step(state, args):
    i, idx_B = args
    return train_step(spec, state, hp, x_train[idx_B], labels_N[idx_B], jax.random.fold_in(aug_key, i))

  state, loss = lax.scan(step, state, (jnp.arange(n_batches), order))
  return state, loss.mean()


def _chunks(x, y, size: int):
  """(x, y) in chunks of `size` examples (at most n), the last padded, and which entries are real: (xs, ys, valid)."""
  n = x.shape[0]
  chunk = min(size, n)
  n_chunks = -(-n // chunk)
  pad = n_chunks * chunk - n
  xs = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1)).reshape(n_chunks, chunk, *x.shape[1:])
  ys = jnp.pad(y, [(0, pad)] + [(0, 0)] * (y.ndim - 1)).reshape(n_chunks, chunk, *y.shape[1:])
  valid = (jnp.arange(n_chunks * chunk) < n).reshape(n_chunks, chunk)
  return xs, ys, valid


def _dataset_stats(spec: StepSpec, state, hp, x, y):
  """Mean loss and error over (x, y) (over finite targets for regression), in chunks of eval_batch, with
  evaluation-mode BatchNorm."""
  xs, ys, valid = _chunks(x, y, spec.eval_batch)

  def one(args):
    xc, yc, vc = args
    (loss, wrong, weight), _ = _loss(spec, state['params'], state['batch_stats'], hp, spec.preprocess(xc), yc,
                                     train=False)
    weight = weight * vc
    return jnp.sum(loss * weight), jnp.sum(wrong * weight), jnp.sum(weight)

  loss_sum, wrong_sum, count = (a.sum() for a in lax.map(one, (xs, ys, valid)))
  count = jnp.maximum(count, 1.0)
  return loss_sum / count, wrong_sum / count


def _head_input(spec: StepSpec, state, hp, x):
  """(logits, the input of the output layer `head` flattened per example), in evaluation mode."""
  seen = []

  def grab(next_fun, args, kwargs, context):
    if context.module.name == 'head' and context.method_name == '__call__':
      seen.append(args[0])
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(grab):
    logits = spec.model.apply({'params': state['params'], 'batch_stats': state['batch_stats']},
                              spec.preprocess(x), hp['width'], train=False)
  return logits.astype(jnp.float32), seen[-1].reshape(x.shape[0], -1).astype(jnp.float32)


def collapse(spec: StepSpec, state, hp, x, labels_N) -> dict[str, jax.Array]:
  """Neural collapse (ddjax.metrics.collapse) of the head's input features on (x, labels), in two passes of
  eval_batch chunks: class means, then the within-class spread (plain and whitened by the class means) and the
  nearest-mean predictions; no D x D array. The features of masked channels are zero, so a member gets the
  metrics of its own width."""
  xs, ys, valid = _chunks(x, labels_N, spec.eval_batch)
  k = spec.num_classes

  def sums(carry, args):
    xc, yc, vc = args
    _, h_BxD = _head_input(spec, state, hp, xc)
    onehot_BxK = jax.nn.one_hot(yc, k) * vc[:, None]
    return (carry[0] + onehot_BxK.T @ h_BxD, carry[1] + onehot_BxK.sum(0)), None

  d = jax.eval_shape(lambda xc: _head_input(spec, state, hp, xc)[1], xs[0]).shape[1]
  (sum_KxD, count_K), _ = lax.scan(sums, (jnp.zeros((k, d)), jnp.zeros(k)), (xs, ys, valid))
  means_KxD = sum_KxD / jnp.maximum(count_K, 1.0)[:, None]
  whitener_RxD = between_class_whitener(means_KxD)

  def within(carry, args):
    xc, yc, vc = args
    logits_BxK, h_BxD = _head_input(spec, state, hp, xc)
    within_BxD = h_BxD - means_KxD[yc]
    wrong_B = nearest_mean_disagrees(h_BxD, means_KxD, logits_BxK)
    terms = (jnp.square(within_BxD).sum(1), jnp.square(within_BxD @ whitener_RxD.T).sum(1), wrong_B)
    return tuple(c + jnp.sum(a * vc) for c, a in zip(carry, terms)), None

  (within_sq, whitened_sq, wrong), _ = lax.scan(within, (jnp.zeros(()),) * 3, (xs, ys, valid))
  n = jnp.maximum(count_K.sum(), 1.0)
  w_KxD = state['params']['head']['kernel'].reshape(-1, k).T
  return dict(collapse_metrics(means_KxD, within_sq / n, whitened_sq / n, w_KxD), nc4=wrong / n)


def linear_modes(spec: StepSpec, state, x_train, y_train) -> dict[str, jax.Array]:
  """A deep linear network's strength along each of the top `spec.modes` singular modes of the training set's
  input-output correlation (mode_1 the largest), and its layers' imbalance (ddjax.metrics.linear)."""
  x_NxI = x_train.reshape(x_train.shape[0], -1)
  in_IxR, _, out_OxR = input_output_modes(x_NxI, y_train.reshape(x_NxI.shape[0], -1), spec.modes)
  kernels = spec.model.kernels(state['params'])
  strengths_R = mode_strengths(kernels, in_IxR, out_OxR)
  return {**{f'mode_{r + 1}': strengths_R[r] for r in range(spec.modes)}, 'imbalance': imbalance(kernels)}


def preconditioned_sharpness(spec: StepSpec, state, hp, loss_fn, key) -> jax.Array:
  """The largest-magnitude eigenvalue of P^-1 H for Adam's preconditioner P = diag(sqrt(v_hat) + eps), v_hat its
  bias-corrected second moment (Cohen et al. 2022): power iteration on the Hessian of the loss in the coordinates
  phi = P^(1/2) theta, whose Hessian P^(-1/2) H P^(-1/2) has the same eigenvalues. Full-batch Adam is stable while it
  is below (2 + 2 b1) / ((1 - b1) lr), 38 / lr for b1 = 0.9."""
  nu, count = optax.tree.get(state['opt'], 'nu'), optax.tree.get(state['opt'], 'count')
  bias = 1.0 - hp['b2'] ** jnp.maximum(count, 1).astype(jnp.float32)
  root_p = jax.tree.map(lambda v: jnp.sqrt(jnp.sqrt(v / bias) + hp['eps']), nu)  # P^(1/2), leaf by leaf
  loss_phi = lambda phi: loss_fn(jax.tree.map(jnp.divide, phi, root_p))
  phi = jax.tree.map(jnp.multiply, state['params'], root_p)
  return top_hessian_eigenvalue(loss_phi, phi, jax.random.fold_in(key, 2), spec.sharpness)[0]


def monitors(spec: StepSpec, state, hp, x_train, labels_N) -> dict[str, jax.Array]:
  """Curvature and gradient noise of the training loss (weight decay left out) on monitor_batch examples evenly
  spaced through the training set (the same at every evaluation; the member's labels, no augmentation): the top
  Hessian eigenvalue (`sharpness`, the largest in magnitude; with Adam also that of P^-1 H) and Hutchinson's trace
  with BatchNorm on the batch's statistics (running statistics untouched), as the loss trains; the noise scale with
  BatchNorm's running statistics (one example has no batch statistics). Probes come from the member's batch seed.
  ddjax.metrics.curvature has the definitions."""
  n_train = x_train.shape[0]
  n = min(spec.monitor_batch, n_train)
  idx = jnp.arange(n) * n_train // n  # data sets stored in groups (m-height) are sampled across every group
  x, y = spec.preprocess(x_train[idx]), labels_N[idx]
  key = member_key(hp, 'monitor')

  def batch_loss(params):
    (loss_B, _, weight_B), _ = _loss(spec, params, state['batch_stats'], hp, x, y, train=True)
    return loss_B.sum() / jnp.maximum(weight_B.sum(), 1.0)

  out = {}
  if spec.sharpness:
    out['sharpness'] = top_hessian_eigenvalue(batch_loss, state['params'], key, spec.sharpness)[0]
    if spec.optimizer in ADAM_LIKE:
      out['preconditioned_sharpness'] = preconditioned_sharpness(spec, state, hp, batch_loss, key)
  if spec.hessian_trace:
    out['hessian_trace'] = hutchinson_trace(batch_loss, state['params'], jax.random.fold_in(key, 1),
                                            spec.hessian_trace)
  if spec.noise_scale:
    def example_loss(params, x1, y1):
      (loss, _, _), _ = _loss(spec, params, state['batch_stats'], hp, x1[None], y1[None], train=False)
      return loss[0]

    xs, ys, valid = _chunks(x, y, NOISE_CHUNK)
    x_pad, y_pad = xs.reshape(-1, *xs.shape[2:]), ys.reshape(-1, *ys.shape[2:])
    weight = target_weight(spec, y_pad) * valid.reshape(-1)
    out.update(gradient_noise(example_loss, state['params'], x_pad, y_pad, weight, xs.shape[1]))
  return out


def evaluate(spec: StepSpec, state, hp, labels_N, x_train, x_test, y_test) -> dict[str, jax.Array]:
  """Train metrics on the member's own (noisy) labels; test metrics on clean labels and on the noisy distribution
  (classification), or mean squared errors over finite targets (regression); weight norms; the last update's norm."""
  train_loss, train_error = _dataset_stats(spec, state, hp, x_train, labels_N)
  test_loss, test_error = _dataset_stats(spec, state, hp, x_test, y_test)
  out = {'train_loss': train_loss, 'test_loss': test_loss}
  if spec.task == 'classify':
    out.update(train_error=train_error, test_error=test_error,
               test_error_noisy=noisy_test_error(test_error, hp['noise'], spec.num_classes))
  if spec.collapse:
    out.update(collapse(spec, state, hp, x_train, labels_N))
  if spec.modes:
    out.update(linear_modes(spec, state, x_train, labels_N))
  if spec.sharpness or spec.hessian_trace or spec.noise_scale:
    out.update(monitors(spec, state, hp, x_train, labels_N))
  out.update(weight_norms(state['params']))
  out.update(update_norm=state['update_norm'], diverged=state['diverged'], diverged_step=state['diverged_step'])
  return out


def remember_best(spec: StepSpec, state, test_loss, epoch):
  """With keep_best: the parameters (and BatchNorm statistics) at the lowest test loss seen so far."""
  best = state['best']
  better = (test_loss < best['loss']) & ~state['diverged']
  pick = lambda new, old: jax.tree.map(lambda n, o: jnp.where(better, n, o), new, old)
  return dict(state, best={'params': pick(state['params'], best['params']),
                           'batch_stats': pick(state['batch_stats'], best['batch_stats']),
                           'loss': jnp.where(better, test_loss, best['loss']),
                           'epoch': jnp.where(better, epoch, best['epoch']).astype(jnp.int32)})


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
  remember_best: Callable  # (state_M, test_loss_M, epoch) -> state_M; donates state


@functools.lru_cache(maxsize=64)
def bucket_fns(spec: StepSpec, members: jax.sharding.Sharding | None = None) -> BucketFns:
  """The jitted programs of one bucket. Each compiles once per (bucket shape, member count); the same spec (and
  sharding) gets the same functions, so a later job or run in this process reuses their compilations.

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
      remember_best=jax.jit(lift(remember_best, 2), donate_argnums=0, **out),
  )
