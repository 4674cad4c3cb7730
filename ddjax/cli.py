"""The command line every experiment shares:

  python -m experiments.NAME [--preset P] [--out DIR] [--resume] [--dry-run] [key=value ...]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ddjax import config as cfglib
from ddjax import plugins
from ddjax.members import expand


@dataclass
class Preset:
  """A named starting point: config, sweep, and what running it should give."""
  config: cfglib.Config
  sweep: dict[str, list] = field(default_factory=dict)
  about: str = ''  # the expected result and run time, shown by --help
  zip: tuple[tuple[str, ...], ...] = ()  # swept keys that vary together, as --zip (e.g. one variant per position)


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


def _warn_idle_probe_options(cfg: cfglib.Config) -> None:
  """One line for options of probes that are not switched on (and do not switch themselves on): they do nothing."""
  from ddjax.probes import PROBES
  idle = [f'probe.{name}.*' for name in cfg.probe
          if name not in cfglib.probe_uses(cfg) and PROBES[name].auto is None and not PROBES[name].always]
  if idle:
    print(f"warning: {', '.join(idle)} set but the probe is not on (add it to probes=...)", file=sys.stderr)


# Keys that only some optimizers read: set for none of the run's, they do nothing (a warning, not an error: a preset
# may set them for the optimizer it sweeps).
OPTIMIZER_KEYS = {'optim.momentum': ('sgd',), 'optim.b1': ('adam', 'adamw'), 'optim.b2': ('adam', 'adamw'),
                  'optim.eps': ('adam', 'adamw')}


def _warn_idle_keys(cfg: cfglib.Config, sweep: dict[str, list], given: set[str]) -> None:
  """One line for each key the user gave (`given`) that none of the run's optimizers or models reads."""
  from ddjax.nn.registry import model_spec
  optimizers = sweep.get('optim.name', [cfg.optim.name])
  models = sweep.get('model.name', [cfg.model.name])
  for key, readers in OPTIMIZER_KEYS.items():
    if key in given and not set(optimizers) & set(readers):
      print(f"warning: {key} does nothing with optim.name={','.join(optimizers)} (read by {' and '.join(readers)} "
            'only)', file=sys.stderr)
  for option in ('depth',):
    key = f'model.{option}'
    if key in given and not any(option in model_spec(m).options for m in models):
      print(f"warning: {key} does nothing with model.name={','.join(models)}", file=sys.stderr)


def _fail(message: str) -> None:
  print(f'error: {message}', file=sys.stderr)
  raise SystemExit(2)


def _wrap(text: str) -> str:
  """--help's text with each line wrapped to the terminal (COLUMNS, else its width, at least 60 columns), a wrapped
  line's rest indented under the start of its description (after the key and its value)."""
  import re
  import textwrap
  width = max(shutil.get_terminal_size((120, 24)).columns, 60)
  out = []
  for line in text.splitlines():
    gap = re.match(r'(\s*\S+(?:\s{2,}|\s)\S*\s{2,})', line)  # '  key  value  help': wrap under help
    if len(line) <= width or not line.strip():
      out.append(line)
    elif gap and len(gap.group(1)) < width // 2:
      out.append(textwrap.fill(line, width, subsequent_indent=' ' * len(gap.group(1)), break_on_hyphens=False))
    elif gap:  # key and value too wide to share the lines: the help below them
      out.append(gap.group(1).rstrip())
      out.append(textwrap.fill(line[len(gap.group(1)):], width, initial_indent=' ' * 6, subsequent_indent=' ' * 6,
                               break_on_hyphens=False))
    else:
      indent = len(line) - len(line.lstrip()) + 4
      out.append(textwrap.fill(line, width, subsequent_indent=' ' * indent, break_on_hyphens=False))
  return '\n'.join(out)


CONFIGS = Path(__file__).parent / 'configs'  # ddjax's own configs (-cn NAME)


