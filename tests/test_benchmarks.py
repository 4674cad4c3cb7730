"""The GPU benchmark's tiny configuration runs on CPU and reports every figure the issue asks for."""

import json

from benchmarks import double_descent_gpu


def test_gpu_benchmark_tiny_on_cpu(tmp_path):
  # Two planned buckets (widths 1 and 2) timed under the first variant, and the widest bucket with 2 seeds together
  # against twice its 1-seed time. Then --torch-only adds PyTorch's figures to the same JSON, keeping the jax ones
  # (--torch-s 0: none are timed, wherever torch is installed). Last, a zero budget: only the first variant, on
  # every bucket (compiled already: cheap).
  args = ['--tiny', '--max-buckets', '2', '--trials', '2', '--torch-s', '0', '--out', str(tmp_path)]
  res = double_descent_gpu.main(args + ['--variants', 'lax/vmap', '--budget-s', '1000'])
  saved = json.loads((tmp_path / 'double_descent_gpu-cpu-tiny.json').read_text())
  assert saved == json.loads(json.dumps(res)) and saved['complete'] and not saved['failed']
  assert saved['buckets'] == [1, 2] and saved['skipped'] == []
  assert [(r['config'], r['bucket_width'], r['members']) for r in saved['per_bucket']] == [
      ('lax/vmap', 1, 1), ('lax/vmap', 2, 1)]
  assert res['s_per_epoch_all_members'] == sum(r['s_per_epoch'] for r in res['per_bucket']) > 0
  assert res['hours_five_trials'] == 5 * res['hours_one_trial'] > 0
  assert res['useful_tflops'] > 0 and 'peak_memory_gib' in res and res['torch'] is None
  assert res['config'] == 'lax/vmap' and res['s_per_epoch_by_config'] == {'lax/vmap': res['s_per_epoch_all_members']}
  assert [b['bucket_width'] for b in res['best_per_bucket']] == [1, 2]
  assert res['executed_tflops'] == res['useful_tflops'] * res['padded_ratio']
  check = res['trials_check']
  assert check['trials'] == 2 and check['bucket_width'] == 2 and [p['members'] for p in check['pieces']] == [2]
  assert check['projected_s_per_epoch'] == 2 * res['per_bucket'][1]['s_per_epoch'] and check['s_per_epoch'] > 0
  assert check['measured_over_projected'] == check['s_per_epoch'] / check['projected_s_per_epoch']
  after = double_descent_gpu.main(args + ['--torch-only'])
  saved = json.loads((tmp_path / 'double_descent_gpu-cpu-tiny.json').read_text())
  assert saved == json.loads(json.dumps(after)) and saved['trials_check'] == check and 'torch' in saved
  assert saved['s_per_epoch_all_members'] == res['s_per_epoch_all_members']
  assert double_descent_gpu.main(args[:-1] + [str(tmp_path / 'none'), '--torch-only']) is None  # no jax run there
  budget = double_descent_gpu.main(args + ['--budget-s', '0'])
  assert budget['skipped'] == ['lax/vmap widest bucket with 2 trials', 'im2col/vmap']
  assert [r['config'] for r in budget['per_bucket']] == ['lax/vmap', 'lax/vmap']


def test_fastest_configuration_per_bucket_counts_every_piece_of_a_split():
  rows = [
      {'planned': 0, 'config': 'a', 'members': 4, 's_per_epoch': 3.0},
      {'planned': 0, 'config': 'b', 'members': 4, 's_per_epoch': 2.0},
      {'planned': 1, 'config': 'a', 'members': 2, 's_per_epoch': 5.0},  # split in two pieces: 5 + 4
      {'planned': 1, 'config': 'a', 'members': 2, 's_per_epoch': 4.0},
      {'planned': 1, 'config': 'b', 'members': 2, 's_per_epoch': 1.0},  # only half of it timed: not a candidate
      {'planned': 2, 'config': 'b', 'members': 1, 's_per_epoch': 7.0},
  ]
  assert double_descent_gpu.fastest(rows, [4, 4, 1]) == {0: ('b', 2.0), 1: ('a', 9.0), 2: ('b', 7.0)}
  assert 2 not in double_descent_gpu.fastest(rows, [4, 4, 2])  # a bucket no configuration covered
  # one configuration per run: only 'a' timed buckets 0 and 1 whole, and 'a' never timed bucket 2
  assert double_descent_gpu.totals(rows[:5], [4, 4]) == {'a': 12.0}
  assert double_descent_gpu.totals(rows, [4, 4, 1]) == {}


def test_variant_sets_conv_strategy_chunk_and_dtype():
  from ddjax import config as cfglib
  from ddjax.members import expand
  from experiments.double_descent import PRESETS
  job = expand(*cfglib.apply_overrides(PRESETS['smoke'].config, PRESETS['smoke'].sweep, []))[0]
  c = double_descent_gpu.variant_job(job, 'im2col/map:4/bfloat16').config
  assert (c.model.conv, c.train.strategy, c.train.map_batch, c.train.compute_dtype) == ('im2col', 'map', 4, 'bfloat16')
  c = double_descent_gpu.variant_job(job, 'lax/vmap').config
  assert (c.model.conv, c.train.strategy, c.train.map_batch, c.train.compute_dtype) == ('lax', 'vmap', 1, 'float32')
  assert double_descent_gpu.variant_job(job, 'lax/vmap').members == job.members


def test_members_benchmark_runs(tmp_path):
  # make bench: vectorised members against one member after another (a tiny configuration of it)
  from benchmarks import members
  res = members.main(['--quick', '--epochs', '1', '--out', str(tmp_path), 'model.width=2', 'data.num_samples=300'])
  saved = json.loads((tmp_path / 'members-cpu.json').read_text())
  assert saved == json.loads(json.dumps(res)) and saved['widths'] == [2]
  assert res['vectorised_s'] > 0 and res['sequential_s'] > 0
  assert res['speedup'] == res['sequential_s'] / res['vectorised_s']
