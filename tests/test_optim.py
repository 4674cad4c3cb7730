"""Optimizer conventions against NumPy transcriptions of PyTorch's update rules (torch.optim docs), with weight
decay, per-member hyperparameters under vmap, and masked (zero) parameters that must stay zero."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ddjax.optim import make_optimizer

STEPS = 6


def torch_reference(name, p, grad_fn, lr, wd, momentum=0.9, b1=0.9, b2=0.999, eps=1e-8):
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
  lrs, wds = np.array([1e-2, 3e-2, 1e-1]), np.array([0.0, 0.1, 0.5])

  def run(lr, wd):
    hp = {'lr': lr, 'wd': wd, 'momentum': 0.9, 'b1': 0.9, 'b2': 0.999, 'eps': 1e-8}
    tx = make_optimizer(name, hp)
    p = jnp.asarray(p0, jnp.float32)
    state = tx.init(p)
    for _ in range(STEPS):
      g = jnp.asarray(mask, jnp.float32) * (jnp.asarray(hess, jnp.float32) @ p - jnp.asarray(target, jnp.float32))
      updates, state = tx.update(g, state, p)
      p = optax.apply_updates(p, updates)
    return p

  got = np.asarray(jax.jit(jax.vmap(run))(jnp.asarray(lrs, jnp.float32), jnp.asarray(wds, jnp.float32)))
  for i, (lr, wd) in enumerate(zip(lrs, wds)):
    want = torch_reference(name, p0, grad_np, lr, wd)
    np.testing.assert_allclose(got[i], want, rtol=2e-5, atol=1e-5)  # float32 vs float64; a convention error is >1e-3
    assert np.all(got[i][4:] == 0.0)  # decay of a zero parameter is zero
