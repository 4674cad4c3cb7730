"""Teacher-student regression (issue: deep linear networks at research scale): the teachers registry against their
formulas, a plugin teacher, each member's target noise, the gamma init, PyTorch's MSELoss, the end-to-end
evaluation with biases, steps instead of epochs, and the seed codebase's command-line habits (-cn, --output)."""

import dataclasses
import json
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from ddjax import config as cfglib
from ddjax import run as runlib
from ddjax.data.teacher import teacher_data
from ddjax.data.teachers import TEACHERS, register_teacher
from ddjax.members import expand
from ddjax.nn.models import make_model
from ddjax.train import StepSpec, bucket_fns, init_member, train_step
from tests.helpers import close, hp_for, unstack


def data_cfg(**kw):
  return dataclasses.replace(cfglib.DataConfig(), name='teacher', **kw)


def test_teachers_are_their_formulas_and_targets_are_w_x():
  """Each registered teacher's W* against its formula (float64), and y = W* x on both splits with x ~ N(0, I)."""
  d = data_cfg(in_dim=6, out_dim=4, scale=3.0, alpha=0.5, topk=2, mean=1.0, std=2.0, spectrum='3/1')
  i = np.arange(1, 5)
  want = {'diagonal': np.diag(3.0 * i), 'power_law': np.diag(3.0 * i ** -0.5),
          'power_law_topk': np.diag(3.0 * i ** -0.5 * (i <= 2)), 'identity': np.eye(4)}
  for name, diag in want.items():
    ds = teacher_data(dataclasses.replace(d, teacher=name))
    w = np.zeros((4, 6))
    w[:, :4] = diag
    x = ds.x_train.astype(np.float64)
    np.testing.assert_allclose(ds.y_train, x @ w.T, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(ds.y_test, ds.x_test.astype(np.float64) @ w.T, rtol=1e-6, atol=1e-5)
    s = np.linalg.svd(w, compute_uv=False)
    assert dict(ds.info)['rank'] == int((s > 1e-12).sum()) == ds.modes
    np.testing.assert_allclose([dict(ds.info)[f'teacher_s{r + 1}'] for r in range(ds.modes)], s[:ds.modes])
  # random_normal and spectrum draw: their matrix is recovered from the data by least squares
  for name in ('random_normal', 'spectrum'):
    big = dataclasses.replace(d, teacher=name, in_dim=30, out_dim=30, train_size=2000)
    ds = teacher_data(big)
    w, *_ = np.linalg.lstsq(ds.x_train.astype(np.float64), ds.y_train.astype(np.float64), rcond=None)
    if name == 'random_normal':
      assert abs(w.mean() - 1.0) < 0.15 and abs(w.std() - 2.0) < 0.15
    else:
      np.testing.assert_allclose(np.linalg.svd(w, compute_uv=False)[:3], [3, 1, 0], atol=1e-4)
  ds = teacher_data(dataclasses.replace(d, train_size=4000))
  assert ds.x_train.shape == (4000, 6) and ds.x_test.shape == (500, 6)
  assert abs(ds.x_train.mean()) < 0.03 and abs(ds.x_train.std() - 1) < 0.03
  other = teacher_data(dataclasses.replace(d, seed=7))
  assert not np.allclose(other.x_train[:500], teacher_data(d).x_train)


def test_a_plugin_teacher_and_bad_teacher_keys(tmp_path):
  @register_teacher('anti_diagonal', options=('scale',), help='scale on the anti-diagonal')
  def anti(d, rng):
    return d.scale * np.fliplr(np.eye(d.out_dim, d.in_dim))
  try:
    cfg, sweep = cfglib.apply_overrides(cfglib.Config(), {}, ['data.name=teacher', 'data.teacher=anti_diagonal',
                                                               'model.name=deep_linear', 'data.scale=2'])
    ds = teacher_data(cfg.data)
    np.testing.assert_allclose(ds.y_train, ds.x_train[:, ::-1] * 2, rtol=1e-6)
  finally:
    del TEACHERS['anti_diagonal']
  base = ['data.name=teacher', 'model.name=deep_linear']
  bad = {'data.teacher=nope': "bad value 'nope' for data.teacher: allowed values are",
         'data.teacher=power_law_topk data.topk=9': 'bad value 9 for data.topk',
         'data.noise_std=-1': 'bad value -1.0 for data.noise_std',
         'data.train_size=0': 'bad value 0 for data.train_size',
         'model.name=mlp data.name=mnist1d data.noise_std=0.1': 'mnist1d is a classification task',
         'data.name=mnist1d model.name=mlp train.loss=mse_mean': "bad value 'mse_mean' for train.loss",
         'train.evaluations=5': 'bad value 5 for train.evaluations',
         'model.name=cnn1d data.name=mnist1d model.gamma=1': 'cnn1d keeps its own init',
         'model.name=mlp model.bias=true': 'mlp sets its own biases'}
  for overrides, message in bad.items():
    with pytest.raises(cfglib.ConfigError, match=message.replace('(', r'\(').replace('.', r'\.')):
      cfglib.apply_overrides(cfglib.Config(), {}, base + overrides.split())


def test_each_member_gets_its_own_target_noise():
  """data.noise_std: member i's training targets are the clean ones plus noise_std_i x N(0, 1) from its noise seed:
  0 leaves them exact, the residual's std is noise_std, other noise seeds draw other noise, the test set is
  clean."""
  ds = teacher_data(data_cfg(train_size=4000))
  model = make_model('deep_linear', 4, (5,), 5, 'im2col', depth=1)
  fns = bucket_fns(StepSpec(model, 'sgd', 40, 5, task='regress'))
  hp = hp_for([4] * 4, **{'data.noise_std': [0.0, 0.5, 0.5, 2.0], 'data.noise_seed': [0, 0, 1, 0]})
  labels = np.asarray(fns.labels(hp, jnp.asarray(ds.y_train)))
  residual = labels - ds.y_train
  assert np.array_equal(labels[0], ds.y_train)
  for i, std in ((1, 0.5), (2, 0.5), (3, 2.0)):
    assert abs(residual[i].std() - std) < 0.03 * std and abs(residual[i].mean()) < 0.05 * std
  assert abs(np.corrcoef(residual[1].ravel(), residual[2].ravel())[0, 1]) < 0.05  # another seed, another draw
  np.testing.assert_allclose(residual[3], 4 * residual[1], rtol=1e-4, atol=1e-5)  # same seed: the same draw, scaled


def test_gamma_init_is_gaussian_of_std_width_power_masked_and_padding_invariant():
  """model.gamma: every weight ~ N(0, width^-gamma) for the member's own width (Gaussian: kurtosis 3, where the
  default uniform init has 1.8), masked entries zero, the same draws however far the member is padded, times
  model.init_scale; a member without gamma (none) keeps the default init bit for bit beside members with it."""
  x = jnp.zeros(5)

  def init(width, padded, **kw):
    spec = StepSpec(make_model('deep_linear', padded, (5,), 5, 'im2col', depth=2), 'sgd', 10, 5, task='regress',
                    gamma=True)
    return init_member(spec, unstack(hp_for([width], **kw), 0), x)['params']

  p = init(64, 64, **{'model.gamma': 1.0})
  hidden = np.asarray(p['dense1']['kernel'])
  n, std = hidden.size, 64 ** -0.5  # within 4 standard errors of the sample's std, mean and kurtosis
  assert abs(hidden.std() - std) < 4 * std / np.sqrt(2 * n) and abs(hidden.mean()) < 4 * std / np.sqrt(n)
  kurtosis = ((hidden - hidden.mean()) ** 4).mean() / hidden.var() ** 2
  assert abs(kurtosis - 3) < 4 * np.sqrt(24 / n)
  assert abs(np.asarray(p['dense0']['kernel']).std() - 64 ** -0.5) < 0.1 * 64 ** -0.5  # every layer the same std
  small, padded = init(8, 8, **{'model.gamma': 1.5}), init(8, 16, **{'model.gamma': 1.5})
  for name in ('dense0', 'dense1', 'head'):
    k, kp = np.asarray(small[name]['kernel']), np.asarray(padded[name]['kernel'])
    np.testing.assert_allclose(kp[tuple(slice(0, n) for n in k.shape)], k, rtol=1e-6)
    assert np.count_nonzero(kp) == np.count_nonzero(k) == k.size
  scaled = init(8, 8, **{'model.gamma': 1.5, 'model.init_scale': 0.1})
  close(scaled, jax.tree.map(lambda a: 0.1 * a, small), rtol=1e-6)
  spec = StepSpec(make_model('deep_linear', 8, (5,), 5, 'im2col', depth=2), 'sgd', 10, 5, task='regress')
  default = init_member(spec, unstack(hp_for([8]), 0), x)['params']
  jax.tree.map(np.testing.assert_array_equal, init(8, 8), default)


def test_mse_mean_is_pytorchs_mse_loss_and_biases_evaluate_end_to_end():
  """train.loss=mse_mean: the batch loss and its gradient step are those of the mean over examples and outputs
  (PyTorch's MSELoss) in NumPy; a deep_linear with model.bias evaluates through its affine end-to-end map exactly
  as its forward pass does."""
  ds = teacher_data(data_cfg(scale=2.0))
  x, y = jnp.asarray(ds.x_train[:10]), jnp.asarray(ds.y_train[:10])
  model = make_model('deep_linear', 6, (5,), 5, 'im2col', depth=1, bias=True)
  spec = StepSpec(model, 'sgd', 10, 5, task='regress', loss='mse_mean', linear=True)
  hp = unstack(hp_for([6], **{'optim.lr': 0.1, 'optim.momentum': 0.0}), 0)
  state = init_member(spec, hp, x[0])
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), state['params'])
  assert set(p['dense0']) == {'kernel', 'bias'}
  out = (np.asarray(x, np.float64) @ p['dense0']['kernel'] + p['dense0']['bias']) @ p['head']['kernel'] + \
      p['head']['bias']
  _, loss = jax.jit(lambda s: train_step(spec, s, hp, x, y))(state)
  assert float(loss) == pytest.approx(np.mean((out - np.asarray(y, np.float64)) ** 2), rel=1e-5)
  fns = bucket_fns(spec)
  hp_m = hp_for([6, 6], **{'seed': [0, 1]})
  state_m = fns.init(hp_m, x[0])
  xt, yt = jnp.asarray(ds.x_test), jnp.asarray(ds.y_test)
  metrics = fns.evaluate(state_m, hp_m, fns.labels(hp_m, jnp.asarray(ds.y_train)), jnp.asarray(ds.x_train), xt, yt,
                         jnp.float32(0))
  for i in range(2):
    out = model.apply({'params': unstack(state_m['params'], i)}, xt, 6)
    assert float(metrics['test_loss'][i]) == pytest.approx(float(jnp.mean((out - yt) ** 2)), rel=1e-5)


