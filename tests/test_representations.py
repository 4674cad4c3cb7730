"""The representations study (issue 17): its two BatchNorm models and the projector's d masked like width, against
plain Flax models of one width (tests/dense_reference.py)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ddjax import config as cfglib
from ddjax import results
from ddjax import run as runlib
from ddjax.nn.models import make_model
from ddjax.train import StepSpec, init_member
from tests.dense_reference import DenseCNN1DBN, DenseResNet1DSmall
from tests.helpers import close, hp_for, unstack
from tests.test_equivalence import (active_slice, five_batches, inactive_abs_max, train_both_and_compare,
                                    with_garbage)

K, W = 3, 8   # member width and padded width
D, P = 4, 6   # the member's projector dimension and the job's largest
DENSE = {'resnet1d_small': DenseResNet1DSmall, 'cnn1d_bn': DenseCNN1DBN}


def member(name, proj, x):
  model = make_model(name, W, (40,), 10, 'im2col', proj=P if proj else 0)
  spec = StepSpec(model, 'sgd', 32, 10)
  hp = hp_for([K], **{'model.proj': D if proj else 0, 'optim.lr': 0.05})
  state = unstack(jax.jit(jax.vmap(lambda hp: init_member(spec, hp, x[0])))(hp), 0)
  return model, spec, unstack(hp, 0), state


@pytest.mark.parametrize('name,proj', [('resnet1d_small', False), ('resnet1d_small', True), ('cnn1d_bn', False),
                                       ('cnn1d_bn', True)])
def test_masked_member_is_the_dense_model(name, proj, tiny_mnist1d):
  """Logits (train and eval BatchNorm) and gradients of a width-3 member padded to 8 (projector: d = 4 of 6) equal
  the dense width-3 model's, with random numbers in every masked entry, which get zero gradient."""
  x, y = jnp.asarray(tiny_mnist1d.x_train[:32]), jnp.asarray(tiny_mnist1d.y_train[:32])
  model, _, hp, state = member(name, proj, x)
  sizes = {'proj': hp['proj']} if proj else {}
  dense = DENSE[name](K, 10, D if proj else 0)
  dense_vars = jax.jit(dense.init)(jax.random.key(0), x[:2])
  params = active_slice(name, state['params'], dense_vars['params'])
  stats = active_slice(name, state['batch_stats'], dense_vars['batch_stats'])
  assert inactive_abs_max(name, state['params'], dense_vars['params']) == 0.0
  garbage = {'params': with_garbage(name, state['params'], dense_vars['params'], 1),
             'batch_stats': with_garbage(name, state['batch_stats'], dense_vars['batch_stats'], 2)}
  for train in (False, True):
    kw = {'mutable': ['batch_stats']} if train else {}
    got = jax.jit(lambda v: model.apply(v, x, K, train=train, **kw, **sizes))(garbage)
    want = jax.jit(lambda v: dense.apply(v, x, train=train, **kw))({'params': params, 'batch_stats': stats})
    close(got[0] if train else got, want[0] if train else want)

  def loss(apply, p, s):
    logits, _ = apply({'params': p, 'batch_stats': s}, train=True, mutable=['batch_stats'])
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  g = jax.jit(jax.grad(lambda p: loss(lambda v, **kw: model.apply(v, x, K, **kw, **sizes), p,
                                      garbage['batch_stats'])))(garbage['params'])
  want = jax.jit(jax.grad(lambda p: loss(lambda v, **kw: dense.apply(v, x, **kw), p, stats)))(params)
  close(active_slice(name, g, dense_vars['params']), want)
  assert inactive_abs_max(name, g, dense_vars['params']) == 0.0


@pytest.mark.parametrize('name,optimizer', [('resnet1d_small', 'sgd'), ('cnn1d_bn', 'adam')])
def test_five_steps_with_a_projector_match_dense(name, optimizer, tiny_mnist1d):
  """Five optimizer steps of a member with projector d = 4 in a model padded to 6 (and width 3 of 8) equal the dense
  model with a 4-dimensional projector trained by optax: d is masked exactly like width."""
  lr = 5e-2 if optimizer == 'sgd' else 1e-3
  spec = StepSpec(make_model(name, W, (40,), 10, 'im2col', proj=P), optimizer, 32, 10)
  hp = unstack(hp_for([K], **{'optim.lr': lr, 'model.proj': D}), 0)
  tx = optax.sgd(lr, momentum=0.9) if optimizer == 'sgd' else optax.adam(lr)
  train_both_and_compare(name, spec, hp, DENSE[name](K, 10, D), tx, *five_batches(tiny_mnist1d))


