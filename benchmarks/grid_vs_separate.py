"""A member-axis grid as one vectorised run against each point trained on its own, with the same code, on this machine.

  python -m benchmarks.grid_vs_separate [--preset samplewise|mup] [--epochs 3] [--out benchmarks/results]

The grid is a double_descent preset's sweep: widths x training-set sizes (samplewise, data.subset under
train.budget=steps) or widths x parametrizations (mup). (a) times an epoch of every member in the run's own buckets;
(b) times an epoch of one member per width alone in its own run (a point of another size, seed or parametrization
costs the same: under budget=steps every member takes the same steps, and a parametrization only scales numbers),
and each such run's compilation. The projection for the whole grid trained point by point is then, per member, its
width's compilation plus its epochs at its width's time; the vectorised run's is its buckets' compilations plus its
epochs at (a)'s time. Evaluations are excluded from both. Writes grid_vs_separate-PRESET-BACKEND.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

from ddjax import parallel

parallel.use_host_devices()  # one XLA device per core, as the experiments' CLI does
import jax  # noqa: E402

from benchmarks.common import write_result  # noqa: E402
from benchmarks.members import one_device, time_buckets  # noqa: E402
from ddjax import config as cfglib  # noqa: E402
from ddjax.buckets import job_plan, make_buckets  # noqa: E402
from ddjax.data import load_dataset  # noqa: E402
from ddjax.members import expand, job_padded_ratio  # noqa: E402
from ddjax.store import device_name, versions  # noqa: E402
from experiments.double_descent import PRESETS  # noqa: E402


def first_epoch_s(buckets) -> float:
  """Seconds of the first epoch of `buckets` (compilation included)."""
  t = time.perf_counter()
  jax.block_until_ready([b.train_epoch(0) for b in buckets])
  return time.perf_counter() - t


def main(argv=None):
  parser = argparse.ArgumentParser(prog='python -m benchmarks.grid_vs_separate', description=__doc__.split('\n')[0])
  parser.add_argument('--preset', default='samplewise', choices=('samplewise', 'mup'))
  parser.add_argument('--epochs', type=int, default=3, help='timed epochs per configuration')
  parser.add_argument('--out', type=Path, default=Path('benchmarks/results'))
  parser.add_argument('overrides', nargs='*', metavar='key=value', help='preset overrides')
  args = parser.parse_args(argv)
  preset = PRESETS[args.preset]
  cfg, sweep = cfglib.apply_overrides(preset.config, preset.sweep, args.overrides)
  job = expand(cfg, sweep)[0]
  ds = load_dataset(cfg.data)
  plan, cost = job_plan(job, ds.input_shape, ds.num_classes)
  epochs = cfg.train.epochs
  res = {'machine': f'{platform.machine()} {os.cpu_count()} cores, {device_name()}', 'versions': versions(),
         'preset': args.preset, 'members': len(job.members), 'epochs': epochs, 'epochs_timed': args.epochs,
         'buckets': [max(b) for b in plan],
         'padded_ratio': job_padded_ratio(job, plan, cost, len(ds.y_train), cfg.train.batch_size)}
  buckets = make_buckets(job, ds, plan, cost, check='none')
  res['vectorised_first_epoch_s'] = first_epoch_s(buckets)
  res['vectorised_s'] = time_buckets(buckets, args.epochs)
  res['vectorised_compile_s'] = max(res['vectorised_first_epoch_s'] - res['vectorised_s'], 0.0)
  buckets = None
  print(f"{len(job.members)} members in buckets padded to {res['buckets']} (padded/useful {res['padded_ratio']:.3f}): "
        f"(a) {res['vectorised_s']:.3f} s/epoch of all, first epoch {res['vectorised_first_epoch_s']:.1f} s")
  per_width = {}
  for w in sorted({m['model.width'] for m in job.members}):
    i = next(i for i, m in enumerate(job.members) if m['model.width'] == w)
    alone = one_device(job, ds, [[i]])
    first = first_epoch_s(alone)
    epoch_s = time_buckets(alone, args.epochs)
    per_width[w] = {'epoch_s': epoch_s, 'compile_s': max(first - epoch_s, 0.0)}
    print(f'(b) width {w:>3} alone: {epoch_s:.4f} s/epoch, compilation {per_width[w]["compile_s"]:.2f} s')
  res['separate_per_width'] = {str(w): v for w, v in per_width.items()}
  widths = [m['model.width'] for m in job.members]
  res['separate_s'] = sum(per_width[w]['epoch_s'] for w in widths)
  res['speedup_per_epoch'] = res['separate_s'] / res['vectorised_s']
  res['separate_run_projected_s'] = sum(per_width[w]['compile_s'] + epochs * per_width[w]['epoch_s'] for w in widths)
  res['vectorised_run_projected_s'] = res['vectorised_compile_s'] + epochs * res['vectorised_s']
  res['speedup_run'] = res['separate_run_projected_s'] / res['vectorised_run_projected_s']
  print(f"(b) every point alone: {res['separate_s']:.3f} s/epoch of all ({res['speedup_per_epoch']:.2f}x (a)); "
        f"{epochs} epochs projected: {res['separate_run_projected_s'] / 60:.1f} min point by point against "
        f"{res['vectorised_run_projected_s'] / 60:.1f} min vectorised ({res['speedup_run']:.2f}x), evaluations "
        'excluded')
  write_result(args.out, f'grid_vs_separate-{args.preset}-{jax.default_backend()}', res)
  return res


if __name__ == '__main__':
  main()
