"""optax optimizers whose hyperparameters are per-member (traced) scalars.

The optimizer is built inside the per-member function from that member's numbers, so under `jax.vmap` every member
has its own lr and wd without `optax.inject_hyperparams` (whose state would also be per member, and which drifts
from plain Adam). The state layout does not depend on the values, so `init` can use any member's numbers.
"""

import jax.numpy as jnp
import optax

OPTIMIZERS = ('adam', 'adamw', 'sgd')
ADAM_LIKE = ('adam', 'adamw')  # optimizers whose preconditioned sharpness the sharpness monitor also records
SCHEDULES = ('constant', 'cosine', 'linear')


def scheduled_lr(schedule: str, lr, warmup, step, total_steps: int):
  """The learning rate of update `step` (the member's count of updates so far, from 0), as PyTorch's LambdaLR gives
  it when stepped after every optimizer step:

  warmup: lr * min(1, step / warmup), so the first update has lr 0 (Nanda et al.'s code:
    `LambdaLR(opt, lambda step: min(step / 10, 1))`; Power et al.'s warmup likewise); warmup 0 is none;
  then constant, or decayed to 0 at `total_steps` over the steps after warmup: cosine (CosineAnnealingLR with
    eta_min 0) or linear.
  `lr`, `warmup` and `step` may be per-member tracers.
  """
  step = jnp.asarray(step, jnp.float32)
  factor = jnp.where(warmup > 0, jnp.minimum(1.0, step / jnp.maximum(warmup, 1.0)), 1.0)
  if schedule == 'constant':
    return lr * factor
  # The fraction of the decay still to go, computed from the end so that float32 keeps its relative precision as
  # the rate approaches 0; cosine: 0.5 (1 + cos(pi (1 - left))) = sin^2(pi left / 2).
  left = jnp.where(step < warmup, 1.0,
                   jnp.clip((total_steps - step) / jnp.maximum(total_steps - warmup, 1.0), 0.0, 1.0))
  if schedule == 'cosine':
    return lr * factor * jnp.square(jnp.sin(0.5 * jnp.pi * left))
  if schedule == 'linear':
    return lr * factor * left
  raise ValueError(f'unknown schedule {schedule!r}; allowed: {", ".join(SCHEDULES)}')


def make_optimizer(name: str, hp, decay: bool = True) -> optax.GradientTransformation:
  """`hp` holds lr, wd, momentum, b1, b2, eps (scalars or tracers). Conventions follow PyTorch:

  adam: L2 penalty wd * p added to the gradient (torch.optim.Adam weight_decay);
  adamw: decoupled decay p -= lr * wd * p (torch.optim.AdamW, optax.adamw);
  sgd: L2 penalty, then heavy-ball momentum (torch.optim.SGD).
  decay=False: no member has weight decay, and adam and sgd skip adding 0 x p (same state layout).
  """
  lr, wd = hp['lr'], hp['wd']
  l2 = optax.add_decayed_weights(wd) if decay else optax.identity()
  if name == 'adam':
    return optax.chain(l2, optax.scale_by_adam(hp['b1'], hp['b2'], hp['eps']),
                       optax.scale(-lr))
  if name == 'adamw':
    return optax.adamw(lr, hp['b1'], hp['b2'], hp['eps'], weight_decay=wd)
  if name == 'sgd':
    return optax.chain(l2, optax.trace(decay=hp['momentum']), optax.scale(-lr))
  raise ValueError(f'unknown optimizer {name!r}; allowed: {", ".join(OPTIMIZERS)}')
