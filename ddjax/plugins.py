"""`--plugin FILE.py`: a Python file imported before the configuration is read, so the models and datasets it
registers (@register_model, @register_dataset) are known to --help, the grammar and the run.

A run records each plugin's path and SHA-256 in run.json; worker processes and later commands on the store (a
resume, the plots, member_variables) import them again from there, or say in one line which one is missing.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
import warnings
from pathlib import Path

_LOADED: dict[str, str] = {}  # absolute path -> the SHA-256 it had when imported


def add(table: dict, kind: str, name: str, spec, fn):
  """Registers `spec` under `name` in a registry (MODELS or DATASETS) and returns `fn`, the decorated builder or
  loader. A name that another module registered is refused, so a plugin never silently replaces a model or dataset
  (run ids would not tell the two apart); the same module imported again may register its names again."""
  old = table.get(name)
  if old is not None and old.module != fn.__module__:
    raise ValueError(f'{kind} {name!r} is already registered by {old.module}: choose another name')
  table[name] = spec
  return fn


def lookup(table: dict, kind: str, name: str):
  """The spec registered under `name` in a registry (MODELS, DATASETS, PROBES); KeyError naming those there are."""
  if name not in table:
    raise KeyError(f"unknown {kind} {name!r}; registered: {', '.join(table)}")
  return table[name]


class PluginError(Exception):
  """A plugin that cannot be found or imported; its message is one line for the user."""


def digest(path: Path) -> str:
  return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load(path: str | Path) -> dict[str, str]:
  """Imports the plugin file at `path` once per process; returns its record {'path': absolute, 'sha256': ...}."""
  path = Path(path).expanduser().absolute()
  if not path.is_file():
    raise PluginError(f'--plugin {path}: no such file')
  key = str(path)
  if key not in _LOADED:
    sha = digest(path)
    name = f'ddjax_plugin_{path.stem}_{sha[:8]}'
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
      raise PluginError(f'--plugin {path}: not a Python file')
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look their module up by name
    try:
      spec.loader.exec_module(module)
    except Exception as e:  # noqa: BLE001 - any failure in the user's file is reported in one line
      del sys.modules[name]
      raise PluginError(f'--plugin {path}: importing it failed: {type(e).__name__}: {e}') from None
    _LOADED[key] = sha
  return {'path': key, 'sha256': _LOADED[key]}


def load_all(paths) -> list[dict[str, str]]:
  """load() of each path; the records, in order, for run.json."""
  return [load(p) for p in paths]


def from_argv(argv: list[str], option: str = '--plugin') -> list[str]:
  """The values of every `OPTION VALUE` / `OPTION=VALUE` in argv (--plugin, --out), read before the parser that the
  plugins extend."""
  found = []
  for i, arg in enumerate(argv):
    if arg == option and i + 1 < len(argv):
      found.append(argv[i + 1])
    elif arg.startswith(option + '='):
      found.append(arg.split('=', 1)[1])
  return found


def loaded() -> list[dict[str, str]]:
  """The records of every plugin this process imported, for run.json."""
  return [{'path': path, 'sha256': sha} for path, sha in _LOADED.items()]


def recorded(out: Path) -> list[dict[str, str]]:
  """The plugins run.json of the store `out` names ([] if none, or no store)."""
  try:
    return list(json.loads((Path(out) / 'run.json').read_text()).get('plugins', []))
  except (OSError, ValueError):
    return []


def load_recorded(out: Path) -> list[dict[str, str]]:
  """Imports the plugins the store `out` was run with. Raises PluginError naming a missing one; warns if a plugin's
  content changed since (its models may no longer match the checkpoints)."""
  records = recorded(out)
  for rec in records:
    path = Path(rec['path'])
    if rec.get('sha256') in _LOADED.values():  # given again with --plugin, perhaps from another path
      continue
    if not path.is_file():
      raise PluginError(f"{out} was run with --plugin {path}, which is missing: put it back, or pass "
                        '--plugin with its new path')
    if digest(path) != rec.get('sha256'):
      warnings.warn(f'plugin {path} changed since {out} was run with it', stacklevel=2)
    load(path)
  return records
