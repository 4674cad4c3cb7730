"""ddjax against the deep-linear-network codebase's own PyTorch loop, on one cell of its `gph` study (not run by CI).

  python -m benchmarks.deep_linear_gph --torch-python /work/bench-venv/bin/python [--runs 200] [--out DIR]

The interpreter given by --torch-python needs torch and numpy (a CPU build is enough); torch is never imported by the
interpreter that runs this module, so ddjax's environment stays free of it.

The cell: a deep linear network 5 -> 100 -> 100 -> 100 -> 5 without biases, every weight from N(0, 100^-gamma) with
gamma = 1, trained by plain SGD (lr 1e-4) on PyTorch's MSELoss against the teacher W* = 50 diag(i^-1) (500 training
and 500 test inputs x ~ N(0, I), no noise), batch 10 in a fresh order every epoch, 10,000 steps, test and training
loss on all 500 examples every 40 steps; `--runs` runs that differ only in the batch seed (0 .. runs - 1).

Why: the codebase this study comes from trains every such run as its own PyTorch process, one process per core with
one thread each. This measures what moving the study to ddjax buys on this machine, and checks that it still computes
the same thing. Both sides start from the same weights (the initial snapshot of the ddjax member with batch seed 0)
and see the same data (ddjax's teacher data set), so their mean loss curves over the runs must agree within the
batch-order noise.

What it measures:
  - ddjax: wall time of the whole `python -m experiments.deep_linear ...` command (all runs as members of one job,
    strategy=map in chunks of 20), and the job's own "done in X s" from its log;
  - PyTorch, as the codebase runs it: a spawn Pool of one process per core with maxtasksperchild=1, so every run
    pays a fresh interpreter and `import torch`, torch.set_num_threads(1) in each; the wall time counts everything
    from starting the pool's interpreter to the last run's result;
  - the ratio, seconds and core-seconds per run, ms per step, the fraction of this CPU's float32 matmul peak (a
    jitted 1024 x 1024 matmul chain in JAX on all cores) that ddjax's training FLOPs reach, a projection to a
    10,000-seed cell, and whether the mean test-loss curves agree (|difference| < 3 standard errors of the
    difference at >= 95% of the evaluations), with the first evaluation where they do not;
  - the core-seconds other processes used during each side: a busy machine slows either, so rerun when they are
    more than a few.

Writes benchmarks/results/deep_linear_gph-cpu.json (or under --out).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np  # the only third-party import at the top: the PyTorch interpreter runs this file too

ROOT = Path(__file__).resolve().parent.parent
STEPS, EVALUATIONS, BATCH, LR, WIDTH, DEPTH, GAMMA = 10_000, 250, 10, 1e-4, 100, 3, 1.0
IN_DIM = OUT_DIM = 5
SIZES = (IN_DIM,) + (WIDTH,) * DEPTH + (OUT_DIM,)
FLOPS_PER_STEP = 6 * BATCH * sum(a * b for a, b in zip(SIZES, SIZES[1:]))  # forward 2, backward 4 per MAC
PROJECTED_SEEDS = 10_000
AGREE_SIGMAS, AGREE_FRACTION = 3.0, 0.95


def ddjax_command(out: Path, runs: int) -> list[str]:
  """The ddjax command of the cell: ddjax's packaged `gph` config (-cn gph: the study's data, model, optimizer, loss
  and 250 evaluations) narrowed to the cell, every batch seed a member of one job; the initial state is kept
  (snapshot at epoch 0) for the PyTorch side."""
  return [sys.executable, '-m', 'experiments.deep_linear', '-cn', 'gph', '--out', str(out), '--no-progress',
          f'model.width={WIDTH}', f'model.gamma={GAMMA:g}', f'train.max_steps={STEPS}', 'data.noise_std=0',
          'model.seed=0', f'train.batch_seed=0..{runs - 1}', f'train.batch_size={BATCH}', 'train.snapshot_epochs=0']


def busy_cpu_s() -> float | None:
  """Core-seconds the whole machine has been busy since boot (Linux's /proc/stat; None elsewhere)."""
  try:
    fields = [int(v) for v in Path('/proc/stat').read_text().split('\n', 1)[0].split()[1:]]
  except (OSError, ValueError):
    return None
  user, nice, system, _idle, _iowait, irq, softirq = fields[:7]
  return (user + nice + system + irq + softirq) / os.sysconf('SC_CLK_TCK')


def children_cpu_s() -> float:
  """Core-seconds of this process's finished subprocesses and theirs."""
  import resource
  r = resource.getrusage(resource.RUSAGE_CHILDREN)
  return r.ru_utime + r.ru_stime


def run_timed(cmd: list[str], log: Path) -> tuple[float, float | None]:
  """Runs `cmd` from the repository root with its output in `log`: its wall seconds, and the core-seconds that
  other processes of the machine used meanwhile (they slow it down; None where unknown). Raises with the log's tail
  if it fails."""
  busy, own, t = busy_cpu_s(), children_cpu_s(), time.perf_counter()
  with open(log, 'w') as f:
    proc = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
  seconds = time.perf_counter() - t
  other = None if busy is None else max(0.0, busy_cpu_s() - busy - (children_cpu_s() - own))
  if proc.returncode:
    tail = ''.join(log.read_text().splitlines(keepends=True)[-30:])
    raise RuntimeError(f'{cmd[0]} ... exited with {proc.returncode}:\n{tail}')
  return seconds, other


def cpu_model() -> str:
  """The CPU's model name (Linux), else what platform says."""
  try:
    text = Path('/proc/cpuinfo').read_text()
  except OSError:
    text = ''
  found = re.search(r'^model name\s*:\s*(.+)$', text, re.M)
  return found.group(1).strip() if found else platform.processor() or 'cpu'


def ddjax_side(work: Path, runs: int) -> dict:
  """Runs the ddjax command; its times, curves (runs x evaluations, by batch seed) and the inputs the PyTorch side
  needs: the data set and the initial weights of the member with batch seed 0."""
  import dataclasses

  import pandas as pd

  from ddjax.config import DataConfig
  from ddjax.data.teacher import teacher_data
  from ddjax.run import member_variables

  out = work / 'ddjax'
  wall, other = run_timed(ddjax_command(out, runs), work / 'ddjax.log')
  done = re.findall(r'done in ([0-9.]+) s', (work / 'ddjax.log').read_text())
  table = pd.read_parquet(out / 'results.parquet').sort_values('train.batch_seed')
  if sorted(table['train.batch_seed']) != list(range(runs)):
    raise RuntimeError(f"expected batch seeds 0..{runs - 1}, found {sorted(table['train.batch_seed'])}")
  steps = np.asarray(table['step'].iloc[0], np.int64)
  curves = {k: np.stack([np.asarray(v, np.float64) for v in table[k]]) for k in ('test_loss', 'train_loss')}
  variables, width = member_variables(out, table['run_id'].iloc[0], which=0)
  params = variables['params']
  kernels = [np.asarray(params[f'dense{i}']['kernel']) for i in range(DEPTH)] + [np.asarray(params['head']['kernel'])]
  if width != WIDTH or [k.shape for k in kernels] != list(zip(SIZES, SIZES[1:])):
    raise RuntimeError(f'unexpected init: width {width}, kernels {[k.shape for k in kernels]}')
  d = dataclasses.replace(DataConfig(), name='teacher', teacher='power_law', scale=50.0, alpha=1.0, in_dim=IN_DIM,
                          out_dim=OUT_DIM, train_size=500, test_size=500, seed=42)
  ds = teacher_data(d)
  data = {'x_train': ds.x_train, 'y_train': ds.y_train, 'x_test': ds.x_test, 'y_test': ds.y_test}
  init = {f'weight{i}': k.T for i, k in enumerate(kernels)}  # torch.nn.Linear keeps (out, in)
  return {'wall_s': wall, 'other_cpu_s': other, 'done_s': float(done[-1]) if done else None, 'steps': steps,
          **curves, 'data': data, 'init': init, 'init_std': [float(k.std()) for k in kernels]}


def torch_side(work: Path, torch_python: str, data: dict, init: dict, runs: int, workers: int) -> dict:
  """Runs the PyTorch pool under `torch_python` on the same data and init; its wall time and curves."""
  inputs, results = work / 'torch_inputs.npz', work / 'torch_results.npz'
  np.savez(inputs, **data, **init)
  cmd = [torch_python, str(Path(__file__).resolve()), '--torch-pool', str(inputs), str(results), '--runs', str(runs),
         '--workers', str(workers)]
  wall, other = run_timed(cmd, work / 'torch.log')
  with np.load(results) as r:
    res = {k: r[k] for k in r.files}
  return {'wall_s': wall, 'other_cpu_s': other, 'steps': res['steps'], 'test_loss': res['test_loss'],
          'train_loss': res['train_loss'], 'run_s': res['run_s'], 'torch': str(res['torch_version']),
          'torch_threads': int(res['threads'])}


def train_one(inputs: str, batch_seed: int) -> dict:
  """One run of the codebase's loop in this (fresh) process: the worker's import of torch is part of the cost it
  pays. Returns the evaluated steps, test and training losses, and the seconds after the import."""
  import torch
  from torch import nn
  from torch.utils.data import DataLoader, TensorDataset

  torch.set_num_threads(1)
  t = time.perf_counter()
  with np.load(inputs) as f:
    arrays = {k: torch.from_numpy(f[k]) for k in f.files}
  torch.manual_seed(batch_seed)
  model = nn.Sequential(*[nn.Linear(a, b, bias=False) for a, b in zip(SIZES, SIZES[1:])])
  with torch.no_grad():
    for i, layer in enumerate(model):
      layer.weight.copy_(arrays[f'weight{i}'])
  order = torch.Generator().manual_seed(batch_seed)
  loader = DataLoader(TensorDataset(arrays['x_train'], arrays['y_train']), batch_size=BATCH, shuffle=True,
                      generator=order)
  criterion, optimizer = nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=LR)

  def batches():  # endless: a fresh order each epoch, as the codebase's step loop does
    while True:
      yield from loader

  def loss_on(x, y) -> float:
    model.eval()
    with torch.inference_mode():
      value = criterion(model(x), y).item()
    model.train()
    return value

  it, steps, test_loss, train_loss = batches(), [], [], []
  every = STEPS // EVALUATIONS
  model.train()
  for step in range(1, STEPS + 1):
    x, y = next(it)
    optimizer.zero_grad()
    loss = criterion(model(x), y)
    loss.backward()
    optimizer.step()
    loss.item()  # the codebase logs every step's batch loss
    if step % every == 0:
      steps.append(step)
      test_loss.append(loss_on(arrays['x_test'], arrays['y_test']))
      train_loss.append(loss_on(arrays['x_train'], arrays['y_train']))
  return {'seed': batch_seed, 'steps': steps, 'test_loss': test_loss, 'train_loss': train_loss,
          'seconds': time.perf_counter() - t, 'torch': torch.__version__, 'threads': torch.get_num_threads()}