def packaged_configs() -> list[str]:
  return sorted(p.stem for p in CONFIGS.glob('*.yaml'))


def config_named(name: str) -> Path:
  """-cn NAME: configs/NAME.yaml in the working directory, else ddjax's own; a ConfigError naming both places."""
  file = name if name.endswith(('.yaml', '.yml')) else f'{name}.yaml'
  for folder in (Path('configs'), CONFIGS):
    if (folder / file).is_file():
      return folder / file
  raise cfglib.ConfigError(f"-cn {name}: no {file} in ./configs/ or among ddjax's configs (allowed: "
                           f"{', '.join(packaged_configs())}, or a file in ./configs/)")


def seed_habits(argv: list[str]) -> list[str]:
  """The deep-linear-network codebase's spellings as ddjax's: --output for --out (so that plugins.from_argv, which
  reads --out before the parser, sees it)."""
  out = []
  for a in argv:
    out.append('--out' if a == '--output' else '--out=' + a[9:] if a.startswith('--output=') else a)
  return out


def command(name: str) -> str:
  """How to run experiment `name` again, as a hint prints it: `ddjax NAME` when the ddjax command ran it, else this
  interpreter (its full path: it has the packages) with -m experiments.NAME."""
  if os.environ.get('DDJAX_COMMAND'):
    return f"{shlex.quote(os.environ['DDJAX_COMMAND'])} {name}"
  return f'{shlex.quote(sys.executable)} -m experiments.{name}'


