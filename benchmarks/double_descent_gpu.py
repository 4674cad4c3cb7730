"""Throughput of the `paper` double-descent preset (ResNet18k widths 1..64, CIFAR-10 shapes, batch 128) per bucket,
execution strategy and conv form, with projections to the full 4000-epoch runs.

  python -m benchmarks.double_descent_gpu --torch-only    # on a GPU: PyTorch alone first, about a minute
  python -m benchmarks.double_descent_gpu                 # then jax: about 6 minutes of measurements
  python -m benchmarks.double_descent_gpu --tiny          # CPU-sized check of the script (widths 1 and 2)
  bash scripts/gpu_benchmark.sh                           # on the lent GPU machine: both, then checks, into $OUT

Each configuration (conv form / member strategy [/ compute dtype]) trains `--steps` minibatches of synthetic
CIFAR-shaped data per bucket (compile and one warm-up pass excluded, their time recorded), projected to a
50,000-image epoch. The first configuration is timed on every bucket, all made first as a run makes them; the
others one planned bucket at a time, widest first, each only if the first configuration's time for it says it ends
within `--budget-s`. The headline is the fastest float32 configuration that timed every bucket, since a run sets
one per job: its epoch time for all members, projected to one trial (64 widths) and five, and its useful TFLOP/s
(6 x MACs x images, padding excluded; executed TFLOP/s count it) against the device's peak. The fastest
configuration per bucket and every complete configuration (bfloat16 too) are listed beside it. Last, if the budget
allows, the widest bucket is timed with `--trials` seeds trained together (split to fit memory as a run would), to
check the five-trial projection against a measurement. The JSON is rewritten, projections included, after every
measurement and failure, and on Ctrl-C (SIGINT), so a run cut short keeps what it measured; a configuration or
bucket that fails is recorded and the rest are timed.

PyTorch one width at a time (the original protocol: float32 with TF32 convolutions and matmuls as XLA uses by
default, cuDNN autotuned, the faster of NCHW and channels-last, data already on the device, no augmentation) is
timed for widths 1, 64, 32, 8, 16, 48 while `--torch-s` lasts, and its epoch over 1..64 interpolated linearly in
MACs between them. `--torch-only` times it in a process where jax stays on the CPU (in the jax process PyTorch would
get only what XLA left of the GPU) into a JSON of its own, written after every width; a jax run reads it, before or
after, and reports the speedup. Results go to benchmarks/results/ as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from ddjax import parallel

if '--torch-only' in sys.argv:  # PyTorch alone on the GPU: jax, imported below, must not take its memory
  os.environ['JAX_PLATFORMS'] = 'cpu'
  try:  # and PyTorch loads its CUDA libraries before jax's plugin could load others of the same names
    import torch  # noqa: F401
  except Exception:  # noqa: BLE001 - not installed: torch_measure says so
    pass
parallel.use_host_devices()
parallel.use_gpu_memory()  # as a run does, so buckets split as they would in one
import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.common import write_result  # noqa: E402
from ddjax import config as cfglib  # noqa: E402
from ddjax import memory  # noqa: E402
from ddjax.data import cifar10  # noqa: E402
from ddjax.data.datasets import image_dataset  # noqa: E402
from ddjax.members import expand, group_members, padded_ratio, plan_buckets  # noqa: E402
from ddjax.nn.models import make_model  # noqa: E402
from ddjax.buckets import make_buckets, member_sizes  # noqa: E402
from ddjax.store import device_name, versions  # noqa: E402
from experiments.double_descent import PRESETS  # noqa: E402

EPOCH_IMAGES = 50_000
EPOCHS = 4000
# Dense peak TFLOP/s by device kind: (fp32, tf32, bf16). XLA runs float32 matmuls and convolutions as TF32 on
# these GPUs at default precision, so tf32 is the ceiling that applies to float32 runs.
PEAKS = {'H100 80GB HBM3': (67.0, 494.7, 989.4), 'H100 PCIe': (51.2, 378.0, 756.0), 'H100 NVL': (60.0, 417.5, 835.0),
         'H200': (67.0, 494.7, 989.4), 'GH200': (67.0, 494.7, 989.4), 'A100-SXM4-80GB': (19.5, 156.0, 312.0),
         'A100-SXM4-40GB': (19.5, 156.0, 312.0)}
# conv form / strategy[:chunk][/compute dtype]; the first is timed on every bucket whatever the budget says
VARIANTS = ['lax/vmap', 'lax/map', 'lax/map:4', 'im2col/vmap', 'im2col/map:4', 'lax/vmap/bfloat16']


def peak_for(kind: str):
  for name, peaks in PEAKS.items():
    if name in kind:
      return peaks
  return None


def time_bucket(bucket, steps: int) -> tuple[float, float]:
  """(seconds per training step of all the bucket's members, seconds of the warm-up epoch before: the epoch
  program's compilation, or its load from the cache, and one epoch)."""
  t = time.perf_counter()
  jax.block_until_ready(bucket.train_epoch(0))
  warmup = time.perf_counter() - t
  t = time.perf_counter()
  jax.block_until_ready(bucket.train_epoch(1))
  return (time.perf_counter() - t) / steps, warmup


def variant_job(job, label: str):
  """`job` with the conv form, member strategy (`map:c`: chunks of c members) and compute dtype of `label`,
  written conv/strategy[:chunk][/dtype]."""
  conv, strategy, *dtype = label.split('/')
  strategy, _, chunk = strategy.partition(':')
  cfg = job.config
  for k, v in (('model.conv', conv), ('train.strategy', strategy), ('train.map_batch', int(chunk or 1)),
               ('train.compute_dtype', dtype[0] if dtype else 'float32')):
    cfg = cfglib.replace(cfg, k, v)
  return type(job)(job.index, cfg, job.static, job.members)


def timed(rows: list[dict], sizes: list[int]) -> dict[tuple[int, str], float]:
  """(planned bucket, config) -> s/epoch, for the configurations that timed every one of the bucket's `sizes[p]`
  members (a bucket split to fit memory is timed as the sum of its pieces)."""
  secs, count = {}, {}
  for r in rows:
    key = (r['planned'], r['config'])
    secs[key] = secs.get(key, 0.0) + r['s_per_epoch']
    count[key] = count.get(key, 0) + r['members']
  return {key: s for key, s in secs.items() if count[key] == sizes[key[0]]}


def fastest(rows: list[dict], sizes: list[int]) -> dict[int, tuple[str, float]]:
  """Planned bucket -> (config, s/epoch) of its fastest fully timed configuration."""
  best = {}
  for (p, config), s in timed(rows, sizes).items():
    if p not in best or s < best[p][1]:
      best[p] = (config, s)
  return best


def totals(rows: list[dict], sizes: list[int], plan: list[list[int]] | None = None) -> dict[str, float]:
  """Config -> s/epoch of all members, for the configurations a run can set (per job) whose every bucket was timed:
  each timed configuration, and with `plan` each pair that train.map_from makes of one, vmapped, below a width and
  a `map` one at and above it (same conv form and dtype), named 'conv/vmap|map[:c] from W[/dtype]'."""
  per = timed(rows, sizes)
  configs = {c for _, c in per}
  out = {c: sum(per[p, c] for p in range(len(sizes))) for c in configs
         if all((p, c) in per for p in range(len(sizes)))}
  for low in configs if plan is not None else ():
    conv, strategy, *dtype = low.split('/')
    if strategy != 'vmap':
      continue
    for high in configs:
      hconv, hstrategy, *hdtype = high.split('/')
      if (hconv, hdtype) != (conv, dtype) or not hstrategy.startswith('map'):
        continue
      for t in range(1, len(sizes)):  # buckets before t vmapped, from t on mapped: map_from = their least width
        if all((p, low) in per for p in range(t)) and all((p, high) in per for p in range(t, len(sizes))):
          name = f"{conv}/vmap|{hstrategy} from {max(plan[t - 1]) + 1}{''.join('/' + d for d in dtype)}"
          out[name] = sum(per[p, low] for p in range(t)) + sum(per[p, high] for p in range(t, len(sizes)))
  return out


def overrides(config: str) -> str:
  """The overrides that make a run use `config` (a name from totals)."""
  conv, strategies, *dtype = config.split('/')
  low, _, rest = strategies.partition('|')  # 'vmap', 'map:4 from 49'
  high, _, width = rest.partition(' from ')
  strategy, _, chunk = (high or low).partition(':')
  out = [f'model.conv={conv}', f'train.strategy={low if high else strategy}']
  out += [f'train.map_from={width}'] * bool(width) + [f'train.map_batch={chunk}'] * bool(chunk)
  return ' '.join(out + [f'train.compute_dtype={d}' for d in dtype])


def use_tf32(torch) -> None:
  """TF32 convolutions and matmuls, what XLA does for float32 on Ampere and Hopper: torch >= 2.9's switches, or
  the older flags."""
  try:
    torch.backends.cuda.matmul.fp32_precision = 'tf32'
    torch.backends.cudnn.conv.fp32_precision = 'tf32'
  except AttributeError:
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True


def torch_loop(widths, steps: int, batch: int, budget_s: float, done=lambda out: None) -> tuple[dict, bool]:
  """Per-width seconds per step of a PyTorch PreActResNet18k, one width at a time, data on the device, in both
  layouts (NCHW and channels-last), as {width: {layout: s}}, and whether every width was timed. `done` gets the
  figures so far after every width. Starts no width after `budget_s`; on Ctrl-C (SIGINT) it returns what it
  measured."""
  import torch
  from torch import nn
  dev = 'cuda' if torch.cuda.is_available() else 'cpu'
  torch.backends.cudnn.benchmark = True  # PyTorch at its best: cuDNN picks each convolution's fastest algorithm
  use_tf32(torch)

  class Block(nn.Module):
    def __init__(self, cin, cout, stride):
      super().__init__()
      self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
      self.bn2, self.conv2 = nn.BatchNorm2d(cout), nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
      self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False) if stride != 1 or cin != cout else None

    def forward(self, x):
      out = torch.relu(self.bn1(x))
      short = self.shortcut(out) if self.shortcut is not None else x
      out = self.conv2(torch.relu(self.bn2(self.conv1(out))))
      return out + short

  def resnet18k(k):
    layers, cin = [nn.Conv2d(3, k, 3, 1, 1, bias=False)], k
    for mult, stride in zip((1, 2, 4, 8), (1, 2, 2, 2)):
      for b in range(2):
        layers.append(Block(cin, k * mult, stride if b == 0 else 1))
        cin = k * mult
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, 10))

  x = torch.randn(steps, batch, 3, 32, 32, device=dev)
  y = torch.randint(0, 10, (steps, batch), device=dev)
  layouts = {'nchw': torch.contiguous_format, 'channels_last': torch.channels_last}
  out, start = {}, time.perf_counter()
  try:
    for k in widths:
      if time.perf_counter() - start > budget_s:
        break
      times = {}
      for name, layout in layouts.items():
        model = resnet18k(k).to(dev, memory_format=layout)
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        xs = [x[i].contiguous(memory_format=layout) for i in range(steps)]
        for rep in range(2):  # the first pass warms up cuDNN's algorithm choice
          if dev == 'cuda':
            torch.cuda.synchronize()
          t = time.perf_counter()
          for i in range(steps):
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(xs[i]), y[i]).backward()
            opt.step()
          if dev == 'cuda':
            torch.cuda.synchronize()
        times[name] = (time.perf_counter() - t) / steps
      out[k] = times
      done(out)
  except KeyboardInterrupt:  # `timeout -s INT`: keep the widths measured
    pass
  return out, len(out) == len(widths)