def torch_pool(inputs: str, results: str, runs: int, workers: int) -> None:
  """The codebase's driver: a spawn pool of `workers` processes, each replaced after one run; writes the curves by
  batch seed to `results` (.npz)."""
  import multiprocessing as mp
  from functools import partial

  with mp.get_context('spawn').Pool(workers, maxtasksperchild=1) as pool:
    done = sorted(pool.imap_unordered(partial(train_one, inputs), range(runs), chunksize=1), key=lambda r: r['seed'])
  np.savez(results, steps=np.asarray(done[0]['steps']), test_loss=np.array([r['test_loss'] for r in done]),
           train_loss=np.array([r['train_loss'] for r in done]), run_s=np.array([r['seconds'] for r in done]),
           torch_version=done[0]['torch'], threads=done[0]['threads'])


def matmul_peak(n: int = 1024, chain: int = 64, repeats: int = 5) -> float:
  """This CPU's float32 matmul rate in GFLOP/s: the best of `repeats` timings of a jitted chain of `chain` n x n
  products (each depends on the last, so none is skipped), on all cores as XLA runs one big matmul."""
  import jax
  import jax.numpy as jnp

  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32) / np.sqrt(n)  # keeps the chain's scale near 1
  f = jax.jit(lambda a, b: jax.lax.fori_loop(0, chain, lambda _, c: c @ b, a))
  f(a, b).block_until_ready()
  best = float('inf')
  for _ in range(repeats):
    t = time.perf_counter()
    f(a, b).block_until_ready()
    best = min(best, time.perf_counter() - t)
  return 2 * n ** 3 * chain / best / 1e9


