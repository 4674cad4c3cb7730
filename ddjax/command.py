"""The `ddjax` command (installed with the package; `.venv/bin/ddjax`, or `ddjax` once .venv is activated):

  ddjax EXPERIMENT [options] [key=value ...]   the same as python -m experiments.EXPERIMENT
  ddjax plot DIR [options]                     the figures of the experiment that wrote DIR (python -m plots.NAME)
  ddjax results merge|export|describe ...      python -m ddjax.results
  ddjax analysis ...                           python -m ddjax.analysis
  ddjax --help                                 the experiments, one line each
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import runpy
import shlex
import shutil
import sys
from pathlib import Path

TOOLS = {'results': 'ddjax.results', 'analysis': 'ddjax.analysis'}


def experiments() -> dict[str, str]:
  """{name: the first line of its docstring} for each module of the experiments package."""
  import experiments as package
  out = {}
  for module in pkgutil.iter_modules(package.__path__):
    text = importlib.util.find_spec(f'experiments.{module.name}').loader.get_source(f'experiments.{module.name}')
    doc = ' '.join(text.split('"""')[1].strip().split('\n\n')[0].split()) if '"""' in text else ''
    out[module.name] = doc if len(doc) <= 100 else doc[:doc.rfind(' ', 0, 97)] + ' ...'  # its first paragraph
  return out


def _fail(message: str) -> None:
  print(f'error: {message}', file=sys.stderr)
  raise SystemExit(2)


def plot_module(out: Path) -> tuple[str, Path]:
  """The plots module of the experiment that wrote `out` (a store, or the representations study's directory of
  stores) and the directory it reads (a part of that study: its directory); a one-line error where that cannot be
  told."""
  from ddjax.store import experiment_of
  if not out.is_dir():
    _fail(f'{out} is not a results directory')
  wrote = experiment_of(out)
  if wrote is None and any(experiment_of(out / part) == 'representations' for part in ('modelwise', 'epochwise',
                                                                                       'projector')):
    wrote = 'representations'
  if wrote is None:
    _fail(f'cannot tell which experiment wrote {out} (a store from before run.json recorded it, or a merged one): '
          f'run {shlex.quote(sys.executable)} -m plots.NAME {out}, NAME one of {", ".join(experiments())}')
  if wrote == 'representations' and (out / 'run.json').exists():  # one part: the study draws its directory
    out = out.parent
  return f'plots.{wrote}', out


def invoked_as() -> str:
  """How a shell runs this command again: `ddjax` where the PATH finds this very program, else its full path (as
  .venv/bin/ddjax is called without activating the environment)."""
  me = os.path.abspath(sys.argv[0])
  found = shutil.which('ddjax')
  if os.path.basename(me) != 'ddjax' or (found and os.path.exists(me) and os.path.samefile(found, me)):
    return 'ddjax'
  return me


def main(argv: list[str] | None = None) -> None:
  argv = list(sys.argv[1:] if argv is None else argv)
  known = experiments()
  if not argv or argv[0] in ('-h', '--help'):
    print(__doc__)
    print('Experiments (ddjax NAME --help: presets and keys):')
    for name, doc in known.items():
      print(f'  {name:<16} {doc}')
    return
  name, rest = argv[0], argv[1:]
  os.environ['DDJAX_COMMAND'] = invoked_as()  # the hints a run prints then read `ddjax NAME ...`
  if name in known:
    module = f'experiments.{name}'
  elif name == 'plot':
    if not rest or rest[0].startswith('-'):
      _fail('ddjax plot DIR: name the results directory')
    module, where = plot_module(Path(rest[0]))
    rest = [str(where), *rest[1:]]
  elif name in TOOLS:
    module = TOOLS[name]
  else:
    _fail(f"unknown command {name!r}: allowed {', '.join([*known, 'plot', *TOOLS])} (ddjax --help)")
  sys.argv = [f'ddjax {name}', *rest]
  runpy.run_module(module, run_name='__main__', alter_sys=True)


if __name__ == '__main__':
  main()