def test_max_steps_stops_part_way_through_an_epoch_and_evaluates_every_n_steps(tmp_path):
  """train.max_steps=120 with 50 steps an epoch trains 2 epochs and 20 steps; train.evaluations=3 evaluates after
  steps 40, 80 and 120 only, at fractional epochs. The rows equal those of the same members trained 3 whole
  epochs with an evaluation every 40 steps, which goes on to step 150."""
  keys = ['data.name=teacher', 'data.train_size=100', 'data.test_size=50', 'model.name=deep_linear', 'model.width=8',
          'model.depth=2', 'model.gamma=1', 'train.batch_size=2', 'optim.name=sgd', 'optim.lr=0.002',
          'optim.momentum=0', 'train.loss=mse_mean', 'data.noise_std=0,0.3', 'train.batch_seed=0,1']
  tables = []
  for extra in (['train.max_steps=120', 'train.evaluations=3'],
                ['train.epochs=3', 'train.eval_points=1', 'train.eval_every_steps=40']):
    cfg, sweep = cfglib.apply_overrides(cfglib.Config(), {}, keys + extra)
    out = tmp_path / extra[0]
    tables.append(pd.read_parquet(runlib.run(cfg, sweep, expand(cfg, sweep), out, progress=False,
                                             log=lambda *a: None)))
  steps, epochs = tables[0], tables[1]
  assert len(steps) == 4 and all(list(s) == [40, 80, 120] for s in steps['step'])
  np.testing.assert_allclose(steps['epoch'].iloc[0], [0.8, 1.6, 2.4])
  assert all({40, 80, 120, 150} <= set(s) for s in epochs['step'])
  merged = steps.merge(epochs, on=['data.noise_std', 'train.batch_seed'], suffixes=('', '_e'))
  for _, r in merged.iterrows():
    at = [list(r['step_e']).index(k) for k in (40, 80, 120)]
    np.testing.assert_array_equal(r['test_loss'], np.asarray(r['test_loss_e'])[at])
    np.testing.assert_array_equal(r['train_loss'], np.asarray(r['train_loss_e'])[at])
  from plots.deep_linear import loss_figure  # its lines: the mean over batch seeds of each noise level's members
  fig = loss_figure(steps)
  for line, (noise, g) in zip(fig.axes[1].lines, steps.groupby('data.noise_std')):
    assert f'data.noise_std={noise}' in line.get_label() and '(2 runs)' in line.get_label()
    np.testing.assert_allclose(line.get_ydata(), np.mean(np.stack(g['test_loss']), axis=0), rtol=1e-6)
    np.testing.assert_array_equal(line.get_xdata(), [40, 80, 120])
  assert [a.get_ylabel() for a in fig.axes] == ['train loss', 'test loss']
  __import__('matplotlib.pyplot').pyplot.close(fig)
  noisy = merged[merged['data.noise_std'] > 0]
  assert all(a[-1] > b[-1] for a, b in zip(noisy['train_loss'], merged[merged['data.noise_std'] == 0]['train_loss']))


