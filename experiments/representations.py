"""Representations on MNIST-1D with label noise: double descent, neural collapse (NC1-NC4, generalised to a feature
dimension d) and linear CKA across layers, widths, seeds and training time, every experiment as vectorised runs.

  python -m experiments.representations                   # preset cpu: the four experiments shrunk, 2-core CPU
  python -m experiments.representations --preset study   # the protocol as published (a GPU job)
  python -m experiments.representations --parts projector seed=0,1

Methods (docs/representations.md): MNIST-1D (4,000 train / 1,000 test, generated offline), 20% of training labels
replaced once by a random incorrect label, batch 128, cross-entropy; SGD (lr 0.01, momentum 0.9) and Adam (lr 1e-3),
no weight decay, constant learning rate (the study states no learning rates: these are ours). Models resnet1d_small
and cnn1d_bn (BatchNorm; tap points layer0..layer3). Three parts, each its own store under --out:

  modelwise  both models x widths x both optimizers x seeds (Exp 1: final test error and NC1-NC4 of the features;
             Exp 4: layer-pair CKA between widths 8 and the largest (4A), each layer's drift from epoch 1 (4B),
             CKA between seeds per layer (4C), all recorded during the run on a fixed 500-example training subset)
  epochwise  resnet1d_small at a critical and a large width for longer (Exp 2: test error and NC1 against epoch)
  projector  resnet1d_small at its largest width with a linear projector to d dimensions, d a member key (Exp 3)

Each part's widths, seeds, optimizers' learning rates and projector dimensions are members of one vectorised job;
a model or an optimizer is a separate job (different programs). Key overrides apply to every part. Writes
summary.png and one figure per experiment (`python -m plots.representations DIR` draws them again).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

from ddjax.cli import Preset, command, main as cli_main
from ddjax.config import Config, DataConfig, ModelConfig, OptimConfig, TrainConfig

LAYERS = 'layer0/layer1/layer2/layer3'
OPTIMIZERS = {'optim.name': ['sgd', 'adam'], 'optim.lr': [0.01, 1e-3]}  # zipped: one job each
OPTIM_ZIP = (('optim.name', 'optim.lr'),)
PARTS = ('modelwise', 'epochwise', 'projector')


def probes(cka_epochs: str, pair: str, batch: int = 500) -> dict:
  """The probe options: CKA (4A across the widths `pair`, 4C across seeds) and drift from epoch 1 (4B), each layer,
  at `cka_epochs` (at:E/E/...) on `batch` evenly spaced training examples; collapse at every evaluation."""
  common = {'layer': LAYERS, 'batch': batch, 'every': cka_epochs}
  return {'cka': {**common, 'pairs': 'seeds/widths', 'widths': pair}, 'drift': {**common, 'epoch': 1}}


def study(widths, seeds, epochs: int, long_epochs: int, critical: int, large: int, proj_width: int, dims,
          cka_epochs: str, eval_points: int, seed_width: int | None = None, num_samples: int = 5000,
          batch: int = 128, cka_batch: int = 500, about: str = '') -> dict[str, Preset]:
  """The three parts of a preset. Every width trains with every seed, or with `seed_width` only that width does
  (the others with the first seed: widths and seeds zipped), enough for 4C at a fraction of the cost."""
  base = Config(seed=0, data=DataConfig(name='mnist1d', num_samples=num_samples, train_split=0.8, noise=0.2),
                model=ModelConfig(name='resnet1d_small'), optim=OptimConfig(name='sgd', lr=0.01, momentum=0.9),
                train=TrainConfig(epochs=epochs, batch_size=batch, eval_points=eval_points),
                probes='collapse', probe={})
  pair = f'{SMALL if SMALL in widths else min(widths)}/{large}'
  modelwise = replace(base, probes='collapse,cka,drift', probe=probes(cka_epochs, pair, cka_batch))
  if seed_width is None:
    members, zips = {'model.width': list(widths), 'seed': list(seeds)}, OPTIM_ZIP
  else:
    extra = [s for s in seeds if s != seeds[0]]
    members = {'model.width': list(widths) + [seed_width] * len(extra), 'seed': [seeds[0]] * len(widths) + extra}
    zips = OPTIM_ZIP + (('model.width', 'seed'),)
  return {
      'modelwise': Preset(modelwise, {'model.name': ['resnet1d_small', 'cnn1d_bn'], **members, **OPTIMIZERS},
                          about, zips),
      'epochwise': Preset(replace(base, train=replace(base.train, epochs=long_epochs)),
                          {'model.width': [critical, large], **OPTIMIZERS}, about, OPTIM_ZIP),
      'projector': Preset(replace(base, model=replace(base.model, width=proj_width)),
                          {'model.proj': list(dims), **OPTIMIZERS}, about, OPTIM_ZIP),
  }


SMALL = 8  # 4A: the small width compared with the large one (the preset's smallest where 8 is not swept)
DIMS = [2, 3, 5, 8, 9, 10, 12, 16]
SIZES = {  # each preset's study() arguments and what it is
    'study': (dict(widths=[2, 4, 6, 8, 10, 12, 16, 24, 32, 48, 64], seeds=[0, 1, 2], epochs=3000, long_epochs=15_000,
                   critical=12, large=64, proj_width=64, dims=DIMS, cka_epochs='at:1/50/200/500/1000/2000/3000',
                   eval_points=30),
              'the protocol as published: widths 2..64 x 3 seeds, 3,000 epochs, 15,000 for Exp 2 (a GPU job)'),
    'cpu': (dict(widths=[2, 4, 6, 8, 12, 16, 24, 32], seeds=[0, 1, 2], epochs=200, long_epochs=400, critical=12,
                 large=32, proj_width=16, dims=DIMS, cka_epochs='at:1/3/13/33/67/133/200', eval_points=15,
                 seed_width=16),
            'the four experiments shrunk to a 2-core CPU: widths 2..32, three seeds at width 16, 200 epochs (400 for '
            'Exp 2), the projector at width 16 (2-core CPU: about 13 minutes)'),
    'smoke': (dict(widths=[2, 4], seeds=[0, 1], epochs=3, long_epochs=4, critical=2, large=4, proj_width=4,
                   dims=[2, 3], cka_epochs='at:1/3', eval_points=2, num_samples=250, batch=50, cka_batch=40),
              'the cpu preset in miniature (seconds once compiled)'),
}


def presets(product: bool = False) -> dict[str, dict[str, Preset]]:
  """Every preset's parts; `product`: widths x seeds crosswise where a preset zips them (the user sweeps either)."""
  return {name: study(**dict(kw, **({'seed_width': None} if product else {})), about=about)
          for name, (kw, about) in SIZES.items()}


