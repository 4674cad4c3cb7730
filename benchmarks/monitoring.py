"""What each monitor of the monitoring suite costs: the cpu preset of experiments.monitoring with nothing, with
each monitor alone at its cadence, and with the whole suite.

  python -m benchmarks.monitoring [--epochs 14] [--out benchmarks/results] [key=value ...]

Each configuration runs in a process of its own, twice: the first run compiles its programs (jax's disk cache off,
so every configuration compiles as a first run on a new machine would), the second, into a new store in the same
process, finds them compiled. Both are whole runs of the preset's four jobs (planning, data, evaluations, part
files, checkpoints). Prints each configuration's seconds and its ratio to the run without monitors, and writes
benchmarks/results/monitoring-<backend>.json. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The run without monitors: no step table, one evaluation at the end, no best states; each configuration adds
# back one monitor at the preset's cadence (the suite: every one of them, the preset as it is).
BARE = ['probes=', 'train.eval_every_steps=0', 'train.checkpoint_best=0']  # (the preset's probe options stay)


def configs() -> dict[str, list[str]]:
  from experiments.monitoring import PRESETS
  cfg = PRESETS['cpu'].config
  quarter = f'train.eval_every_steps={cfg.train.eval_every_steps}'
  curvature, noise = cfg.probe['sharpness']['every'], cfg.probe['noise_scale']['every']
  return {
      'none': BARE,
      'step table (every step)': BARE + ['probes=step_metrics'],
      'evaluations (every quarter epoch)': BARE + [quarter],
      'the same, training loss on every training example': BARE + [quarter, 'probe.losses.train_examples=0'],
      f'sharpness, power (every {curvature})': BARE + ['probes=sharpness'],
      f'sharpness, Lanczos (every {curvature})': BARE + ['probes=sharpness', 'probe.sharpness.method=lanczos'],
      f'hessian_trace (every {curvature})': BARE + ['probes=hessian_trace'],
      f'noise_scale (every {noise})': BARE + ['probes=noise_scale'],
      'best-3 states (with the evaluations)': BARE + ['train.checkpoint_best=3', quarter],
      'suite (the preset)': [],
  }


def one(overrides: list[str]) -> dict:
  """Seconds of a first and a second whole run of the preset with these overrides, in this process."""
  from ddjax import cli
  from experiments.monitoring import PRESETS
  times = []
  for _ in range(2):
    with tempfile.TemporaryDirectory() as out:
      t = time.perf_counter()
      cli.main('monitoring', PRESETS, overrides + ['--out', out, '--no-progress'])
      times.append(time.perf_counter() - t)
  return {'first_s': times[0], 'second_s': times[1]}


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(prog='python -m benchmarks.monitoring', description=__doc__.split('\n')[0])
  parser.add_argument('--epochs', type=int, default=14, help='epochs of each run (72 steps each: the curvature '
                                                             'monitors run at steps 500 and 1,000)')
  parser.add_argument('--out', type=Path, default=Path('benchmarks/results'))
  parser.add_argument('--one', help=argparse.SUPPRESS)  # JSON list of overrides: time them here, print JSON
  parser.add_argument('overrides', nargs='*', metavar='key=value', help='preset overrides, for every configuration')
  args = parser.parse_args(argv)
  if args.one:
    print('RESULT ' + json.dumps(one(json.loads(args.one))))
    return {}
  env = dict(os.environ, JAX_ENABLE_COMPILATION_CACHE='false')
  res = {'machine': f'{platform.machine()} {os.cpu_count()} cores', 'epochs': args.epochs, 'runs': {}}
  for name, extra in configs().items():
    overrides = [f'train.epochs={args.epochs}'] + args.overrides + extra
    done = subprocess.run([sys.executable, '-m', 'benchmarks.monitoring', '--one', json.dumps(overrides)], env=env,
                          capture_output=True, text=True, check=True)
    line = next(x for x in done.stdout.splitlines() if x.startswith('RESULT '))
    res['runs'][name] = json.loads(line.removeprefix('RESULT '))
    base = res['runs']['none']
    for key in ('first_s', 'second_s'):
      res['runs'][name][key.replace('_s', '_ratio')] = res['runs'][name][key] / base[key]
    r = res['runs'][name]
    print(f"{name:<50} first run {r['first_s']:6.1f} s (x{r['first_ratio']:.2f})   compiled {r['second_s']:6.1f} s "
          f"(x{r['second_ratio']:.2f})", flush=True)
  from benchmarks.common import write_result
  from ddjax.store import versions
  res['versions'] = versions()
  import jax
  write_result(args.out, f'monitoring-{jax.default_backend()}', res)
  return res


if __name__ == '__main__':
  main()
