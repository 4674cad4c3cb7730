"""Vectorised members against one member after another, with the same code, on this machine.

  python -m benchmarks.members [--epochs 3] [--out benchmarks/results]

Trains the MNIST-1D double-descent preset's widths (one seed) for a few epochs: (a) all members in one run with
width buckets, (b) each member alone in its own run (padded to nothing), and, for context, (c) one bucket padded
to the largest width and the other conv form / strategy. Prints seconds per epoch of all members and the ratios,
and writes them as JSON. Compilation is excluded: each program is compiled and run once before timing.
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
from ddjax import config as cfglib  # noqa: E402
from ddjax.buckets import Bucket, job_plan, make_buckets  # noqa: E402
from ddjax.data import load_dataset  # noqa: E402
from ddjax.members import expand, group_members, padded_ratio  # noqa: E402
from ddjax.store import device_name, versions  # noqa: E402
from experiments.double_descent import PRESETS  # noqa: E402

TARGET_S = 0.35  # issue 3: these 16 widths, batch 100, 2-core CPU (a one-width-at-a-time PyTorch loop: ~1.1 s)
WIDTHS = '2,4,6,8,10,12,14,16,20,24,28,32,40,48,56,64'


def time_buckets(buckets, epochs: int) -> float:
  """Seconds per epoch of all members of `buckets`, dispatched as the runner does (compilation excluded)."""
  jax.block_until_ready([b.train_epoch(0) for b in buckets])
  t = time.perf_counter()
  for e in range(1, epochs + 1):
    losses = [b.train_epoch(e) for b in buckets]
  jax.block_until_ready(losses)
  return (time.perf_counter() - t) / epochs


def one_device(job, ds, groups) -> list:
  """Buckets of the given member groups, all on the first device."""
  dev = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  data = jax.device_put({'x_train': ds.x_train, 'y_train': ds.y_train, 'x_test': ds.x_test, 'y_test': ds.y_test},
                        dev)
  return [Bucket(job, g, data, ds, dev, dev) for g in groups]


def main(argv=None):
  parser = argparse.ArgumentParser(prog='python -m benchmarks.members', description=__doc__.split('\n')[0])
  parser.add_argument('--epochs', type=int, default=3, help='timed epochs per configuration')
  parser.add_argument('--out', type=Path, default=Path('benchmarks/results'))
  parser.add_argument('--quick', action='store_true', help='only (a) and (b)')
  parser.add_argument('overrides', nargs='*', metavar='key=value',
                      help=f'preset overrides (default: model.width={WIDTHS} seed=0)')
  args = parser.parse_args(argv)
  preset = PRESETS['mnist1d']
  cfg, sweep = cfglib.apply_overrides(preset.config, preset.sweep, [f'model.width={WIDTHS}', 'seed=0'] + args.overrides)
  job = expand(cfg, sweep)[0]
  ds = load_dataset(cfg.data)
  widths = [m['model.width'] for m in job.members]
  order = sorted(range(len(widths)), key=lambda i: widths[i])
  plan, cost = job_plan(job, ds.input_shape, ds.num_classes)

  def variant(**kw):
    c = job.config
    for k, v in kw.items():
      c = cfglib.replace(c, k, v)
    return type(job)(job.index, c, job.static, job.members)

  res = {'machine': f'{platform.machine()} {os.cpu_count()} cores, {device_name()}', 'versions': versions(),
         'widths': sorted(widths), 'batch_size': cfg.train.batch_size, 'train_examples': len(ds.y_train),
         'buckets': [max(b) for b in plan], 'padded_ratio': padded_ratio(plan, cost),
         'padded_ratio_one_bucket': padded_ratio([widths], cost), 'epochs_timed': args.epochs}
  print(f"{len(widths)} members, widths {res['widths']}; buckets padded to {res['buckets']}, "
        f"padded/useful FLOPs {res['padded_ratio']:.3f} (one bucket {res['padded_ratio_one_bucket']:.3f})")
  res['devices'] = jax.local_device_count()
  res['vectorised_s'] = time_buckets(make_buckets(job, ds, plan, cost, check='train'), args.epochs)
  print(f"(a) vectorised, buckets on {res['devices']} device(s): {res['vectorised_s']:.3f} s/epoch of all members")
  res['sequential_s'] = time_buckets(one_device(job, ds, [[i] for i in order]), args.epochs)
  print(f"(b) one member after another:       {res['sequential_s']:.3f} s/epoch of all members")
  res['speedup'] = res['sequential_s'] / res['vectorised_s']
  print(f"    ratio (b)/(a): {res['speedup']:.2f}x; target (a) <= {TARGET_S} s: "
        f"{'met' if res['vectorised_s'] <= TARGET_S else 'NOT met'}")
  if not args.quick:
    res['vectorised_1_device_s'] = time_buckets(one_device(job, ds, group_members(job, plan)), args.epochs)
    print(f"(c) buckets, all on one device:     {res['vectorised_1_device_s']:.3f} s/epoch")
    res['one_bucket_s'] = time_buckets(one_device(job, ds, [order]), args.epochs)
    print(f"    one bucket padded to {max(widths)}:       {res['one_bucket_s']:.3f} s/epoch")
    res['vectorised_map_s'] = time_buckets(
        make_buckets(variant(**{'train.strategy': 'map'}), ds, plan, cost, check='train'), args.epochs)
    print(f"    buckets, strategy=map:          {res['vectorised_map_s']:.3f} s/epoch")
    small = [order[:len(plan[0])]]  # conv=lax under vmap is far slower on CPU (design.md): time the first bucket
    for form in ('im2col', 'lax'):
      res[f'first_bucket_{form}_s'] = time_buckets(one_device(variant(**{'model.conv': form}), ds, small),
                                                   args.epochs)
      print(f"    first bucket (widths {plan[0]}), conv={form}: {res[f'first_bucket_{form}_s']:.3f} s/epoch")
  write_result(args.out, f'members-{jax.default_backend()}', res)
  return res


if __name__ == '__main__':
  main()