def test_config_names_output_alias_and_sweep_lines(tmp_path, monkeypatch, capsys):
  """-cn NAME finds ./configs/NAME.yaml before ddjax's own, replaces the preset (a named config is the whole
  config), and a key=value that fixes a zipped key leaves its zip; --output is --out; every swept key's count and
  first and last value are printed (ddjax's a..b includes b); [a,b,c] is one list value."""
  from ddjax.cli import main
  from experiments.deep_linear import PRESETS
  monkeypatch.chdir(tmp_path)
  main('deep_linear', PRESETS, ['-cn', 'gph', '--dry-run', 'train.batch_seed=0..99'])
  said = capsys.readouterr().out
  assert 'sweep train.batch_seed: 100 values, first 0, last 99' in said
  assert 'sweep model.gamma: 3 values, first 0.75, last 1.5 (zipped with train.max_steps)' in said
  assert '3 job(s), 7200 member(s)' in said  # per gamma: 3 widths x 2 noise levels x 4 model seeds x 100 batch seeds
  main('deep_linear', PRESETS, ['-cn=gph', '--dry-run', 'model.gamma=1', 'train.max_steps=500', 'model.width=8',
                                'data.noise_std=0', 'model.seed=0'])
  assert '1 job(s), 10 member(s)' in capsys.readouterr().out
  (tmp_path / 'configs').mkdir()
  (tmp_path / 'configs' / 'gph.yaml').write_text(textwrap.dedent('''\
      data: {name: teacher, teacher: identity, train_size: 20, test_size: 10}
      model: {name: deep_linear, width: 3, depth: 1}
      optim: {name: sgd, lr: 0.01, momentum: 0}
      train: {batch_size: 0, max_steps: 5, evaluations: 5}
      '''))
  main('deep_linear', PRESETS, ['-cn', 'gph', '--output', 'mine', '--no-progress'])
  table = pd.read_parquet(tmp_path / 'mine' / 'results.parquet')
  assert len(table) == 1 and list(table['step'].iloc[0]) == [1, 2, 3, 4, 5]
  assert json.loads(table['config'].iloc[0])['data']['teacher'] == 'identity'
  cfg, sweep = cfglib.apply_overrides(cfglib.Config(), {}, ['data.name=teacher', 'model.name=mlp',
                                                             'data.teacher=spectrum', 'data.spectrum=[4,2,1]',
                                                             'train.snapshot_epochs=[0,10]'])
  assert (cfg.data.spectrum, cfg.train.snapshot_epochs, sweep) == ('4/2/1', '0/10', {})  # one list value, no sweep
  with pytest.raises(cfglib.ConfigError, match=r"\[a,b,...\] is one list value, and optim.lr takes one float"):
    cfglib.apply_overrides(cfglib.Config(), {}, ['optim.lr=[0.1,0.2]'])
  with pytest.raises(SystemExit):
    main('deep_linear', PRESETS, ['-cn', 'nosuch', '--dry-run'])
  assert ("-cn nosuch: no nosuch.yaml in ./configs/ or among ddjax's configs (allowed: comparative_diagonal_teacher, "
          'diagonal_teacher, gph') in capsys.readouterr().err


