"""Probes (ddjax/probes): keys, errors and run ids; training bitwise unchanged by any probe or cadence; the step
table and tap points against dense models and NumPy; cadences; probes from a --plugin file."""

import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ddjax import cli
from ddjax import config as cfglib
from ddjax import results
from ddjax import run as runlib
from ddjax.data import load_dataset
from ddjax.members import expand
from ddjax.nn.models import make_model
from ddjax.probes import use
from ddjax.train import StepSpec, bucket_fns, member_key
from experiments.double_descent import PRESETS
from tests.dense_reference import DenseMLP
from tests.helpers import hp_for, unstack

BASE = ['model.name=mlp', 'model.width=3,7', 'train.epochs=4', 'train.eval_points=2', 'data.num_samples=300',
        'data.seed=3', 'train.batch_size=60', 'train.eval_batch=100', 'optim.name=sgd', 'optim.momentum=0',
        'optim.lr=0.05']
PROBED = ['probes=step_metrics,collapse,drift', 'probe.collapse.layer=hidden0', 'probe.collapse.every=2epochs',
          'probe.step_metrics.every=2', 'train.eval_every_steps=2',  # 4 steps an epoch: evaluations at half epochs
          'probe.drift.layer=hidden0', 'probe.drift.batch=50', 'train.snapshot_epochs=0/1/3']


def train(out, *more):
  cfg, sweep = cfglib.apply_overrides(cfglib.Config(), {}, BASE + list(more))
  runlib.run(cfg, sweep, expand(cfg, sweep), out, progress=False, log=lambda *a: None)
  return cfg, results.load(out).sort_values('model.width').reset_index(drop=True)


@pytest.fixture(scope='module')
def plain(tmp_path_factory):
  out = tmp_path_factory.mktemp('plain')
  return out, *train(out)


@pytest.fixture(scope='module')
def probed(tmp_path_factory):
  out = tmp_path_factory.mktemp('probed')
  return out, *train(out, *PROBED)


def test_probes_change_neither_run_ids_nor_a_single_number_of_training(plain, probed):
  """With probes, a cadence and evaluations every 2 steps (epochs cut into segments), the base probes' curves and
  every member's final parameters and optimizer state are bitwise those of the plain run; probe keys are not in run
  ids (the evaluation schedule is, as train.eval_points is); the rows come at half epochs and carry `step`."""
  (a_out, _, a), (b_out, _, b) = plain, probed
  from ddjax.store import member_config, run_id
  cfg, sweep = cfglib.apply_overrides(cfglib.Config(), {}, BASE + ['train.eval_every_steps=2'])  # no probe keys
  assert sorted(b['run_id']) == sorted(run_id(member_config(job, i)) for job in expand(cfg, sweep)
                                       for i in range(len(job.members)))  # the evaluation schedule is in them
  assert [list(e) for e in a['epoch']] == [[1, 4]] * 2
  assert [list(e) for e in b['epoch']] == [[0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4]] * 2
  assert [list(s) for s in b['step']] == [list(range(2, 17, 2))] * 2  # 4 steps an epoch
  for col in ('train_loss', 'test_loss', 'test_error', 'weight_norm', 'update_norm'):
    for x, y in zip(a[col], b[col]):
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y)[[1, 7]], err_msg=col)
  for run_a, run_b in zip(a['run_id'], b['run_id']):  # both sorted by width
    (va, wa), (vb, wb) = runlib.member_variables(a_out, run_a, 'last'), runlib.member_variables(b_out, run_b, 'last')
    assert wa == wb
    jax.tree.map(np.testing.assert_array_equal, va, vb)
  assert all(np.all(np.diff(t) >= 0) for t in b['time_s'])


