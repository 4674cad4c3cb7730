"""A CI-sized golden table: a small double-descent sweep's results, to check that a refactor changes no number.

  .venv/bin/python scripts/golden_table.py write /tmp/golden-before.parquet    # before the change
  .venv/bin/python scripts/golden_table.py compare /tmp/golden-before.parquet  # after it, on the same machine

Keys after the path (key=value) are added to the sweep's, e.g. train.collapse=true to cover a probe.

Every column but attempt, wall time, versions and device must be bitwise equal (compare exits 1 naming the first
column that is not). XLA compiles CPU code per instruction set: compare on the machine that wrote the table.
"""

import json
import os
import sys
import tempfile

import numpy as np

os.environ.setdefault('JAX_PLATFORMS', 'cpu')

ARGV = ['model.name=cnn1d,resnet1d', 'model.width=2,4,8', 'seed=0,1', 'data.num_samples=600', 'data.noise=0.15',
        'train.epochs=5', 'train.eval_points=5', 'train.batch_size=50', '--no-progress']
NOT_NUMBERS = ['attempt', 'wall_time_s', 'versions', 'device', 'time_s']


def table(extra=()):
  import pandas as pd  # noqa: F401
  from ddjax import cli, results
  from experiments.double_descent import PRESETS
  with tempfile.TemporaryDirectory() as out:
    cli.main('double_descent', PRESETS, ARGV + list(extra) + ['--out', out])
    df = results.load(out)
  return df.drop(columns=[c for c in NOT_NUMBERS if c in df.columns]).sort_values('run_id').reset_index(drop=True)


def same(x, y) -> bool:
  """Bitwise equal values (NaN where the other has NaN: a column a member's model lacks)."""
  x, y = np.asarray(x), np.asarray(y)
  return np.array_equal(x, y, equal_nan=x.dtype.kind == 'f' and y.dtype.kind == 'f')


def main() -> None:
  import pandas as pd
  what, path = sys.argv[1:3]
  df = table(sys.argv[3:])
  if what == 'write':
    df.to_parquet(path)
    print(f'{path}: {len(df)} members, {len(df.columns)} columns')
    return
  old = pd.read_parquet(path)
  if set(old.columns) - set(df.columns):
    sys.exit(f'columns lost: {sorted(set(old.columns) - set(df.columns))}')
  if set(df.columns) - set(old.columns):  # a column the change adds: reported, not compared
    print(f'new columns: {sorted(set(df.columns) - set(old.columns))}')
  from ddjax import config as cfglib
  whole = lambda c: cfglib.to_json(cfglib.from_dict(json.loads(c)))  # keys added since: at their defaults
  old['config'], df['config'] = old['config'].map(whole), df['config'].map(whole)
  differ = []
  for col in old.columns:
    a, b = old[col].tolist(), df[col].tolist()
    if not all(same(x, y) for x, y in zip(a, b)):
      gap = max((float(np.max(np.abs(np.asarray(x, float) - np.asarray(y, float)), initial=0)) for x, y in zip(a, b)
                 if np.asarray(x).dtype.kind in 'fiu'), default=float('nan'))
      differ.append(f'{col} (largest difference {gap:.3g})')
  if differ:
    sys.exit(f'columns differ: {", ".join(differ)}')
  print(f'bitwise equal: {len(df)} members, {len(df.columns)} columns')


if __name__ == '__main__':
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  main()
