"""Devices and processes: spreading buckets over local devices, and agreement between the processes of a
multi-host run (who writes, numbers and flags every process must decide alike, barriers).

On a CPU every core can be its own XLA device (`--xla_force_host_platform_device_count`); one bucket's step runs
on about one core, so buckets placed on different devices train concurrently. Buckets are assigned to devices by
longest-processing-time-first on their padded cost. A member's numbers do not depend on the device it runs on.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
from pathlib import Path


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


def use_compile_cache(min_compile_s: float = 0.2) -> None:
  """Keeps compiled programs on disk, in `$DDJAX_CACHE/xla/<isa>` (default `~/.cache/ddjax/xla/<isa>`), so a
  resumed run, a rerun, a worker process or another job of the same shapes loads its programs instead of compiling
  them again.

  Programs that took at least `min_compile_s` to compile are kept (jax's own default, 1 s, leaves out most of a
  small CPU run's). JAX_COMPILATION_CACHE_DIR and JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS, when set, win;
  JAX_ENABLE_COMPILATION_CACHE=false turns the cache off. Deleting the folder is always safe.

  XLA compiles CPU code for the host's instruction set and jax's cache key does not say which, so each instruction
  set gets its own folder: a home directory shared by unlike cluster nodes must not hand one of them code it cannot
  run."""
  import jax
  if not jax.config.jax_enable_compilation_cache:
    return
  if jax.config.jax_compilation_cache_dir is None:
    path = os.environ.get('JAX_COMPILATION_CACHE_DIR') or str(cache_dir() / 'xla' / _host_isa())
    jax.config.update('jax_compilation_cache_dir', path)
    os.environ['JAX_COMPILATION_CACHE_DIR'] = path  # worker processes use the same folder
  if 'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS' not in os.environ:
    jax.config.update('jax_persistent_cache_min_compile_time_secs', min_compile_s)
    os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = str(min_compile_s)


def _host_isa() -> str:
  """The machine and a digest of its CPU's feature flags (Linux), or its processor name elsewhere."""
  try:
    with open('/proc/cpuinfo') as f:
      flags = next((line for line in f if line.startswith(('flags', 'Features'))), '')
  except OSError:
    flags = ''
  return f'{platform.machine()}-{hashlib.sha1((flags or platform.processor()).encode()).hexdigest()[:12]}'


def cache_dir() -> Path:
  """Where ddjax keeps what it can make again (generated data, compiled programs): $DDJAX_CACHE, or ~/.cache/ddjax."""
  return Path(os.environ.get('DDJAX_CACHE', Path.home() / '.cache' / 'ddjax'))


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
  if jax.distributed.is_initialized():  # joined already (an experiment of several runs in one process)
    return jax.process_count()
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')  # CPU devices talk over gloo
  if coordinator:
    jax.distributed.initialize(coordinator, int(os.environ['DDJAX_NUM_PROCESSES']),
                               int(os.environ['DDJAX_PROCESS_ID']))
  else:
    jax.distributed.initialize()
  return jax.process_count()


def agree(values, how: str):
  """Numbers that every process of a multi-process run must decide alike (the memory budget, XLA's memory figures,
  which size the buckets of one SPMD program): the elementwise 'min' or 'max' over processes, the same array on
  each. With one process, the numbers as they are."""
  import jax
  import numpy as np
  values = np.asarray(values, np.float32)
  if jax.process_count() == 1:
    return values
  from jax.experimental import multihost_utils
  gathered = np.asarray(multihost_utils.process_allgather(values))  # (processes, ...)
  return gathered.min(0) if how == 'min' else gathered.max(0)


def writer() -> bool:
  """Whether this process writes the store (process 0; the only one outside a multi-host run)."""
  import jax
  return jax.process_index() == 0


def agree_flags(*flags: bool) -> tuple[bool, ...]:
  """Each flag true on every process of a multi-host run if it is true on any (a stop or save that one process
  decided alone would leave the others waiting in orbax's barrier; a signal to any process stops all); the flags
  themselves with one process."""
  return tuple(bool(f) for f in agree(flags, 'max'))


def sync(name: str) -> None:
  """A barrier over the processes of a multi-host run (nothing with one process)."""
  import jax
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)