def test_collapse_at_a_tap_point_at_its_cadence_is_numpys(probed):
  """probe.collapse.layer=hidden0, every 2 epochs: NaN elsewhere, and at epoch 4 NC1, NC2 and NC4 of the first
  hidden layer's features, computed in NumPy from the member's final parameters, on the training set; no NC3 (it
  compares with the output layer, which reads another layer)."""
  from tests.test_metrics import numpy_nc
  out, cfg, table = probed
  ds = load_dataset(cfg.data)
  x = np.asarray(ds.preprocess(jnp.asarray(ds.x_train)), np.float64)
  y = np.asarray(ds.y_train)
  assert 'nc3' not in table.columns
  for _, row in table.iterrows():
    assert [not np.isnan(v) for v in row['nc1']] == [e in (2, 4) for e in row['epoch']]
    params = jax.tree.map(lambda a: np.asarray(a, np.float64), runlib.member_variables(out, row['run_id'],
                                                                                      'last')[0]['params'])
    h = np.maximum(x @ params['dense0']['kernel'] + params['dense0']['bias'], 0)
    w = params['head']['kernel']
    logits = np.maximum(h @ params['dense1']['kernel'] + params['dense1']['bias'], 0) @ w + params['head']['bias']
    want = numpy_nc(h, y, w.T, logits)
    for key in ('nc1', 'nc1_trace', 'nc2_equinorm', 'nc2_equiangle', 'nc2_etf', 'nc4'):
      assert row[key][-1] == pytest.approx(want[key], rel=1e-3, abs=1e-5), (row['model.width'], key)


def _hidden0(params, x):
  return np.maximum(x @ params['dense0']['kernel'] + params['dense0']['bias'], 0)


def _cka(a, b):
  a, b = a - a.mean(0), b - b.mean(0)
  return np.linalg.norm(b.T @ a) ** 2 / (np.linalg.norm(a.T @ a) * np.linalg.norm(b.T @ b))


def test_drift_against_snapshots_is_numpys(probed):
  """probe.drift.layer=hidden0 with snapshots at epochs 0, 1 and 3: NaN before epoch 1 and 1 there (its reference);
  at epochs 3 and 4 the linear CKA, in float64 NumPy, of the first hidden layer's features on the 50 probe examples
  under the epoch-1 snapshot's parameters against the epoch-3 snapshot's and the last checkpoint's. The epoch-0
  snapshot is the member's init; an epoch with neither a snapshot nor a checkpoint is a one-line error."""
  from ddjax.train import init_member
  out, cfg, table = probed
  ds = load_dataset(cfg.data)
  idx = np.arange(50) * len(ds.x_train) // 50
  x = np.asarray(ds.preprocess(jnp.asarray(ds.x_train[idx])), np.float64)
  for _, row in table.iterrows():
    drift = np.asarray(row['drift_cka'])
    assert np.isnan(drift[0]) and drift[1] == pytest.approx(1.0, abs=1e-6)
    (first, width), (third, _), (last, _) = (runlib.member_variables(out, row['run_id'], w) for w in (1, '3', 'last'))
    h = [_hidden0(jax.tree.map(lambda a: np.asarray(a, np.float64), v['params']), x) for v in (first, third, last)]
    assert drift[5] == pytest.approx(_cka(h[0], h[1]), rel=1e-4) and drift[7] == pytest.approx(_cka(h[0], h[2]),
                                                                                                rel=1e-4)
    init, _ = runlib.member_variables(out, row['run_id'], 0)
    spec = StepSpec(make_model('mlp', width, (40,), 10, 'im2col'), 'sgd', 60, 10)
    want = init_member(spec, unstack(hp_for([row['model.width']]), 0), jnp.asarray(ds.x_train[0]))['params']
    jax.tree.map(np.testing.assert_array_equal, init['params'], jax.device_get(want))
  with pytest.raises(FileNotFoundError, match=r'at epoch 2 .* it has epochs \[0, 1, 3, 4\]'):
    runlib.member_variables(out, table['run_id'][0], 2)
  with pytest.raises(ValueError, match='trained without train.keep_best'):
    runlib.member_variables(out, table['run_id'][0], 'best:0')
  with pytest.raises(ValueError, match="allowed 'last', 'best', 'best:i'"):
    runlib.member_variables(out, table['run_id'][0], 'first')