def _numpy_gradients(k1, k2, x, y, c):
  """Per-example gradients of l_i = c ||x_i K1 K2 - y_i||^2 (float64): (dK1 (N, I, W), dK2 (N, W, O))."""
  h = x @ k1
  r = h @ k2 - y
  return 2 * c * np.einsum('ni,nw->niw', x, r @ k2.T), 2 * c * np.einsum('nw,no->nwo', h, r)


@pytest.mark.parametrize('loss', ['auto', 'mse_mean'])
def test_deep_linear_metrics_against_numpy(loss):
  """The seed codebase's metrics as probes, for a width-3 member padded to 4 (its masked entries left out): Gram
  norms, balance differences, the end-to-end norm, singular values and relative rank of the end-to-end map from its
  active blocks; the exact test-set gradient norm, Tr(Sigma) and Tr(H Sigma) of the training loss from per-example
  gradients in float64 NumPy (H by central differences of the exact gradient), in one part and in 4."""
  from ddjax.probes import use
  from ddjax.train import BASE
  ds = teacher_data(data_cfg(in_dim=3, out_dim=2, train_size=16, test_size=8, scale=2.0))
  model = make_model('deep_linear', 4, (3,), 2, 'im2col', depth=1)
  names = ['gram_norms', 'balance_diffs', 'end_to_end_weight_norm', 'singular_values', 'relative_rank',
           'grad_norm_squared', 'trace_gradient_covariance', 'trace_hessian_covariance']
  results = []
  for chunks in (1, 4):
    probes = BASE + tuple(use(n, {'chunks': chunks} if 'trace' in n else {}) for n in names) + \
        (use('gradient_stats', {'chunks': chunks}),)
    spec = StepSpec(model, 'sgd', 16, 2, task='regress', loss=loss, probes=probes)
    fns = bucket_fns(spec)
    hp = hp_for([3, 4], **{'model.init_scale': 2.0, 'data.noise_std': 0.3})
    state = fns.init(hp, jnp.asarray(ds.x_train[0]))
    labels = fns.labels(hp, jnp.asarray(ds.y_train))
    results.append(fns.evaluate(state, hp, labels, jnp.asarray(ds.x_train), jnp.asarray(ds.x_test),
                                jnp.asarray(ds.y_test), jnp.float32(0)))
  m = {k: float(v[0]) for k, v in results[0].items()}
  for k, v in results[1].items():
    assert float(v[0]) == pytest.approx(m[k], rel=1e-4, abs=1e-6), k
  p = unstack(state['params'], 0)
  k1, k2 = (np.asarray(p[n]['kernel'], np.float64) for n in ('dense0', 'head'))
  assert not k1[:, 3:].any() and not k2[3:].any()
  k1, k2 = k1[:, :3], k2[:3]
  w1, w2 = k1.T, k2.T  # (out, in) weights
  assert m['gram_norm_0'] == pytest.approx(np.linalg.norm(w1 @ w1.T), rel=1e-5)
  assert m['gram_norm_1'] == pytest.approx(np.linalg.norm(w2 @ w2.T), rel=1e-5)
  assert m['balance_diff_0'] == pytest.approx(np.linalg.norm(w1 @ w1.T - w2.T @ w2), rel=1e-5)
  s = np.linalg.svd(w2 @ w1, compute_uv=False)
  assert m['end_to_end_norm'] == pytest.approx(np.sqrt((s ** 2).sum()), rel=1e-5)
  assert [m['sv_1'], m['sv_2']] == pytest.approx(list(s), rel=1e-5) and 'sv_3' not in m
  q = s / s.sum()
  assert m['relative_rank'] == pytest.approx(np.exp(-(q * np.log(q)).sum()) / 2, rel=1e-5)
  c = 0.5 if loss == 'mse_mean' else 1.0
  x, y = ds.x_train.astype(np.float64), np.asarray(labels[0], np.float64)
  g1, g2 = _numpy_gradients(k1, k2, x, y, c)
  d1, d2 = g1 - g1.mean(0), g2 - g2.mean(0)
  assert m['trace_gradient_covariance'] == pytest.approx(((d1 ** 2).sum((1, 2)) + (d2 ** 2).sum((1, 2))).mean(),
                                                         rel=1e-4)

  def full_gradient(theta):
    a, b = _numpy_gradients(theta[:9].reshape(3, 3), theta[9:].reshape(3, 2), x, y, c)
    return np.concatenate([a.mean(0).ravel(), b.mean(0).ravel()])
  theta, eps = np.concatenate([k1.ravel(), k2.ravel()]), 1e-5
  hessian = np.stack([(full_gradient(theta + eps * e) - full_gradient(theta - eps * e)) / (2 * eps)
                      for e in np.eye(theta.size)])
  d = np.concatenate([d1.reshape(16, -1), d2.reshape(16, -1)], axis=1)
  assert m['trace_hessian_covariance'] == pytest.approx(np.einsum('ni,ij,nj->n', d, hessian, d).mean(), rel=1e-4)
  t1, t2 = _numpy_gradients(k1, k2, ds.x_test.astype(np.float64), ds.y_test.astype(np.float64), c)
  assert m['grad_norm_squared'] == pytest.approx((t1.mean(0) ** 2).sum() + (t2.mean(0) ** 2).sum(), rel=1e-4)