def main(name: str, presets: dict[str, Preset], argv: list[str] | None = None,
         after: Callable[[Path], None] | None = None, flags: tuple[Flag, ...] = (),
         report: Callable[[Path], Path] | None = None, again: str | None = None) -> Path | None:
  """Parses argv, validates everything before any work, runs the sweep, then calls `after(out)` (and with
  --report, `report(out)`, which returns the report's path). `again`: the command that continues an interrupted run
  (default: this one, with its --out)."""
  argv = seed_habits(list(sys.argv[1:] if argv is None else argv))
  try:  # before the parser: the models and datasets plugins register are keys' choices and --help's lines
    plugins.load_all(plugins.from_argv(argv))
    for out_given in plugins.from_argv(argv, '--out')[-1:]:  # a store run with plugins: import them again
      plugins.load_recorded(Path(out_given))
  except plugins.PluginError as e:
    _fail(str(e))
  default = next(iter(presets))
  keys_help = '\n'.join(f'  --preset {p}: {pr.about}' for p, pr in presets.items())
  parser = _Parser(  # no abbreviations: --plugin and --out are read before the parser (plugins.from_argv)
      prog=command(name) if os.environ.get('DDJAX_COMMAND') else f'python -m experiments.{name}',
      formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False,
      description=_wrap(f'Presets:\n{keys_help}\n\nKeys (key=value; sweeps a,b,c  a..b  a..b..s) with the defaults '
                        f'of preset {default}:\n{cfglib.describe(presets[default].config, presets[default].sweep)}'))
  parser.add_argument('--preset', help=f'one of: {", ".join(presets)} (default {default})')
  parser.add_argument('--out', type=Path, help='output directory (default runs/NAME-PRESET-TIME; --output too)')
  parser.add_argument('--resume', action='store_true',
                      help='continue the run in --out, refusing a different config (a plain re-run into --out '
                           'also continues: it skips complete members and resumes interrupted jobs)')
  parser.add_argument('--dry-run', action='store_true',
                      help='print the jobs x members table and the compiled programs, train nothing')
  parser.add_argument('-c', '--config', type=Path, metavar='PATH',
                      help='YAML file of keys (nested or dotted; lists are sweeps), applied before key=value')
  parser.add_argument('-cn', '--config-name', metavar='NAME',
                      help=f"the config NAME.yaml from ./configs/, else ddjax's own ({', '.join(packaged_configs())}), "
                           'applied before -c and key=value')
  parser.add_argument('--zip', action='append', default=[], metavar='KEY,KEY',
                      help='swept keys that vary together instead of crosswise (repeatable)')
  parser.add_argument('--workers', type=int, default=1, metavar='N',
                      help='run independent jobs in N processes (one per GPU on a GPU machine; cores/N devices each '
                           'on a CPU)')
  parser.add_argument('--wandb', action='store_true',
                      help='also log to Weights & Biases; offline unless WANDB_API_KEY or WANDB_MODE says otherwise; '
                           'needs `pip install wandb`')
  parser.add_argument('--wandb-project', default='ddjax', metavar='NAME', help='W&B project (default ddjax)')
  parser.add_argument('--rerun', action='append', default=[], metavar='key=value',
                      help='train members matching key=value again even if complete; newest rows win (repeatable)')
  parser.add_argument('--no-progress', action='store_true', help='no progress bar')
  parser.add_argument('--plugin', action='append', default=[], metavar='FILE.py',
                      help='import FILE.py first: the models and datasets it registers can be used (repeatable; '
                           'recorded in run.json, imported again by later commands on the store)')
  for flag in flags:
    parser.add_argument(f'--{flag.name}', help=flag.help)
  if report:
    parser.add_argument('--report', action='store_true', help='after training, write report.md (figures, table)')
  parser.add_argument('overrides', nargs='*', metavar='key=value')
  args = parser.parse_intermixed_args(argv)  # key=value before and after options

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
    cfg, sweep, zips = preset.config, preset.sweep, []
    if args.config_name:  # a named config is the whole config, as in the codebase -cn comes from: no preset under it
      if chosen:
        raise cfglib.ConfigError(f'-cn {args.config_name} and --preset {chosen}: give one of them')
      cfg, sweep = cfglib.Config(), {}
    for path in ([config_named(args.config_name)] if args.config_name else []) + ([args.config] if args.config else []):
      cfg, sweep, more = cfglib.load_config_file(path, cfg, sweep)
      zips += more
    cfg, sweep = cfglib.apply_overrides(cfg, sweep, args.overrides)
    # a config file's zipped keys that key=value fixed to one value leave its groups (as a preset's do below)
    zips = [kept for g in zips if len(kept := [k for k in g if len(sweep.get(k, [])) > 1]) >= 2]
    _warn_idle_probe_options(cfg)
    _warn_idle_keys(cfg, sweep, {a.split('=', 1)[0].strip() for a in args.overrides if '=' in a})
    zips = zips + [cfglib.parse_zip(z) for z in args.zip]
    for group in () if args.config_name else preset.zip:  # keys fixed to one value or zipped otherwise leave them
      if len(kept := [k for k in group if k in sweep and not any(k in g for g in zips)]) >= 2:
        zips.append(kept)
    jobs = expand(cfg, sweep, zips)
    if args.rerun:
      cfglib.rerun_filter(args.rerun)  # checked now: a bad --rerun is an error before any work
  except cfglib.ConfigError as e:
    _fail(str(e))
  from ddjax.data import DataMissing, check_available
  missing = None
  try:
    for job in jobs:
      check_available(job.config.data)
  except DataMissing as e:
    if not args.dry_run:
      _fail(str(e))
    missing = str(e)  # a dry run plans from shapes alone, and says what a run would stop on
  out = args.out or Path('runs') / f'{name}-{args.preset}-{time.strftime("%Y%m%d-%H%M%S")}'
  if args.workers < 1:
    _fail(f'bad --workers {args.workers}: must be >= 1')
  if args.wandb:
    from ddjax.wandb_log import available
    if not available():
      _fail('--wandb: wandb is not installed (pip install wandb), or run without --wandb')
    if args.workers > 1:
      _fail('--wandb logs from one process: run without --workers, or log later from results.parquet')
  if out.exists() and not out.is_dir():
    _fail(f'--out {out} exists and is not a directory')
  if args.resume and not (out / 'run.json').exists():
    _fail(f'--resume: no run found in {out}')
  if args.resume:
    _check_same_run(out, cfg, sweep, zips)
  for line in sweep_lines(sweep, zips):
    print(line)
  if args.dry_run:
    _dry_run(jobs, out)
    if missing:
      print(f'note: a run would stop here (exit status 2): {missing}')
    return None
  from ddjax import parallel
  parallel.use_host_devices()  # before jax starts: on a CPU, one device per core
  parallel.use_gpu_memory()  # on a GPU, 90% of its memory rather than XLA's 75%
  parallel.use_compile_cache()  # a resumed or repeated run loads its compiled steps
  if args.workers > 1 and 'XLA_PYTHON_CLIENT_PREALLOCATE' not in os.environ:
    os.environ['XLA_PYTHON_CLIENT_PREALLOCATE'] = 'false'  # the parent only counts GPUs; workers get the memory
    os.environ['DDJAX_PARENT_NO_PREALLOCATE'] = '1'
  if parallel.init_distributed() > 1 and args.workers > 1:
    _fail('--workers cannot be combined with a multi-host run (DDJAX_COORDINATOR / DDJAX_DISTRIBUTED)')
  from ddjax.run import Interrupted, duplicate_members, run, run_record  # imports jax: input known to be good
  if (duplicate := duplicate_members(jobs)) is not None:
    _fail(duplicate)
  created = not out.exists()
  record = dict(run_record(cfg, sweep, jobs), zip=zips, argv=argv, experiment=name)
  try:
    path = run(cfg, sweep, jobs, out, progress=not args.no_progress, rerun=args.rerun or None, record=record,
               workers=args.workers,
               wandb_project=args.wandb_project if args.wandb else None)
  except DataMissing as e:  # found only while loading (a damaged archive, tfds without prepared data)
    if created and not any((out / 'parts').glob('curves-*')):
      shutil.rmtree(out, ignore_errors=True)  # nothing of value was written: leave nothing behind
    _fail(str(e))
  except Interrupted as e:
    given = argv + ([] if args.out else ['--out', str(out)])
    again = again or f"{command(name)} {' '.join(shlex.quote(a) for a in given if a != '--resume')}"
    print(f'{e}; continue with the same command: {again}', file=sys.stderr)
    raise SystemExit(128 + e.signum) from None
  import jax
  if jax.process_index() != 0:  # a multi-host run: process 0 reports
    return path
  print(f'results: {path}')
  _after(out, after, report if getattr(args, 'report', False) else None)
  return path


