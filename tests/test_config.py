"""Config and override parsing, sweeps, jobs x members, and the CLI's one-line errors (exit 2, nothing written)."""

import pytest

from ddjax import cli
from ddjax import config as cfglib
from ddjax.members import expand
from experiments.double_descent import PRESETS


def apply(*overrides, cfg=None, sweep=None):
  return cfglib.apply_overrides(cfg or cfglib.Config(), sweep or {}, list(overrides))


def test_scalars_and_sweeps():
  cfg, sweep = apply('optim.lr=3e-4', 'train.epochs=7', 'model.name=mlp', 'model.seed=none', 'seed=4')
  assert (cfg.optim.lr, cfg.train.epochs, cfg.model.name, cfg.model.seed, cfg.seed) == (3e-4, 7, 'mlp', None, 4)
  assert sweep == {}
  _, sweep = apply('model.width=1..4', 'seed=0,1', 'optim.lr=0.1..0.3..0.1', 'model.conv=lax,im2col')
  assert sweep['model.width'] == [1, 2, 3, 4]
  assert sweep['seed'] == [0, 1]
  assert sweep['optim.lr'] == pytest.approx([0.1, 0.2, 0.3])
  assert sweep['model.conv'] == ['lax', 'im2col']
  _, sweep = apply('model.width=2..10..4')
  assert sweep['model.width'] == [2, 6, 10]
  _, sweep = apply('optim.lr=0.001..0.002..0.0006')  # a range never passes its upper end
  assert sweep['optim.lr'] == pytest.approx([0.001, 0.0016])
  cfg, sweep = apply('model.width=5', sweep={'model.width': [1, 2]})  # a scalar replaces a preset's sweep
  assert cfg.model.width == 5 and 'model.width' not in sweep


def test_jobs_split_on_static_keys_members_on_member_keys():
  cfg, sweep = apply('model.width=2,4,8', 'seed=0,1', 'optim.wd=0,0.1', 'train.batch_size=50,100')
  jobs = expand(cfg, sweep)
  assert len(jobs) == 2 and [j.static for j in jobs] == [{'train.batch_size': 50}, {'train.batch_size': 100}]
  assert all(len(j.members) == 12 for j in jobs)
  assert jobs[1].config.train.batch_size == 100
  assert {(m['model.width'], m['seed'], m['optim.wd']) for m in jobs[0].members} == {
      (w, s, wd) for w in (2, 4, 8) for s in (0, 1) for wd in (0.0, 0.1)}


@pytest.mark.parametrize('override,needle', [
    ('model.widht=3', "unknown key 'model.widht': did you mean model.width?"),
    ('widht=3', "unknown key 'widht': did you mean model.width?"),
    ('nmae=mlp', "unknown key 'nmae': did you mean data.name or model.name or optim.name?"),
    ('lrate=0.1', "unknown key 'lrate': known keys:"),
    ('nokey=3', "unknown key 'nokey'"),
    ('model.width=abc', "bad value 'abc' for model.width: expected an integer"),
    ('optim.lr=fast', "bad value 'fast' for optim.lr: expected a number"),
    ('optim.name=rmsprop', 'allowed values are adam, adamw, sgd'),
    ('model.width=5..2', 'need a <= b'),
    ('model.width=0', "bad value 0 for model.width: must be >= 1"),
    ('data.noise=1.5', 'must be in [0, 1)'),
    ('model.name=mlp..cnn1d', 'need a numeric key'),
    ('model.width=1,,2', 'empty value'),
    ('model.width', 'expected key=value'),
    ('train.epochs=1.5', 'expected an integer'),
    ('train.batch_size=5000', 'larger than the 4000 training examples'),
    ('seed=3000000000', "bad value 3000000000 for seed: must be in [0, 2^31)"),
    ('optim.b2=1', 'must be in [0, 1)'),
    ('optim.momentum=-0.5', 'must be in [0, 1]'),
    ('optim.warmup=-1', "bad value -1 for optim.warmup: must be >= 0"),
    ('optim.schedule=cosin', "bad value 'cosin' for optim.schedule: allowed values are constant, cosine, linear"),
    ('model.name=resnet18k', 'model.name=resnet18k does not fit data.name=mnist1d'),
    ('data.augment=crop_flip', 'mnist1d has no images'),
    ('optim.lr=inf', "bad value 'inf' for optim.lr: expected a finite number"),  # it would train every member to NaN
    ('optim.wd=0,-inf', "bad value '-inf' for optim.wd: expected a finite number"),
])
def test_bad_overrides_are_one_line_errors(override, needle):
  with pytest.raises(cfglib.ConfigError) as e:
    apply(override)
  assert needle in str(e.value) and '\n' not in str(e.value)


