"""Grokking: weight-decay sweeps trained together, with weight norms and train-loss spikes.

  python -m experiments.grokking                       # preset default: wd 0.03, 0.1, 1 on addition mod 53
  python -m experiments.grokking --wd 0.03             # one weight decay
  python -m experiments.grokking --wd 0.01,0.03,0.1 seed=0..2
  python -m experiments.grokking --task div            # a / b mod p (also add, sub, mul)
  python -m experiments.grokking --task mheight        # m-height regression (the mheight preset, GPU)
  python -m experiments.grokking --preset mheight_cpu --report   # its miniature on a CPU, with the report

Methods, preset default (Kitouni's simple-grokking setup): every pair (a, b) mod 53, 60% of the 2,809 pairs for
training (data.seed 42), a shared 128-d token embedding, both embeddings concatenated, Dense(128)-ReLU-Dense(53);
full-batch AdamW (lr 3e-2, betas 0.9/0.999, decoupled weight decay scaled by lr) for 7,000 epochs; evaluation every
10 epochs. Every weight decay (and seed) is a member of one vectorised run. At the end the analysis columns
(memorisation and grokking epochs at 99% accuracy, train-loss spikes) are written into results.parquet, the
figures next to it, and with --report a Markdown report.
"""

from __future__ import annotations

import sys

from ddjax.cli import Flag, Preset, main as cli_main
from ddjax.config import Config, ConfigError, DataConfig, ModelConfig, OptimConfig, TrainConfig

OPS = ('add', 'sub', 'mul', 'div')

PRESETS = {
    'default': Preset(
        Config(seed=0,
               data=DataConfig(name='modular', op='add', p=53, train_split=0.6, seed=42),
               model=ModelConfig(name='embed_mlp', width=128),
               optim=OptimConfig(name='adamw', lr=3e-2, wd=0.1),
               train=TrainConfig(epochs=7000, batch_size=0, eval_points=30, eval_every=10, keep_best=True)),
        sweep={'optim.wd': [0.03, 0.1, 1.0], 'seed': [0, 1, 2]},
        about='addition mod 53, 60% train, embedding MLP, full-batch AdamW lr 3e-2, wd 0.03/0.1/1 x 3 seeds, '
              '7,000 epochs (2-core CPU: about 5 min)'),
    # Nanda et al. 2023: one-layer transformer, p = 113, 30% of pairs, AdamW lr 1e-3, wd 1, betas (0.9, 0.98), and
    # their code's 10-step linear warmup (LambdaLR(opt, lambda step: min(step / 10, 1)); full batch: 10 epochs).
    'transformer': Preset(
        Config(seed=0,
               data=DataConfig(name='modular', op='add', p=113, train_split=0.3, seed=42),
               model=ModelConfig(name='transformer', width=128),
               optim=OptimConfig(name='adamw', lr=1e-3, wd=1.0, b2=0.98, warmup=10),
               train=TrainConfig(epochs=20000, batch_size=0, eval_points=40, eval_every=100, keep_best=True)),
        about="Nanda et al.'s 1-layer transformer on addition mod 113, 30% train, AdamW wd 1, 20,000 epochs (GPU)"),
    # The source project's grokking experiment as it was run: its expert (a ResNet with ReLU and LayerNorm, 64
    # channels x 5 blocks) from scratch, AdamW at wd 0.01 / 0.03 / 0.1, batch 4096, 10,000 epochs; per group 5,000
    # training codes and 10,000 validation codes (validated every 5 epochs; the rest, 5,000, held out as test).
    'mheight': Preset(
        Config(seed=0, probes='step_metrics',
               data=DataConfig(name='mheight', groups='all', num_samples=20000, train_per_group=5000,
                               val_per_group=10000, seed=42),
               model=ModelConfig(name='resnet_ln', width=64, depth=5),
               optim=OptimConfig(name='adamw', lr=1e-3, wd=0.03),
               train=TrainConfig(epochs=10000, batch_size=4096, eval_points=30, eval_every=5, keep_best=True)),
        sweep={'optim.wd': [0.01, 0.03, 0.1]},
        about="the source project's run: 21 groups x 5,000 training / 10,000 validation codes, ResNet-LayerNorm "
              '64 x 5, AdamW batch 4096, wd 0.01/0.03/0.1, 10,000 epochs (H100: see docs/grokking.md)'),
    # mheight in miniature, the same design (model family, AdamW, log2-MSE, three splits, validation every 5 epochs,
    # the step table) at CPU scale: 200 training / 200 validation / 100 test codes per group, 16 channels x 3
    # blocks, batch 128 (3% of the training set; the source's 4,096 is 3.9%). It keeps each member's lr x wd x
    # steps, the number of weight-decay e-folds over the run (2.5 / 7.5 / 25): 8,320 steps (32 a epoch) at lr 3e-3
    # with wd 0.1 / 0.3 / 1 against mheight's 250,000 (25 whole batches a epoch) at lr 1e-3 with wd 0.01 / 0.03 /
    # 0.1.
    'mheight_cpu': Preset(
        Config(seed=0, probes='step_metrics',
               data=DataConfig(name='mheight', groups='all', num_samples=500, train_per_group=200,
                               val_per_group=200, seed=42),
               model=ModelConfig(name='resnet_ln', width=16, depth=3),
               optim=OptimConfig(name='adamw', lr=3e-3, wd=0.3),
               train=TrainConfig(epochs=260, batch_size=128, eval_points=30, eval_every=5, keep_best=True)),
        sweep={'optim.wd': [0.1, 0.3, 1.0]},
        about='mheight in miniature: 21 groups x 200 training / 200 validation codes, ResNet-LayerNorm 16 x 3, AdamW '
              'lr 3e-3 batch 128, wd 0.1/0.3/1 (the same lr x wd x steps), 260 epochs (2-core CPU: 4.5 min)'),
    # The mheight preset before the study (two splits, the two-stage resnet2d_ln): its stores resume with it.
    'mheight_2split': Preset(
        Config(seed=0,
               data=DataConfig(name='mheight', groups='all', num_samples=6250, train_split=0.8, seed=42),
               model=ModelConfig(name='resnet2d_ln', width=32),
               optim=OptimConfig(name='adamw', lr=1e-3, wd=0.03),
               train=TrainConfig(epochs=10000, batch_size=4096, eval_points=30, eval_every=5, keep_best=True)),
        sweep={'optim.wd': [0.01, 0.03, 0.1]},
        about='the mheight preset of earlier versions (train/test split, resnet2d_ln 32): resume its stores with it'),
    'mheight_small': Preset(
        Config(seed=0,
               data=DataConfig(name='mheight', groups='9/4/2+9/5/3+10/5/5', num_samples=300, train_split=0.8,
                               seed=42),
               model=ModelConfig(name='resmlp', width=32, depth=2),
               optim=OptimConfig(name='adamw', lr=3e-3, wd=0.03),
               train=TrainConfig(epochs=60, batch_size=128, eval_points=10, eval_every=5, keep_best=True)),
        sweep={'optim.wd': [0.01, 0.1]},
        about='m-height in miniature: 3 groups (one with infinite heights) x 240 training codes, residual MLP, '
              '60 epochs (CPU: 15 s)'),
}


