"""What a probe sees: one member's state and data at an evaluation (EvalContext), or one optimizer step (StepContext).

Both are built inside the traced, vmapped programs of a bucket, so every array is one member's; a probe returns a
dict of scalars, one column each.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from ddjax.data import subset
from ddjax.nn.registry import size_args


def chunks(x, y, size: int):
  """(x, y) in chunks of `size` examples (at most n), the last padded, and which entries are real: (xs, ys, valid)."""
  n = x.shape[0]
  chunk = min(size, n)
  n_chunks = -(-n // chunk)
  pad = n_chunks * chunk - n
  xs = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1)).reshape(n_chunks, chunk, *x.shape[1:])
  ys = jnp.pad(y, [(0, pad)] + [(0, 0)] * (y.ndim - 1)).reshape(n_chunks, chunk, *y.shape[1:])
  valid = (jnp.arange(n_chunks * chunk) < n).reshape(n_chunks, chunk)
  return xs, ys, valid


@dataclass(frozen=True)
class EvalContext:
  """One member at an evaluation. `loss(params, batch_stats, x, y, train)` is the training loss on preprocessed
  inputs: ((loss_B, wrong_B, weight_B), batch_stats) per example (wrong: misclassified; weight: 0 for a target that
  does not count)."""
  spec: Any                  # the bucket's StepSpec: model, preprocess, task, num_classes, eval_batch, optimizer
  state: dict
  hp: dict
  labels_N: jax.Array        # the member's own (noisy) training labels
  x_train: jax.Array         # raw inputs (spec.preprocess normalises them)
  x_test: jax.Array
  y_test: jax.Array
  loss: Callable
  target_weight: Callable    # (y) -> per-example weight (0 for targets that do not count)
  key: jax.Array             # the member's key for probes' random draws (from its batch seed)
  epoch: jax.Array = None    # epochs completed (float32; fractional within an epoch)
  x_val: jax.Array | None = None  # the validation split (data.val_per_group, data.val_split); None: none
  y_val: jax.Array | None = None
  probe_state: Any = None    # a probe with a state (ProbeSpec.state): its own, as it was after its last run

  @property
  def variables(self) -> dict:
    return {'params': self.state['params'], 'batch_stats': self.state['batch_stats']}

  def dataset_stats(self, x, y) -> tuple[jax.Array, jax.Array]:
    """Mean loss and error over (x, y) (over targets that count, for regression), in chunks of eval_batch, with
    evaluation-mode BatchNorm."""
    xs, ys, valid = chunks(x, y, self.spec.eval_batch)

    def one(args):
      xc, yc, vc = args
      (loss, wrong, weight), _ = self.loss(self.state['params'], self.state['batch_stats'],
                                           self.spec.preprocess(xc), yc, False)
      weight = weight * vc
      return jnp.sum(loss * weight), jnp.sum(wrong * weight), jnp.sum(weight)

    loss_sum, wrong_sum, count = (a.sum() for a in lax.map(one, (xs, ys, valid)))
    count = jnp.maximum(count, 1.0)
    return loss_sum / count, wrong_sum / count

  def features(self, x, layer: str | None = None) -> tuple[jax.Array, jax.Array]:
    """(outputs, features) for raw inputs x in evaluation mode, both float32 and flattened per example: the
    features are the input of the output layer `head` (layer None) or the model's tap point `layer`. Masked
    channels are zero, so a member's features are those of its own width."""
    model, x, width = self.spec.model, self.spec.preprocess(x), self.hp['width']
    sizes = size_args(model, self.hp)
    if layer is None:
      seen = []

      def grab(next_fun, args, kwargs, context):
        if context.module.name == 'head' and context.method_name == '__call__':
          seen.append(args[0])
        return next_fun(*args, **kwargs)

      with nn.intercept_methods(grab):
        out = model.apply(self.variables, x, width, train=False, **sizes)
      h = seen[-1]
    else:
      out, found = self._taps(x, (layer,))
      h = found[layer]
    return out.astype(jnp.float32), h.reshape(x.shape[0], -1).astype(jnp.float32)

  def tap_features(self, x, layers) -> dict[str, jax.Array]:
    """{layer: features} at several tap points from one forward pass of raw inputs x (as `features`, float32,
    flattened per example)."""
    _, found = self._taps(self.spec.preprocess(x), tuple(layers))
    return {n: found[n].reshape(x.shape[0], -1).astype(jnp.float32) for n in layers}

  def _taps(self, x, layers):
    """(outputs, {tap point: value}) for preprocessed x; KeyError naming the model's tap points for a missing one."""
    model = self.spec.model
    out, state = model.apply(self.variables, x, self.hp['width'], train=False, mutable=['taps'],
                             **size_args(model, self.hp))
    found = {k: v[-1] for k, v in state.get('taps', {}).items()}  # sow keeps a tuple of calls
    if missing := [n for n in layers if n not in found]:
      raise KeyError(f'{type(model).__name__} has no tap point {missing[0]!r}; it has {sorted(found)}')
    return out, found

  def probe_batch(self, n: int, own: bool = True) -> tuple[jax.Array, jax.Array]:
    """`n` training examples (at most all) evenly spaced through the training set, raw, with the member's own
    labels: the same at every evaluation. Data sets stored in groups (m-height) are sampled across every group.
    With data.subset, evenly spaced through the member's own examples (each about n / its count times where it has
    fewer than n); `own=False`: through the whole training set all the same (inputs every member shares)."""
    n_train = self.x_train.shape[0]
    n = min(n, n_train)
    idx = jnp.arange(n) * n_train // n
    if self.spec.subset and own:  # its own examples first (in index order), then those it does not train on
      mine = subset.own(self.labels_N, self.spec.task)
      idx = jnp.argsort(~mine, stable=True)[jnp.arange(n) * mine.sum() // n]
    return self.x_train[idx], self.labels_N[idx]

  def monitor_batch(self, n: int) -> tuple[jax.Array, jax.Array]:
    """probe_batch(n), preprocessed (no augmentation)."""
    x, y = self.probe_batch(n)
    return self.spec.preprocess(x), y

  def batch_loss(self, x, y, train: bool = True) -> Callable:
    """params -> the mean loss on preprocessed (x, y) with this member's BatchNorm statistics: the batch's own with
    `train` (running statistics untouched), the running ones without."""
    def loss(params):
      (loss_B, _, weight_B), _ = self.loss(params, self.state['batch_stats'], x, y, train)
      return loss_B.sum() / jnp.maximum(weight_B.sum(), 1.0)
    return loss


@dataclass(frozen=True)
class StepContext:
  """One member's optimizer step: the state before and after it, the gradients of the batch loss, the batch's mean
  loss and per-example (wrong, weight), the learning rate the step used."""
  spec: Any
  hp: dict
  before: dict
  after: dict
  grads: Any
  loss: jax.Array
  wrong_B: jax.Array
  weight_B: jax.Array
  lr: jax.Array


def options_tag(u) -> int:
  """A number that changes with a probe's options (u: a Use): a probe state kept under other options (a run resumed
  with another layer or reference epoch) is not reused."""
  return int(hashlib.sha1(repr(u.options).encode()).hexdigest()[:7], 16)


def own_state(u, kept: dict):
  """A stateful probe's state as kept, or its init value where it was kept under other options."""
  same = kept['options'] == options_tag(u)
  return jax.tree.map(lambda k, f: jnp.where(same, k, f), kept['state'], u.spec.state(**u.kwargs))
