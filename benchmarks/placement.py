"""Placement on a CPU: whole buckets onto devices (`bucket`) against every bucket over all devices (`shard`), for a
one-bucket job (the grokking default preset) and a many-bucket one (the double-descent demo), and what `auto`
picks for each.

  python -m benchmarks.placement [--grok-epochs 300] [--demo-epochs 3] [--out benchmarks/results]

Prints seconds per epoch of all members under each placement (compilation excluded: every program is compiled
and run once before timing), and the wall time of a whole run under each (1,000 grokking epochs, 12 demo epochs:
planning, compilation, evaluations and part files included), and writes them as JSON. Run it on a quiet machine:
the two placements are timed one after the other in this one run.
"""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path

from ddjax import parallel

parallel.use_host_devices()  # one XLA device per core, as the experiments' CLI does
import jax  # noqa: E402

from benchmarks.common import write_result  # noqa: E402
from benchmarks.members import time_buckets  # noqa: E402
from ddjax import config as cfglib  # noqa: E402
from ddjax.buckets import job_plan, make_buckets, placement  # noqa: E402
from ddjax.data import load_dataset  # noqa: E402
from ddjax.members import expand  # noqa: E402
from ddjax.store import device_name, versions  # noqa: E402


def time_placements(preset, overrides: list[str], epochs: int) -> dict:
  """Seconds per epoch of the preset's first job under bucket and shard, and what auto picks."""
  cfg, sweep = cfglib.apply_overrides(preset.config, preset.sweep, overrides)
  job = expand(cfg, sweep)[0]
  ds = load_dataset(cfg.data)
  plan, cost = job_plan(job, ds.input_shape, ds.num_classes)
  out = {'members': len(job.members), 'buckets': [max(b) for b in plan], 'epochs_timed': epochs,
         'auto': placement(cfg, len(plan))}
  for where in ('bucket', 'shard'):
    variant = type(job)(job.index, cfglib.replace(job.config, 'train.placement', where), job.static, job.members)
    out[f'{where}_s_per_epoch'] = time_buckets(make_buckets(variant, ds, plan, cost, log=lambda *a: None,
                                                            check='none'), epochs)
  out['auto_s_per_epoch'] = out[f'{out["auto"]}_s_per_epoch']
  return out


def time_run(preset, overrides: list[str], where: str, epochs: int) -> float:
  """Wall seconds of a whole run (planning, compilation, training, evaluations, part files) under a placement."""
  import tempfile
  import time
  from ddjax.run import run
  cfg, sweep = cfglib.apply_overrides(preset.config, preset.sweep,
                                      overrides + [f'train.epochs={epochs}', f'train.placement={where}'])
  with tempfile.TemporaryDirectory() as out:
    t = time.perf_counter()
    run(cfg, sweep, expand(cfg, sweep), out, progress=False, log=lambda *a: None)
    return time.perf_counter() - t


def main(argv=None):
  from experiments.double_descent import PRESETS as DD
  from experiments.grokking import PRESETS as GROK
  parser = argparse.ArgumentParser(prog='python -m benchmarks.placement', description=__doc__.split('\n')[0])
  parser.add_argument('--grok-epochs', type=int, default=300, help='timed epochs of the grokking preset')
  parser.add_argument('--demo-epochs', type=int, default=3, help='timed epochs of the double-descent demo')
  parser.add_argument('--grok-run-epochs', type=int, default=1000, help='epochs of the timed whole grokking run')
  parser.add_argument('--demo-run-epochs', type=int, default=12, help='epochs of the timed whole demo run')
  parser.add_argument('--out', type=Path, default=Path('benchmarks/results'))
  args = parser.parse_args(argv)
  res = {'machine': f'{platform.machine()} {os.cpu_count()} cores, {device_name()}', 'versions': versions(),
         'grokking_default': time_placements(GROK['default'], [], args.grok_epochs),
         'double_descent_mnist1d': time_placements(DD['mnist1d'], [], args.demo_epochs)}
  for name, preset, epochs in (('grokking_default', GROK['default'], args.grok_run_epochs),
                                ('double_descent_mnist1d', DD['mnist1d'], args.demo_run_epochs)):
    r = res[name]
    r['run_epochs'] = epochs
    for where in ('bucket', 'shard'):
      r[f'{where}_run_s'] = time_run(preset, [], where, epochs)
    print(f"{name}: {r['members']} members in {len(r['buckets'])} bucket(s); per epoch (compiled, training only) "
          f"bucket {r['bucket_s_per_epoch']:.4f} s, shard {r['shard_s_per_epoch']:.4f} s; a whole {epochs}-epoch "
          f"run: bucket {r['bucket_run_s']:.1f} s, shard {r['shard_run_s']:.1f} s; auto picks {r['auto']}")
  write_result(args.out, f'placement-{jax.default_backend()}', res)
  return res


if __name__ == '__main__':
  main()