def test_drift_takes_its_reference_at_its_epoch_under_its_options_only(tiny_mnist1d):
  """drift is NaN before its reference epoch, 1 at its end and below 1 after more training; a state never taken by
  then (switched on later) stays NaN past it, and one kept under other options (a run resumed with another reference
  epoch) starts over: NaN, not a value against another epoch."""
  from ddjax.train import BASE
  x, y = jnp.asarray(tiny_mnist1d.x_train[:64]), jnp.asarray(tiny_mnist1d.y_train[:64])
  hp = hp_for([3, 5], **{'optim.lr': 0.3})
  specs = [StepSpec(make_model('mlp', 5, (40,), 10, 'im2col'), 'sgd', 16, 10,
                    probes=BASE + (use('drift', {'layer': 'hidden0', 'batch': 16, 'epoch': e}),)) for e in (1, 2)]
  fns = bucket_fns(specs[0])
  init, labels = fns.init(hp, x[0]), fns.labels(hp, y)

  def evaluate(fns, state, epoch):
    out = fns.evaluate(state, hp, labels, x, x, y, jnp.float32(epoch))
    return dict(state, probes=out['probe_state']), np.asarray(out['drift_cka'])

  _, late = evaluate(fns, init, 1.5)
  state, before = evaluate(fns, init, 0.5)
  state, at = evaluate(fns, state, 1.0)
  state, _, _ = fns.epoch(state, hp, labels, x, jnp.int32(1))  # (donates init's arrays)
  state, after = evaluate(fns, state, 2.0)
  assert np.isnan(before).all() and np.allclose(at, 1.0) and (after < 1 - 1e-6).all()
  _, other = evaluate(bucket_fns(specs[1]), state, 3.0)
  assert np.isnan(late).all() and np.isnan(other).all()