PRESETS = presets()


def after(out: Path) -> None:
  from plots.representations import plot_all, summary_lines
  for line in summary_lines(out):
    print(line)
  for path in plot_all(out):
    print(f'figure: {path}')


def _fail(message: str) -> None:
  print(f'error: {message}', file=sys.stderr)
  raise SystemExit(2)


def main(argv: list[str]) -> None:
  parser = argparse.ArgumentParser(prog='python -m experiments.representations', add_help=False, allow_abbrev=False)
  parser.add_argument('--preset', default='cpu')
  parser.add_argument('--out', type=Path)
  parser.add_argument('--parts', default=','.join(PARTS))
  parser.add_argument('-h', '--help', action='store_true')
  args, rest = parser.parse_known_args(argv)
  parts = list(dict.fromkeys(p for p in args.parts.split(',') if p))
  if not parts or any(p not in PARTS for p in parts):
    _fail(f'bad value {args.parts!r} for --parts: allowed {", ".join(PARTS)}, joined by commas')
  if args.preset not in PRESETS:
    _fail(f'unknown preset {args.preset!r}: allowed presets are {", ".join(PRESETS)}')
  swept = {a.split('=', 1)[0] for a in rest if '=' in a and not a.startswith('-')}
  chosen = presets(product=bool(swept & {'model.width', 'seed'}))[args.preset]
  if args.help:
    print(__doc__)
    print(f'Options of this experiment: --preset {"|".join(PRESETS)} (default cpu), --out DIR, --parts '
          f'{",".join(PARTS)} (default: all); the rest as every experiment takes them (below, for the modelwise '
          f'part of the chosen preset).\n')
    cli_main('representations', {args.preset: chosen['modelwise']}, ['--help'])
    return
  out = args.out or Path('runs') / f'representations-{args.preset}-{time.strftime("%Y%m%d-%H%M%S")}'
  plain = [a for a in rest if a != '--resume']
  if '--dry-run' not in rest:  # every part's keys checked before any part trains (and before jax starts: its
    from ddjax import parallel  # devices as cli.main asks for them)
    parallel.use_host_devices()
    parallel.use_gpu_memory()
    parallel.init_distributed()
    said = io.StringIO()
    try:
      with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(said):
        for part in parts:
          cli_main('representations', {args.preset: chosen[part]},
                   plain + ['--preset', args.preset, '--out', str(out / part), '--dry-run'])
    except SystemExit:
      sys.stderr.write(said.getvalue().splitlines(keepends=True)[-1] if said.getvalue() else '')  # its one line
      raise
  again = f'{command("representations")} {shlex.join(plain)}' + (
      '' if args.out else f' --out {shlex.quote(str(out))}')
  for part in parts:
    print(f'== {part} ({out / part})', flush=True)
    resume = ['--resume'] if '--resume' in rest and (out / part / 'run.json').exists() else []
    cli_main('representations', {args.preset: chosen[part]},
             plain + resume + ['--preset', args.preset, '--out', str(out / part)], again=again)
  if '--dry-run' not in rest:
    from ddjax.parallel import writer
    if writer():  # one process of a multi-host run draws
      after(out)


if __name__ == '__main__':
  main(sys.argv[1:])
