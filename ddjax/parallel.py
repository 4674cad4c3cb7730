"""Spreading buckets over local devices.

On a CPU every core can be its own XLA device (`--xla_force_host_platform_device_count`); one bucket's step runs
on about one core, so buckets placed on different devices train concurrently. Buckets are assigned to devices by
longest-processing-time-first on their padded cost. A member's numbers do not depend on the device it runs on.
"""

from __future__ import annotations

import os
import re


def use_host_devices(n: int | None = None) -> None:
  """Asks XLA for `n` CPU devices (default: the number of cores) unless XLA_FLAGS already sets a count.

  Call before jax initialises its backends (before the first computation); later it has no effect."""
  flags = os.environ.get('XLA_FLAGS', '')
  if re.search(r'--xla_force_host_platform_device_count', flags):
    return
  n = n or os.cpu_count() or 1
  os.environ['XLA_FLAGS'] = f'{flags} --xla_force_host_platform_device_count={n}'.strip()


def use_gpu_memory(fraction: float = 0.9) -> None:
  """Lets XLA take `fraction` of each GPU's memory (its own default is 0.75) unless XLA_PYTHON_CLIENT_MEM_FRACTION
  is set. Call before jax initialises its backends. Buckets are split to fit 90% of what XLA may take."""
  os.environ.setdefault('XLA_PYTHON_CLIENT_MEM_FRACTION', str(fraction))


def assign(costs: list[float], n_devices: int) -> list[int]:
  """Device index per item, greedy largest-first onto the least-loaded device."""
  load = [0.0] * n_devices
  out = [0] * len(costs)
  for i in sorted(range(len(costs)), key=lambda i: -costs[i]):
    d = min(range(n_devices), key=lambda d: load[d])
    out[i] = d
    load[d] += costs[i]
  return out


def init_distributed() -> int:
  """Joins a multi-process (multi-host) run, before any computation: with DDJAX_COORDINATOR=host:port,
  DDJAX_NUM_PROCESSES and DDJAX_PROCESS_ID set, or with DDJAX_DISTRIBUTED=auto, by jax's own detection of the
  cluster (SLURM, ...). Returns the number of processes (1 when neither is set)."""
  coordinator = os.environ.get('DDJAX_COORDINATOR')
  auto = os.environ.get('DDJAX_DISTRIBUTED', '').lower() == 'auto'
  if not coordinator and not auto:
    return 1
  import jax
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')  # CPU devices talk over gloo
  if coordinator:
    jax.distributed.initialize(coordinator, int(os.environ['DDJAX_NUM_PROCESSES']),
                               int(os.environ['DDJAX_PROCESS_ID']))
  else:
    jax.distributed.initialize()
  return jax.process_count()