@pytest.mark.parametrize('argv,needle', [
    (['model.widht=3'], 'unknown key'),
    (['--preset', 'nope'], "unknown preset 'nope'"),
    (['--bogus-flag'], 'unrecognized arguments'),
    (['optim.lr=-1'], 'must be > 0'),
])
def test_cli_errors_exit_2_and_write_nothing(argv, needle, tmp_path, capsys):
  out = tmp_path / 'run'
  with pytest.raises(SystemExit) as e:
    cli.main('double_descent', PRESETS, argv + ['--out', str(out)])
  assert e.value.code == 2
  err = capsys.readouterr().err.strip()
  assert needle in err and len(err.splitlines()) == 1
  assert not out.exists()


def test_help_lists_presets_and_keys(capsys):
  with pytest.raises(SystemExit) as e:
    cli.main('double_descent', PRESETS, ['--help'])
  assert e.value.code == 0
  text = capsys.readouterr().out
  assert '--preset mnist1d' in text and 'optim.lr' in text and '0.001' in text and 'model.width' in text


def test_keys_no_optimizer_or_model_reads_are_a_warning(tmp_path, capsys):
  """optim.momentum with Adam, optim.b1 with SGD and model.depth with a CNN do nothing: one warning line each, and the
  dry run goes on; read by one of a swept optimizer list, no warning."""
  cli.main('double_descent', PRESETS, ['optim.momentum=0.5', 'model.depth=3', '--dry-run', '--out', str(tmp_path)])
  err = capsys.readouterr().err.splitlines()
  assert err == ['warning: optim.momentum does nothing with optim.name=adam (read by sgd only)',
                 'warning: model.depth does nothing with model.name=cnn1d']
  cli.main('double_descent', PRESETS, ['optim.name=sgd', 'optim.b1=0.8', '--dry-run', '--out', str(tmp_path)])
  assert capsys.readouterr().err == 'warning: optim.b1 does nothing with optim.name=sgd (read by adam and adamw only)\n'
  cli.main('double_descent', PRESETS, ['optim.name=sgd,adam', 'optim.b1=0.8', '--dry-run', '--out', str(tmp_path)])
  assert capsys.readouterr().err == ''


def test_resume_refuses_a_different_config(tmp_path, capsys):
  import json
  cfg = cfglib.to_dict(PRESETS['mnist1d'].config)
  cfg['train']['epochs'] = 7
  (tmp_path / 'run.json').write_text(json.dumps({'config': cfg, 'sweep': PRESETS['mnist1d'].sweep}))
  with pytest.raises(SystemExit) as e:
    cli.main('double_descent', PRESETS, ['--out', str(tmp_path), '--resume'])
  err = capsys.readouterr().err
  assert e.value.code == 2 and 'train.epochs was 7' in err and len(err.strip().splitlines()) == 1
  assert sorted(p.name for p in tmp_path.iterdir()) == ['run.json']