def test_online_data_draws_a_fresh_batch_every_step(tmp_path):
  """data.online=true: every step trains on fresh N(0, I) inputs from the member's batch seed, so 100 steps of batch
  4 (400 draws from a training set of 8) learn the teacher, which the same steps on the 8 fixed examples, more
  inputs than examples, cannot; other batch seeds draw other batches; the train loss is on the fixed set."""
  keys = ['data.name=teacher', 'data.in_dim=12', 'data.out_dim=2', 'data.train_size=8', 'data.test_size=200',
          'data.teacher=random_normal', 'model.name=deep_linear', 'model.width=6', 'model.depth=1',
          'train.batch_size=4', 'optim.name=sgd', 'optim.lr=0.03', 'optim.momentum=0', 'train.max_steps=300',
          'train.evaluations=3', 'train.batch_seed=0,1', 'train.loss=mse_mean']
  tables = {}
  for online in ('true', 'false'):
    cfg, sweep = cfglib.apply_overrides(cfglib.Config(), {}, keys + [f'data.online={online}'])
    tables[online] = pd.read_parquet(runlib.run(cfg, sweep, expand(cfg, sweep), tmp_path / online, progress=False,
                                                log=lambda *a: None)).sort_values('train.batch_seed')
  online, offline = tables['true'], tables['false']
  for table in (online, offline):
    assert all(list(s) == [100, 200, 300] for s in table['step'])
  final = lambda t, c: np.asarray([v[-1] for v in t[c]])
  assert (final(online, 'test_loss') < 0.05 * final(offline, 'test_loss')).all()
  assert (final(offline, 'train_loss') < 0.05 * final(offline, 'test_loss')).all()  # it fits its 8 examples only
  a, b = (np.asarray(v) for v in online['test_loss'])
  assert not np.allclose(a, b)
  with pytest.raises(cfglib.ConfigError, match='data.online=true draws batches of an explicit size'):
    cfglib.apply_overrides(cfglib.Config(), {}, keys + ['data.online=true', 'train.batch_size=0'])
  with pytest.raises(cfglib.ConfigError, match='only data.name=teacher draws fresh examples'):
    cfglib.apply_overrides(cfglib.Config(), {}, ['data.online=true', 'model.name=mlp'])


