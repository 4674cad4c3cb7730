"""A job's progress over its epochs: tqdm's bar on a terminal, plain lines in a log.

Redirected to a file, a bar is one long line of carriage returns; there a line is printed at most every `every_s`
seconds and at the last epoch instead: `job 1/4: epoch 40/100 (40%), 1.21 s/epoch, 1 min 13 s left, <figures>`.
"""

from __future__ import annotations

import sys
import time
from typing import Iterable, Iterator


def _duration(seconds: float) -> str:
  minutes, s = divmod(int(round(seconds)), 60)
  hours, m = divmod(minutes, 60)
  return f'{hours} h {m} min' if hours else f'{m} min {s} s' if m else f'{s} s'


class LogLines:
  """tqdm's interface as the epoch loop uses it (iterate, set_postfix_str, close), as plain lines."""

  def __init__(self, iterable: Iterable[int], desc: str, initial: int, total: int, every_s: float = 30.0,
               file=None, clock=time.time):
    self.iterable, self.desc, self.total, self.every_s = iterable, desc, total, every_s
    self.file, self.initial, self.postfix, self.clock = file or sys.stderr, initial, '', clock
    self.t0 = self.last = clock()

  def __iter__(self) -> Iterator[int]:
    for epoch in self.iterable:
      yield epoch
      now = self.clock()
      if epoch == self.total or now - self.last >= self.every_s:
        self.last = now
        rate = (now - self.t0) / max(epoch - self.initial, 1)
        tail = f', {self.postfix}' if self.postfix else ''
        print(f'{self.desc}: epoch {epoch}/{self.total} ({100 * epoch // max(self.total, 1)}%), {rate:.3g} s/epoch, '
              f'{_duration(rate * (self.total - epoch))} left{tail}', file=self.file, flush=True)

  def set_postfix_str(self, text: str) -> None:
    self.postfix = text

  def close(self) -> None:
    pass


def _terminal(stream) -> bool:
  """Whether `stream` is a terminal (or a notebook, where tqdm.auto draws its own bar); False for a file, a pipe, a
  closed stream or none."""
  if 'ipykernel' in sys.modules:
    return True
  try:
    return bool(stream.isatty())
  except (AttributeError, ValueError):
    return False


def epochs_progress(iterable: Iterable[int], desc: str, initial: int, total: int, enabled: bool, position: int = 0):
  """A tqdm bar when stderr is a terminal, LogLines when it is not, nothing (an iterator over the epochs with the
  same methods) when not `enabled`."""
  if enabled and not _terminal(sys.stderr):
    return LogLines(iterable, desc, initial, total)
  from tqdm.auto import tqdm
  return tqdm(iterable, desc=desc, unit='epoch', initial=initial, total=total, disable=not enabled, file=sys.stderr,
              dynamic_ncols=True, mininterval=1.0, position=position)
