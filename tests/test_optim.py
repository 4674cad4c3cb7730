"""Optimizer conventions against NumPy transcriptions of PyTorch's update rules (torch.optim docs), with weight
decay, per-member hyperparameters under vmap, and masked (zero) parameters that must stay zero."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ddjax.optim import make_optimizer, scheduled_lr

STEPS = 6


def torch_reference(name, p, grad_fn, lr, wd, momentum, b1, b2, eps):
  p = p.astype(np.float64).copy()
  m = np.zeros_like(p)
  v = np.zeros_like(p)
  for t in range(1, STEPS + 1):
    g = grad_fn(p)
    if name == 'sgd':  # torch.optim.SGD(momentum, weight_decay), dampening 0
      g = g + wd * p
      m = g if t == 1 else momentum * m + g
      p = p - lr * m
      continue
    if name == 'adam':  # torch.optim.Adam(weight_decay): L2 added to the gradient
      g = g + wd * p
    else:  # torch.optim.AdamW: decoupled, scaled by lr
      p = p * (1 - lr * wd)
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    p = p - lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
  return p


@pytest.mark.parametrize('name', ['adam', 'adamw', 'sgd'])
def test_matches_pytorch_rules_per_member(name):
  rng = np.random.default_rng(0)
  a = rng.normal(size=(6, 6))
  hess = a @ a.T / 6 + np.eye(6)
  target = rng.normal(size=6)
  p0 = rng.normal(size=6) * np.array([1, 1, 1, 1, 0, 0])  # the last two are masked: zero with zero gradient
  mask = np.array([1, 1, 1, 1, 0, 0], float)
  grad_np = lambda p: mask * (hess @ p - target)
  # Every hyperparameter differs between members, so a member that used another's value, or a default, would show.
  members = {'lr': [1e-2, 3e-2, 1e-1, 5e-2], 'wd': [0.0, 0.1, 0.5, 0.2], 'momentum': [0.9, 0.5, 0.0, 0.8],
             'b1': [0.9, 0.8, 0.95, 0.5], 'b2': [0.999, 0.98, 0.9, 0.95], 'eps': [1e-8, 1e-6, 1e-3, 1e-1]}

  def run(hp):
    tx = make_optimizer(name, hp)
    p = jnp.asarray(p0, jnp.float32)
    state = tx.init(p)
    for _ in range(STEPS):
      g = jnp.asarray(mask, jnp.float32) * (jnp.asarray(hess, jnp.float32) @ p - jnp.asarray(target, jnp.float32))
      updates, state = tx.update(g, state, p)
      p = optax.apply_updates(p, updates)
    return p

  got = np.asarray(jax.jit(jax.vmap(run))({k: jnp.asarray(v, jnp.float32) for k, v in members.items()}))
  for i in range(4):
    want = torch_reference(name, p0, grad_np, **{k: v[i] for k, v in members.items()})
    np.testing.assert_allclose(got[i], want, rtol=2e-5, atol=1e-5)  # float32 vs float64; a convention error is >1e-3
    assert np.all(got[i][4:] == 0.0)  # decay of a zero parameter is zero


def pytorch_lambda(schedule, warmup, total):
  """The LambdaLR factor of update t (0, 1, ...) in the forms public PyTorch code writes: min(t / W, 1) warmup
  (Power et al.'s and Nanda et al.'s code), then CosineAnnealingLR's closed form with eta_min 0, or the linear
  decay of transformers' get_linear_schedule_with_warmup."""
  def factor(t):
    if t < warmup:
      return t / warmup
    if schedule == 'constant':
      return 1.0
    progress = min(1.0, (t - warmup) / max(1, total - warmup))
    return 0.5 * (1 + np.cos(np.pi * progress)) if schedule == 'cosine' else 1.0 - progress
  return factor


@pytest.mark.parametrize('schedule', ['constant', 'cosine', 'linear'])
def test_schedules_follow_pytorch_per_member(schedule):
  total = 40
  lrs, warmups = [1e-3, 3e-2, 0.1, 1.0, 0.5], [0, 1, 10, 39, 60]  # 60: warmup longer than the run
  steps = np.arange(total + 3)
  got = jax.jit(jax.vmap(jax.vmap(scheduled_lr, (None, None, None, 0, None)), (None, 0, 0, None, None)),
                static_argnums=(0, 4))(schedule, jnp.asarray(lrs, jnp.float32), jnp.asarray(warmups, jnp.float32),
                                       jnp.asarray(steps, jnp.int32), total)
  for i, (lr, warmup) in enumerate(zip(lrs, warmups)):
    want = [lr * pytorch_lambda(schedule, warmup, total)(t) for t in steps]
    np.testing.assert_allclose(np.asarray(got[i]), want, rtol=1e-6, atol=1e-9)
  assert float(got[2, 0]) == 0.0 and float(got[0, 0]) == np.float32(lrs[0])  # warmup starts at 0; none at lr
