"""A run's time: its epochs, each with its batch size, steps per epoch and the optimizer steps before it. train.epochs
whole epochs, or train.max_steps (the last epoch cut short), or the phases that batch-size callbacks make."""

from __future__ import annotations

from typing import NamedTuple

from ddjax.callbacks import phases


def run_length(train, steps_per_epoch: int) -> tuple[int, int]:
  """(epochs, optimizer steps of the last one) of a run: train.epochs whole epochs, or with train.max_steps the
  epochs those steps need, the last one cut short where they end."""
  if not train.max_steps:
    return train.epochs, steps_per_epoch
  epochs = -(-train.max_steps // steps_per_epoch)
  return epochs, train.max_steps - (epochs - 1) * steps_per_epoch


class EpochPlan(NamedTuple):
  """One epoch of a run: its phase (callbacks.phases), batch size, steps per epoch, the optimizer steps before it
  and the steps it trains (fewer than steps_per_epoch where a phase or the run ends part way)."""
  phase: int
  batch_size: int
  steps_per_epoch: int
  first: int
  length: int


def epoch_plan(cfg, n_train: int) -> list[EpochPlan]:
  """Every epoch of a run on `n_train` training examples, in order: train.epochs or train.max_steps at one batch
  size, or the phases the callbacks make (each starts a new epoch; max_steps ends the last)."""
  switches = phases(cfg)
  for _, batch in switches:
    if batch > n_train:
      raise ValueError(f'a batch size of {batch} is more than the {n_train} training examples (callbacks='
                       f'{cfg.callbacks or "none"}, train.batch_size={cfg.train.batch_size})')
  if len(switches) == 1:  # (a schedule may switch at step 0 to its own batch size)
    batch = switches[0][1]
    spe = max(1, n_train // (batch or n_train))
    epochs, last = run_length(cfg.train, spe)
    return [EpochPlan(0, batch, spe, (e - 1) * spe, last if e == epochs else spe) for e in range(1, epochs + 1)]
  plan, total = [], cfg.train.max_steps
  for p, (start, batch) in enumerate(switches):
    end = min(switches[p + 1][0] if p + 1 < len(switches) else total, total)
    spe, step = max(1, n_train // (batch or n_train)), start
    while step < end:
      plan.append(EpochPlan(p, batch, spe, step, min(spe, end - step)))
      step += plan[-1].length
  return plan