def torch_measure(args, batch: int, steps: int) -> dict | None:
  """Times PyTorch one width at a time (widths 1 and 64 first: the estimate of an epoch over every width needs
  both ends), writing its JSON after every width; None without torch."""
  torch_widths = [1, 2] if args.tiny else [1, 64, 32, 8, 16, 48]
  try:
    import torch
  except Exception:  # noqa: BLE001 - not installed, or unusable here
    return None
  platform = 'gpu' if torch.cuda.is_available() else 'cpu'
  res = {'device': torch.cuda.get_device_name() if platform == 'gpu' else 'cpu', 'torch_version': torch.__version__,
         'platform': platform, 'tiny': args.tiny, 'steps_timed': steps, 'batch_size': batch, 'tf32': True,
         'data': 'on the device, no augmentation, no shuffling (both in PyTorch\'s favour)',
         's_per_step': {}, 's_per_step_by_layout': {}, 'failed': [], 'complete': False}
  name = torch_name(platform, args.tiny)

  def done(layouts):
    res['s_per_step_by_layout'] = {str(k): t for k, t in layouts.items()}
    res['s_per_step'] = {str(k): min(t.values()) for k, t in layouts.items()}
    write_result(args.out, name, res, quiet=True)

  try:
    layouts, res['complete'] = torch_loop(torch_widths, steps, batch, args.torch_s, done)
    done(layouts)
  except Exception as e:  # noqa: BLE001 - PyTorch out of memory, say: what it measured stands
    failed(res, 'torch', None, e)
  write_result(args.out, name, res)
  return res