def test_resume_accepts_a_reordered_sweep_but_not_new_zip_pairs(tmp_path, capsys):
  # Members are found by run id, so a sweep's values may come in another order; zipped keys keep their pairs.
  import json
  stored = {'config': cfglib.to_dict(PRESETS['mnist1d'].config), 'zip': [['seed', 'optim.lr']],
            'sweep': {'seed': [0, 1], 'optim.lr': [0.1, 0.2], 'model.width': [4, 2]}}
  (tmp_path / 'run.json').write_text(json.dumps(stored))
  trains = cfglib.what_trains({'seed': 1, 'model': {'width': 2, 'depth': 3}, 'train': {'memory_gb': 2.0}},
                              {'model.width': [2, 4], 'optim.lr': [0.2, 0.1], 'seed': [1, 0]}, [['seed', 'optim.lr']])
  assert trains == {'model.depth': 3, 'sweep of optim.lr with seed': [[0.1, 0], [0.2, 1]],
                    'sweep of model.width': [2, 4]}
  argv = ['--out', str(tmp_path), '--resume', '--dry-run', 'model.width=2,4', 'seed=1,0']
  for zipped in ('seed,optim.lr', 'optim.lr,seed'):  # accepted: the dry run prints its table
    cli.main('double_descent', PRESETS, argv + ['optim.lr=0.2,0.1', '--zip', zipped])
    assert 'compiled train step' in capsys.readouterr().out
  with pytest.raises(SystemExit) as e:  # the same values paired the other way: other members
    cli.main('double_descent', PRESETS, argv + ['optim.lr=0.1,0.2', '--zip', 'seed,optim.lr'])
  err = capsys.readouterr().err
  assert e.value.code == 2 and 'sweep of optim.lr with seed was [[0.1, 0], [0.2, 1]]' in err
  assert len(err.strip().splitlines()) == 1 and sorted(p.name for p in tmp_path.iterdir()) == ['run.json']


def test_resume_lets_execution_keys_change(tmp_path, capsys):
  # Keys that only change how a run executes (memory, bucketing, workers) may differ on resume; a real difference
  # is still named, even when execution keys sorting before it differ too.
  import json
  cfg = cfglib.to_dict(PRESETS['mnist1d'].config)
  cfg['data']['workers'], cfg['train']['bucket_ratio'], cfg['train']['epochs'] = 3, 1.5, 7
  (tmp_path / 'run.json').write_text(json.dumps({'config': cfg, 'sweep': PRESETS['mnist1d'].sweep}))
  with pytest.raises(SystemExit) as e:
    cli.main('double_descent', PRESETS, ['--out', str(tmp_path), '--resume'])
  err = capsys.readouterr().err
  assert e.value.code == 2 and 'train.epochs was 7' in err and len(err.strip().splitlines()) == 1


def test_presets_follow_the_papers():
  """The presets' numbers are references.md's, so a preset edited by mistake fails here, not after 4000 epochs."""
  from experiments.grokking import PRESETS as GROK
  c, sweep = PRESETS['paper'].config, PRESETS['paper'].sweep  # Nakkiran et al., Figure 1
  assert (c.data.name, c.data.noise, c.data.augment, c.model.name) == ('cifar10', 0.15, 'crop_flip', 'resnet18k')
  assert (c.optim.name, c.optim.lr, c.optim.wd, c.optim.b1, c.optim.b2, c.optim.eps) == ('adam', 1e-4, 0.0, 0.9,
                                                                                          0.999, 1e-8)
  assert (c.train.epochs, c.train.batch_size, c.optim.warmup, c.optim.schedule) == (4000, 128, 0, 'constant')
  assert sweep == {'model.width': list(range(1, 65)), 'seed': [0, 1, 2, 3, 4]}
  c = GROK['transformer'].config  # Nanda et al.: p = 113, 30% train, full batch, AdamW 1e-3, wd 1, betas .9/.98
  assert (c.data.name, c.data.op, c.data.p, c.data.train_split, c.model.name, c.model.width) == (
      'modular', 'add', 113, 0.3, 'transformer', 128)
  assert (c.optim.name, c.optim.lr, c.optim.wd, c.optim.b1, c.optim.b2, c.train.batch_size) == (
      'adamw', 1e-3, 1.0, 0.9, 0.98, 0)
  assert (c.optim.warmup, c.optim.schedule) == (10, 'constant')  # their code: LambdaLR(min(step / 10, 1))
  c, sweep = GROK['default'].config, GROK['default'].sweep  # Kitouni: add mod 53, 60% train, full-batch AdamW 3e-2
  assert (c.data.op, c.data.p, c.data.train_split, c.model.name) == ('add', 53, 0.6, 'embed_mlp')
  assert (c.optim.name, c.optim.lr, c.train.batch_size) == ('adamw', 3e-2, 0)
  assert sweep['optim.wd'] == [0.03, 0.1, 1.0]  # references: grokking at about 5k, 1.7k and 200 epochs
  c = PRESETS['mnist1d'].config  # MNIST-1D: 4000 / 1000 examples, 15% noise
  assert (c.data.num_samples * c.data.train_split, c.data.noise, c.model.name) == (4000, 0.15, 'cnn1d')