# ---------------------------------------------------------------------------------------------------------------
# The experiment's smoke preset end to end (one optimizer: a job per model and part), against features recomputed
# from its snapshots and checkpoints.

SMOKE = ('--preset', 'smoke', '--no-progress', 'optim.name=sgd', 'optim.lr=0.01', 'train.max_buckets=1',
         'train.snapshot_epochs=1')


@pytest.fixture(scope='module')
def smoke(tmp_path_factory):
  from tests.helpers import run_experiment
  out = tmp_path_factory.mktemp('representations')
  return out, run_experiment('representations', out, *SMOKE, timeout=600)


def _cka64(a, b):
  a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
  a, b = a - a.mean(0), b - b.mean(0)
  return np.linalg.norm(b.T @ a) ** 2 / (np.linalg.norm(a.T @ a) * np.linalg.norm(b.T @ b))


def test_cka_probes_during_a_run_equal_cka_of_recomputed_features(smoke):
  """4A (cka_w4_<a>_<b>: layer a of the width-2 member against layer b of the width-4 one), 4B (drift_cka_<a>:
  against the epoch-1 snapshot) and 4C (cka_seed1_<a>: seed 0 against seed 1) as recorded during the run equal the
  float64 linear CKA of features recomputed from the members' snapshots and final checkpoints
  (ddjax.run.member_features) on the probe's 40 evenly spaced training examples."""
  from ddjax.data import load_dataset
  out, _ = smoke
  store = out / 'modelwise'
  df = results.load(store)
  cfg = cfglib.from_dict(json.loads(df['config'].iloc[0]))
  x_train = load_dataset(cfg.data).x_train
  x = x_train[np.arange(40) * len(x_train) // 40]
  names = [f'layer{i}' for i in range(4)]
  for model, g in df.groupby('model.name'):
    run = {(r['model.width'], r['seed']): r for _, r in g.iterrows()}
    feats = {(w, s, n, when): runlib.member_features(store, run[w, s]['run_id'], n, x, when)
             for (w, s) in run for n in names for when in ('last', 1)}
    for a in names:
      for b in names:
        got = float(np.asarray(run[2, 0][f'cka_w4_{a}_{b}'])[-1])
        assert got == pytest.approx(_cka64(feats[2, 0, a, 'last'], feats[4, 0, b, 'last']), rel=1e-4), (model, a, b)
      for (w, s) in run:
        assert float(np.asarray(run[w, s][f'drift_cka_{a}'])[-1]) == pytest.approx(
            _cka64(feats[w, s, a, 1], feats[w, s, a, 'last']), rel=1e-4), (model, w, s, a)
      for w in (2, 4):
        assert float(np.asarray(run[w, 0][f'cka_seed1_{a}'])[-1]) == pytest.approx(
            _cka64(feats[w, 0, a, 'last'], feats[w, 1, a, 'last']), rel=1e-4), (model, w, a)
        assert float(np.asarray(run[w, 0][f'cka_seeds_{a}'])[-1]) == float(np.asarray(run[w, 0][f'cka_seed1_{a}'])[-1])
  first = np.asarray(run[2, 0]['epoch']).tolist().index(1)
  assert float(np.asarray(run[2, 0]['drift_cka_layer3'])[first]) == pytest.approx(1.0, abs=1e-6)  # its reference


def _numpy_collapse(h, y, w_KxD, logits, k=10):
  """nc1_trace, nc2_etf, nc3, nc4 in float64 NumPy (docs/representations.md's definitions)."""
  h = h.astype(np.float64)
  means = np.stack([h[y == c].mean(0) for c in range(k)])
  centred = means - means.mean(0)
  within = np.square(h - means[y]).sum(1).mean()
  gram = centred @ centred.T
  etf = np.eye(k) - np.ones((k, k)) / k
  unit = lambda a: a / np.linalg.norm(a)
  nearest = np.argmin(np.square(h[:, None, :] - means[None]).sum(-1), 1)
  return {'nc1_trace': within / (np.square(centred).sum() / k), 'nc2_etf': np.linalg.norm(unit(gram) - unit(etf)),
          'nc3': np.linalg.norm(unit(w_KxD.astype(np.float64)) - unit(centred)),
          'nc4': np.mean(nearest != np.argmax(logits, 1))}


def test_neural_collapse_of_projected_features_is_numpys(smoke):
  """Each projector member's final NC1-NC4 (collapse at the classifier's input: the d-dimensional projection) equal
  NumPy's on its features recomputed from its final checkpoint over the whole training set, with its own noisy
  labels; the projector's padded dimensions are zero in its features."""
  from ddjax.data import load_dataset
  from ddjax.members import member_hp
  from ddjax.train import member_key
  from ddjax.data.noise import noisy_labels
  out, _ = smoke
  store = out / 'projector'
  df = results.load(store)
  ds = load_dataset(cfglib.from_dict(json.loads(df['config'].iloc[0])).data)
  for _, r in df.iterrows():
    variables, _ = runlib.member_variables(store, r['run_id'], 'last')
    h = runlib.member_features(store, r['run_id'], 'projected', ds.x_train)
    d = int(r['model.proj'])
    assert np.abs(h[:, d:]).max(initial=0.0) == 0.0
    member = {k: r[k] for k in cfglib.MEMBER_KEYS}
    y = np.asarray(noisy_labels(member_key(member_hp(member), 'noise'), jnp.asarray(ds.y_train), r['data.noise'], 10))
    w = np.asarray(variables['params']['head']['kernel'])  # (d padded, classes), no bias
    want = _numpy_collapse(h[:, :d], y, w[:d].T, h @ w)
    for column, value in want.items():
      assert float(np.asarray(r[column])[-1]) == pytest.approx(value, rel=2e-4, abs=1e-6), (d, column)


def test_figures_draw_the_tables_numbers_and_the_study_preset_plans(smoke, monkeypatch, capsys):
  """summary.png's panels hold the stores' numbers (mean final test error per width; the width-2 member's 4A
  matrix), each figure names its data, noise and epochs, and the study preset's --dry-run lists its jobs:
  4 x 33 members (two models x two optimizers, 11 widths x 3 seeds), 2 x 2 and 2 x 8 (d a member axis)."""
  import plots.representations as pr
  from experiments import representations
  out, stdout = smoke
  assert {p.name for p in out.iterdir() if p.suffix == '.png'} == {'summary.png', 'modelwise.png', 'cka.png',
                                                                   'epochwise.png', 'projector.png'}
  drawn = {}
  monkeypatch.setattr(pr, 'save', lambda fig, path: drawn.setdefault(path.name, fig))
  pr.summary_figure(pr.stores(out), out / 'summary.png')
  fig = drawn['summary.png']
  df = pr.with_keys(results.load(out / 'modelwise'))
  first = df[(df['model.name'] == df['model.name'].iloc[0]) & (df['optim.name'] == 'sgd')]
  final_test = first['test_error'].map(lambda v: float(np.asarray(v)[-1]))
  want = final_test.groupby(first['model.width']).mean()
  line = next(ln for ln in fig.axes[0].lines if ln.get_label().startswith('test'))
  np.testing.assert_allclose(line.get_ydata(), want.to_numpy(), rtol=1e-6)
  row = first[(first['model.width'] == 2) & (first['seed'] == 0)].iloc[0]
  matrix = [[float(np.asarray(row[f'cka_w4_layer{a}_layer{b}'])[-1]) for b in range(4)] for a in range(4)]
  np.testing.assert_allclose(fig.axes[3].images[0].get_array(), matrix, rtol=1e-6)
  assert '20% label noise' in fig.get_suptitle() and 'MNIST-1D' in fig.get_suptitle()
  assert 'resnet1d_small, SGD lr 0.01: test error' in stdout
  capsys.readouterr()
  representations.main(['--preset', 'study', '--dry-run', '--out', str(out / 'plan')])
  plan = capsys.readouterr().out
  assert '4 job(s), 132 member(s)' in plan and '2 job(s), 4 member(s)' in plan and '2 job(s), 16 member(s)' in plan
  assert not (out / 'plan').exists()


def test_a_probe_state_of_another_rank_restores_at_its_init():
  """Resuming a drift probe reconfigured from one layer to several (its Gram state (N, N) -> (L, N, N)): the stored
  state cannot fill the new one, which keeps its init value (options_tag tells drift it was never taken); leaves of
  the same rank are copied on the block both shapes share, as a wider bucket's are."""
  from ddjax.checkpoint import relayout
  old = [{'probes': {'drift': {'state': {'gram': np.ones((1, 4, 4), np.float32)}}}, 'params': np.ones((1, 3))}]
  like = [{'probes': {'drift': {'state': {'gram': jnp.zeros((1, 2, 4, 4))}}}, 'params': jnp.zeros((1, 5))}]
  new = relayout(old, [[7]], like, [[7]])[0]
  np.testing.assert_array_equal(new['probes']['drift']['state']['gram'], np.zeros((1, 2, 4, 4)))
  np.testing.assert_array_equal(new['params'], [[1, 1, 1, 0, 0]])