def torch_name(platform: str, tiny: bool) -> str:
  return f"double_descent_gpu-{platform}-torch{'-tiny' if tiny else ''}"


def torch_summary(torch_res: dict, widths: list[int], macs, steps_per_epoch: int, epoch_s: float | None,
                  seeds: int) -> dict:
  """PyTorch's epoch over `widths` one at a time, each width's step time interpolated linearly in MACs between the
  measured widths (small widths cost launches, not MACs), and the speedup of the jax epoch `epoch_s` of `seeds`
  trials over it."""
  per_width = {int(k): v for k, v in torch_res['s_per_step'].items()}
  out = {k: torch_res[k] for k in ('device', 'torch_version', 'tf32', 'data', 's_per_step') if k in torch_res}
  if not {min(widths), max(widths)} <= set(per_width):
    return dict(out, note=f'widths {min(widths)} and {max(widths)} not both timed: no estimate')
  ks = sorted(per_width)
  torch_epoch = float(sum(np.interp(macs(k), [macs(m) for m in ks], [per_width[m] for m in ks])
                          for k in sorted(set(widths))) * steps_per_epoch)
  return dict(out, s_per_epoch_all_widths=torch_epoch, speedup=torch_epoch * seeds / epoch_s if epoch_s else None)


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(prog='python -m benchmarks.double_descent_gpu', description=__doc__.split('\n')[0])
  parser.add_argument('--tiny', action='store_true',
                      help='2 steps, lax/vmap and im2col/vmap, widths 1,2 in one bucket: a CPU check of the script')
  parser.add_argument('--widths', default=None, help='member widths (default 1..64; with --tiny 1,2)')
  parser.add_argument('--max-buckets', type=int, default=None,
                      help="at most this many buckets (default: the preset's; with --tiny 1)")
  parser.add_argument('--variants', default=None,
                      help=f"conv/strategy[:chunk][/dtype] to time, in order (default {','.join(VARIANTS)}; "
                           "with --tiny lax/vmap,im2col/vmap)")
  parser.add_argument('--steps', type=int, default=20, help='timed minibatches per configuration')
  parser.add_argument('--seeds', type=int, default=1, help='trials trained together (the paper preset has 5)')
  parser.add_argument('--budget-s', type=float, default=330.0,
                      help='start no new jax measurement after this many seconds (the first configuration is '
                           'timed on every bucket regardless)')
  parser.add_argument('--trials', type=int, default=5,
                      help='seeds trained together in the check of the widest bucket (0 or 1: no check)')
  parser.add_argument('--torch-s', type=float, default=None,
                      help='seconds for the PyTorch loop: with --torch-only (default 60), or after the jax '
                           'measurements in their process, where PyTorch gets what XLA left of the GPU (default 0: '
                           'none)')
  parser.add_argument('--torch-only', action='store_true',
                      help='only the PyTorch loop, in a process where jax stays off the GPU, into its own JSON; '
                           'a jax run in --out, earlier or later, adds it to its own with the speedup')
  parser.add_argument('--out', type=Path, default=Path('benchmarks/results'))
  args = parser.parse_args(argv)
  if args.torch_s is None:
    args.torch_s = 60.0 if args.torch_only else 0.0
  t_start = time.perf_counter()
  steps = 2 if args.tiny else args.steps
  preset = PRESETS['paper']
  widths = args.widths or ('1,2' if args.tiny else '1..64')
  max_buckets = args.max_buckets or (1 if args.tiny else None)
  variants = (args.variants or ('lax/vmap,im2col/vmap' if args.tiny else ','.join(VARIANTS))).split(',')
  n_train = steps * preset.config.train.batch_size  # one timed epoch is `steps` minibatches
  cfg, sweep = cfglib.apply_overrides(preset.config, preset.sweep, [f'train.max_buckets={max_buckets}'] * bool(
      max_buckets) + [f'model.width={widths}', f'seed=0..{args.seeds - 1}' if args.seeds > 1 else 'seed=0',
      'data.name=synthetic_cifar10', f'data.num_samples={2 * n_train}', 'data.train_split=0.5'])
  job = expand(cfg, sweep)[0]
  ds = image_dataset(cifar10.synthetic(n_train, 16, 0), 'crop_flip')
  model = make_model('resnet18k', max(m['model.width'] for m in job.members), ds.input_shape, 10, 'lax')
  member_widths = sorted(m['model.width'] for m in job.members)
  plan = plan_buckets(member_widths, model.macs, cfg.train.bucket_ratio, cfg.train.max_buckets)
  steps_per_epoch = EPOCH_IMAGES // cfg.train.batch_size
  if args.torch_only:  # PyTorch's JSON; and the speedup in the jax run's JSON, if there is one
    torch_res = torch_measure(args, cfg.train.batch_size, steps)
    if torch_res is None:
      print('--torch-only: torch is not importable here: nothing measured')
      return None
    jax_path = args.out / f"double_descent_gpu-{torch_res['platform']}{'-tiny' if args.tiny else ''}.json"
    if jax_path.exists():
      res = json.loads(jax_path.read_text())
      res['torch'] = torch_summary(torch_res, member_widths, model.macs, steps_per_epoch,
                                   res.get('s_per_epoch_all_members'), res.get('seeds', 1))
      write_result(args.out, jax_path.stem, res)
    return torch_res
  dev = jax.local_devices()[0]
  res = {'device': device_name(), 'versions': versions(), 'tiny': args.tiny, 'steps_timed': steps,
         'seeds': args.seeds, 'batch_size': cfg.train.batch_size, 'buckets': [max(b) for b in plan],
         'padded_ratio': padded_ratio(plan, model.macs), 'per_bucket': [], 'skipped': [], 'failed': [],
         'notes': ['projections are training epochs only: evaluation and checkpoints are not counted',
                   'peak_memory_gib: the process high-water mark so far (every configuration timed before, and '
                   "XLA's compile-time scratch)"],
         'complete': False}
  name = f"double_descent_gpu-{jax.default_backend()}{'-tiny' if args.tiny else ''}"
  torch_path = args.out / f'{torch_name(jax.default_backend(), args.tiny)}.json'
  torch_res = json.loads(torch_path.read_text()) if torch_path.exists() else None  # a --torch-only run before
  print(f"{len(job.members)} members; buckets padded to {res['buckets']}; padded/useful {res['padded_ratio']:.3f}")

  groups = group_members(job, plan)
  plan_of = {i: p for p, group in enumerate(groups) for i in group}  # the pieces of a split add up per plan
  sizes = [len(g) for g in plan]
  useful_flop = 6 * sum(model.macs(w) for w in member_widths) * EPOCH_IMAGES
  peaks = peak_for(getattr(dev, 'device_kind', ''))

  def project():  # the figures from what is measured so far, so that every write holds them
    whole = totals(res['per_bucket'], sizes, plan)
    float32 = {c: t for c, t in whole.items() if not c.endswith('/bfloat16')}
    best = min(float32, key=float32.get) if float32 else None
    epoch_s = float32[best] if best else None
    stats = dev.memory_stats() if dev.platform != 'cpu' else None
    res.update({
        'config': best,  # the fastest float32 configuration that timed every bucket: what a run would use
        'overrides': best and overrides(best),
        's_per_epoch_all_members': epoch_s,
        'hours_one_trial': epoch_s * EPOCHS / 3600 / args.seeds if epoch_s else None,
        'hours_five_trials': epoch_s * EPOCHS / 3600 * 5 / args.seeds if epoch_s else None,
        'useful_tflops': useful_flop / epoch_s / 1e12 if epoch_s else None,
        'executed_tflops': useful_flop * res['padded_ratio'] / epoch_s / 1e12 if epoch_s else None,
        's_per_epoch_by_config': whole,  # every one (train.map_from pairs, bfloat16 too) that timed every bucket
        'best_per_bucket': [{'bucket_width': max(plan[p]), 'config': c, 's_per_epoch': t}
                            for p, (c, t) in sorted(fastest(res['per_bucket'], sizes).items())],
        'peak_memory_gib': stats['peak_bytes_in_use'] / 2 ** 30 if stats and 'peak_bytes_in_use' in stats else None,
        'torch': torch_res and torch_summary(torch_res, member_widths, model.macs, steps_per_epoch, epoch_s,
                                             args.seeds),
    })
    if peaks and epoch_s:
      res['fraction_of_peak'] = {k: res['useful_tflops'] / v for k, v in zip(('fp32', 'tf32', 'bf16'), peaks)}
    write_result(args.out, name, res, quiet=True)  # a run cut short keeps what it measured

  def time_all(label: str, buckets: list, planned, build_s: float) -> None:
    for b in buckets:
      try:
        s_step, warmup = time_bucket(b, steps)
      except Exception as e:  # noqa: BLE001 - out of memory, a compile failure: this bucket only
        failed(res, label, b.width, e)
        project()
        continue
      res['per_bucket'].append({'config': label, 'bucket_width': b.width, 'planned': planned(b),
                                'members': len(b.member_ids), 's_per_epoch': s_step * steps_per_epoch,
                                'build_s': build_s, 'warmup_s': warmup, 'timed_s': s_step * steps})
      print(f"  {label:<18} bucket {b.width:>3} ({len(b.member_ids):>3} members): "
            f"{s_step * steps_per_epoch:8.2f} s/epoch (warm-up {warmup:.1f} s)")
      project()

  def build(label: str, sub, sub_plan) -> list:
    """The buckets of `sub` under `label`, as a run makes them (XLA's memory figures checked, buckets made again
    if over); if that fails, from the estimate alone; [] (recorded) if that fails too."""
    for check in ('train', 'none'):
      try:
        return make_buckets(variant_job(sub, label), ds, sub_plan, model.macs, log=lambda *a: None, check=check)
      except Exception as e:  # noqa: BLE001 - a bucket failing to compile: recorded, the rest timed
        if check == 'none':
          failed(res, label, max(max(b) for b in sub_plan), e)
          project()
    return []

  first = variants[0]

  def expected_s(p: int, scale: float = 1.0) -> float:
    """What timing planned bucket `p` at `scale` times its members should take: 1.5 times what the first
    configuration took for it (build, warm-up, timing), as other forms may compile longer."""
    return 1.5 * scale * sum(r['build_s'] + r['warmup_s'] + r['timed_s'] for r in res['per_bucket']
                             if r['config'] == first and r['planned'] == p)

  try:
    # The first configuration: every bucket, all made first as a run makes them (every member's state resident).
    t = time.perf_counter()
    buckets = build(first, job, plan)
    res['first_config_build_s'] = time.perf_counter() - t  # every bucket's programs compiled, states made
    time_all(first, buckets, lambda b: plan_of[b.member_ids[0]], res['first_config_build_s'] / len(plan))
    buckets = None  # their device memory goes before the next configuration's buckets take theirs
    res['peak_memory_gib_first_config'] = res.get('peak_memory_gib')
    # The others: one planned bucket at a time, widest first (it decides an epoch's time), each started only if it
    # would end within the budget, judged by what the first configuration took for it.
    for label in variants[1:]:
      for p in reversed(range(len(plan))):
        if time.perf_counter() - t_start + expected_s(p) > args.budget_s:
          res['skipped'].append(f'{label} width {max(plan[p])}')
          continue
        t = time.perf_counter()
        buckets = build(label, job.subset(groups[p]), [plan[p]])
        time_all(label, buckets, lambda b, p=p: p, time.perf_counter() - t)
        buckets = None
    if args.trials > 1:  # the widest bucket with `trials` times its members
      if time.perf_counter() - t_start + expected_s(len(plan) - 1, args.trials / args.seeds) > args.budget_s:
        res['skipped'].append(f'{first} widest bucket with {args.trials} trials')
      else:
        trials_check(res, args, job, ds, plan, model.macs, first, steps, steps_per_epoch)
  except KeyboardInterrupt:  # `timeout -s INT`: what was measured is written below
    res['interrupted'] = True
    print('interrupted: writing what was measured')
  project()
  epoch_s = res['s_per_epoch_all_members']
  if epoch_s is None:
    print('no float32 configuration timed every bucket: no projection')
  else:
    print(f"all {len(member_widths)} members with {res['config']}: {epoch_s:.2f} s/epoch; one trial of {EPOCHS} "
          f"epochs: {res['hours_one_trial']:.2f} h, five: {res['hours_five_trials']:.2f} h; useful "
          f"{res['useful_tflops']:.2f} TFLOP/s; peak memory {res['peak_memory_gib']} GiB")
  if args.torch_s > 0 and not res.get('interrupted'):
    torch_res = torch_measure(args, cfg.train.batch_size, steps)
  project()
  if res['torch'] and res['torch'].get('speedup'):
    print(f"PyTorch one width at a time: {res['torch']['s_per_epoch_all_widths']:.2f} s/epoch of one trial; ddjax "
          f"is {res['torch']['speedup']:.1f}x faster")
  res['complete'] = not res.get('interrupted')
  write_result(args.out, name, res)
  return res


