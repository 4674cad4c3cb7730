"""The command line every experiment shares:

  python -m experiments.NAME [--preset P] [--out DIR] [--resume] [--dry-run] [key=value ...]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ddjax import config as cfglib
from ddjax.members import expand


@dataclass
class Preset:
  """A named starting point: config, sweep, and what running it should give."""
  config: cfglib.Config
  sweep: dict[str, list] = field(default_factory=dict)
  about: str = ''  # the expected result and run time, shown by --help


@dataclass
class Flag:
  """An experiment's own option, `--name VALUE`: translate(VALUE, the --preset given or None) returns the preset to
  use (or None for the default) and key=value overrides placed before the user's own (which win); it raises
  ConfigError for a bad value."""
  name: str
  help: str
  translate: Callable[[str, str | None], tuple[str | None, list[str]]]


class _Parser(argparse.ArgumentParser):
  def error(self, message):  # one line, exit status 2
    self.exit(2, f'error: {message} (see --help)\n')


def _fail(message: str) -> None:
  print(f'error: {message}', file=sys.stderr)
  raise SystemExit(2)


def main(name: str, presets: dict[str, Preset], argv: list[str] | None = None,
         after: Callable[[Path], None] | None = None, flags: tuple[Flag, ...] = (),
         report: Callable[[Path], Path] | None = None) -> Path | None:
  """Parses argv, validates everything before any work, runs the sweep, then calls `after(out)` (and with
  --report, `report(out)`, which returns the report's path)."""
  default = next(iter(presets))
  keys_help = '\n'.join(f'  --preset {p}: {pr.about}' for p, pr in presets.items())
  parser = _Parser(
      prog=f'python -m experiments.{name}', formatter_class=argparse.RawDescriptionHelpFormatter,
      description=f'Presets:\n{keys_help}\n\nKeys (key=value; sweeps a,b,c  a..b  a..b..s) with the defaults of '
                  f'preset {default}:\n{cfglib.describe(presets[default].config, presets[default].sweep)}')
  parser.add_argument('--preset', help=f'one of: {", ".join(presets)} (default {default})')
  parser.add_argument('--out', type=Path, help='output directory (default runs/NAME-PRESET-TIME)')
  parser.add_argument('--resume', action='store_true', help='continue the run in --out')
  parser.add_argument('--dry-run', action='store_true', help='print the jobs and members, train nothing')
  parser.add_argument('--no-progress', action='store_true', help='no progress bar')
  for flag in flags:
    parser.add_argument(f'--{flag.name}', help=flag.help)
  if report:
    parser.add_argument('--report', action='store_true', help='after training, write report.md (figures, table)')
  parser.add_argument('overrides', nargs='*', metavar='key=value')
  args = parser.parse_args(argv)

  chosen, overrides = args.preset, []
  for flag in flags:
    if (value := getattr(args, flag.name.replace('-', '_'))) is not None:
      try:
        chosen, extra = flag.translate(value, chosen)
      except cfglib.ConfigError as e:
        _fail(f'--{flag.name}: {e}')
      overrides += extra
  args.preset = chosen or default
  args.overrides = overrides + args.overrides
  if args.preset not in presets:
    _fail(f"unknown preset {args.preset!r}: allowed presets are {', '.join(presets)}")
  preset = presets[args.preset]
  try:
    cfg, sweep = cfglib.apply_overrides(preset.config, preset.sweep, args.overrides)
  except cfglib.ConfigError as e:
    _fail(str(e))
  jobs = expand(cfg, sweep)
  from ddjax.data import DataMissing, check_available
  try:
    for job in jobs:
      check_available(job.config.data)
  except DataMissing as e:
    _fail(str(e))
  out = args.out or Path('runs') / f'{name}-{args.preset}-{time.strftime("%Y%m%d-%H%M%S")}'
  if args.dry_run:
    for job in jobs:
      widths = sorted({m['model.width'] for m in job.members})
      print(f'job {job.index}: {job.static or "(no static keys swept)"}: {len(job.members)} members, '
            f'widths {widths}')
    return None
  if out.exists() and not out.is_dir():
    _fail(f'--out {out} exists and is not a directory')
  if (out / 'run.json').exists() and not args.resume:
    _fail(f'--out {out} already holds a run; pass --resume to continue it or choose another --out')
  if args.resume and not (out / 'run.json').exists():
    _fail(f'--resume: no run found in {out}')
  if args.resume:
    _check_same_run(out, cfg, sweep)
    if (out / 'results.parquet').exists():
      print(f'{out} is complete; nothing to resume')
      _after(out, after, report if getattr(args, 'report', False) else None)
      return out / 'results.parquet'
  from ddjax import parallel
  parallel.use_host_devices()  # before jax starts: on a CPU, one device per core
  from ddjax.run import Interrupted, run  # imports jax: only once the input is known to be good
  created = not out.exists()
  try:
    path = run(cfg, sweep, jobs, out, progress=not args.no_progress, resume=args.resume)
  except DataMissing as e:  # found only while loading (a damaged archive, tfds without prepared data)
    if created and not any((out / 'parts').glob('curves-*')):
      shutil.rmtree(out, ignore_errors=True)  # nothing of value was written: leave nothing behind
    _fail(str(e))
  except Interrupted as e:
    print(f'{e}; continue with: python -m experiments.{name} --preset {args.preset} --out {out} --resume '
          + ' '.join(args.overrides), file=sys.stderr)
    raise SystemExit(128 + e.signum) from None
  print(f'results: {path}')
  _after(out, after, report if getattr(args, 'report', False) else None)
  return path


def _after(out: Path, after, report) -> None:
  if after:
    after(out)
  if report:
    print(f'report: {report(out)}')


def _flat(d: dict, prefix: str = '') -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict) and k != 'sweep':
      out.update(_flat(v, f'{prefix}{k}.'))
    else:
      out[prefix + k] = v
  return out


def _check_same_run(out: Path, cfg: cfglib.Config, sweep: dict[str, list]) -> None:
  """--resume continues only the run it finds: same config and sweep, or a one-line error naming the key."""
  try:
    stored = json.loads((out / 'run.json').read_text())
  except (OSError, ValueError) as e:
    _fail(f'--resume: cannot read {out / "run.json"} ({e})')
  before = _flat(stored.get('config', {}))
  before.update({f'sweep of {k}': v for k, v in stored.get('sweep', {}).items()})
  now = _flat(json.loads(json.dumps(cfglib.to_dict(cfg))))
  now.update({f'sweep of {k}': v for k, v in json.loads(json.dumps(sweep)).items()})
  for key in sorted(set(before) | set(now)):
    if before.get(key) != now.get(key):
      _fail(f'--resume: {key} was {before.get(key)!r} in {out}, now {now.get(key)!r}; '
            f'pass the same preset and overrides, or choose another --out')