def float32_floor(y: np.ndarray) -> float:
  """The mean squared error that float32 rounding alone leaves in outputs of the size of the targets y:
  (eps_32 |y|)^2 averaged over examples and outputs. Losses within a factor of FLOOR_MARGIN of it measure the two
  implementations' rounding (training and evaluation in float32), not their dynamics."""
  return float(np.finfo(np.float32).eps ** 2 * np.mean(np.square(np.asarray(y, np.float64))))


FLOOR_MARGIN = 100.0


def agreement(a: np.ndarray, b: np.ndarray, steps: np.ndarray, floor: float) -> dict:
  """Whether the mean curves of two sets of runs (runs x evaluations) agree: the fraction of evaluations where their
  means differ by less than AGREE_SIGMAS standard errors of the difference, and the largest relative difference;
  the same over the evaluations where both means are above FLOOR_MARGIN x the float32 floor (float32_floor).
  Where they do not agree, the first evaluation outside and b's mean loss there say where along the curve they
  part."""
  se = lambda c: c.std(0, ddof=1) / np.sqrt(len(c)) if len(c) > 1 else np.zeros(c.shape[1])
  mean_a, mean_b = a.mean(0), b.mean(0)
  diff = np.abs(mean_a - mean_b)
  within = diff < AGREE_SIGMAS * np.sqrt(se(a) ** 2 + se(b) ** 2)
  rel, outside = diff / mean_b, np.flatnonzero(~within)
  first = int(outside[0]) if len(outside) else len(rel)
  above = np.minimum(mean_a, mean_b) > FLOOR_MARGIN * floor
  return {'fraction_within': float(within.mean()), 'max_relative_difference': float(rel.max()),
          'agree': bool(within.mean() >= AGREE_FRACTION),
          'float32_floor': floor, 'evaluations_above_floor': int(above.sum()),
          'fraction_within_above_floor': float(within[above].mean()) if above.any() else None,
          'max_relative_difference_above_floor': float(rel[above].max()) if above.any() else None,
          'agree_above_floor': bool(above.any() and within[above].mean() >= AGREE_FRACTION),
          'first_step_outside': int(steps[first]) if first < len(rel) else None,
          'loss_at_first_step_outside': float(mean_b[first]) if first < len(rel) else None,
          'max_relative_difference_before_it': float(rel[:first].max()) if first else None}


