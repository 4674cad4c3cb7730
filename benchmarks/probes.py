"""What each built-in probe costs on the MNIST-1D double-descent preset, on this machine.

  python -m benchmarks.probes [--epochs 3] [--out benchmarks/results] [key=value ...]

Builds the preset's job (its widths, both seeds, as a run places them) twice, without probes and with `step_metrics`
at every step, and times epochs of both (the step values fetched from the device every epoch, more often than a run
does): the ratio is what the step table costs. Then times one evaluation of the base probes (losses, norms) and of
the base probes plus each evaluation probe at its default options, and gives each probe's cost per evaluation and
over the preset's run at its default cadence (every evaluation: 30 log-spaced epochs and every 10th) as a fraction
of its training time (cka with pairs=seeds/widths, its comparison on the host included). Compilation is excluded.
Writes benchmarks/results/probes-<backend>.json.
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
from ddjax.buckets import job_plan, make_buckets  # noqa: E402
from ddjax.data import load_dataset  # noqa: E402
from ddjax.loop import _across_members, eval_epochs  # noqa: E402
from ddjax.members import expand  # noqa: E402
from ddjax.store import device_name, versions  # noqa: E402
from experiments.double_descent import PRESETS  # noqa: E402

EVAL_PROBES = ('collapse', 'sharpness', 'hessian_trace', 'noise_scale', 'drift', 'cka')


def buckets_for(overrides: list[str]):
  preset = PRESETS['mnist1d']
  cfg, sweep = cfglib.apply_overrides(preset.config, preset.sweep, overrides)
  job = expand(cfg, sweep)[0]
  ds = load_dataset(cfg.data)
  plan, cost = job_plan(job, ds.input_shape, ds.num_classes)
  return cfg, make_buckets(job, ds, plan, cost, log=lambda *a: None), job


def seconds_per_epoch(buckets, epochs: int) -> tuple[float, list]:
  """Seconds per epoch, and the step values of the timed epochs, fetched to the host at the end as a flush does."""
  jax.block_until_ready([b.train_epoch(0) for b in buckets])
  t, out = time.perf_counter(), []
  for e in range(1, epochs + 1):
    out.append([b.train_epoch(e) for b in buckets])
  fetched = jax.device_get(out)
  return (time.perf_counter() - t) / epochs, [[steps for _, steps in epoch] for epoch in fetched]


def parquet_bytes_per_row(buckets, fetched, attempt: int = 1796543186448147093) -> float:
  """Bytes per row of the step table as the run writes it (Parquet, run ids and counters included)."""
  import tempfile
  import numpy as np
  import pyarrow as pa
  import pyarrow.parquet as pq
  columns: dict[str, list] = {}
  for e, per_bucket in enumerate(fetched):
    for b, values in zip(buckets, per_bucket):
      for j, i in enumerate(b.member_ids):
        n = len(next(iter(values['step_metrics'].values()))[j])
        columns.setdefault('run_id', []).append(np.full(n, f'{i:012x}'))
        columns.setdefault('attempt', []).append(np.full(n, attempt))
        columns.setdefault('step', []).append(e * n + np.arange(1, n + 1))
        columns.setdefault('epoch', []).append(np.full(n, e + 1))
        for k, v in values['step_metrics'].items():
          columns.setdefault(k, []).append(np.asarray(v[j], np.float32))
  table = pa.table({k: np.concatenate(v) for k, v in columns.items()})
  with tempfile.NamedTemporaryFile(suffix='.parquet') as f:
    pq.write_table(table, f.name)
    return Path(f.name).stat().st_size / table.num_rows


def seconds_per_evaluation(job, buckets, which, repeats: int) -> float:
  """An evaluation as the run loop does it: every bucket's, fetched, and the probes across members compared."""
  def evaluation():
    return _across_members(job, buckets, jax.device_get([b.evaluate(1, which) for b in buckets]))
  evaluation()
  t = time.perf_counter()
  for _ in range(repeats):
    evaluation()
  return (time.perf_counter() - t) / repeats


def main(argv=None):
  parser = argparse.ArgumentParser(prog='python -m benchmarks.probes', description=__doc__.split('\n')[0])
  parser.add_argument('--epochs', type=int, default=3, help='timed epochs per configuration')
  parser.add_argument('--repeats', type=int, default=1, help='timed evaluations per probe')
  parser.add_argument('--out', type=Path, default=Path('benchmarks/results'))
  parser.add_argument('overrides', nargs='*', metavar='key=value', help='preset overrides')
  args = parser.parse_args(argv)
  cfg, plain, _ = buckets_for(args.overrides)
  res = {'machine': f'{platform.machine()} {os.cpu_count()} cores, {device_name()}', 'versions': versions(),
         'members': sum(len(b.member_ids) for b in plain), 'buckets': [b.width for b in plain]}
  base, _ = seconds_per_epoch(plain, args.epochs)
  _, stepped, _ = buckets_for(args.overrides + ['probes=step_metrics'])
  with_steps, fetched = seconds_per_epoch(stepped, args.epochs)
  row_bytes = parquet_bytes_per_row(stepped, fetched)
  del stepped
  res.update(epoch_s=base, epoch_s_step_metrics=with_steps, step_metrics_ratio=with_steps / base,
             step_table_bytes_per_row=row_bytes)
  print(f"{res['members']} members in buckets {res['buckets']}: {base:.3f} s/epoch; with step_metrics at every "
        f'step {with_steps:.3f} s/epoch (x{with_steps / base:.3f}); step table {row_bytes:.1f} bytes per row')
  _, probed, job = buckets_for(args.overrides + [f"probes={','.join(EVAL_PROBES)}", 'probe.cka.pairs=seeds/widths'])
  always = ('losses', 'norms')
  evals = len(eval_epochs(cfg.train.epochs, cfg.train.eval_points, cfg.train.eval_every))
  run_s = cfg.train.epochs * base
  t_base = seconds_per_evaluation(job, probed, always, args.repeats)
  res['evaluation_s'] = {'base': t_base}
  res['evaluations_per_run'] = evals
  print(f'evaluation of the base probes: {t_base:.3f} s; {evals} evaluations in the {cfg.train.epochs}-epoch run '
        f'({evals * t_base / run_s:.1%} of its training time)')
  for name in EVAL_PROBES:
    t = seconds_per_evaluation(job, probed, always + (name,), args.repeats) - t_base
    res['evaluation_s'][name] = t
    print(f'  {name:<14} +{t:.3f} s per evaluation, {evals * t / run_s:.1%} of the run at every evaluation')
  write_result(args.out, f'probes-{jax.default_backend()}', res)


if __name__ == '__main__':
  main()
