"""optax optimizers whose hyperparameters are per-member (traced) scalars.

The optimizer is built inside the per-member function from that member's numbers, so under `jax.vmap` every member
has its own lr and wd without `optax.inject_hyperparams` (whose state would also be per member, and which drifts
from plain Adam). The state layout does not depend on the values, so `init` can use any member's numbers.
"""

import optax

OPTIMIZERS = ('adam', 'adamw', 'sgd')


def make_optimizer(name: str, hp) -> optax.GradientTransformation:
  """`hp` holds lr, wd, momentum, b1, b2, eps (scalars or tracers). Conventions follow PyTorch:

  adam: L2 penalty wd * p added to the gradient (torch.optim.Adam weight_decay);
  adamw: decoupled decay p -= lr * wd * p (torch.optim.AdamW, optax.adamw);
  sgd: L2 penalty, then heavy-ball momentum (torch.optim.SGD).
  """
  lr, wd = hp['lr'], hp['wd']
  if name == 'adam':
    return optax.chain(optax.add_decayed_weights(wd), optax.scale_by_adam(hp['b1'], hp['b2'], hp['eps']),
                       optax.scale(-lr))
  if name == 'adamw':
    return optax.adamw(lr, hp['b1'], hp['b2'], hp['eps'], weight_decay=wd)
  if name == 'sgd':
    return optax.chain(optax.add_decayed_weights(wd), optax.trace(decay=hp['momentum']), optax.scale(-lr))
  raise ValueError(f'unknown optimizer {name!r}; allowed: {", ".join(OPTIMIZERS)}')
