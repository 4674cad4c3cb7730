"""The base probes, on in every run: losses and errors, weight norms; and `step_metrics`, the step table."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ddjax.data.noise import noisy_test_error
from ddjax.probes.registry import Option, register_probe


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


@register_probe('losses', always=True, columns=('train_loss', 'test_loss', 'train_error', 'test_error',
                                                'test_error_noisy', 'val_loss', 'val_error'),
                progress=('train_error', 'val_error', 'test_error', 'train_loss', 'val_loss', 'test_loss'),
                options={'train_examples': Option(0, 'training examples, evenly spaced through the training set, '
                                                     'that train_loss and train_error are measured on (0: all)',
                                                  check=lambda v: v >= 0, must='must be >= 0')},
                help="training loss and error on the member's own (noisy) labels, test loss and error on clean "
                     'labels and the test error on the noisy label distribution, and with a validation split its '
                     'loss and error (classification: cross-entropy in nats; regression: squared error, no '
                     'errors)')
def losses(ctx, train_examples: int = 0):
  x, y = ctx.probe_batch(train_examples) if train_examples else (ctx.x_train, ctx.labels_N)
  train_loss, train_error = ctx.dataset_stats(x, y)
  test_loss, test_error = ctx.dataset_stats(ctx.x_test, ctx.y_test)
  out = {'train_loss': train_loss, 'test_loss': test_loss}
  if ctx.spec.task == 'classify':
    out.update(train_error=train_error, test_error=test_error,
               test_error_noisy=noisy_test_error(test_error, ctx.hp['noise'], ctx.spec.num_classes))
  if ctx.x_val is not None:  # a validation split: what selection and the grokking analysis read
    val_loss, val_error = ctx.dataset_stats(ctx.x_val, ctx.y_val)
    out.update(val_loss=val_loss, **({'val_error': val_error} if ctx.spec.task == 'classify' else {}))
  return out


@register_probe('norms', always=True, columns=('weight_norm', 'weight_norm_last', 'norm_<layer>', 'update_norm'),
                help="the parameters' L2 norm, the output layer's, each top-level layer's, and the last optimizer "
                     "update's")
def norms(ctx):
  return dict(weight_norms(ctx.state['params']), update_norm=ctx.state['update_norm'])


@register_probe('step_metrics', kind='step', every='1',
                columns=('step_loss', 'step_accuracy', 'step_grad_norm', 'step_lr'),
                help="the step table: each optimizer step's batch loss (nats, before the update), accuracy on the "
                     "batch (classification), gradient norm and learning rate; step_loss_bits and step_wd are "
                     "added on load (results.load_sweep(DIR, table='steps'))")
def step_metrics(ctx):
  out = {'step_loss': ctx.loss, 'step_grad_norm': tree_norm(ctx.grads), 'step_lr': jnp.asarray(ctx.lr, jnp.float32)}
  if ctx.spec.task == 'classify':
    weight = jnp.maximum(ctx.weight_B.sum(), 1.0)
    out['step_accuracy'] = 1.0 - jnp.sum(ctx.wrong_B * ctx.weight_B) / weight
  return out