def test_run_results_and_plot_with_bootstrap_bands(tmp_path):
  """ddjax.runs.load_runs: each member's config, history (its row's curves) and step table, filtered by key values;
  ddjax.plotting.plot draws each group's mean curve and a band that the bootstrap of the mean gives, which for
  Gaussian noise is close to mean +- 1.96 standard errors."""
  import matplotlib
  matplotlib.use('Agg')
  from ddjax.plotting import bootstrap_band, plot
  from ddjax.runs import load_runs
  cfg, sweep = cfglib.apply_overrides(cfglib.Config(), {}, [
      'data.name=teacher', 'data.train_size=20', 'data.test_size=10', 'model.name=deep_linear', 'model.width=4',
      'model.depth=1', 'train.batch_size=5', 'optim.name=sgd', 'optim.lr=0.01', 'optim.momentum=0',
      'train.max_steps=20', 'train.evaluations=4', 'train.batch_seed=0..3', 'data.noise_std=0,0.5',
      'probes=step_metrics'])
  out = runlib.run(cfg, sweep, expand(cfg, sweep), tmp_path / 'store', progress=False, log=lambda *a: None).parent
  table = pd.read_parquet(out / 'results.parquet')
  noisy = load_runs(out, **{'data.noise_std': 0.5})
  assert len(load_runs(out)) == 8 and len(noisy) == 4 and {r.get('train.batch_seed') for r in noisy} == {0, 1, 2, 3}
  assert len(load_runs(out, **{'data.noise_std': [0.0, 0.5], 'train.batch_seed': 1})) == 2
  r = noisy[0]
  row = table[table['run_id'] == r.run_id].iloc[0]
  assert list(r['step']) == [5, 10, 15, 20] and np.array_equal(r['test_loss'], row['test_loss'])
  assert r.config.data.noise_std == 0.5 and r.get('optim.lr') == 0.01
  assert set(r.steps['run_id']) == {r.run_id} and list(r.steps['step']) == list(range(1, 21))
  with pytest.raises(KeyError, match="'nope' is not recorded"):
    r['nope']
  with pytest.raises(KeyError, match="unknown key 'model.widht'"):
    load_runs(out, **{'model.widht': 4})
  ax = plot({'clean': load_runs(out, **{'data.noise_std': 0.0}), 'noisy': noisy}, metric='train_loss')
  clean_mean = np.mean([x['train_loss'] for x in load_runs(out, **{'data.noise_std': 0.0})], axis=0)
  np.testing.assert_allclose(ax.lines[0].get_ydata(), clean_mean, rtol=1e-6)
  assert [t.get_text() for t in ax.get_legend().get_texts()] == ['clean (4 runs)', 'noisy (4 runs)']
  assert len(ax.collections) == 2 and ax.get_ylabel() == 'train loss'
  curves = np.random.default_rng(0).standard_normal((400, 3)) + np.arange(3)
  lo, hi = bootstrap_band(curves, draws=2000)
  se = curves.std(axis=0, ddof=1) / np.sqrt(400)
  np.testing.assert_allclose((hi - lo) / 2, 1.96 * se, rtol=0.12)
  np.testing.assert_allclose((hi + lo) / 2, curves.mean(axis=0), atol=0.3 * se.max())