def trials_check(res: dict, args, job, ds, plan, macs, label: str, steps: int, steps_per_epoch: int) -> None:
  """Times the widest planned bucket with `args.trials` seeds trained together, in the pieces a run would split
  it into, against `args.trials` times its time with the job's own seeds: res['trials_check']."""
  one = timed(res['per_bucket'], [len(g) for g in plan]).get((len(plan) - 1, label))
  if one is None:  # the widest bucket was not timed whole with the job's own seeds
    res['skipped'].append(f'{label} widest bucket with {args.trials} trials')
    return
  widths = ','.join(str(w) for w in sorted(set(plan[-1])))
  cfg = variant_job(job, label).config
  # the budget a run of every width with these trials would leave this bucket: the other buckets' state is resident
  sizes = member_sizes(cfg, plan[:-1], ds.input_shape, ds.num_classes, cfg.train.batch_size)
  others = sum(len(set(b)) * args.trials * size.resident for b, size in zip(plan[:-1], sizes))
  memory_gb = max(memory.budget_bytes(cfg.train.memory_gb, jax.local_devices()[0]) - others, 2 ** 20) / 2 ** 30
  cfg, sweep = cfglib.apply_overrides(cfg, {}, [f'model.width={widths}', f'seed=0..{args.trials - 1}',
                                                f'train.memory_gb={memory_gb:.3f}'])
  wide = expand(cfg, sweep)[0]
  said = []
  try:
    buckets = make_buckets(wide, ds, [sorted(m['model.width'] for m in wide.members)], macs, log=said.append,
                           check='train')
    pieces = [(len(b.member_ids), time_bucket(b, steps)[0] * steps_per_epoch) for b in buckets]
  except Exception as e:  # noqa: BLE001 - out of memory, say: recorded, the rest stands
    failed(res, f'{label} with {args.trials} trials', max(plan[-1]), e)
    return
  measured, projected = sum(t for _, t in pieces), one * args.trials / res['seeds']
  res['trials_check'] = {'config': label, 'trials': args.trials, 'bucket_width': max(plan[-1]),
                         'pieces': [{'members': n, 's_per_epoch': t} for n, t in pieces], 's_per_epoch': measured,
                         'projected_s_per_epoch': projected, 'measured_over_projected': measured / projected,
                         'log': said}
  print(f"  {label} widest bucket, {args.trials} trials together: {measured:.2f} s/epoch in {len(pieces)} "
        f"piece(s) ({[n for n, _ in pieces]} members) against {projected:.2f} projected")


def failed(res: dict, config: str, width: int | None, e: Exception) -> None:
  res['failed'].append({'config': config, 'bucket_width': width, 'error': f'{type(e).__name__}: {str(e)[:500]}'})
  first = str(e).splitlines()[0][:200] if str(e) else ''
  print(f"  {config}{f' width {width}' if width else ''}: failed ({type(e).__name__}: {first})")


if __name__ == '__main__':
  main()
