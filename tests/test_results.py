"""Parquet part files and results.parquet: atomic writes, round trip with pandas and polars, a run still going."""

import numpy as np
import pandas as pd
import polars as pl
import pytest

from ddjax import results


def fake_run(out, n_members=3, epochs=(1, 2, 5)):
  rng = np.random.default_rng(0)
  members = [{'job': 0, 'member': i, 'model.width': 2 ** i, 'seed': i % 2, 'config': '{}'} for i in range(n_members)]
  results.write_members(out, 0, members)
  curves = {}
  for e in epochs:
    rows = [{'job': 0, 'member': i, 'epoch': e, 'train_error': float(rng.random()), 'test_error': float(rng.random()),
             'diverged': bool(i == 2 and e == epochs[-1]), 'diverged_step': 7 if (i == 2 and e == epochs[-1]) else -1}
            for i in range(n_members)]
    results.write_curves(out, 0, e, rows)
    for r in rows:
      curves.setdefault(r['member'], []).append(r)
  return members, curves


def test_round_trip_pandas_and_polars(tmp_path):
  members, curves = fake_run(tmp_path)
  path = results.compact(tmp_path)
  assert not list(tmp_path.rglob('.*tmp'))  # no temporary files left behind
  for df in (pd.read_parquet(path), pl.read_parquet(path).to_pandas()):
    assert len(df) == len(members)
    for m in members:
      row = df[df['member'] == m['member']].iloc[0]
      assert row['model.width'] == m['model.width'] and row['seed'] == m['seed']
      want = curves[m['member']]
      assert list(row['epoch']) == [r['epoch'] for r in want]
      np.testing.assert_array_equal(np.asarray(row['test_error']), [r['test_error'] for r in want])
      assert bool(row['diverged']) == want[-1]['diverged']
  table = pl.read_parquet(path)
  assert table.schema['test_error'] == pl.List(pl.Float64) and table.schema['model.width'] == pl.Int64


def test_load_assembles_parts_of_a_run_still_going(tmp_path):
  fake_run(tmp_path, epochs=(1, 2))
  running = results.load(tmp_path)  # no results.parquet yet: as after a kill
  assert len(running) == 3 and all(len(e) == 2 for e in running['epoch'])
  results.compact(tmp_path)
  fake_run(tmp_path, epochs=(1, 2, 3))  # newer parts than results.parquet: load sees them
  assert all(len(e) == 3 for e in results.load(tmp_path)['epoch'])


def test_missing_results_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match='no results'):
    results.load(tmp_path)


def test_rows_written_twice_are_kept_once_and_columns_added(tmp_path):
  """A resumed run rewrites the evaluations after its checkpoint into another part file: each (member, epoch) once;
  add_columns writes per-member analysis columns into results.parquet."""
  fake_run(tmp_path, epochs=(1, 2, 5))
  rows = [{'job': 0, 'member': i, 'epoch': e, 'train_error': 0.5, 'test_error': 0.5, 'diverged': False,
           'diverged_step': -1} for e in (2, 5) for i in range(3)]
  results.write_curves(tmp_path, 0, 9, rows)  # newer part, overlapping epochs 2 and 5
  df = results.load(tmp_path)
  assert all(list(e) == [1, 2, 5] for e in df['epoch'])
  assert all(list(v)[1:] == [0.5, 0.5] for v in df['test_error'])  # the newest part wins
  results.compact(tmp_path)
  results.add_columns(tmp_path, pd.DataFrame({'grokking_epoch': [3.0, np.nan, 7.0]}, index=df.index))
  again = pd.read_parquet(tmp_path / 'results.parquet')
  np.testing.assert_array_equal(again['grokking_epoch'], [3.0, np.nan, 7.0])
  assert list(again['epoch'][0]) == [1, 2, 5]