def sweep_lines(sweep: dict[str, list], zips: list[list[str]]) -> list[str]:
  """A line per swept key: how many values, the first and the last (ddjax's a..b includes b: an off-by-one against
  a codebase whose ranges exclude it shows here), and the keys zipped with it."""
  lines = []
  for key, values in sweep.items():
    if len(values) > 1:
      zipped = next((g for g in zips if key in g), None)
      with_ = f" (zipped with {', '.join(k for k in zipped if k != key)})" if zipped else ''
      lines.append(f'sweep {key}: {len(values)} values, first {values[0]}, last {values[-1]}{with_}')
  return lines


def _dry_run(jobs, out: Path) -> None:
  """The jobs x members table: static keys, members, widths, the width buckets (one compiled train step each), and
  each job's estimated device memory (memory.py: every member's state, plus the largest bucket's step)."""
  from ddjax.buckets import conv_form, job_plan, member_sizes  # imports jax, which computes nothing here
  from ddjax.data import dataset_shape, dataset_spec
  from ddjax.members import job_padded_ratio, padded_ratio, subset_steps
  total_members, total_buckets, notes = 0, 0, []
  print(f'{"job":>4}  {"members":>7}  {"buckets":>7}  {"padded widths":<24} {"padded/useful":>13} {"est. GiB":>8}  '
        'static keys')
  for job in jobs:
    cfg = job.config
    shape, classes = dataset_shape(cfg.data)
    n_train = cfglib.train_examples(cfg.data)
    plan, cost = job_plan(job, shape, classes, n_train)
    ratio = job_padded_ratio(job, plan, cost, n_train, cfg.train.batch_size) if n_train else padded_ratio(plan, cost)
    if n_train and any(m['data.subset'] for m in job.members):  # data.subset: steps per member
      own, steps = subset_steps(job.members, n_train, cfg.train.batch_size, cfg.train.budget)
      notes.append(f'job {job.index}: data.subset {min(m["data.subset"] or n_train for m in job.members)}..'
                   f'{max(m["data.subset"] or n_train for m in job.members)} of {n_train} examples, '
                   f'train.budget={cfg.train.budget}: ' + (
                       f'every member takes the {steps} steps of a pass over all' if cfg.train.budget == 'steps' else
                       f'members take {min(own)}..{max(own)} steps an epoch, in buckets by step count (steps a '
                       'bucket scans past a member\'s own are in padded/useful)'))
    batch = cfg.train.batch_size or n_train or 50_000
    sizes = member_sizes(cfg, plan, shape, classes, batch, dataset_spec(cfg.data.name).task)
    gib = (sum(len(b) * s.resident for b, s in zip(plan, sizes))
           + max(len(b) * s.transient for b, s in zip(plan, sizes)))
    total_members += len(job.members)
    total_buckets += len(plan)
    padded = ','.join(str(max(b)) for b in plan)
    print(f'{job.index:>4}  {len(job.members):>7}  {len(plan):>7}  {padded:<24} {ratio:>13.3f} {gib / 2**30:>8.2f}  '
          f'{job.static or "-"}')
  for note in notes:
    print(note)
  print(f'{len(jobs)} job(s), {total_members} member(s), {total_buckets} compiled train step(s) (one per bucket, '
        f'each with its init and evaluation programs; buckets over the memory budget split further)')
  print(f'est. GiB: device memory of all members\' state plus the largest bucket\'s training step, with '
        f'conv={conv_form(jobs[0].config)} (0.9-1.8x what XLA reported in the tests), data excluded; a run '
        f'splits buckets to fit 90% of what XLA may take (90% of a GPU\'s memory unless '
        f'XLA_PYTHON_CLIENT_MEM_FRACTION says otherwise), or train.memory_gb')
  if jobs[0].config.model.conv == 'auto' and conv_form(jobs[0].config) == 'im2col':
    print('note: conv=auto is im2col on this CPU (more memory) and lax on a GPU: for a GPU run\'s figures, '
          'add model.conv=lax to this --dry-run')
  if (out / 'parts').is_dir():
    from ddjax.results import complete_ids
    print(f'{out} already holds {len(complete_ids(out))} complete member(s); a run skips them')


def _after(out: Path, after, report) -> None:
  if after:
    after(out)
  if report:
    print(f'report: {report(out)}')


def _check_same_run(out: Path, cfg: cfglib.Config, sweep: dict[str, list], zips: list[list[str]]) -> None:
  """--resume continues only the run it finds: same config and sweep, or a one-line error naming the key. A sweep's
  values may come in another order (members are found by run id), but zipped keys must keep their pairs."""
  try:
    stored = json.loads((out / 'run.json').read_text())
  except (OSError, ValueError) as e:
    _fail(f'--resume: cannot read {out / "run.json"} ({e})')
  before = cfglib.what_trains(stored.get('config', {}), stored.get('sweep', {}), stored.get('zip', []),
                              stored.get('contents'))
  now = cfglib.what_trains(cfglib.to_dict(cfg), sweep, zips)
  for key in sorted(set(before) | set(now)):
    if before.get(key) != now.get(key):
      _fail(f'--resume: {key} was {before.get(key)!r} in {out}, now {now.get(key)!r}; '
            f'pass the same preset and overrides, or choose another --out')