def test_keys_added_later_leave_old_stores_ids_and_resume_alone():
  """Keys that came after stores existed (config.LATER_KEYS): at their defaults they change neither a member's run
  id (the formula before them) nor what --resume compares, so a store written before them still resumes; set, they
  do change the run id."""
  import dataclasses
  import hashlib
  import json
  from ddjax.run import run_id
  cfg, sweep = PRESETS['mnist1d'].config, PRESETS['mnist1d'].sweep
  assert cfglib.LATER_KEYS == {k: cfglib.get(cfglib.Config(), k)
                               for k in ('optim.warmup', 'optim.schedule', 'train.collapse', 'model.init_scale',
                                         'data.dim', 'data.spectrum', 'train.sharpness', 'train.hessian_trace',
                                         'train.noise_scale', 'train.monitor_batch', 'train.eval_every_steps',
                                         'train.checkpoint_best', 'train.best_metric', 'train.best_mode',
                                         'model.norm', 'model.proj', 'data.teacher', 'data.in_dim',
                                         'data.out_dim', 'data.train_size', 'data.test_size', 'data.noise_std',
                                         'data.scale', 'data.alpha', 'data.topk', 'data.mean', 'data.std',
                                         'data.online', 'model.gamma', 'model.bias', 'train.max_steps',
                                         'train.evaluations', 'train.loss', 'pair', 'callbacks', 'callback.step',
                                         'callback.batch_size', 'callback.schedule', 'callback.every',
                                         'callback.factor', 'model.head', 'data.train_per_group',
                                         'data.val_per_group', 'data.test_per_group', 'data.val_split',
                                         'data.bound_codewords', 'data.file', 'train.violation', 'model.param',
                                         'model.base_width', 'data.subset', 'train.budget')}
  before = {k: cfglib.get(cfg, k) for k in cfglib.fields(cfg)  # probes and probe.* came later and never hash
            if k not in cfglib.EXECUTION_KEYS and k not in cfglib.LATER_KEYS and not cfglib.is_probe_key(k)}
  assert run_id(cfg) == hashlib.sha1(json.dumps(before, sort_keys=True, default=str).encode()).hexdigest()[:12]
  old = cfglib.to_dict(cfg)
  del old['optim']['warmup'], old['optim']['schedule'], old['train']['collapse']  # a run.json from before them
  del old['model']['init_scale'], old['data']['dim'], old['data']['spectrum'], old['model']['norm']
  del old['model']['param'], old['model']['base_width'], old['data']['subset'], old['train']['budget']
  del old['model']['proj'], old['model']['head'], old['model']['gamma'], old['model']['bias'], old['pair']
  del old['callbacks'], old['callback']
  for key in ('teacher', 'in_dim', 'out_dim', 'train_size', 'test_size', 'noise_std', 'scale', 'alpha', 'topk',
              'mean', 'std', 'online', 'train_per_group', 'val_per_group', 'test_per_group', 'val_split',
              'bound_codewords', 'file'):
    del old['data'][key]
  for key in ('sharpness', 'hessian_trace', 'noise_scale', 'monitor_batch', 'eval_every_steps', 'snapshot_epochs',
              'checkpoint_best', 'best_metric', 'best_mode', 'max_steps', 'evaluations', 'loss', 'violation'):
    del old['train'][key]
  assert cfglib.what_trains(old, sweep, []) == cfglib.what_trains(cfglib.to_dict(cfg), sweep, [])
  for changed in (dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, warmup=10)),
                  dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, schedule='cosine')),
                  dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, init_scale=0.1)),
                  dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, proj=4)),
                  dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, gamma=1.0)),
                  dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, max_steps=100)),
                  dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, sharpness=20)),
                  dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, eval_every_steps=50))):
    assert run_id(changed) != run_id(cfg)
    assert cfglib.what_trains(cfglib.to_dict(changed), sweep, []) != cfglib.what_trains(old, sweep, [])
