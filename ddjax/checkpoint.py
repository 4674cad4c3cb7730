"""Checkpoints of a job's bucket states with orbax, and a SIGTERM/SIGINT handler that saves before exiting.

A checkpoint's step is the number of finished epochs. Everything a member's future depends on is in its state
(params, batch_stats, optimizer state, divergence flag, step) or derived from (seeds, epoch), so restoring at
epoch e and training on reproduces the uninterrupted run exactly.
"""

from __future__ import annotations

import signal
import warnings
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp


class Checkpoints:
  """One orbax CheckpointManager per job directory; keeps the newest `keep` checkpoints."""

  def __init__(self, directory: Path, keep: int = 3):
    self.manager = ocp.CheckpointManager(
        Path(directory).absolute(),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=False))

  def save(self, epoch: int, states: list, elapsed_s: float, attempt: int = 0) -> None:
    tree = {'buckets': list(states), 'elapsed_s': np.asarray(elapsed_s, np.float64),
            'attempt': np.asarray(attempt, np.int64)}
    if epoch in self.manager.all_steps():  # an unreadable checkpoint that resume fell back from
      self.manager.delete(epoch)
    self.manager.save(epoch, args=ocp.args.StandardSave(tree), force=True)
    self.manager.wait_until_finished()

  def restore(self, states: list) -> tuple[int, list, float, int] | None:
    """(epoch, states, elapsed seconds, attempt) of the newest readable checkpoint, placed like `states`; None if
    none.

    A newest checkpoint that cannot be read (cut off mid-write, corrupted) is skipped with a warning."""
    target = {'buckets': jax.tree.map(ocp.utils.to_shape_dtype_struct, list(states)),
              'elapsed_s': np.asarray(0.0, np.float64), 'attempt': np.asarray(0, np.int64)}
    for step in sorted(self.manager.all_steps(), reverse=True):
      try:
        restored = self.manager.restore(step, args=ocp.args.StandardRestore(target))
      except Exception as e:  # noqa: BLE001 - any unreadable checkpoint falls back to the previous one
        warnings.warn(f'checkpoint at epoch {step} is unreadable ({type(e).__name__}: {e}); trying an older one')
        continue
      return step, list(restored['buckets']), float(restored['elapsed_s']), int(restored['attempt'])
    return None

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


class StopRequested:
  """Turns SIGTERM and SIGINT into a flag the epoch loop checks, so it can checkpoint and exit cleanly.

  A second signal while stopping raises KeyboardInterrupt at once."""

  def __init__(self):
    self.signal: int | None = None
    self._previous = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread: leave signals alone
        pass
    return self

  def _handle(self, signum, frame):
    if self.signal is not None:
      raise KeyboardInterrupt
    self.signal = signum

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    return False

  def __bool__(self):
    return self.signal is not None