def test_cka_across_seeds_and_widths_is_numpys(tmp_path):
  """probe.cka.pairs=seeds/widths on widths 3 and 7 (two buckets) x seeds 0 and 1: at the last epoch, cka_seeds is the
  linear CKA (float64 NumPy, from each member's final parameters) of hidden0's features on the 50 probe examples with
  the other seed's member of its width, and cka_w3 / cka_w7 that with the member of that width and its seed."""
  out = tmp_path / 'cka'
  cfg, table = train(out, 'seed=0,1', 'train.epochs=2', 'probes=cka', 'probe.cka.layer=hidden0', 'probe.cka.batch=50',
                     'probe.cka.pairs=seeds/widths')
  ds = load_dataset(cfg.data)
  x = np.asarray(ds.preprocess(jnp.asarray(ds.x_train[np.arange(50) * len(ds.x_train) // 50])), np.float64)
  params = lambda run: jax.tree.map(lambda a: np.asarray(a, np.float64), runlib.member_variables(out, run, 'last')[0])
  h = {(r['model.width'], r['seed']): _hidden0(params(r['run_id'])['params'], x) for _, r in table.iterrows()}
  assert sorted(table['bucket_width']) == [3, 3, 7, 7]
  for _, r in table.iterrows():
    w, seed = r['model.width'], r['seed']
    assert r['cka_seeds'][-1] == pytest.approx(_cka(h[w, seed], h[w, 1 - seed]), rel=1e-4)
    for other in (3, 7):
      assert r[f'cka_w{other}'][-1] == pytest.approx(_cka(h[w, seed], h[other, seed]), rel=1e-4)


def test_best_k_states_are_the_snapshots_at_the_k_best_epochs(tmp_path):
  """train.checkpoint_best=3 with an evaluation every epoch: best:0..2 are bitwise the snapshots at the epochs of the
  three lowest test losses of the member's own curve, best_epoch and best_test_loss its lowest; best:3 is a one-line
  error. best_mode=max keeps the highest values instead (remember_best on made-up values)."""
  from ddjax.best import remember_best
  out = tmp_path / 'best'
  _, table = train(out, 'train.eval_every=1', 'train.checkpoint_best=3', 'train.snapshot_epochs=1/2/3/4')
  for _, r in table.iterrows():
    loss = np.asarray(r['test_loss'])
    ranked = [int(e) for e in np.asarray(r['epoch'])[np.argsort(loss, kind='stable')][:3]]
    assert r['best_epoch'] == ranked[0] and r['best_test_loss'] == pytest.approx(loss.min(), rel=1e-6)
    for i, epoch in enumerate(ranked):
      jax.tree.map(np.testing.assert_array_equal, runlib.member_variables(out, r['run_id'], f'best:{i}'),
                   runlib.member_variables(out, r['run_id'], epoch))
  with pytest.raises(ValueError, match=r'keeps 3 best state\(s\) per member \(best:0 .. best:2\)'):
    runlib.member_variables(out, table['run_id'][0], 'best:3')
  spec = StepSpec(make_model('mlp', 2, (4,), 2, 'im2col'), 'sgd', 4, 2, keep_best=True, best_k=2, best_mode='max')
  state = init_member_for(spec)
  for epoch, value in enumerate([0.3, 0.1, 0.5, 0.2, 0.4], 1):
    state = remember_best(spec, dict(state, params=jax.tree.map(lambda p, e=epoch: p * 0 + e, state['params'])),
                          jnp.float32(value), epoch)
  assert list(state['best']['epoch']) == [3, 5] and np.allclose(-state['best']['loss'], [0.5, 0.4])
  assert float(jax.tree.leaves(state['best']['params'])[0][1].ravel()[0]) == 5.0


def init_member_for(spec):
  from ddjax.train import init_member
  return init_member(spec, unstack(hp_for([2]), 0), jnp.zeros(4))


def test_step_metrics_of_a_padded_member_are_the_dense_models(tiny_mnist1d):
  """One epoch of a width-3 member padded to 8: each step's loss, accuracy, gradient norm and learning rate are
  those of the dense width-3 MLP (tests/dense_reference.py) trained by hand with SGD on the member's batches."""
  from tests.test_equivalence import active_slice
  k, lr = 3, 0.05
  x, y = jnp.asarray(tiny_mnist1d.x_train[:160]), jnp.asarray(tiny_mnist1d.y_train[:160])
  spec = StepSpec(make_model('mlp', 8, (40,), 10, 'im2col'), 'sgd', 32, 10, step_probes=(use('step_metrics'),))
  hp = hp_for([k], **{'optim.lr': lr, 'optim.momentum': 0.0})
  fns = bucket_fns(spec)
  state = fns.init(hp, x[0])
  dense = DenseMLP(k)
  params = active_slice('mlp', unstack(state, 0)['params'], dense.init(jax.random.key(0), x[:2])['params'])
  _, _, steps = fns.epoch(state, hp, fns.labels(hp, y), x, jnp.int32(0))
  got = jax.tree.map(lambda v: np.asarray(v[0]), steps['step_metrics'])
  order = jax.random.permutation(jax.random.fold_in(member_key(unstack(hp, 0), 'batches'), 0), 160).reshape(5, 32)
  for i, idx in enumerate(order):
    loss_fn = lambda p, idx=idx: optax.softmax_cross_entropy_with_integer_labels(dense.apply({'params': p}, x[idx]),
                                                                                 y[idx]).mean()
    loss, grads = jax.value_and_grad(loss_fn)(params)
    right = float(np.mean(np.asarray(jnp.argmax(dense.apply({'params': params}, x[idx]), -1)) == np.asarray(y[idx])))
    norm = np.sqrt(sum(np.sum(np.asarray(g, np.float64) ** 2) for g in jax.tree.leaves(grads)))
    assert got['step_loss'][i] == pytest.approx(float(loss), rel=1e-5)
    assert got['step_accuracy'][i] == pytest.approx(right, abs=1e-6)
    assert got['step_grad_norm'][i] == pytest.approx(norm, rel=1e-4)
    assert got['step_lr'][i] == pytest.approx(lr)
    params = jax.tree.map(lambda p, g: p - lr * g, params, grads)


def test_an_epoch_cut_into_segments_trains_bitwise_alike():
  """Evaluations within an epoch cut it into segments: a ResNet with BatchNorm, on images with random crops and flips,
  trained over steps [0, 1), [1, 3), [3, 4) (one program, a while loop with the scan's body) ends with the very state
  and step values of the whole epoch's scan (every leaf, BatchNorm statistics and optimizer moments included)."""
  from ddjax.data.augment import Preprocess
  model = make_model('resnet18k', 2, (8, 8, 3), 10, 'lax')
  spec = StepSpec(model, 'adam', 8, 10, preprocess=Preprocess(augment='crop_flip'),
                  step_probes=(use('step_metrics'),))
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.uniform(size=(32, 8, 8, 3)), jnp.float32)
  y = jnp.asarray(rng.integers(0, 10, 32))
  hp = hp_for([1, 2])
  fns = bucket_fns(spec)
  init, labels = fns.init(hp, x[0]), fns.labels(hp, y)
  whole, _, whole_steps = fns.epoch(jax.tree.map(jnp.copy, init), hp, labels, x, jnp.int32(1))
  state, parts = init, []
  for start, stop in ((0, 1), (1, 3), (3, 4)):
    state, _, steps = fns.segment(state, hp, labels, x, jnp.int32(1), jnp.int32(start), jnp.int32(stop))
    parts.append(jax.tree.map(lambda v, start=start, stop=stop: v[:, start:stop], steps))
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(whole), jax.device_get(state))
  joined = jax.tree.map(lambda *a: np.concatenate(a, axis=1), *jax.device_get(parts))
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(whole_steps), joined)


def test_the_step_table_at_its_cadence(probed):
  """probe.step_metrics.every=2: steps 2, 4, ..., 16 of each member, once each, float32, with the derived columns;
  its last step's loss is a batch loss near the member's training loss."""
  out, _, table = probed
  steps = results.load_sweep(out, table='steps')
  assert set(steps['run_id']) == set(table['run_id'])
  for run, g in steps.groupby('run_id'):
    assert list(g['step']) == list(range(2, 17, 2)) and list(g['epoch']) == [1, 1, 2, 2, 3, 3, 4, 4]
  assert steps['step_loss'].dtype == np.float32 and np.all(np.isfinite(steps['step_loss']))
  np.testing.assert_allclose(steps['step_loss_bits'], steps['step_loss'] / np.log(2), rtol=1e-6)
  assert (steps['step_wd'] == 0).all() and (steps['step_lr'] == np.float32(0.05)).all()
  assert (out / 'steps.parquet').exists()  # compacted with results.parquet
  polars = results.load_sweep(out, backend='polars', table='steps')
  assert polars.shape == steps.shape


def test_bad_probe_keys_are_one_line_errors_that_write_nothing(tmp_path, capsys):
  for argv, said in [(['probes=colapse'], "did you mean collapse?"),
                     (['probe.collapse.layr=x'], 'probe collapse has the options every, layer'),
                     (['probes=collapse', 'probe.collapse.layer=conv9'], 'has the tap points hidden0, hidden1'),
                     (['probe.losses.every=2epochs'], 'probe losses is always on'),
                     (['train.sharpness=5', 'probe.sharpness.iters=3'], 'both set the same option'),
                     (['probes=collapse', 'probe.collapse.every=at:10/900'], 'epoch 900 is after the last'),
                     (['probe.sharpness.iters=0'], 'must be >= 1'),
                     (['probe.collapse.every=3'], 'allowed eval (every evaluation), Nepochs'),
                     (['probe.step_metrics.every=0'], 'every N optimizer steps'),
                     (['probe.sharpness.iters=5,10'], 'not swept'),
                     (['train.snapshot_epochs=1/x'], 'expected epochs E/E/... (0: at init)'),
                     (['train.snapshot_epochs=0/900'], 'epoch 900 is after the last'),
                     (['probes=drift', 'probe.drift.epoch=0'], 'must be >= 1'),
                     (['probes=drift', 'probe.drift.epoch=5000'], 'probe drift runs at epoch 5000, after the last'),
                     (['probes=cka', 'probe.cka.pairs=seed'], 'must be seeds, widths or seeds/widths'),
                     (['probes=cka', 'probe.cka.layer=hidden0/hidden0'], 'tap points A/B/..., each once'),
                     (['probes=drift', 'probe.drift.layer=hidden0/'], 'tap points A/B/..., each once'),
                     (['probes=drift', 'probe.drift.layer=hidden0/hidden9'], "bad value 'hidden9' for probe.drift"),
                     (['probes=collapse', 'probe.collapse.layer=hidden0/hidden1'], 'one tap point of hidden0, hidden1'),
                     (['model.proj=4'], 'mlp has no projector (allowed: 0; models that take it: resnet1d_small'),
                     (['model.name=resnet1d_small', 'model.proj=0,4'], 'a member without a projector and members '
                                                                       'with one are different models'),
                     (['train.best_mode=max'], 'but none are kept: set train.keep_best=true'),
                     (['model.norm=none'], 'mlp has no BatchNorm to set (allowed: auto; models that take it: '
                                            'resnet1d, resnet18k)'),
                     (['data.name=linear_teacher', 'model.name=deep_linear', 'data.noise=0', 'train.keep_best=true',
                       'train.best_metric=test_error'], 'is a regression task, with no errors'),
                     (['data.name=linear_teacher', 'model.name=deep_linear', 'data.noise=0', 'probes=collapse'],
                      'a regression task has no classes to collapse')]:
    out = tmp_path / 'never'
    with pytest.raises(SystemExit) as e:
      cli.main('double_descent', PRESETS, BASE[:1] + argv + ['--out', str(out)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and said in err and err.count('\n') == 1, (argv, err)
    assert not out.exists()
  with pytest.raises(SystemExit):
    cli.main('double_descent', PRESETS, ['--help'])
  shown = capsys.readouterr().out
  assert 'probe.sharpness.iters=20' in shown and 'step_metrics (step probe, every 1)' in shown
  assert 'taps: hidden0, hidden1' in shown


def test_probes_from_a_yaml_file_nested_or_dotted(tmp_path):
  from ddjax.probes import use
  path = tmp_path / 'probes.yaml'
  path.write_text('model.name: mlp\nprobes: [collapse, sharpness]\nprobe:\n  collapse: {layer: hidden1}\n'
                  'probe.sharpness.every: 2epochs\n')
  cfg, _, _ = cfglib.load_config_file(path, cfglib.Config(), {})
  assert cfglib.probe_uses(cfg) == {'collapse': {'layer': 'hidden1'}, 'sharpness': {'every': '2epochs', 'batch': 1000}}
  assert use('sharpness', cfglib.probe_uses(cfg)['sharpness']).every.n == 2


def test_a_complete_member_without_a_probe_says_so(plain, tmp_path):
  import shutil
  out = tmp_path / 'store'
  shutil.copytree(plain[0], out)
  said = []
  cfg, sweep = cfglib.apply_overrides(cfglib.Config(), {}, BASE + ['probes=collapse'])
  runlib.run(cfg, sweep, expand(cfg, sweep), out, progress=False, log=said.append)
  line = [s for s in said if 'did not record' in s]
  assert line == ['job 1/1: 2 complete member(s) did not record probe(s) collapse; train them again with --rerun '
                  'KEY=VALUE to record them (probes leave run ids alone)']


PLUGIN = '''
    import jax
    import jax.numpy as jnp
    from ddjax.probes import register_probe


    @register_probe('hidden_mean', columns=('hidden_mean',), help="mean of the first hidden layer's active units")
    def hidden_mean(ctx):
      _, h = ctx.features(ctx.x_test, 'hidden0')
      return {'hidden_mean': h.sum() / (h.shape[0] * ctx.hp['width'])}


    @register_probe('update_size', kind='step', columns=('update_size',), help='norm of the parameter change')
    def update_size(ctx):
      change = jax.tree.map(jnp.subtract, ctx.after['params'], ctx.before['params'])
      return {'update_size': jnp.sqrt(sum(jnp.sum(jnp.square(c)) for c in jax.tree.leaves(change)))}
'''


@pytest.fixture(scope='module')
def plugged(tmp_path_factory):
  where = tmp_path_factory.mktemp('plugin')
  (where / 'my_probes.py').write_text(textwrap.dedent(PLUGIN))
  out = where / 'store'
  cli.main('double_descent', PRESETS, BASE + ['--plugin', str(where / 'my_probes.py'), '--out', str(out),
                                              'probes=hidden_mean,update_size,step_metrics', '--no-progress'])
  return out, results.load(out)


def test_a_plugin_probe_reads_a_tap_point(plugged):
  """Its column is the NumPy mean of the member's own hidden units on the test set, from its final parameters."""
  out, table = plugged
  cfg, _ = cfglib.apply_overrides(cfglib.Config(), {}, BASE)
  ds = load_dataset(cfg.data)
  x = np.asarray(ds.preprocess(jnp.asarray(ds.x_test)), np.float64)
  for _, row in table.iterrows():
    params = runlib.member_variables(out, row['run_id'], 'last')[0]['params']
    h = np.maximum(x @ np.asarray(params['dense0']['kernel'], np.float64) + np.asarray(params['dense0']['bias']), 0)
    k = row['model.width']
    assert row['hidden_mean'][-1] == pytest.approx(h[:, :k].mean(), rel=1e-5)
    assert h[:, k:].max(initial=0) == 0  # masked units are zero
    got = runlib.member_features(out, row['run_id'], 'hidden0', ds.x_test)
    np.testing.assert_allclose(got, h, rtol=1e-5, atol=1e-6)


def test_a_plugin_step_probe_lands_in_the_step_table(plugged):
  """Plain SGD moves the parameters by lr times the gradient: the plugin's update norm is 0.05 x step_grad_norm."""
  out, table = plugged
  steps = results.load_sweep(out, table='steps')
  assert len(steps) == len(table) * 4 * 4 and steps['update_size'].dtype == np.float32  # members x epochs x steps
  np.testing.assert_allclose(steps['update_size'], 0.05 * steps['step_grad_norm'], rtol=1e-4)
