"""The vmapped train state: one member's functions, lifted to a bucket of members and jitted once.

A member's state is a dict pytree {params, batch_stats, opt, diverged, diverged_step, step}; a bucket stacks it
along a leading member axis M. Per-member numbers (`hp`: width, lr, wd, seeds, noise, ...) are arrays of shape (M,).
Randomness comes only from keys folded from a member's seeds (`member_key`), never from global state.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax import lax

from ddjax.best import remember_best
from ddjax.data.augment import Preprocess
from ddjax.data import subset
from ddjax.data.noise import noisy_labels
from ddjax.nn.init import gamma_init
from ddjax.nn.param import init_multipliers, lr_multipliers
from ddjax.nn.registry import size_args
from ddjax.optim import make_optimizer, scheduled_lr
from ddjax.probes import PROBES, EvalContext, StepContext, Use, use
from ddjax.probes.context import options_tag, own_state
from ddjax.probes.base import tree_norm, weight_norms  # noqa: F401 - weight_norms: part of this module's API

# Separate random streams per member: init from model_seed, batch order, augmentation and the curvature monitors'
# probes from batch_seed (with different tags), label noise and data.subset's examples from noise_seed.
_STREAMS = {'init': ('model_seed', 0), 'batches': ('batch_seed', 1), 'noise': ('noise_seed', 2),
            'augment': ('batch_seed', 3), 'monitor': ('batch_seed', 4), 'subset': ('noise_seed', 5)}


def member_key(hp, stream: str) -> jax.Array:
  seed_name, tag = _STREAMS[stream]
  return jax.random.fold_in(jax.random.key(hp[seed_name]), tag)


BASE = tuple(use(name) for name, p in PROBES.items() if p.always)  # the probes every run records


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
  keep_best: bool = False   # carry each member's best parameters in the state (by best_metric, best_mode)
  best_k: int = 1           # how many: 1 as state['best'] always was, K > 1 with a leading axis of K (best first)
  best_metric: str = 'test_loss'
  best_mode: str = 'min'
  schedule: str = 'constant'  # learning rate after warmup (optim.scheduled_lr): 'constant' | 'cosine' | 'linear'
  total_steps: int = 0      # optimizer steps of the whole run (where cosine and linear reach 0)
  probes: tuple[Use, ...] = BASE     # evaluation probes (ddjax.probes), the base ones first
  step_probes: tuple[Use, ...] = ()  # probes run after every optimizer step (the step table)
  # What the bucket's members all share, known when it is compiled, so that a step skips work that changes nothing
  # (x 1, + 0 x p, 0 x buffer: the same numbers up to how XLA fuses them): every member at the padded width (its
  # masks are all ones), and whether any member has SGD momentum or weight decay (without, the momentum buffer is
  # left as it is).
  full_width: bool = False
  momentum: bool = True
  decay: bool = True
  linear: bool = False      # a linear model (deep_linear): evaluation passes go through its end-to-end map
  gamma: bool = False       # a member has model.gamma: its weights start from N(0, width^-gamma) (gamma_init)
  loss: str = 'auto'        # train.loss: 'auto' | 'mse_mean' (regression: the mean, not the sum, over outputs)
  online: Any = None        # data.online: the dataset's sampler (key, n) -> (x, y); batches are drawn, not gathered
  lr_factors: tuple = ()    # callbacks of kind lr: hashable step -> factor, multiplying every member's lr
  bounds: bool = False      # regression targets carry a lower bound last (data.bound_codewords)
  violation: float = 0.0    # train.violation: the weight of relu(bound - prediction)^2 in the training loss
  param: bool = False       # a member has model.param ntk or mup: per-layer init and lr multipliers
  subset: int = 0           # a member has data.subset: the examples whose batches make a job epoch (0: none has)
  budget: str = 'epochs'    # train.budget with data.subset (ddjax.data.subset)
  subset_orders: int = 1    # budget steps: the passes over its own examples one job epoch can touch


# ----------------------------------------------------------------------------------------------------------------
# One member.

def init_member(spec: StepSpec, hp, x_example) -> dict[str, Any]:
  x = spec.preprocess(x_example[None])
  variables = spec.model.init({'params': member_key(hp, 'init')}, x, hp['width'], train=False,
                              **size_args(spec.model, hp))
  params = variables['params']
  if spec.gamma:
    params = gamma_init(spec.model, params, x, hp, member_key(hp, 'init'))
  if spec.param:  # model.param: ntk and mup scale some layers' init (ddjax.nn.param)
    params = jax.tree.map(jnp.multiply, params, init_multipliers(spec.model, params, hp))
  params = jax.tree.map(lambda p: p * hp['init_scale'], params)
  state = {
      'params': params,
      'batch_stats': variables.get('batch_stats', {}),
      'opt': make_optimizer(spec.optimizer, hp).init(params),
      'diverged': jnp.zeros((), bool),
      'diverged_step': jnp.full((), -1, jnp.int32),
      'step': jnp.zeros((), jnp.int32),
      'update_norm': jnp.zeros((), jnp.float32),  # norm of the last optimizer update
  }
  if stateful := [u for u in spec.probes if u.spec.state is not None]:  # probes' own state (references)
    state['probes'] = {u.name: {'options': jnp.asarray(options_tag(u), jnp.int32), 'state': u.spec.state(**u.kwargs)}
                       for u in stateful}
  if spec.keep_best:  # ('loss' holds the score: best_metric, negated for best_mode max; the lowest is best)
    k = () if spec.best_k == 1 else (spec.best_k,)
    state['best'] = {'params': params, 'batch_stats': state['batch_stats'], 'loss': jnp.full(k, jnp.inf),
                     'epoch': jnp.zeros(k, jnp.int32)}
    if k:
      state['best'].update(jax.tree.map(lambda a: jnp.broadcast_to(a, k + a.shape),
                                        {'params': params, 'batch_stats': state['batch_stats']}))
  return state


def member_labels(spec: StepSpec, hp, y_train) -> jax.Array:
  """The member's training labels: noisy with its own probability, drawn once from its noise seed (classification);
  regression targets plus data.noise_std x N(0, 1) from its noise seed."""
  if spec.task == 'regress':  # (a lower bound, last with data.bound_codewords, stays as it is)
    noise = hp['noise_std'] * jax.random.normal(member_key(hp, 'noise'), y_train.shape, y_train.dtype)
    labels = y_train + (noise.at[..., -1].set(0.0) if spec.bounds else noise)
  else:
    labels = noisy_labels(member_key(hp, 'noise'), y_train, hp['noise'], spec.num_classes)
  if spec.subset:  # data.subset: the examples it does not train on are marked (ddjax.data.subset)
    labels = subset.mask_labels(labels, member_subset(hp, y_train.shape[0]), spec.task)
  return labels


def member_subset(hp, n: int) -> jax.Array:
  """(n,) bool: the training examples the member trains on (data.subset, from its noise seed; all without)."""
  return subset.kept(member_key(hp, 'subset'), hp['subset'], n)


def target_weight(spec: StepSpec, y) -> jax.Array:
  """Per example: 1 if it counts in the loss, 0 for a regression target that is not finite (an infinite m-height)."""
  if spec.task == 'regress':
    y = y.reshape(y.shape[0], -1)
    return jnp.isfinite(y[:, :-1] if spec.bounds else y).all(-1).astype(jnp.float32)
  return (y >= 0).astype(jnp.float32) if spec.subset else jnp.ones(y.shape[0], jnp.float32)


def _loss(spec: StepSpec, params, batch_stats, hp, x, y, train: bool):
  """Per-example (loss, wrong, weight): cross-entropy and misclassification, or the squared error summed over the
  outputs, ||out - y||^2, with weight 0 where a target is not finite (an infinite m-height); `wrong` is 0 for
  regression."""
  variables = {'params': params, 'batch_stats': batch_stats}
  width = spec.model.max_width if spec.full_width else hp['width']  # a constant: XLA drops the all-ones masks
  if train:
    out, mutated = spec.model.apply(variables, x, width, train=True, mutable=['batch_stats'],
                                    **size_args(spec.model, hp))
    batch_stats = mutated.get('batch_stats', batch_stats)
  elif spec.linear and x.shape[0] > math.prod(x.shape[1:]) + 1:  # x -> x A + c, with A and c from the model at 0
    d = math.prod(x.shape[1:])                                       # and the unit inputs: d + 1 examples, not B
    basis = jnp.concatenate([jnp.zeros((1, d), x.dtype), jnp.eye(d, dtype=x.dtype)]).reshape(d + 1, *x.shape[1:])
    at = spec.model.apply(variables, basis, width, train=False, **size_args(spec.model, hp))
    out = x.reshape(x.shape[0], d) @ (at[1:] - at[0]) + at[0]
  else:
    out = spec.model.apply(variables, x, width, train=False, **size_args(spec.model, hp))
  out = out.astype(jnp.float32)
  weight = target_weight(spec, y)
  if spec.task == 'regress':
    y_BxO = y.reshape(out.shape[0], -1)  # a single output's targets come as (B,); with bounds, (B, 2)
    y_BxO, bound = (y_BxO[:, :-1], y_BxO[:, -1:]) if spec.bounds else (y_BxO, None)
    loss = jnp.square(out - jnp.where(weight[:, None] > 0, y_BxO, 0.0)).sum(-1) * weight
    if spec.loss == 'mse_mean':
      loss = loss / out.shape[-1]
    if spec.violation and train:  # train.violation: predictions below the lower bound pay its square too
      below = jnp.maximum(jnp.where(weight[:, None] > 0, bound, 0.0) - out, 0.0)
      loss = loss + spec.violation * jnp.square(below).sum(-1) * weight
    return (loss, jnp.zeros_like(loss), weight), batch_stats
  if spec.subset:  # labels -1: examples the member does not train on
    loss = optax.softmax_cross_entropy_with_integer_labels(out, jnp.maximum(y, 0)) * weight
    return (loss, (jnp.argmax(out, -1) != y) * weight, weight), batch_stats
  loss = optax.softmax_cross_entropy_with_integer_labels(out, y)
  return (loss, (jnp.argmax(out, -1) != y).astype(jnp.float32), weight), batch_stats


def optimizer_update(spec: StepSpec, hp, grads, opt, params):
  """(updates, new optimizer state). Plain SGD (no member with momentum) computes -lr (g + wd p) and leaves the
  momentum buffer as it is: the same updates as optax's chain, whose buffer would be g (0 x buffer + g), without
  the two passes over it; without weight decay, wd p is not added."""
  if spec.optimizer == 'sgd' and not spec.momentum:
    decayed = (lambda g, p: g + hp['wd'] * p) if spec.decay else (lambda g, p: g)
    updates = jax.tree.map(lambda g, p: -hp['lr'] * decayed(g, p), grads, params)
  else:
    updates, opt = make_optimizer(spec.optimizer, hp, spec.decay).update(grads, opt, params)
  if spec.param:  # model.param: per-layer learning-rate multipliers (ddjax.nn.param)
    updates = jax.tree.map(jnp.multiply, updates, lr_multipliers(spec.model, params, hp, spec.optimizer))
  return updates, opt


def train_step(spec: StepSpec, state, hp, x_B, y_B, key=None):
  """One optimizer step on a raw batch (preprocessed and, with `key`, augmented here): (state, batch loss). A member
  whose loss or update stops being finite (the update's norm overflows: an entry past 1e19) is frozen before the
  update and flagged, so its parameters stay finite."""
  state, (loss, _) = probed_step(spec, state, hp, x_B, y_B, key)
  return state, loss


def probed_step(spec: StepSpec, state, hp, x_B, y_B, key=None):
  """train_step, also returning the step probes' values: (state, (batch loss, {probe: {column: value}}))."""
  x_B = spec.preprocess(x_B, key)  # (B, *input_shape)

  def loss_fn(params):
    (loss_B, wrong_B, weight_B), batch_stats = _loss(spec, params, state['batch_stats'], hp, x_B, y_B, train=True)
    return loss_B.sum() / jnp.maximum(weight_B.sum(), 1.0), (batch_stats, wrong_B, weight_B)

  (loss, (batch_stats, wrong_B, weight_B)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state['params'])
  lr = scheduled_lr(spec.schedule, hp['lr'], hp['warmup'], state['step'], hp.get('total_steps', spec.total_steps))
  for factor in spec.lr_factors:
    lr = lr * factor(state['step'])
  updates, opt = optimizer_update(spec, dict(hp, lr=lr), grads, state['opt'], state['params'])
  params = optax.apply_updates(state['params'], updates)
  update_norm = tree_norm(updates)
  new = dict(state, params=params, batch_stats=batch_stats, opt=opt, step=state['step'] + 1, update_norm=update_norm)
  # Finite parameters plus an update of finite norm (each entry below 2e19) stay finite. Deciding from the loss and
  # the update, not from the new parameters, lets XLA fuse the choice below into the passes that compute them.
  ok = ~state['diverged'] & jnp.isfinite(loss) & jnp.isfinite(update_norm)
  frozen = dict(state, diverged=jnp.ones((), bool),
                diverged_step=jnp.where(state['diverged'], state['diverged_step'], state['step']))
  after = jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, frozen)
  ctx = StepContext(spec, hp, state, after, grads, loss, wrong_B, weight_B, lr)
  return after, (loss, {u.name: u.spec.measure(ctx, **u.kwargs) for u in spec.step_probes})


