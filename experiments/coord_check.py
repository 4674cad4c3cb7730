"""Coordinate check: activation scales per layer against width over the first steps, for each parametrization, as one
vectorised run (every width x parametrization a member of one bucket).

  python -m experiments.coord_check                                # MLP, widths 64..2048, sp/ntk/mup, 5 Adam steps
  python -m experiments.coord_check --optimizer sgd --lr 0.05 --out coord_sgd

Yang et al.'s check (Tensor Programs V, Figure 5): train each width a few steps and plot the mean |coordinate| of
how far every layer's activations moved from init (x_t - x_0) against width, one line per step (step 0: the
activations at init). Under muP the lines stay flat (every layer's update is O(1) per coordinate at any width);
under the standard parametrization with one learning rate the logits' change grows with width. Writes
coord_check.png (a panel per layer, columns per parametrization) and coord_check.json (the scales and, per layer
and parametrization, the slope of log scale against log width at each step, and the one largest in size after the
first update).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

PARAMS = ('sp', 'ntk', 'mup')


def coord_check(widths, steps: int = 5, optimizer: str = 'adam', lr: float = 1e-2, base_width: int | None = None,
                batch: int = 64, seed: int = 0) -> dict:
  """The mean |coordinate| of each tap point (and the logits) of the MNIST-1D MLP at every width at init, and of
  their change from init after each of `steps` updates (Yang et al.'s x_t - x_0), all widths x parametrizations
  trained together in one vmapped program: {'layers',
  'scales': {param: (steps + 1, layers, widths)}, 'slopes': {param: {layer: [slope of log scale against log width,
  per step]}}, 'worst': {param: {layer: the slope largest in size after the first update}}}."""
  import jax
  import jax.numpy as jnp

  from ddjax import config as cfglib
  from ddjax.data.datasets import mnist1d
  from ddjax.members import stack_hp
  from ddjax.nn.models import make_model
  from ddjax.nn.registry import taps
  from ddjax.train import StepSpec, init_member, train_step

  widths = sorted(set(widths))
  base = base_width or widths[0]
  data = mnist1d(num_samples=max(2 * batch * (steps + 1), 500), train_split=0.8, seed=seed)
  xs = jnp.asarray(data.x_train[:batch * steps].reshape(steps, batch, -1))
  ys = jnp.asarray(data.y_train[:batch * steps].reshape(steps, batch))
  x_probe = jnp.asarray(data.x_test[:batch])
  model = make_model('mlp', widths[-1], (40,), 10, 'im2col')
  members = []
  for param in PARAMS:
    for w in widths:
      m = {k: cfglib.get(cfglib.Config(), k) for k in cfglib.MEMBER_KEYS}
      m.update({'model.width': w, 'model.param': param, 'model.base_width': base, 'optim.lr': lr,
                'optim.momentum': 0.0, 'seed': seed})
      members.append(m)
  hp = {k: jnp.asarray(v) for k, v in stack_hp(members).items()}
  spec = StepSpec(model, optimizer, batch, 10, param=True)
  layers = [*model.TAPS, 'logits']

  def values(state, h):  # every tap point's activations and the logits on the probe batch
    variables = {'params': state['params']}
    found = taps(model, variables, x_probe, h['width'])
    return [found[n] for n in model.TAPS] + [model.apply(variables, x_probe, h['width'])]

  def scales(now, then, h):  # mean |coordinate| of now - then over the probe batch and the member's own units
    units = [h['width']] * len(model.TAPS) + [10]
    return jnp.stack([jnp.abs(a - b).sum() / (x_probe.shape[0] * n) for a, b, n in zip(now, then, units)])

  state = jax.jit(jax.vmap(lambda h: init_member(spec, h, xs[0, 0])))(hp)
  at_init = jax.jit(jax.vmap(values))(state, hp)
  zeros = jax.tree.map(jnp.zeros_like, at_init)
  measure = jax.jit(jax.vmap(lambda s, h, base: scales(values(s, h), base, h)))
  step = jax.jit(jax.vmap(lambda s, h, x, y: train_step(spec, s, h, x, y), in_axes=(0, 0, None, None)))
  seen = [np.asarray(measure(state, hp, zeros))]  # step 0: the activations at init themselves
  for t in range(steps):
    state, _ = step(state, hp, xs[t], ys[t])
    seen.append(np.asarray(measure(state, hp, at_init)))  # then: how far they moved from init
  seen = np.stack(seen)  # (steps + 1, members, layers)
  out = {'widths': widths, 'base_width': base, 'optimizer': optimizer, 'lr': lr, 'steps': steps, 'layers': layers,
         'scales': {}, 'slopes': {}, 'worst': {}}
  for i, param in enumerate(PARAMS):
    block = seen[:, i * len(widths):(i + 1) * len(widths)].transpose(0, 2, 1)  # (steps + 1, layers, widths)
    out['scales'][param] = block.tolist()
    per_step = {layer: [float(np.polyfit(np.log(widths), np.log(block[t, j]), 1)[0]) for t in range(steps + 1)]
                for j, layer in enumerate(layers)}
    out['slopes'][param] = per_step
    out['worst'][param] = {layer: max(v[1:], key=abs) for layer, v in per_step.items()}
  return out


def figure(res: dict, path: Path) -> Path:
  from plots.common import plt, save
  layers, widths = res['layers'], res['widths']
  fig, axes = plt.subplots(len(layers), len(PARAMS), figsize=(3.2 * len(PARAMS), 2.4 * len(layers)), sharex=True,
                           squeeze=False)
  cmap = plt.get_cmap('viridis')
  for c, param in enumerate(PARAMS):
    block = np.asarray(res['scales'][param])
    for r, layer in enumerate(layers):
      ax = axes[r][c]
      for t in range(block.shape[0]):
        ax.plot(widths, block[t, r], 'o-', ms=3, lw=1, color=cmap(t / max(1, block.shape[0] - 1)),
                label=f'step {t}' if r == 0 and c == 0 else None)
      ax.set(xscale='log', yscale='log')
      ax.set_title(f'{param}: {layer} (worst slope {res["worst"][param][layer]:+.2f})', fontsize=8)
      if c == 0:
        ax.set_ylabel('mean |x_t - x_0| (step 0: |x_0|)', fontsize=7)
      if r == len(layers) - 1:
        ax.set_xlabel('width')
  axes[0][0].legend(fontsize=6)
  fig.suptitle(f"coordinate check: MLP, {res['optimizer']} lr {res['lr']:g}, base width {res['base_width']}; "
               'worst slope: of log scale against log width, the largest in size after step 0', fontsize=8)
  return save(fig, path)


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(prog='python -m experiments.coord_check', description=__doc__.split('\n\n')[0])
  parser.add_argument('--widths', default='64,128,256,512,1024,2048',
                      help='comma-separated widths (default %(default)s)')
  parser.add_argument('--steps', type=int, default=5, help='optimizer steps (default %(default)s)')
  parser.add_argument('--optimizer', choices=('adam', 'sgd'), default='adam')
  parser.add_argument('--lr', type=float, default=1e-2, help='learning rate (default %(default)s)')
  parser.add_argument('--base-width', type=int, help='model.base_width (default: the smallest width)')
  parser.add_argument('--out', type=Path, default=Path('results/coord_check'))
  args = parser.parse_args(argv)
  try:
    widths = [int(w) for w in args.widths.split(',')]
  except ValueError:
    parser.exit(2, f'error: bad value {args.widths!r} for --widths: expected widths like 64,128,256\n')
  if len(set(widths)) < 2 or min(widths) < 1:
    parser.exit(2, f'error: bad value {args.widths!r} for --widths: at least two different widths >= 1\n')
  if args.steps < 1:
    parser.exit(2, f'error: bad value {args.steps} for --steps: at least 1\n')
  res = coord_check(widths, args.steps, args.optimizer, args.lr, args.base_width)
  args.out.mkdir(parents=True, exist_ok=True)
  (args.out / 'coord_check.json').write_text(json.dumps(res, indent=1) + '\n')
  print(f'figure: {figure(res, args.out / "coord_check.png")}')
  for param in PARAMS:
    print(f'{param}: worst slope of log scale against log width after step 0: ' +
          ', '.join(f'{k} {v:+.2f}' for k, v in res['worst'][param].items()))
  return res


if __name__ == '__main__':
  main()
