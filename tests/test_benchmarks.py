"""The GPU benchmark's tiny configuration runs on CPU and reports every figure the issue asks for."""

import json

import numpy as np

from benchmarks import double_descent_gpu


def test_gpu_benchmark_tiny_on_cpu(tmp_path, monkeypatch):
  # Two planned buckets (widths 1 and 2) timed under the first variant, and the widest bucket with 2 seeds together
  # against twice its 1-seed time. PyTorch's JSON, as a --torch-only run writes it, is there before: the jax run
  # reports the speedup over it. Then --torch-only (PyTorch replaced by fixed figures: torch need not be installed)
  # puts its new figures into the jax JSON, keeping the jax ones. Last, a zero budget: only the first variant, on
  # every bucket (compiled already: cheap); no later variant's bucket and no trials check starts.
  args = ['--tiny', '--max-buckets', '2', '--trials', '2', '--torch-s', '0', '--out', str(tmp_path)]
  torch_json = {'device': 'cpu', 's_per_step': {'1': 0.5, '2': 0.75}, 'complete': True}
  (tmp_path / 'double_descent_gpu-cpu-torch-tiny.json').write_text(json.dumps(torch_json))
  res = double_descent_gpu.main(args + ['--variants', 'lax/vmap', '--budget-s', '1000'])
  saved = json.loads((tmp_path / 'double_descent_gpu-cpu-tiny.json').read_text())
  assert saved == json.loads(json.dumps(res)) and saved['complete'] and not saved['failed']
  assert saved['buckets'] == [1, 2] and saved['skipped'] == []
  assert [(r['config'], r['bucket_width'], r['members']) for r in saved['per_bucket']] == [
      ('lax/vmap', 1, 1), ('lax/vmap', 2, 1)]
  assert all(r['warmup_s'] > 0 and r['build_s'] > 0 for r in saved['per_bucket'])
  assert res['s_per_epoch_all_members'] == sum(r['s_per_epoch'] for r in res['per_bucket']) > 0
  assert res['hours_five_trials'] == 5 * res['hours_one_trial'] > 0
  assert res['useful_tflops'] > 0 and 'peak_memory_gib' in res
  assert res['config'] == 'lax/vmap' and res['s_per_epoch_by_config'] == {'lax/vmap': res['s_per_epoch_all_members']}
  assert [b['bucket_width'] for b in res['best_per_bucket']] == [1, 2]
  assert res['executed_tflops'] == res['useful_tflops'] * res['padded_ratio']
  torch_epoch = (0.5 + 0.75) * (50_000 // 128)  # widths 1 and 2: a step of each per minibatch of an epoch
  assert np.isclose(res['torch']['s_per_epoch_all_widths'], torch_epoch)
  assert np.isclose(res['torch']['speedup'], torch_epoch / res['s_per_epoch_all_members'])
  check = res['trials_check']
  assert check['trials'] == 2 and check['bucket_width'] == 2 and [p['members'] for p in check['pieces']] == [2]
  assert check['projected_s_per_epoch'] == 2 * res['per_bucket'][1]['s_per_epoch'] and check['s_per_epoch'] > 0
  assert check['measured_over_projected'] == check['s_per_epoch'] / check['projected_s_per_epoch']

  def measured(args, batch, steps):  # what torch_measure returns and writes
    return dict(torch_json, platform='cpu', s_per_step={'1': 0.25, '2': 0.375})  # twice as fast
  monkeypatch.setattr(double_descent_gpu, 'torch_measure', measured)
  double_descent_gpu.main(args + ['--torch-only'])
  saved = json.loads((tmp_path / 'double_descent_gpu-cpu-tiny.json').read_text())
  assert saved['trials_check'] == check and saved['s_per_epoch_all_members'] == res['s_per_epoch_all_members']
  assert np.isclose(saved['torch']['s_per_epoch_all_widths'], torch_epoch / 2)
  assert np.isclose(saved['torch']['speedup'], res['torch']['speedup'] / 2)
  monkeypatch.undo()
  budget = double_descent_gpu.main(args + ['--budget-s', '0'])
  assert budget['skipped'] == ['im2col/vmap width 2', 'im2col/vmap width 1', 'lax/vmap widest bucket with 2 trials']
  assert [r['config'] for r in budget['per_bucket']] == ['lax/vmap', 'lax/vmap'] and budget['complete']


def test_pytorch_epoch_is_interpolated_in_macs_between_measured_widths():
  macs = lambda k: 10.0 * k * k + 3.0  # noqa: E731
  measured = {'device': 'x', 's_per_step': {'1': 1.0, '2': 2.0, '4': 8.0}}
  out = double_descent_gpu.torch_summary(measured, [1, 2, 3, 4], macs, 10, epoch_s=20.0, seeds=2)
  at_3 = 2.0 + (8.0 - 2.0) * (macs(3) - macs(2)) / (macs(4) - macs(2))
  assert np.isclose(out['s_per_epoch_all_widths'], 10 * (1.0 + 2.0 + at_3 + 8.0))
  assert np.isclose(out['speedup'], out['s_per_epoch_all_widths'] * 2 / 20.0)
  assert 'note' in double_descent_gpu.torch_summary(dict(measured, s_per_step={'1': 1.0}), [1, 4], macs, 10, 1.0, 1)


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


def test_map_from_pairs_and_the_overrides_that_run_them():
  # vmap on every bucket; map:4 timed on the two widest only (widest first, as the budget allows): the pairs that
  # switch to map:4 at bucket 1 or 2, named by the least width of the first mapped bucket
  rows = [{'planned': p, 'config': c, 'members': 1, 's_per_epoch': t} for p, c, t in (
      (0, 'lax/vmap', 1.0), (1, 'lax/vmap', 5.0), (2, 'lax/vmap', 9.0), (2, 'lax/map:4', 4.0),
      (1, 'lax/map:4', 6.0), (2, 'im2col/map', 1.0), (0, 'lax/vmap/bfloat16', 0.5))]
  plan = [[1, 2], [3, 4], [5, 6]]
  assert double_descent_gpu.totals(rows, [1, 1, 1], plan) == {
      'lax/vmap': 15.0, 'lax/vmap|map:4 from 3': 1.0 + 6.0 + 4.0, 'lax/vmap|map:4 from 5': 1.0 + 5.0 + 4.0}
  from ddjax import config as cfglib
  from ddjax.buckets import strategy
  from experiments.double_descent import PRESETS
  for name, want in (('lax/vmap|map:4 from 5', ('lax', 'vmap', 'vmap', 'map', 4, 'float32')),
                     ('im2col/map:2/bfloat16', ('im2col', 'map', 'map', 'map', 2, 'bfloat16')),
                     ('lax/vmap', ('lax', 'vmap', 'vmap', 'vmap', 1, 'float32'))):
    over = double_descent_gpu.overrides(name).split()
    cfg, _ = cfglib.apply_overrides(PRESETS['paper'].config, PRESETS['paper'].sweep, over)
    assert (cfg.model.conv, strategy(cfg, 2), strategy(cfg, 4), strategy(cfg, 5), cfg.train.map_batch,
            cfg.train.compute_dtype) == want, name


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