def train_epoch(spec: StepSpec, state, hp, labels_N, x_train, epoch, start=None, stop=None):
  """One epoch as a lax.scan over minibatches in the member's own order (from its batch seed and the epoch);
  augmentation draws come from the member's batch seed, the epoch and the step. Returns the state, the mean batch
  loss and the step probes' values, one per step ({} without step probes).

  With `start` and `stop` (traced): only the epoch's steps start .. stop - 1, in a while loop whose body is the scan's
  (the other steps' loss and values are 0, left out of the mean), so that an epoch cut into segments (evaluations
  within it) trains bitwise as the whole epoch's scan does."""
  n = labels_N.shape[0]
  n_batches = n // spec.batch_size
  aug_key = jax.random.fold_in(member_key(hp, 'augment'), epoch)
  if spec.batch_size == n and spec.online is None:  # full batch: one step on the data as it is (no order to draw)
    state, (loss, steps) = probed_step(spec, state, hp, x_train, labels_N, jax.random.fold_in(aug_key, 0))
    return state, loss, jax.tree.map(lambda v: v[None], steps)
  key = jax.random.fold_in(member_key(hp, 'batches'), epoch)
  order = jax.random.permutation(key, n)[: n_batches * spec.batch_size].reshape(n_batches, spec.batch_size)
  active = jnp.ones(n_batches, bool)
  if spec.subset:  # data.subset: batches of the member's own examples, the job epoch's steps (ddjax.data.subset)
    keep = subset.own(labels_N, spec.task)  # (as member_labels marked them: no permutation drawn again)
    table, active = subset.batch_table(member_key(hp, 'batches'), keep, epoch, spec.subset // spec.batch_size,
                                       spec.batch_size, spec.budget, spec.subset_orders)
    if table.shape == order.shape:  # a member without data.subset keeps its order as without any
      order, active = jnp.where(hp['subset'] > 0, table, order), active | (hp['subset'] <= 0)
    else:
      order = table
    n_batches = order.shape[0]
    if spec.budget == 'epochs':  # its own schedule: total_steps are those of its own passes
      hp = dict(hp, total_steps=spec.total_steps // n_batches * subset.own_steps(keep, spec.batch_size))

  def step(state, args):
    i, idx_B = args
    if spec.subset and spec.budget == 'epochs':  # steps past the member's own pass change nothing
      new, (loss, values) = step_all(state, (i, idx_B))
      new = jax.tree.map(lambda a, b: jnp.where(active[i], a, b), new, state)
      return new, jax.tree.map(lambda v: jnp.where(active[i], v, jnp.nan), (loss, values))
    return step_all(state, args)

  def step_all(state, args):
    i, idx_B = args
    if spec.online is not None:  # a fresh batch, from the member's batch seed, the epoch and the step
      k = jax.random.fold_in(key, i)
      x_B, y_B = spec.online(k, spec.batch_size)
      noise = jax.random.fold_in(jax.random.fold_in(member_key(hp, 'noise'), epoch), i)  # from its noise seed
      y_B = y_B + hp['noise_std'] * jax.random.normal(noise, y_B.shape, y_B.dtype)
      return probed_step(spec, state, hp, x_B, y_B, jax.random.fold_in(aug_key, i))
    return probed_step(spec, state, hp, x_train[idx_B], labels_N[idx_B], jax.random.fold_in(aug_key, i))

  if start is None:
    state, (loss, steps) = lax.scan(step, state, (jnp.arange(n_batches), order))
    return state, (jnp.where(active, loss, 0.0).sum() / active.sum() if spec.subset else loss.mean()), steps

  # A while loop over steps start .. stop - 1 whose body is the scan's (slice the step's inputs by the counter, step,
  # write its outputs at the counter): its trip count is unknown when compiled, so XLA keeps it a loop for any length.
  outs = jax.tree.map(lambda a: jnp.zeros((n_batches, *a.shape), a.dtype),
                      jax.eval_shape(step, state, (jnp.int32(0), order[0]))[1])

  def body(carry):
    i, state, outs = carry
    state, out = step(state, (i, lax.dynamic_index_in_dim(order, i, keepdims=False)))
    outs = jax.tree.map(lambda o, v: lax.dynamic_update_index_in_dim(o, v, i, 0), outs, out)
    return i + 1, state, outs

  _, state, (loss, steps) = lax.while_loop(lambda carry: carry[0] < stop, body, (jnp.asarray(start, jnp.int32), state,
                                                                                outs))
  if spec.subset:
    ran = active & (jnp.arange(n_batches) >= start) & (jnp.arange(n_batches) < stop)
    return state, jnp.where(ran, loss, 0.0).sum() / jnp.maximum(ran.sum(), 1), steps
  return state, loss.sum() / jnp.maximum(stop - start, 1), steps


def eval_context(spec: StepSpec, state, hp, labels_N, x_train, x_test, y_test, epoch=0.0, val=None) -> EvalContext:
  """What an evaluation probe sees of one member (ddjax.probes.EvalContext); `val`: (x_val, y_val) or None."""
  return EvalContext(spec, state, hp, labels_N, x_train, x_test, y_test,
                     lambda params, batch_stats, x, y, train: _loss(spec, params, batch_stats, hp, x, y, train),
                     lambda y: target_weight(spec, y), member_key(hp, 'monitor'), jnp.asarray(epoch, jnp.float32),
                     *(val or (None, None)))


def evaluate(spec: StepSpec, state, hp, labels_N, x_train, x_test, y_test, epoch=0.0, val=None,
             which=None) -> dict[str, jax.Array]:
  """The evaluation probes' values (all of spec.probes, or those named in `which`) after `epoch` epochs (fractional
  within an epoch), and whether
  the member diverged; under 'probe_state', the new state of the probes that keep one and ran, and under
  'summary:NAME' the summary of each probe across members that ran."""
  ctx = eval_context(spec, state, hp, labels_N, x_train, x_test, y_test, epoch, val)
  out, probe_state = {}, {}
  for u in spec.probes:
    if which is None or u.name in which:
      if u.spec.pairs is not None:  # a summary that the host compares across members (probes/cross.py)
        out['summary:' + u.name] = u.spec.measure(ctx, **u.kwargs)
      elif u.spec.state is None:
        out.update(u.spec.measure(ctx, **u.kwargs))
      else:
        values, new = u.spec.measure(replace(ctx, probe_state=own_state(u, state['probes'][u.name])), **u.kwargs)
        probe_state[u.name] = {'options': jnp.asarray(options_tag(u), jnp.int32), 'state': new}
        out.update(values)
  out.update(diverged=state['diverged'], diverged_step=state['diverged_step'])
  return dict(out, probe_state=probe_state) if probe_state else out


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
  epoch: Callable     # (state_M, hp_M, labels_MxN, x_train, epoch) -> (state_M, loss_M, step values); donates state
  segment: Callable   # (state_M, hp_M, labels_MxN, x_train, epoch, start, stop) -> as epoch, for those steps only
  evaluate: Callable  # (state_M, hp_M, labels_MxN, x_train, x_test, y_test, epoch, val, which=None) -> metrics of
                      # shape (M,) (and the new probe states, 'probe_state'); val: (x_val, y_val) or None
  evaluate_program: Callable  # which -> the jitted evaluation of those probes (None: all)
  remember_best: Callable  # (state_M, test_loss_M, epoch) -> state_M; donates state


@functools.lru_cache(maxsize=16)
def bucket_fns(spec: StepSpec, members: jax.sharding.Sharding | None = None) -> BucketFns:
  """The jitted programs of one bucket. Each compiles once per (bucket shape, member count); the same spec (and
  sharding) gets the same functions, so a later job or run in this process reuses their compilations. Evaluation
  compiles once per set of probes that run together (`which`: names, None for all).

  Only the 16 newest specs are kept (a live Bucket keeps its own): XLA:CPU maps every compiled kernel into the
  process, and a sweep of many jobs of different shapes in one process kept every job's programs. 15 jobs of two
  MLP buckets left 20,256 memory maps (3,516 keeping 4 specs); at about 50 such jobs compilation failed past the
  kernel's 65,530-map limit ('Cannot allocate memory').

  With `members` (a NamedSharding of the member axis), every output with a member axis, optimizer state
  included, is laid out that way; otherwise outputs follow their committed inputs."""
  def lift(fn, n_mapped):
    lifted = over_members(lambda *a: fn(spec, *a), n_mapped, spec.strategy, spec.map_batch)
    if members is None:
      return lifted

    def per_device(*args):  # each device steps its own members: no partitioning of the members' program to get wrong
      in_specs = (members.spec,) * n_mapped + (jax.sharding.PartitionSpec(),) * (len(args) - n_mapped)
      return jax.shard_map(lifted, mesh=members.mesh, in_specs=in_specs, out_specs=members.spec,
                           check_vma=False)(*args)
    return per_device

  out = {} if members is None else {'out_shardings': members}

  @functools.lru_cache(maxsize=None)
  def evaluate_probes(which):
    return jax.jit(lift(lambda *a: evaluate(*a, which=which), 3), **out)

  return BucketFns(
      init=jax.jit(lift(init_member, 1), **out),
      labels=jax.jit(jax.vmap(lambda hp, y: member_labels(spec, hp, y), in_axes=(0, None)), **out),
      epoch=jax.jit(lift(train_epoch, 3), donate_argnums=0, **out),
      segment=jax.jit(lift(train_epoch, 3), donate_argnums=0, **out),
      evaluate=lambda *args, which=None: evaluate_probes(None if which is None else tuple(sorted(which)))(*args),
      evaluate_program=lambda which=None: evaluate_probes(None if which is None else tuple(sorted(which))),
      remember_best=jax.jit(lift(remember_best, 2), donate_argnums=0, **out),
  )
