"""Deep linear networks: stage-like learning of a linear teacher's singular modes (Saxe, McClelland and Ganguli 2014).

  python -m experiments.deep_linear                        # preset default: 2-core CPU, about 12 s
  python -m experiments.deep_linear model.init_scale=0.003,0.03,0.3 model.depth=1,2,3 seed=0..4

Methods, preset default: a linear teacher y = W* x in 16 dimensions with singular values 4, 2, 1, 0.5 (random
orthonormal modes, data.seed 42); 1,000 exactly whitened training inputs and 250 N(0, I) test inputs; students
x -> W_{L} ... W_1 x of width 16 without biases (model.depth hidden layers), PyTorch's default init times
model.init_scale; full-batch gradient descent (SGD without momentum, lr 0.02) on the mean of ||y - W x||^2. Every
init scale and seed trains as a member of one vectorised run; each depth is a job. Every evaluation records each
member's strength along the teacher's modes (mode_1 ... mode_4: a_r^T W b_r for the singular vectors of X^T Y / N)
and its layers' imbalance.

What it shows (Saxe et al.'s Figure 3, Arora et al.'s balancedness): from a small init every mode's strength follows
a sigmoid and the modes are learned one after another, strongest first, in a time of about ln(s / u0) / (2 s) in units
of 2 lr x steps (the loss has no 1/2); from a large init their learning overlaps. The imbalance stays near its
initial value (gradient flow conserves W_{l+1}^T W_{l+1} - W_l W_l^T; gradient descent drifts by O(lr)).
Measured (docs/deep_linear.md): half strength at t = 1.4, 2.6, 4.6, 8.6 for depth 1 from init scale 0.03; 17, 40, 65,
138 for depth 2.
"""

from __future__ import annotations

import sys

from ddjax.cli import Preset, main as cli_main
from ddjax.config import Config, DataConfig, ModelConfig, OptimConfig, TrainConfig

TEACHER = DataConfig(name='linear_teacher', dim=16, spectrum='4/2/1/0.5', num_samples=1250, train_split=0.8, seed=42)
GD = OptimConfig(name='sgd', lr=0.02, momentum=0.0)

PRESETS = {
    'default': Preset(
        Config(seed=0, data=TEACHER, model=ModelConfig(name='deep_linear', width=16, depth=1), optim=GD,
               train=TrainConfig(epochs=5000, batch_size=0, eval_points=120, eval_every=0)),
        sweep={'model.init_scale': [0.03, 0.3, 1.0], 'model.depth': [1, 2], 'seed': [0, 1, 2]},
        about='linear teacher (16-d, singular values 4/2/1/0.5), deep linear students of depth 1 and 2, init scale '
              '0.03/0.3/1 x 3 seeds, full-batch GD, 5,000 steps (2-core CPU: about 12 s)'),
    'smoke': Preset(
        Config(seed=0, data=DataConfig(name='linear_teacher', dim=4, spectrum='2/1', num_samples=40, train_split=0.5),
               model=ModelConfig(name='deep_linear', width=4, depth=1), optim=OptimConfig(name='sgd', lr=0.05,
                                                                                       momentum=0.0),
               train=TrainConfig(epochs=300, batch_size=0, eval_points=20)),
        sweep={'model.init_scale': [0.1, 1.0], 'model.width': [1, 4]},
        about='the default preset in miniature: a 4-d teacher of rank 2, widths 1 and 4, 300 steps (seconds)'),
}


def after(out) -> None:
  from plots.deep_linear import plot_all, summary_lines
  for line in summary_lines(out):
    print(line)
  for path in plot_all(out):
    print(f'figure: {path}')


if __name__ == '__main__':
  cli_main('deep_linear', PRESETS, sys.argv[1:], after=after)
