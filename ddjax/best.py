"""Each member's best states so far (train.keep_best, train.checkpoint_best), kept in its train state; `spec` is the
bucket's ddjax.train.StepSpec (best_k, best_mode, best_metric)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def remember_best(spec, state, value, epoch):
  """With keep_best: the parameters (and BatchNorm statistics) at the best `best_k` values of best_metric seen so far
  (`value` now), best first; a diverged member keeps its own."""
  best = state['best']
  score = value if spec.best_mode == 'min' else -value
  if spec.best_k == 1:
    better = (score < best['loss']) & ~state['diverged']
    pick = lambda new, old: jax.tree.map(lambda n, o: jnp.where(better, n, o), new, old)
    return dict(state, best={'params': pick(state['params'], best['params']),
                             'batch_stats': pick(state['batch_stats'], best['batch_stats']),
                             'loss': jnp.where(better, score, best['loss']),
                             'epoch': jnp.where(better, epoch, best['epoch']).astype(jnp.int32)})
  # K best: the K lowest scores of the kept ones and this one (a tie keeps the earlier), in order
  better = (score < best['loss'][-1]) & ~state['diverged']
  order = jnp.where(better, jnp.argsort(jnp.append(best['loss'], score), stable=True)[:spec.best_k],
                    jnp.arange(spec.best_k))
  now = {'params': state['params'], 'batch_stats': state['batch_stats'], 'loss': score,
         'epoch': jnp.asarray(epoch, jnp.int32)}
  return dict(state, best=jax.tree.map(lambda kept, new: jnp.append(kept, new[None], axis=0)[order], best, now))


def best_columns(spec, best) -> dict[str, jax.Array]:
  """The evaluation columns of the best state: best_epoch and best_<metric> (of the best one, with best_k > 1)."""
  first = (lambda a: a) if spec.best_k == 1 else (lambda a: a[..., 0])
  sign = 1.0 if spec.best_mode == 'min' else -1.0
  return {'best_epoch': first(best['epoch']), f'best_{spec.best_metric}': sign * first(best['loss'])}
