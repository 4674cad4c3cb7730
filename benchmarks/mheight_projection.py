"""The `mheight` grokking preset's cost, counted by XLA, and its H100 time at an assumed utilisation.

  python -m benchmarks.mheight_projection                  # counts (CPU: about a minute), JSON to benchmarks/results
  python -m benchmarks.mheight_projection --time-steps 20  # also times 20 steps of the bucket on this device

XLA's cost analysis counts the FLOPs of one training step of the preset's bucket (its three weight decays as
members, batch 4096, resnet_ln 64 x 5, conv=lax as on a GPU) and of one evaluation chunk; the run's totals follow
from the preset's steps (10,000 epochs of 105,000 training codes) and evaluations (every 5 epochs and the log-spaced
ones: train, validation and test splits). The projection divides them by an assumed sustained rate, stated with
the device's peak; with --time-steps the rate measured on this device is printed beside it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import write_result

H100_FP32_TFLOPS = 67.0    # H100 SXM, float32 without tensor cores (NVIDIA's datasheet)
H100_TF32_TFLOPS = 495.0   # dense TF32 tensor-core peak, which XLA uses for float32 convolutions by default


def _flops(compiled) -> float:
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost['flops'])


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(prog='python -m benchmarks.mheight_projection', description=__doc__.split('\n\n')[0])
  parser.add_argument('--utilisation', type=float, default=0.15,
                      help="assumed sustained fraction of the H100's float32 peak (default 0.15)")
  parser.add_argument('--time-steps', type=int, default=0, help='also time this many training steps here')
  parser.add_argument('--out', type=Path, default=Path(__file__).parent / 'results')
  args = parser.parse_args(argv)

  from ddjax import config as cfglib
  from ddjax.data.codes import split_sizes
  from ddjax.data.mheight import parse_groups
  from ddjax.loop import evaluation_grid
  from ddjax.members import stack_hp
  from ddjax.nn.models import make_model
  from ddjax.train import StepSpec, init_member, train_step
  from experiments.grokking import PRESETS

  preset = PRESETS['mheight']
  cfg, wds = preset.config, preset.sweep['optim.wd']
  groups = parse_groups(cfg.data.groups)
  n_train, n_val, n_test = (len(groups) * n for n in split_sizes(cfg.data, cfg.data.num_samples))
  shape = (6, 6, 2 + max(m for *_, m in groups))
  model = make_model('resnet_ln', cfg.model.width, shape, 1, 'lax', depth=cfg.model.depth, head=cfg.model.head)
  batch = cfg.train.batch_size
  spec = StepSpec(model, 'adamw', batch, 1, eval_batch=cfg.train.eval_batch, task='regress')
  members = []
  for wd in wds:
    m = {k: cfglib.get(cfg, k) for k in cfglib.MEMBER_KEYS}
    m.update({'model.width': cfg.model.width, 'optim.wd': wd})
    members.append(m)
  hp = {k: jnp.asarray(v) for k, v in stack_hp(members).items()}
  rng = np.random.default_rng(0)
  x_B = jnp.asarray(rng.normal(size=(batch, *shape)), jnp.float32)
  y_B = jnp.asarray(rng.uniform(3, 27, size=batch), jnp.float32)
  state = jax.jit(jax.vmap(lambda h: init_member(spec, h, x_B[0])))(hp)
  step = jax.jit(jax.vmap(lambda s, h: train_step(spec, s, h, x_B, y_B)))
  chunk = x_B[:spec.eval_batch]
  forward = jax.jit(jax.vmap(lambda s, h: model.apply({'params': s['params']}, chunk, h['width'])))
  step_flops = _flops(step.lower(state, hp).compile())
  eval_flops_per_example = _flops(forward.lower(state, hp).compile()) / spec.eval_batch

  steps_per_epoch = n_train // batch
  epochs_evaluated, _ = evaluation_grid(cfg.train, steps_per_epoch)
  steps = cfg.train.epochs * steps_per_epoch
  evaluations = len(epochs_evaluated)
  train_total = steps * step_flops
  eval_total = evaluations * (n_train + n_val + n_test) * eval_flops_per_example
  total = train_total + eval_total
  rate = args.utilisation * H100_FP32_TFLOPS * 1e12
  res = {
      'preset': 'mheight', 'members': len(wds), 'batch': batch, 'steps_per_epoch': steps_per_epoch,
      'steps': steps, 'evaluations': evaluations, 'examples_per_evaluation': n_train + n_val + n_test,
      'macs_per_example': model.macs(cfg.model.width),
      'flops_per_step_all_members': step_flops, 'eval_flops_per_example_all_members': eval_flops_per_example,
      'train_pflop': train_total / 1e15, 'eval_pflop': eval_total / 1e15, 'total_pflop': total / 1e15,
      'assumed_utilisation_of_fp32_peak': args.utilisation, 'h100_fp32_peak_tflops': H100_FP32_TFLOPS,
      'h100_tf32_peak_tflops': H100_TF32_TFLOPS,
      'projected_h100_hours': total / rate / 3600,
      'counted_on': jax.devices()[0].device_kind,
  }
  print(f"mheight preset: {steps:,} steps of {len(wds)} members (batch {batch}) and {evaluations} evaluations of "
        f"{n_train + n_val + n_test:,} codes")
  print(f'XLA counts {step_flops / 1e9:.1f} GFLOP per step (all members), {eval_flops_per_example / 1e6:.1f} MFLOP per '
        f'evaluated code: {train_total / 1e15:.0f} PFLOP training + {eval_total / 1e15:.0f} PFLOP evaluation')
  print(f'H100 at {100 * args.utilisation:.0f}% of its {H100_FP32_TFLOPS:g} TFLOP/s float32 peak '
        f'({rate / 1e12:.1f} TFLOP/s sustained): {res["projected_h100_hours"]:.1f} h')
  if args.time_steps:
    s = step(state, hp)[0]
    jax.block_until_ready(s)
    t0 = time.perf_counter()
    for _ in range(args.time_steps):
      s, loss = step(s, hp)
    jax.block_until_ready(s)
    per_step = (time.perf_counter() - t0) / args.time_steps
    res.update(measured_s_per_step=per_step, measured_tflops=step_flops / per_step / 1e12,
               measured_on=jax.devices()[0].device_kind)
    print(f'measured here ({jax.devices()[0].device_kind}): {per_step * 1e3:.1f} ms per step, '
          f'{step_flops / per_step / 1e12:.3f} TFLOP/s; the whole preset at that rate: '
          f'{total / (step_flops / per_step) / 3600:.0f} h')
  write_result(args.out, f'mheight_projection-{jax.default_backend()}', res)
  return res


if __name__ == '__main__':
  main()
