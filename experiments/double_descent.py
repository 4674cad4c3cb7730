"""Model-wise double descent (Nakkiran et al. 2019, "Deep Double Descent").

  python -m experiments.double_descent                      # preset mnist1d: 2-core CPU, 5 minutes
  python -m experiments.double_descent model.width=4..64..4 seed=0,1,2

Methods, preset mnist1d: MNIST-1D (4,000 train / 1,000 test, generated offline), 15% of training labels replaced once by
a uniformly random incorrect label (per noise seed); the 3-layer CNN-1D with channels c swept over widths spanning the
interpolation threshold (2..128), seeds 0 and 1; Adam lr 1e-3, batch 100, no weight decay, cross-entropy, 200 epochs;
every width and seed trains as a member of one vectorised run, widths grouped into buckets. Measured
(docs/double_descent.md): clean test error falls to 0.245 at c = 14, peaks at 0.343 at c = 48 where train error on the
noisy labels reaches 0 (below 1% from c = 40), and falls again to 0.293 at c = 128.
"""

from __future__ import annotations

import sys

from ddjax.cli import Preset, main as cli_main
from ddjax.config import Config, DataConfig, ModelConfig, OptimConfig, TrainConfig

# Past the interpolation threshold (c about 40) the test error needs widths beyond 64 to come down again.
WIDTHS_MNIST1D = [2, 4, 6, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96, 128]
WIDTHS_MUP = [2, 4, 8, 12, 16, 24, 32, 40, 48, 64, 96, 128]
WIDTHS_SAMPLEWISE = [4, 8, 12, 16, 20, 24, 32, 40, 48, 64]
SUBSETS = [500, 1000, 1500, 2000, 2500, 3000, 4000]

PRESETS = {
    'mnist1d': Preset(
        Config(seed=0,
               data=DataConfig(name='mnist1d', num_samples=5000, train_split=0.8, noise=0.15),
               model=ModelConfig(name='cnn1d'),
               optim=OptimConfig(name='adam', lr=1e-3),
               train=TrainConfig(epochs=200, batch_size=100, eval_points=30, eval_every=10)),
        sweep={'model.width': WIDTHS_MNIST1D, 'seed': [0, 1]},
        about='MNIST-1D, 15% label noise, CNN-1D widths 2..128 x 2 seeds, Adam, 200 epochs (2-core CPU: 5 min)'),
    # The mnist1d sweep under the standard parametrization and muP together (model.param: per-layer init and lr
    # multipliers, ddjax.nn.param), muP anchored at width 16 (there both are the same network).
    'mup': Preset(
        Config(seed=0,
               data=DataConfig(name='mnist1d', num_samples=5000, train_split=0.8, noise=0.15),
               model=ModelConfig(name='cnn1d', base_width=16),
               optim=OptimConfig(name='adam', lr=1e-3),
               train=TrainConfig(epochs=200, batch_size=100, eval_points=30, eval_every=10)),
        sweep={'model.width': WIDTHS_MUP, 'model.param': ['sp', 'mup'], 'seed': [0, 1]},
        about='the mnist1d sweep (widths 2..128 x 2 seeds) under sp and muP (base width 16) together (2-core CPU: '
              '4 min)'),
    # Sample-wise double descent (Nakkiran et al. Section 7): widths x training-set sizes (data.subset), every member
    # taking the same 8,000 steps (train.budget=steps: 200 passes' worth of the 4,000 examples), so that a cell's
    # error tells its data and width, not how long it trained (under budget=epochs n = 500 would take 1,000 steps).
    'samplewise': Preset(
        Config(seed=0,
               data=DataConfig(name='mnist1d', num_samples=5000, train_split=0.8, noise=0.15),
               model=ModelConfig(name='cnn1d'),
               optim=OptimConfig(name='adam', lr=1e-3),
               train=TrainConfig(epochs=200, batch_size=100, eval_points=30, eval_every=10, budget='steps')),
        sweep={'model.width': WIDTHS_SAMPLEWISE, 'data.subset': SUBSETS, 'seed': [0, 1]},
        about='MNIST-1D, 15% noise: cnn1d widths 4..64 x training sets of 500..4000 examples x 2 seeds, 8,000 Adam '
              'steps each (2-core CPU: about 10 min)'),
    # Figure 1 and 2 of the paper: needs CIFAR-10 (data.dir=PATH or tensorflow-datasets) and a GPU.
    'paper': Preset(
        Config(seed=0,
               data=DataConfig(name='cifar10', noise=0.15, augment='crop_flip'),
               model=ModelConfig(name='resnet18k'),
               optim=OptimConfig(name='adam', lr=1e-4),
               train=TrainConfig(epochs=4000, batch_size=128, eval_points=60, eval_every=100, eval_batch=1000,
                                 checkpoint_keep=2)),  # each checkpoint: ~17 GiB for five trials
        sweep={'model.width': list(range(1, 65)), 'seed': [0, 1, 2, 3, 4]},
        about='CIFAR-10, 15% label noise, ResNet18k widths 1..64 x 5 seeds, Adam 1e-4, 4000 epochs (GPU)'),
    'smoke': Preset(
        Config(seed=0,
               data=DataConfig(name='synthetic_cifar10', num_samples=160, train_split=0.8, noise=0.15),
               model=ModelConfig(name='resnet18k'),
               optim=OptimConfig(name='adam', lr=1e-3),
               train=TrainConfig(epochs=2, batch_size=32, eval_points=2, eval_batch=64, max_buckets=1)),
        sweep={'model.width': [1, 2, 3, 4]},
        about='the paper preset in miniature on CIFAR-shaped synthetic images: ResNet18k widths 1..4, 2 epochs'),
}


def summarise(out) -> str:
  """Mean final clean test error at the first minimum, the peak after it and the largest width (a line per
  parametrization where model.param varies)."""
  from ddjax import results
  from plots import samplewise
  df = results.load(out)
  if samplewise.varies(df):  # data.subset swept: the threshold per size, and where more data hurt
    return samplewise.summary(df)
  if 'model.param' in df.columns and df['model.param'].nunique() > 1:
    return '\n'.join(f'{param}: {_summary(g)}' for param, g in df.groupby('model.param'))
  return _summary(df)


def _summary(df) -> str:
  from ddjax import analysis
  final = df['test_error'].map(lambda v: float(v[-1]) if len(v) else float('nan'))
  by_width = final.groupby(df['model.width']).mean()
  train = df['train_error'].map(lambda v: float(v[-1]) if len(v) else float('nan')).groupby(df['model.width']).mean()
  dd = analysis.double_descent_peak(by_width.index, by_width.to_numpy())
  if dd is None:
    return 'test error against width: no second rise (no double descent at these widths and epochs)'
  interp = train.index[train.to_numpy() < 0.01]
  return (f'test error: minimum {dd.min_y:.3f} at width {dd.min_x:g}, peak {dd.peak_y:.3f} at width {dd.peak_x:g} '
          f'(+{dd.rise:.3f}), {dd.last_y:.3f} at the largest width {dd.last_x:g} ({-dd.second_descent:+.3f}); '
          f'train error < 1% from width {interp[0] if len(interp) else "none"}')


def plot(out) -> None:
  from plots.double_descent import plot_all
  print(summarise(out))
  for path in plot_all(out):
    print(f'figure: {path}')


if __name__ == '__main__':
  cli_main('double_descent', PRESETS, sys.argv[1:], after=plot)
