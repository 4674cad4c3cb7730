"""The layering of docs/architecture.md: every ddjax module imports only modules of its own layer or below
(function-level imports included), and the import graph has no cycles."""

import ast
from pathlib import Path

ROOT = Path(__file__).parent.parent / 'ddjax'
LAYERS = [  # bottom first; a package stands for all its modules
    {'ddjax', 'ddjax.parallel', 'ddjax.plugins', 'ddjax.analysis', 'ddjax.atomic', 'ddjax.progress'},
    {'ddjax.nn', 'ddjax.data', 'ddjax.optim', 'ddjax.metrics', 'ddjax.probes', 'ddjax.callbacks', 'ddjax.timeline'},
    {'ddjax.config'},
    {'ddjax.members', 'ddjax.train', 'ddjax.best', 'ddjax.memory'},
    {'ddjax.buckets', 'ddjax.checkpoint', 'ddjax.store', 'ddjax.results', 'ddjax.parts', 'ddjax.columns',
     'ddjax.runs', 'ddjax.plotting'},
    {'ddjax.loop'},
    {'ddjax.run', 'ddjax.workers', 'ddjax.wandb_log'},
    {'ddjax.cli', 'ddjax.command', 'ddjax.analysis.validate', 'ddjax.analysis.__main__'},  # (they read stores)
]


def module_name(path: Path) -> str:
  parts = path.relative_to(ROOT.parent).with_suffix('').parts
  return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def layer(name: str) -> int:
  for depth in range(name.count('.') + 1, 0, -1):
    prefix = '.'.join(name.split('.')[:depth])
    for i, members in enumerate(LAYERS):
      if prefix in members:
        return i
  raise AssertionError(f'{name} is in no layer of docs/architecture.md')


def imports(path: Path) -> set[str]:
  """The ddjax modules `path` imports anywhere in it (`from ddjax import x` names the module ddjax.x if there is
  one)."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      found |= {a.name for a in node.names if a.name.startswith('ddjax')}
    elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith('ddjax'):
      for a in node.names:
        sub = f'{node.module}.{a.name}'
        is_module = (ROOT.parent / sub.replace('.', '/')).with_suffix('.py').exists() or \
            (ROOT.parent / sub.replace('.', '/')).is_dir()
        found.add(sub if is_module else node.module)
  return found


def graph() -> dict[str, set[str]]:
  return {module_name(p): imports(p) for p in ROOT.rglob('*.py')}


def test_no_module_imports_a_higher_layer():
  upward = [f'{m} (layer {layer(m)}) imports {d} (layer {layer(d)})' for m, deps in graph().items() for d in deps
            if layer(d) > layer(m)]
  assert not upward, upward


def test_no_import_cycles():
  g = graph()
  # a package's __init__ re-exports its modules: an import of the package reaches them, not the other way round
  done, stack = set(), []

  def visit(m):
    if m in stack:
      raise AssertionError(' -> '.join(stack[stack.index(m):] + [m]))
    if m in done or m not in g:
      return
    stack.append(m)
    for d in sorted(g[m]):
      if not (m.startswith(d + '.') and d in g):  # a module importing its own package's __init__ (its parent)
        visit(d)
    stack.pop()
    done.add(m)

  for m in sorted(g):
    visit(m)


def test_modules_are_short():
  long = {module_name(p): n for p in ROOT.rglob('*.py') if (n := len(p.read_text().splitlines())) > 400}
  assert not long, long