def test_comparative_pairs_train_in_lockstep_and_are_compared(tmp_path):
  """A comparative config (shared, training_a, training_b) becomes pair=a,b zipped with the keys that differ; each
  pair (one per batch seed) trains in one job and its comparisons at the last evaluation equal those of the two
  members' final parameters in NumPy (parameter distance and cosine, per-layer distances, the distance of the
  end-to-end maps). A key that changes the program (depth) cannot differ within a pair."""
  from ddjax.checkpoint import member_variables
  (tmp_path / 'pairs.yaml').write_text(textwrap.dedent('''\
      shared:
        data: {name: teacher, teacher: diagonal, train_size: 20, test_size: 10}
        model: {name: deep_linear, width: 4, depth: 1, seed: 0}
        optim: {name: sgd, momentum: 0}
        train: {batch_size: 5, max_steps: 12, evaluations: 3, batch_seed: 0..1}
        probes: param_distance,param_cosine_sim,layer_distances,frobenius_distance
      training_a: {lr: 0.05}
      training_b: {lr: 0.01, wd: 0.0}
      '''))
  cfg, sweep, zips = cfglib.load_config_file(tmp_path / 'pairs.yaml', cfglib.Config(), {})
  assert sweep['pair'] == ['a', 'b'] and sweep['optim.lr'] == [0.05, 0.01] and zips == [['pair', 'optim.lr']]
  assert cfg.optim.wd == 0.0 and 'optim.wd' not in sweep
  out = runlib.run(cfg, sweep, expand(cfg, sweep, zips), tmp_path / 'store', progress=False,
                   log=lambda *a: None).parent
  table = pd.read_parquet(out / 'results.parquet')
  assert len(table) == 4 and table.groupby('train.batch_seed')['pair'].apply(sorted).tolist() == [['a', 'b']] * 2
  for seed in (0, 1):
    rows = table[table['train.batch_seed'] == seed].set_index('pair')
    params = {side: member_variables(out, rows.loc[side, 'run_id'], 'last')[0]['params'] for side in 'ab'}
    flat = {s: np.concatenate([np.ravel(np.asarray(v, np.float64)) for v in jax.tree.leaves(p)])
            for s, p in params.items()}
    e2e = {s: np.asarray(p['dense0']['kernel'], np.float64) @ np.asarray(p['head']['kernel'], np.float64)
           for s, p in params.items()}
    for side in 'ab':
      row = rows.loc[side]
      assert row['param_distance'][-1] == pytest.approx(np.linalg.norm(flat['a'] - flat['b']), rel=1e-5)
      assert row['param_cosine_sim'][-1] == pytest.approx(
          flat['a'] @ flat['b'] / np.linalg.norm(flat['a']) / np.linalg.norm(flat['b']), rel=1e-6)
      for layer, name in enumerate(('dense0', 'head')):
        want = np.linalg.norm(np.asarray(params['a'][name]['kernel']) - np.asarray(params['b'][name]['kernel']))
        assert row[f'layer_distance_{layer}'][-1] == pytest.approx(want, rel=1e-5)
      assert row['frobenius_distance'][-1] == pytest.approx(np.linalg.norm(e2e['a'] - e2e['b']), rel=1e-5)
  # a notebook with one device reads the checkpoint that two wrote (orbax restores onto the host, not the topology)
  import os
  import subprocess
  import sys
  code = ('import sys, numpy as np; from ddjax.run import member_variables; '
          'v, w = member_variables(sys.argv[1], sys.argv[2], "last"); '
          'print(w, np.asarray(v["params"]["head"]["kernel"]).sum())')
  one = subprocess.run([sys.executable, '-c', code, str(out), rows.loc['b', 'run_id']], capture_output=True, text=True,
                       env={**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=1'})
  assert one.returncode == 0, one.stderr[-2000:]
  assert one.stdout.split() == ['4', str(np.asarray(params['b']['head']['kernel']).sum())]
  (tmp_path / 'bad.yaml').write_text('shared: {model: {name: deep_linear}}\nmodel_a: {depth: 1}\nmodel_b: {depth: 2}\n')
  with pytest.raises(cfglib.ConfigError, match=r'model\.depth is 1 for a and 2 for b, but a pair trains in lockstep'):
    cfglib.load_config_file(tmp_path / 'bad.yaml', cfglib.Config(), {})


PHASES = ['data.name=teacher', 'data.teacher=diagonal', 'data.train_size=40', 'data.test_size=20',
          'model.name=deep_linear', 'model.width=5', 'model.depth=1', 'optim.name=sgd', 'optim.lr=0.01',
          'optim.momentum=0.5', 'train.batch_size=4', 'train.batch_seed=0,1', 'train.max_steps=47',
          'train.evaluations=4', 'callbacks=switch_batch_size,lr_decay', 'callback.step=15', 'callback.batch_size=10',
          'callback.every=20', 'callback.factor=0.5', 'train.checkpoint_every=1', 'probes=step_metrics']


def test_a_batch_size_switch_continues_the_same_state_in_a_new_phase(tmp_path, monkeypatch):
  """callbacks switch_batch_size (batch 4 -> 10 after step 15) and lr_decay (x 0.5 every 20 steps): the run equals,
  bit for bit, the two phases trained by hand with the engine's buckets (batch 4: an epoch and 5 steps of the 2nd,
  then batch 10 with the same state: 8 epochs); evaluations every 47 // 4 = 11 steps and at the last; the step
  table's lr halves at steps 21 and 41; a run stopped by SIGTERM in the second phase resumes from its checkpoint to
  the same numbers."""
  from ddjax.buckets import job_plan, make_buckets
  from ddjax.data import load_dataset
  cfg, sweep = cfglib.apply_overrides(cfglib.Config(), {}, PHASES)
  [job] = expand(cfg, sweep)
  out = runlib.run(cfg, sweep, [job], tmp_path / 'run', progress=False, log=lambda *a: None).parent
  table = pd.read_parquet(out / 'results.parquet').sort_values('train.batch_seed').reset_index(drop=True)
  assert all(list(s) == [11, 22, 33, 44, 47] for s in table['step'])
  ds = load_dataset(cfg.data)
  plan, cost = job_plan(job, ds.input_shape, ds.num_classes)
  phase = lambda b: make_buckets(dataclasses.replace(job, config=dataclasses.replace(
      cfg, train=dataclasses.replace(cfg.train, batch_size=b))), ds, plan, cost, log=lambda *a: None)
  [small] = phase(4)
  small.train_epoch(0)
  small.train_segment(1, 0, 5)
  [large] = phase(10)
  large.state_M = small.state_M
  for e in range(2, 10):
    large.train_epoch(e)
  assert np.asarray(large.state_M['step']).tolist() == [47, 47]
  for row, ids in enumerate([table['run_id'][i] for i in range(2)]):
    kept, _ = runlib.member_variables(out, ids, 'last')
    jax.tree.map(np.testing.assert_array_equal, kept['params'], unstack(jax.device_get(large.state_M['params']), row))
  from ddjax.analysis.__main__ import main as analysis
  with pytest.raises(SystemExit) as exit_status:  # its evaluations and step-table rows are the ones it promises
    analysis(['validate', str(out)])
  assert exit_status.value.code == 0
  steps = runlib.results.load_steps(out)
  lr = steps[steps['run_id'] == table['run_id'][0]].set_index('step')['step_lr']
  assert lr[20] == pytest.approx(0.01) and lr[21] == pytest.approx(0.005) and lr[41] == pytest.approx(0.0025)
  # a schedule that switches at step 0 starts with its own batch size, whatever train.batch_size says
  scheduled = [k for k in PHASES if not k.startswith(('callbacks=', 'callback.', 'train.batch_size='))] + [
      'train.batch_size=2', 'callbacks=multi_switch_batch_size,lr_decay', 'callback.schedule=0:4/15:10',
      'callback.every=20', 'callback.factor=0.5']
  cfg2, sweep2 = cfglib.apply_overrides(cfglib.Config(), {}, scheduled)
  other = pd.read_parquet(runlib.run(cfg2, sweep2, expand(cfg2, sweep2), tmp_path / 'scheduled', progress=False,
                                     log=lambda *a: None)).sort_values('train.batch_seed').reset_index(drop=True)
  np.testing.assert_array_equal(np.stack(other['test_loss']), np.stack(table['test_loss']))
  import os
  import signal
  original, sent = runlib.Bucket.train_epoch, []

  def then_signal(self, epoch):
    loss = original(self, epoch)
    if epoch == 5 and not sent:  # the second phase's second epoch
      sent.append(os.kill(os.getpid(), signal.SIGTERM))
    return loss
  monkeypatch.setattr(runlib.Bucket, 'train_epoch', then_signal)
  with pytest.raises(runlib.Interrupted):
    runlib.run(cfg, sweep, [job], tmp_path / 'stopped', progress=False, log=lambda *a: None)
  monkeypatch.setattr(runlib.Bucket, 'train_epoch', original)
  said = []
  resumed = pd.read_parquet(runlib.run(cfg, sweep, [job], tmp_path / 'stopped', progress=False, log=said.append))
  assert any('resumed after epoch 6' in str(m) for m in said)
  resumed = resumed.sort_values('train.batch_seed').reset_index(drop=True)
  for col in ('step', 'train_loss', 'test_loss', 'weight_norm'):
    np.testing.assert_array_equal(np.stack(table[col]), np.stack(resumed[col]), err_msg=col)


def test_pairs_epochs_and_ids_of_step_counted_runs():
  """Comparative partners are found among all the job's members (one missing leaves the other pairs alone); epochs
  named by snapshots are checked against the run's epochs under train.max_steps, and batch-size switches against the
  training set; under train.max_steps, train.epochs changes no run id."""
  from ddjax.probes.comparative import partners
  from ddjax.run import run_id
  members = {i: {'pair': 'ab'[i // 2], 'optim.lr': [0.1, 0.01][i // 2], 'seed': i % 2} for i in range(4)}
  assert partners(members) == {0: 2, 2: 0, 1: 3, 3: 1}
  del members[3]
  assert partners(members) == {0: 2, 2: 0}
  zipped = {i: {'pair': 'abab'[i], 'optim.lr': [0.02, 0.01, 0.01, 0.005][i], 'model.width': [50, 50, 100, 100][i]}
            for i in range(4)}  # pair=a,b,a,b zipped with lr and width: the values of lr overlap across the sides
  assert partners(zipped) == {0: 1, 1: 0, 2: 3, 3: 2}
  from ddjax.timeline import epoch_plan  # a schedule whose only switch is at step 0: its batch size from the start
  cfg, _ = cfglib.apply_overrides(cfglib.Config(), {}, [
      'data.name=teacher', 'data.train_size=40', 'model.name=deep_linear', 'train.batch_size=10', 'train.max_steps=30',
      'train.evaluations=3', 'callbacks=multi_switch_batch_size', 'callback.schedule=0:4'])
  assert {(p.batch_size, p.steps_per_epoch) for p in epoch_plan(cfg, 40)} == {(4, 10)}
  with pytest.raises(cfglib.ConfigError, match="bad value 'x' for data.groups|mheight group 'x'"):
    cfglib.apply_overrides(cfglib.Config(), {}, ['data.name=mheight', 'data.groups=x', 'model.name=resmlp',
                                                  'train.max_steps=100', 'train.batch_size=10'])
  base = ['data.name=teacher', 'data.train_size=500', 'model.name=deep_linear', 'train.batch_size=10',
          'train.max_steps=100']
  with pytest.raises(cfglib.ConfigError, match=r'epoch 50 is after the last \(2, where train.max_steps ends\)'):
    cfglib.apply_overrides(cfglib.Config(), {}, base + ['train.snapshot_epochs=0/50'])
  cfg, _ = cfglib.apply_overrides(cfglib.Config(), {}, base + ['train.max_steps=26000', 'train.snapshot_epochs=0/200'])
  with pytest.raises(cfglib.ConfigError, match='more than the 500 training examples'):
    cfglib.apply_overrides(cfglib.Config(), {}, base + ['train.evaluations=2', 'callbacks=switch_batch_size',
                                                        'callback.step=50', 'callback.batch_size=1000'])
  with pytest.raises(cfglib.ConfigError, match='more than the 500 training examples'):  # a switch at step 0 too
    cfglib.apply_overrides(cfglib.Config(), {}, base + ['train.evaluations=2', 'callbacks=multi_switch_batch_size',
                                                        'callback.schedule=0:5000/100:10'])
  ids = {run_id(cfglib.apply_overrides(cfglib.Config(), {}, base + [f'train.epochs={e}', 'train.evaluations=4',
                                                                    f'train.eval_points={p}'])[0])
         for e, p in ((5, 30), (100, 7))}
  assert len(ids) == 1