def main(argv=None):
  parser = argparse.ArgumentParser(prog='python -m benchmarks.deep_linear_gph', description=__doc__.split('\n')[0])
  parser.add_argument('--torch-python', default='python3', help='an interpreter with torch and numpy')
  parser.add_argument('--runs', type=int, default=200, help='batch seeds 0 .. runs - 1 on each side')
  parser.add_argument('--workers', type=int, default=os.cpu_count(), help='PyTorch processes (the codebase: one '
                      'per core)')
  parser.add_argument('--out', type=Path, default=ROOT / 'benchmarks' / 'results')
  parser.add_argument('--name', default='deep_linear_gph-cpu', help='the JSON file written under --out')
  parser.add_argument('--keep', action='store_true', help="keep the ddjax store, logs and the PyTorch curves (a "
                      'temporary folder, printed)')
  parser.add_argument('--torch-pool', nargs=2, metavar=('INPUTS', 'RESULTS'), help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.torch_pool:  # the PyTorch side, under --torch-python
    torch_pool(*args.torch_pool, args.runs, args.workers)
    return

  from ddjax import parallel  # ddjax's side only: the PyTorch interpreter never gets here
  parallel.use_host_devices()  # (member_variables reads a snapshot onto any devices; one per core as the run)
  from benchmarks.common import write_result
  from ddjax.store import versions

  core_s = lambda v: 'unknown' if v is None else f'{v:.1f}'
  load_before = os.getloadavg()  # other work on the machine slows either side: the JSON keeps what it was
  work = Path(tempfile.mkdtemp(prefix='deep_linear_gph-'))
  try:
    print(f'ddjax: {args.runs} members ...', flush=True)
    dj = ddjax_side(work, args.runs)
    print(f"ddjax: {dj['wall_s']:.1f} s (job done in {dj['done_s']} s; other processes used "
          f"{core_s(dj['other_cpu_s'])} core-s meanwhile); init std {np.round(dj['init_std'], 4).tolist()}", flush=True)
    print(f'PyTorch: {args.runs} runs, {args.workers} processes ...', flush=True)
    pt = torch_side(work, args.torch_python, dj['data'], dj['init'], args.runs, args.workers)
    print(f"PyTorch: {pt['wall_s']:.1f} s (other processes used {core_s(pt['other_cpu_s'])} core-s meanwhile)",
          flush=True)
  finally:
    if args.keep:
      print(f'kept {work}')
    else:
      shutil.rmtree(work, ignore_errors=True)
  if not np.array_equal(dj['steps'], pt['steps']):
    raise RuntimeError(f"the evaluated steps differ: ddjax {dj['steps'][:3]}..{dj['steps'][-1]} ({len(dj['steps'])}), "
                       f"PyTorch {pt['steps'][:3]}..{pt['steps'][-1]} ({len(pt['steps'])})")
  peak = matmul_peak()

  import jax
  runs, flops = args.runs, args.runs * STEPS * FLOPS_PER_STEP
  dj_s, pt_s = dj['wall_s'], pt['wall_s']
  test = agreement(dj['test_loss'], pt['test_loss'], dj['steps'], float32_floor(dj['data']['y_test']))
  train = agreement(dj['train_loss'], pt['train_loss'], dj['steps'], float32_floor(dj['data']['y_train']))
  res = {
      'machine': f'{platform.machine()} {os.cpu_count()} cores, {cpu_model()}, jax {jax.devices()[0].platform} '
                 f'x{jax.device_count()}',
      'versions': dict(versions(), torch=pt['torch']), 'torch_python': args.torch_python,
      'cell': {'sizes': list(SIZES), 'gamma': GAMMA, 'lr': LR, 'batch_size': BATCH, 'steps': STEPS,
               'evaluations': EVALUATIONS, 'train_size': 500, 'test_size': 500, 'runs': runs},
      'torch_processes': args.workers, 'torch_threads_per_process': pt['torch_threads'],
      'ddjax_s': dj_s, 'ddjax_job_done_s': dj['done_s'], 'torch_s': pt_s, 'ratio_torch_over_ddjax': pt_s / dj_s,
      'ddjax_s_per_run': dj_s / runs, 'torch_s_per_run': pt_s / runs,
      'ddjax_core_s_per_run': dj_s * (os.cpu_count() or 1) / runs, 'torch_core_s_per_run': pt_s * args.workers / runs,
      'torch_train_s_per_run_after_import': float(pt['run_s'].mean()),
      'ddjax_ms_per_step': dj_s / STEPS * 1e3, 'torch_ms_per_step_per_run': pt_s * args.workers / runs / STEPS * 1e3,
      'training_gflop': flops / 1e9, 'matmul_peak_gflops': peak,
      'ddjax_gflops': flops / dj_s / 1e9, 'ddjax_fraction_of_peak': flops / dj_s / 1e9 / peak,
      'ddjax_fraction_of_peak_job_time': flops / dj['done_s'] / 1e9 / peak if dj['done_s'] else None,
      'projected_10000_seeds_ddjax_s': dj_s / runs * PROJECTED_SEEDS,
      'projected_10000_seeds_torch_s': pt_s / runs * PROJECTED_SEEDS,
      'projection_note': 'linear in the number of seeds from the per-run time measured here (a projection, not a '
                         'measurement; ddjax includes its compilation and start-up in the per-member time)',
      'ddjax_init_std': dj['init_std'], 'expected_init_std': WIDTH ** (-GAMMA / 2),
      'test_loss_agreement': test, 'train_loss_agreement': train,
      'load_average_before': load_before, 'load_average_after': os.getloadavg(),
      'other_processes_cpu_s': {'ddjax': dj['other_cpu_s'], 'torch': pt['other_cpu_s']},
      'test_loss_first': {'step': int(dj['steps'][0]), 'ddjax': float(dj['test_loss'][:, 0].mean()),
                          'torch': float(pt['test_loss'][:, 0].mean())},
      'test_loss_last': {'step': int(dj['steps'][-1]), 'ddjax': float(dj['test_loss'][:, -1].mean()),
                         'torch': float(pt['test_loss'][:, -1].mean())},
  }
  print(f"{runs} runs: ddjax {dj_s:.1f} s, PyTorch {pt_s:.1f} s ({res['ratio_torch_over_ddjax']:.1f}x); ddjax "
        f"{res['ddjax_gflops']:.1f} GFLOP/s = {res['ddjax_fraction_of_peak']:.1%} of the {peak:.0f} GFLOP/s "
        'matmul peak')
  print(f"same physics: mean test loss within {AGREE_SIGMAS:g} SE at {test['fraction_within']:.1%} of the evaluations "
        f"(max relative difference {test['max_relative_difference']:.2%}): {'agree' if test['agree'] else 'DIFFER'}"
        + ('' if test['first_step_outside'] is None else f"; first outside at step {test['first_step_outside']} "
           f"(mean loss {test['loss_at_first_step_outside']:.3g}), max relative difference before it "
           f"{test['max_relative_difference_before_it']:.2%}"))
  if test['evaluations_above_floor']:
    print(f"  above {FLOOR_MARGIN:g}x the float32 floor ({test['float32_floor']:.2g}; "
          f"{test['evaluations_above_floor']} evaluations): within {AGREE_SIGMAS:g} SE at "
          f"{test['fraction_within_above_floor']:.1%}, max relative difference "
          f"{test['max_relative_difference_above_floor']:.2%}: "
          f"{'agree' if test['agree_above_floor'] else 'DIFFER'}")
  write_result(args.out, args.name, res)


if __name__ == '__main__':
  main()
