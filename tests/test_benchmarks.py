"""The GPU benchmark's tiny configuration runs on CPU and reports every figure the issue asks for."""

import json

from benchmarks import double_descent_gpu


def test_gpu_benchmark_tiny_on_cpu(tmp_path):
  res = double_descent_gpu.main(['--tiny', '--out', str(tmp_path)])
  saved = json.loads((tmp_path / 'double_descent_gpu-cpu-tiny.json').read_text())
  assert saved['buckets'] == [2] and {r['config'] for r in saved['per_bucket']} == {'lax/vmap', 'im2col/vmap'}
  assert res['s_per_epoch_all_members'] > 0 and res['hours_five_trials'] == 5 * res['hours_one_trial']
  assert res['useful_tflops'] > 0 and 'peak_memory_gib' in res and 'torch' in res
  best = res['best_per_bucket'][0]
  assert best['s_per_epoch'] == min(r['s_per_epoch'] for r in res['per_bucket'])
