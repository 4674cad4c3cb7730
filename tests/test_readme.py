"""Every fenced command of the README runs as written, at a size a test can afford, so the README cannot drift from
the code: `make` targets exist; experiments run with --dry-run; commands on a results directory name a module,
subcommand and options that exist (their --help lists them); the Python snippet runs on a store; the YAML example
loads."""

import re
import runpy
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
BLOCKS = re.findall(r'```(\w*)\n(.*?)```', (ROOT / 'README.md').read_text(), re.S)


def test_readme_blocks_are_all_read():
  """Every fenced block is of a kind the tests below run: shell (bash or bare), Python or YAML."""
  assert {lang for lang, _ in BLOCKS} <= {'bash', '', 'python', 'yaml'}


def commands() -> list[str]:
  """The command lines of the README's shell blocks (continuation lines joined, comments dropped)."""
  out = []
  for lang, body in BLOCKS:
    if lang not in ('bash', ''):
      continue
    for line in body.splitlines():
      line = line.split('  #')[0].strip()
      if not line:
        continue
      if out and (line.startswith('[') or out[-1].endswith('\\')):  # a synopsis wrapped onto the next line
        out[-1] = out[-1].rstrip('\\ ') + ' ' + line
      else:
        out.append(line)
  return out


def run_module(module: str, argv: list[str], monkeypatch) -> int:
  """python -m MODULE argv, in this process: its exit status."""
  monkeypatch.setattr('sys.argv', [module, *argv])
  try:
    runpy.run_module(module, run_name='__main__', alter_sys=True)
  except SystemExit as e:
    return e.code or 0
  return 0


def options(words: list[str]) -> list[str]:
  """The --options a command line uses (synopsis brackets and alternatives taken apart)."""
  return [w for word in words for w in re.split(r'[\[\]|]', word) if w.startswith('-')]


@pytest.mark.parametrize('line', commands())
def test_readme_command_runs_as_written(line, tmp_path, monkeypatch, capsys):
  words = shlex.split(line)
  if words[0] == 'make':
    assert subprocess.run(['make', '-n', words[1]], cwd=ROOT, capture_output=True).returncode == 0, line
    return
  assert words[:2] == ['python', '-m'], f'README command of an unknown form: {line}'
  module, args = words[2].replace('experiments.NAME', 'experiments.double_descent'), words[3:]  # the synopsis
  synopsis = any('[' in a for a in args)
  if module.startswith('experiments.') and not synopsis:  # data.dir=PATH: a dry run plans without the data
    extra = [] if '--dry-run' in args else ['--dry-run']
    assert run_module(module, args + extra + ['--out', str(tmp_path / 'out')], monkeypatch) == 0, line
    assert not (tmp_path / 'out').exists()
    return
  # a command on a results directory: its module (and subcommand) exist and --help lists every option it uses
  sub = [args[0]] if args and not args[0].startswith('-') and args[0].isalpha() and args[0].islower() and \
      module.startswith('ddjax.') else []
  assert run_module(module, sub + ['--help'], monkeypatch) == 0, line
  shown = capsys.readouterr().out
  for option in options(args):
    assert re.search(rf'(?<![\w-]){re.escape(option)}\b', shown), f'{line}: {option} is not in {module} --help'


def test_readme_python_snippet_and_yaml_example(tmp_path):
  """The Python block runs on a store (the compatibility fixture standing in for runs/dd); the YAML example loads
  as a config file."""
  from ddjax import config as cfglib
  store = tmp_path / 'dd'
  shutil.copytree(ROOT / 'tests' / 'fixtures' / 'compat_store', store)
  python = [body for lang, body in BLOCKS if lang == 'python']
  assert python
  for body in python:
    exec(body.replace("'runs/dd'", repr(str(store))), {})
  yaml = [body for lang, body in BLOCKS if lang == 'yaml']
  assert yaml
  for i, body in enumerate(yaml):
    path = tmp_path / f'{i}.yaml'
    path.write_text(body)
    cfg, sweep, zips = cfglib.load_config_file(path, cfglib.Config(), {})
    assert sweep and zips == [['optim.lr', 'optim.wd']]
