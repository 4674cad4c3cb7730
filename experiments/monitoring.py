"""Training-dynamics monitoring: the shape of the loss curve of CNN variants, with curvature and gradient noise.

  python -m experiments.monitoring                       # preset cpu: 2-core CPU, about 6 minutes
  python -m experiments.monitoring --preset cifar        # the plan's sizes on CIFAR-10 (a GPU; data.dir=PATH)
  python -m experiments.monitoring seed=0..4             # more seeds of every variant

Methods, preset cpu: MNIST-1D (9,000 train / 1,000 validation examples, generated offline), the pre-activation
ResNet-1D in four variants trained side by side: standard (width 16, BatchNorm, SGD lr 0.05 momentum 0.9, L2
5e-4), BatchNorm off (model.norm=none), narrow (width 4) and AdamW (lr 1e-3, decoupled weight decay 0.05); seeds 0
and 1; batch 125 (72 steps an epoch), 100 epochs (7,200 steps). Every monitor at the plan's cadence: the step table
every step (batch loss, accuracy, gradient norm, lr); validation loss and error (the whole validation set),
training loss and error (1,000 evenly spaced training examples), weight and layer norms every quarter epoch; the top
Hessian eigenvalue (`sharpness`, 20 power-iteration steps) and Hutchinson's trace (10 probes) every 500 steps; the
gradient noise (`trace_sigma`, `grad_sq`, `noise_scale`) every 2 epochs; the monitors on a 256-example batch; the
3 best states by validation loss besides the last checkpoint. After the run, each member's batch-loss curve is
fitted (Kneedle's knee in log-log and elbow in linear axes, the power law a t^-b + c with c >= 0, the local slope)
and its residual power and PSD tail are taken over windows of 256 steps every 2 epochs (ddjax.analysis).

Writes, beside results.parquet: `monitoring-<variant>.png` (one page per variant: loss with knee and power law,
local slope, sharpness against the stability threshold, Hessian trace, gradient variance, PSD tail and residual
power) and `monitoring-summary.csv` (one row per member). `python -m plots.monitoring DIR` draws them again.
"""

from __future__ import annotations

import sys

from ddjax.cli import Preset, main as cli_main
from ddjax.config import Config, DataConfig, ModelConfig, OptimConfig, TrainConfig

SUITE = 'step_metrics,sharpness,hessian_trace,noise_scale'


def suite(curvature_every: str = '500steps', noise_every: str = '2epochs', batch: int = 256,
          train_examples: int = 1000) -> dict:
  """The monitor suite's probe options: curvature every `curvature_every`, gradient noise every `noise_every`, all on
  a `batch`-example monitor batch with 20 power-iteration steps and 10 Hutchinson probes; the evaluations' training
  loss on `train_examples` evenly spaced examples (the step table has every batch's loss; the validation loss is on
  the whole validation set)."""
  return {'losses': {'train_examples': train_examples},
          'sharpness': {'every': curvature_every, 'batch': batch, 'iters': 20},
          'hessian_trace': {'every': curvature_every, 'batch': batch, 'probes': 10},
          'noise_scale': {'every': noise_every, 'batch': batch}}


# The four variants, one position each: standard, BatchNorm off, narrow, AdamW
VARIANT_KEYS = ('model.width', 'model.norm', 'optim.name', 'optim.lr', 'optim.wd')


def variants(width: int, narrow: int, sgd_lr: float, adamw_lr: float = 1e-3, l2: float = 5e-4,
             decoupled: float = 0.05) -> dict[str, list]:
  return {'model.width': [width, width, narrow, width], 'model.norm': ['auto', 'none', 'auto', 'auto'],
          'optim.name': ['sgd', 'sgd', 'sgd', 'adamw'], 'optim.lr': [sgd_lr, sgd_lr, sgd_lr, adamw_lr],
          'optim.wd': [l2, l2, l2, decoupled]}


PRESETS = {
    'cpu': Preset(
        Config(seed=0, data=DataConfig(name='mnist1d', num_samples=10_000, train_split=0.9),
               model=ModelConfig(name='resnet1d'), optim=OptimConfig(name='sgd', lr=0.05, momentum=0.9),
               train=TrainConfig(epochs=100, batch_size=125, eval_points=1, eval_every_steps=18, checkpoint_best=3),
               probes=SUITE, probe=suite()),
        sweep={**variants(16, 4, 0.05), 'seed': [0, 1]}, zip=(VARIANT_KEYS,),
        about='MNIST-1D, ResNet-1D standard / BatchNorm off / narrow / AdamW x 2 seeds, 100 epochs of 72 steps, '
              'every monitor at the plan\'s cadence (2-core CPU: about 6 minutes)'),
    'cifar': Preset(
        Config(seed=0, data=DataConfig(name='cifar10', augment='crop_flip'), model=ModelConfig(name='resnet18k'),
               optim=OptimConfig(name='sgd', lr=0.1, momentum=0.9),
               train=TrainConfig(epochs=100, batch_size=128, eval_points=1, eval_every_steps=98, eval_batch=1000,
                                 checkpoint_best=3),
               probes=SUITE, probe=suite()),
        sweep={**variants(64, 16, 0.1), 'seed': [0, 1, 2]}, zip=(VARIANT_KEYS,),
        about='CIFAR-10, ResNet18 (k=64) standard / BatchNorm off / narrow (k=16) / AdamW x 3 seeds, 100 epochs, '
              'the plan\'s cadences (GPU; data.dir=PATH or tensorflow-datasets)'),
    'smoke': Preset(
        Config(seed=0, data=DataConfig(name='mnist1d', num_samples=400, train_split=0.8),
               model=ModelConfig(name='resnet1d'), optim=OptimConfig(name='sgd', lr=0.05, momentum=0.9),
               train=TrainConfig(epochs=4, batch_size=20, eval_points=1, eval_every_steps=4, checkpoint_best=3),
               probes=SUITE, probe=suite('8steps', '2epochs', 32, 100)),
        sweep=variants(4, 2, 0.05), zip=(VARIANT_KEYS,),
        about='the cpu preset in miniature: widths 4 and 2, 400 examples, 4 epochs (seconds once compiled, '
              'a few minutes from a cold cache on 2 cores)'),
}


def after(out) -> None:
  import pandas as pd
  from plots.monitoring import plot_all
  paths = plot_all(out)
  if not paths:
    print(f'no step table in {out} (probes=step_metrics): no pages, no summary')
  for path in paths:
    print(pd.read_csv(path).to_string(index=False) if path.suffix == '.csv' else f'figure: {path}')


if __name__ == '__main__':
  cli_main('monitoring', PRESETS, sys.argv[1:], after=after)
