"""The sweep store: atomic part files, results.parquet, round trip with pandas and polars, a run still going, newest
attempt wins, schema unification, merge and export (with their command line)."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

from ddjax import results


def fake_run(out, n_members=3, epochs=(1, 2, 5), job_id='j0', attempt=1, seed=0, extra=None, complete=True):
  """Part files as a job writes them: members with run ids r0, r1, ... and their curves."""
  rng = np.random.default_rng(seed)
  members = [{'run_id': f'r{i}', 'job_id': job_id, 'attempt': attempt, 'complete': complete, 'job': 0,
              'member': i, 'model.width': 2 ** i, 'seed': i % 2,
              'config': json.dumps({'model': {'width': 2 ** i}, 'seed': i % 2, **(extra or {})})}
             for i in range(n_members)]
  results.write_members(out, job_id, members)
  curves = {}
  for e in epochs:
    rows = [{'run_id': f'r{i}', 'attempt': attempt, 'epoch': e, 'train_error': float(rng.random()),
             'test_error': float(rng.random()), 'diverged': bool(i == 2 and e == epochs[-1]),
             'diverged_step': 7 if (i == 2 and e == epochs[-1]) else -1} for i in range(n_members)]
    results.write_curves(out, job_id, e, rows)
    for r in rows:
      curves.setdefault(r['run_id'], []).append(r)
  return members, curves


def test_round_trip_pandas_and_polars(tmp_path):
  members, curves = fake_run(tmp_path)
  path = results.compact(tmp_path)
  assert not list(tmp_path.rglob('.*tmp'))  # no temporary files left behind
  for df in (pd.read_parquet(path), pl.read_parquet(path).to_pandas(), results.load_sweep(tmp_path, 'polars'
                                                                                           ).to_pandas()):
    assert len(df) == len(members)
    for m in members:
      row = df[df['run_id'] == m['run_id']].iloc[0]
      assert row['model.width'] == m['model.width'] and row['seed'] == m['seed']
      want = curves[m['run_id']]
      assert list(row['epoch']) == [r['epoch'] for r in want]
      np.testing.assert_array_equal(np.asarray(row['test_error']), [r['test_error'] for r in want])
      assert bool(row['diverged']) == want[-1]['diverged']
  table = pl.read_parquet(path)
  assert table.schema['test_error'] == pl.List(pl.Float64) and table.schema['model.width'] == pl.Int64
  assert results.complete_ids(tmp_path) == {'r0', 'r1', 'r2'}


def test_load_assembles_parts_of_a_run_still_going(tmp_path):
  fake_run(tmp_path, epochs=(1, 2), complete=False)
  running = results.load(tmp_path)  # no results.parquet yet: as after a kill
  assert len(running) == 3 and all(len(e) == 2 for e in running['epoch'])
  assert results.complete_ids(tmp_path) == set()
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
  rows = [{'run_id': f'r{i}', 'attempt': 1, 'epoch': e, 'train_error': 0.5, 'test_error': 0.5, 'diverged': False,
           'diverged_step': -1} for e in (2, 5) for i in range(3)]
  results.write_curves(tmp_path, 'j0', 9, rows)  # newer part, overlapping epochs 2 and 5
  df = results.load(tmp_path)
  assert all(list(e) == [1, 2, 5] for e in df['epoch'])
  assert all(list(v)[1:] == [0.5, 0.5] for v in df['test_error'])  # the newest part wins
  results.compact(tmp_path)
  results.add_columns(tmp_path, pd.DataFrame({'grokking_epoch': [3.0, np.nan, 7.0]}, index=df.index))
  again = pd.read_parquet(tmp_path / 'results.parquet')
  np.testing.assert_array_equal(again['grokking_epoch'], [3.0, np.nan, 7.0])
  assert list(again['epoch'][0]) == [1, 2, 5]


def test_a_newer_attempt_replaces_the_older_rows(tmp_path):
  """--rerun: member r1 trained again (attempt 2, in another job's files, stopped after epoch 2): only its new rows
  are kept, not a mix with epoch 5 of the older attempt."""
  fake_run(tmp_path, epochs=(1, 2, 5), seed=0)
  results.write_members(tmp_path, 'j1', [{'run_id': 'r1', 'job_id': 'j1', 'attempt': 2, 'complete': False, 'job': 0,
                                          'member': 1, 'model.width': 2, 'seed': 1, 'config': '{}'}])
  results.write_curves(tmp_path, 'j1', 2, [{'run_id': 'r1', 'attempt': 2, 'epoch': e, 'train_error': 0.25,
                                            'test_error': 0.25, 'diverged': False, 'diverged_step': -1}
                                           for e in (1, 2)])
  df = results.load(tmp_path).set_index('run_id')
  assert len(df) == 3 and list(df.loc['r1', 'epoch']) == [1, 2] and list(df.loc['r1', 'test_error']) == [0.25] * 2
  assert len(df.loc['r0', 'epoch']) == 3 and df.loc['r1', 'attempt'] == 2
  assert results.complete_ids(tmp_path) == {'r0', 'r2'}


def test_parts_with_different_metrics_and_float_widths_unify(tmp_path):
  fake_run(tmp_path, n_members=1, job_id='a')
  results.write_members(tmp_path, 'b', [{'run_id': 'q', 'job_id': 'b', 'attempt': 1, 'complete': True, 'job': 1,
                                         'member': 0, 'config': '{}'}])
  table = pa.table({'run_id': ['q', 'q'], 'attempt': [1, 1], 'epoch': [1, 2],
                    'train_loss': pa.array([0.5, 0.25], pa.float32())})  # float32, and no error columns
  results.write_table(tmp_path / 'parts' / 'curves-b-00000002.parquet', table)
  df = results.load(tmp_path).set_index('run_id')
  assert list(df.loc['q', 'train_loss']) == [0.5, 0.25] and np.isnan(df.loc['q', 'test_error']).all()
  assert all(np.isnan(df.loc['r0', 'train_loss']))
  path = results.compact(tmp_path)
  assert pl.read_parquet(path).schema['train_loss'] == pl.List(pl.Float64)


def test_merge_keeps_each_member_once_and_promotes_differing_fixed_keys(tmp_path):
  a, b = tmp_path / 'a', tmp_path / 'b'
  fake_run(a, seed=1, extra={'data': {'noise': 0.1}})
  results.compact(a)
  # b was written after optim.schedule existed, a before: at its default it is the same, not a differing key
  _, curves_b = fake_run(b, n_members=4, seed=2, extra={'data': {'noise': 0.2}, 'optim': {'schedule': 'constant'}})
  for keep, want_source in (('last', b), ('first', a)):
    out = tmp_path / f'm-{keep}'
    merged = pd.read_parquet(results.merge([a, b], out, keep))
    assert sorted(merged['run_id']) == ['r0', 'r1', 'r2', 'r3']
    assert (merged.set_index('run_id').loc[['r0', 'r1', 'r2'], 'source'] == str(want_source)).all()
    assert merged.set_index('run_id').loc['r3', 'data.noise'] == 0.2  # a fixed key that differs: a column
    assert 'model.width' in merged and 'seed' in merged and 'optim.schedule' not in merged
  r0 = pd.read_parquet(tmp_path / 'm-last' / 'results.parquet').set_index('run_id').loc['r0']
  np.testing.assert_array_equal(r0['test_error'], [r['test_error'] for r in curves_b['r0']])
  with pytest.raises(FileExistsError):
    results.merge([a, b], tmp_path / 'm-last')  # never over earlier results


def test_export_long_form_csv_and_jsonl_from_the_command_line(tmp_path):
  _, curves = fake_run(tmp_path)
  for fmt in ('csv', 'jsonl'):
    proc = subprocess.run([sys.executable, '-m', 'ddjax.results', 'export', str(tmp_path), '--format', fmt],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    path = tmp_path / f'results.{fmt}'
    frame = pd.read_csv(path) if fmt == 'csv' else pd.read_json(path, lines=True)
    assert len(frame) == 9 and {'run_id', 'epoch', 'test_error', 'model.width'} <= set(frame.columns)
    for _, row in frame.iterrows():
      want = next(r for r in curves[row['run_id']] if r['epoch'] == row['epoch'])
      assert row['test_error'] == pytest.approx(want['test_error'])
  bad = subprocess.run([sys.executable, '-m', 'ddjax.results', 'export', str(tmp_path), '--format', 'xml'],
                       capture_output=True, text=True, timeout=60)
  assert bad.returncode == 2 and 'allowed csv, jsonl' in bad.stderr and len(bad.stderr.splitlines()) == 1


def test_export_format_follows_the_file_name_and_merge_says_what_it_kept(tmp_path, capsys):
  fake_run(tmp_path / 'a')
  results.main(['export', str(tmp_path / 'a'), '-o', str(tmp_path / 'x.jsonl')])  # no --format: JSON lines
  assert len(pd.read_json(tmp_path / 'x.jsonl', lines=True)) == 9
  for argv, message in ((['-o', str(tmp_path / 'y.jsonl'), '--format', 'csv'], 'has a .jsonl suffix'),
                        (['-o', str(tmp_path / 'y.json')], 'name the format'),
                        (['-o', str(tmp_path / 'no' / 'dir' / 'z.csv')], 'no directory')):
    with pytest.raises(SystemExit) as e:
      results.main(['export', str(tmp_path / 'a'), *argv])
    assert e.value.code == 2 and message in capsys.readouterr().err
  assert not (tmp_path / 'y.jsonl').exists() and not (tmp_path / 'y.json').exists() and not (tmp_path / 'no').exists()
  fake_run(tmp_path / 'b', n_members=4, seed=2)
  capsys.readouterr()
  results.main(['merge', str(tmp_path / 'a'), str(tmp_path / 'b'), '-o', str(tmp_path / 'm')])
  assert f'4 member(s): 4 from {tmp_path / "b"}' in capsys.readouterr().out


def test_an_interrupted_invocation_is_recognised_whatever_its_execution_keys(tmp_path):
  # An interrupted --rerun continued on another machine (memory, workers, bucketing), with its sweep in another
  # order, is the same invocation; another lr or another --rerun filter is not; a finished one is not continued.
  def record(start=None, sweep=None, rerun=('seed=1',), **keys):
    config = {'optim': {'lr': 0.1}, 'train': {'memory_gb': None, 'max_buckets': 4}, 'data': {'workers': 1}}
    for key, value in keys.items():
      group, name = key.split('__')
      config[group][name] = value
    entry = {'config': config, 'sweep': sweep or {'seed': [0, 1]}, 'zip': [], 'rerun': list(rerun),
             'argv': ['ignored']}
    return entry if start is None else dict(entry, start_ns=start)
  lines = [record(5, train__memory_gb=4.0, data__workers=2), record(6, optim__lr=0.2), record(7, rerun=['seed=0'])]
  (tmp_path / 'sweeps.jsonl').write_text(''.join(json.dumps(e) + '\n' for e in lines) + '{"cut off')
  assert results.unfinished_start(tmp_path, record(sweep={'seed': [1, 0]}, train__max_buckets=2)) == 5
  assert results.unfinished_start(tmp_path, record(rerun=['seed=1..1'])) == 5  # the same filter, written otherwise
  assert results.unfinished_start(tmp_path, record(optim__lr=0.2)) == 6
  assert results.unfinished_start(tmp_path, {k: v for k, v in record().items() if k != 'rerun'}) is None
  (tmp_path / 'sweeps.jsonl').write_text(''.join(json.dumps(e) + '\n' for e in lines + [{'finished_ns': 5}]))
  assert results.unfinished_start(tmp_path, record()) is None


def test_rows_from_before_a_later_key_read_its_default(tmp_path):
  """A store continued after ddjax gained optim.warmup: its older members have no such column; they read 0 (the
  behaviour they had), not NaN, so plots and filters see one value."""
  fake_run(tmp_path, n_members=2, job_id='old')
  results.write_members(tmp_path, 'new', [
      {'run_id': f'n{i}', 'job_id': 'new', 'attempt': 1, 'complete': True, 'job': 1, 'member': i,
       'optim.warmup': w, 'config': '{}'} for i, w in enumerate((0, 10))])
  df = results.load(tmp_path).set_index('run_id')
  assert df['optim.warmup'].to_dict() == {'r0': 0, 'r1': 0, 'n0': 0, 'n1': 10}


def test_the_table_explains_itself(tmp_path, capsys):
  """On the compatibility fixture (an older store: no derived columns stored), load adds the seeds each member used
  (`*_resolved`: the key, or `seed` where it is None), `attempt_time` (the attempt's nanoseconds as UTC time) and
  `final_*` (the last finite value of each base curve); load_sweep(long=True) is a row per member and evaluation;
  `python -m ddjax.results describe` says what every column is, one line each."""
  from pathlib import Path
  store = Path(__file__).parent / 'fixtures' / 'compat_store'
  df = results.load(store)
  for key in ('model.seed', 'train.batch_seed', 'data.noise_seed'):
    want = [s if v is None or pd.isna(v) else v for v, s in zip(df[key], df['seed'])]
    assert df[f'{key}_resolved'].tolist() == want
  assert (df['attempt_time'] == pd.to_datetime(df['attempt'], unit='ns', utc=True)).all()
  assert df['attempt_time'].dt.year.min() >= 2026
  for curve in ('train_loss', 'test_error', 'test_error_noisy'):
    assert df[f'final_{curve}'].tolist() == [float(np.asarray(v)[-1]) for v in df[curve]]
  long = results.load_sweep(store, long=True)
  assert len(long) == sum(len(e) for e in df['epoch']) and long['epoch'].tolist()[:4] == [1, 2, 3, 4]
  results.main(['describe', str(store)])
  lines = capsys.readouterr().out.splitlines()
  assert [ln.split()[0] for ln in lines] == list(df.columns)
  said = {ln.split()[0]: ln for ln in lines}
  assert 'the seed the member used: model.seed, or seed where that is none' in said['model.seed_resolved']
  assert 'curve   error on the clean test labels' in said['test_error']
  assert 'scalar  the last recorded value of the curve test_error' in said['final_test_error']
  assert not [ln for ln in lines if 'not described' in ln]
