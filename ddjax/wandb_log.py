"""Optional Weights & Biases logging (`--wandb`): one W&B run per sweep invocation, every member's metrics at
every evaluation under `<run id>/<metric>`, the sweep's config and the members table. wandb is never required;
without a server set `WANDB_MODE=offline` (the default here when no API key is configured) and sync later with
`wandb sync`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def available() -> bool:
  try:
    import wandb  # noqa: F401
  except ImportError:
    return False
  return True


class WandbLogger:
  def __init__(self, out: Path, record: dict[str, Any], project: str | None = None):
    import wandb
    self.wandb = wandb
    mode = os.environ.get('WANDB_MODE') or ('online' if os.environ.get('WANDB_API_KEY') else 'offline')
    self.run = wandb.init(project=project or 'ddjax', name=Path(out).name, dir=str(out), mode=mode,
                          config={'config': record.get('config'), 'sweep': record.get('sweep'),
                                  'members': record.get('members'), 'jobs': record.get('jobs')})

  def log(self, rows: list[dict[str, Any]], epoch: float) -> None:
    """One evaluation of a job's members (at a fractional epoch within one): numbers only, keyed by run id."""
    metrics = {f'{r["run_id"]}/{k}': v for r in rows for k, v in r.items()
               if k not in ('run_id', 'attempt', 'epoch', 'step', 'time_s') and isinstance(v, (int, float, bool))}
    self.run.log({'epoch': epoch, **metrics})

  def finish(self) -> None:
    self.run.finish()