def _task(value: str, preset: str | None) -> tuple[str | None, list[str]]:
  """--task: an operation on the modular presets, or mheight (preset mheight unless an mheight preset is given)."""
  mheight = preset is not None and preset.startswith('mheight')
  if value in OPS:
    if mheight:
      raise ConfigError(f'task {value} is modular arithmetic; preset {preset} is m-height')
    return preset, ['data.name=modular', f'data.op={value}']
  if value == 'mheight':
    if preset is not None and not mheight:
      raise ConfigError(f'task mheight needs an m-height preset (mheight, mheight_cpu, mheight_small, '
                        f'mheight_2split), not {preset}')
    return preset or 'mheight', []
  raise ConfigError(f"unknown task {value!r}: allowed tasks are {', '.join(OPS)}, mheight")


FLAGS = (
    Flag('wd', 'weight decay, or several (0.01,0.03,0.1) trained together: the same as optim.wd=...',
         lambda v, preset: (preset, [f'optim.wd={v}'])),
    Flag('task', f"data set: {', '.join(OPS)} (a op b mod p, data.p) or mheight (the mheight preset)", _task),
)


def after(out) -> None:
  """Analysis columns into results.parquet, a summary per member, the figures."""
  from plots.grokking import analyse, plot_all, summary_lines
  for line in summary_lines(analyse(out, write=True)):  # the run stores its own analysis
    print(line)
  for path in plot_all(out):
    print(f'figure: {path}')


def report(out):
  from plots.grokking import write_report
  return write_report(out)


if __name__ == '__main__':
  cli_main('grokking', PRESETS, sys.argv[1:], after=after, flags=FLAGS, report=report)
