"""Deep linear networks: the linear teacher's data, the masked model against plain matrix products, model.init_scale,
Saxe et al.'s two-layer solution, the conservation of the layers' imbalance under gradient flow (O(lr) drift under
gradient descent), and `python -m experiments.deep_linear` end to end."""

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from scipy.integrate import solve_ivp

from ddjax import analysis
from ddjax import config as cfglib
from ddjax.data.teacher import linear_teacher, parse_spectrum
from ddjax.nn.models import make_model
from ddjax.probes import use
from ddjax.train import BASE, StepSpec, bucket_fns, init_member, train_step
from tests.helpers import close, hp_for, run_experiment, unstack

DIM, K, W = 6, 3, 8  # teacher dimension, member width, padded width
SPECTRUM = '2/1/0.5'


@pytest.fixture(scope='module')
def teacher():
  return linear_teacher(DIM, SPECTRUM, num_samples=120, train_split=0.5, seed=3)


def test_teacher_inputs_are_white_and_its_modes_are_the_spectrum(teacher):
  x, y = teacher.x_train.astype(np.float64), teacher.y_train.astype(np.float64)
  n = len(x)
  np.testing.assert_allclose(x.T @ x / n, np.eye(DIM), atol=1e-5)
  sigma = x.T @ y / n  # = W*^T for white inputs
  np.testing.assert_allclose(np.linalg.svd(sigma, compute_uv=False), [2, 1, 0.5, 0, 0, 0], atol=1e-5)
  # the targets are one linear map of the inputs, on the test set too
  w, *_ = np.linalg.lstsq(x, y, rcond=None)
  np.testing.assert_allclose(teacher.x_test @ w, teacher.y_test, atol=1e-4)
  assert teacher.x_test.shape == (60, DIM) and abs(teacher.x_test.std() - 1) < 0.15  # fresh N(0, I) draws
  assert dict(teacher.info) == {'rank': 3, 'teacher_s1': 2.0, 'teacher_s2': 1.0, 'teacher_s3': 0.5}
  assert teacher.task == 'regress' and teacher.modes == 3 and teacher.num_classes == DIM
  again, other = linear_teacher(DIM, SPECTRUM, 120, 0.5, seed=3), linear_teacher(DIM, SPECTRUM, 120, 0.5, seed=4)
  assert np.array_equal(again.y_train, teacher.y_train) and not np.allclose(other.y_train, teacher.y_train)


def test_spectrum_and_teacher_keys_are_checked():
  assert parse_spectrum('0.5/4/1') == [4.0, 1.0, 0.5]
  base = ['data.name=linear_teacher', 'model.name=deep_linear']
  bad = {'data.spectrum=4/x': "bad value '4/x' for data.spectrum: 'x' is not a positive number",
         'data.spectrum=4/-1': "'-1' is not a positive number",
         'data.dim=2': "3 singular values, more than data.dim=2",
         'data.num_samples=20': 'it leaves 10 training examples, fewer than data.dim=16',
         'model.init_scale=0': 'bad value 0.0 for model.init_scale: must be a finite number > 0',
         'data.spectrum=2/1/2': "'2' is given twice (the singular values must differ",
         'data.noise=0.1': 'linear_teacher is a regression task',
         'model.name=cnn1d': 'cnn1d does not fit data.name=linear_teacher'}
  for override, message in bad.items():
    with pytest.raises(cfglib.ConfigError, match=message.replace('(', r'\(').replace('.', r'\.')):
      extra = {'data.dim=2': ['data.spectrum=4/2/1'], 'data.num_samples=20': ['data.train_split=0.5']}.get(override, [])
      cfglib.apply_overrides(cfglib.Config(), {}, base + extra + [override])


def _dense_kernels(params, depth):
  """The active blocks of a width-K member's kernels: input (DIM x K), hidden (K x K), head (K x DIM)."""
  ks = [params[f'dense{i}']['kernel'] for i in range(depth)] + [params['head']['kernel']]
  return [ks[0][:, :K]] + [k[:K, :K] for k in ks[1:-1]] + [ks[-1][:K, :]]


def test_masked_member_is_the_product_of_its_active_blocks(teacher):
  """Invariant 1 for deep_linear: output, loss (||y - out||^2 summed over outputs, mean over examples), gradients
  and 5 SGD steps equal those of plain matrix products of the member's active blocks; masked entries stay zero."""
  depth, lr = 2, 0.05
  model = make_model('deep_linear', W, (DIM,), DIM, 'im2col', depth=depth)
  spec = StepSpec(model, 'sgd', 20, DIM, task='regress')
  hp = unstack(hp_for([K], **{'optim.lr': lr, 'optim.momentum': 0.0}), 0)
  state = init_member(spec, hp, jnp.asarray(teacher.x_train[0]))
  ks = _dense_kernels(state['params'], depth)
  x, y = jnp.asarray(teacher.x_train[:20]), jnp.asarray(teacher.y_train[:20])

  def dense_loss(ks):
    out = x
    for k in ks:
      out = out @ k
    return jnp.mean(jnp.sum((out - y) ** 2, axis=1))

  close(model.apply({'params': state['params']}, x, K), x @ ks[0] @ ks[1] @ ks[2])
  step = jax.jit(lambda s: train_step(spec, s, hp, x, y))
  for _ in range(5):
    want, grads = jax.value_and_grad(dense_loss)(ks)
    state, loss = step(state)
    assert float(loss) == pytest.approx(float(want), rel=1e-5)
    ks = [k - lr * g for k, g in zip(ks, grads)]
    close(_dense_kernels(state['params'], depth), ks)
  active = sum(float(jnp.abs(k).sum()) for k in _dense_kernels(state['params'], depth))
  assert sum(float(jnp.abs(v).sum()) for v in jax.tree.leaves(state['params'])) == pytest.approx(active, rel=1e-6)


def test_init_scale_multiplies_the_init_of_any_model():
  """Members that differ only in model.init_scale start from the same parameters times their scale (exactly), in
  one bucket; a scale of 1 is the default init."""
  for name, shape in (('deep_linear', (DIM,)), ('mlp', (40,)), ('resmlp', (36,))):  # resmlp: LayerNorm gains too
    model = make_model(name, W, shape, DIM, 'im2col', depth=1)
    spec = StepSpec(model, 'adam', 4, DIM)
    hp = hp_for([K, K, K], **{'model.init_scale': [1.0, 0.1, 3.0]})
    params = bucket_fns(spec).init(hp, jnp.zeros(shape))['params']
    base = jax.tree.map(lambda p: p[0], params)
    for i, c in ((1, 0.1), (2, 3.0)):
      jax.tree.map(lambda p, b: np.testing.assert_array_equal(p[i], b * np.float32(c)), params, base)
    # scale 1: the model's own init (seed 0, stream 0), compiled as the run compiles it (eager, op by op, XLA may
    # round the draws' affine map differently: 1 ulp on an AVX-512 CPU)
    init = jax.jit(model.init, static_argnums=2)
    default = init({'params': jax.random.fold_in(jax.random.key(0), 0)}, jnp.zeros((1, *shape)), K)['params']
    jax.tree.map(np.testing.assert_array_equal, base, default)


def test_saxe_mode_solves_its_ode():
  """ddjax.analysis.saxe_mode against a numerical solution of du/dt = 2u(s - u); saxe_time inverts it."""
  s, u0 = 1.5, 1e-3
  t = np.linspace(0, 6, 50)
  ode = solve_ivp(lambda _, u: 2 * u * (s - u), (0, 6), [u0], t_eval=t, rtol=1e-10, atol=1e-12)
  np.testing.assert_allclose(analysis.saxe_mode(t, s, u0), ode.y[0], rtol=1e-6, atol=1e-9)
  assert analysis.saxe_mode(analysis.saxe_time(s, u0, 0.9), s, u0) == pytest.approx(0.9, rel=1e-9)


def _run_gd(spec, state, hp, labels, ds, steps, every=1):
  """Full-batch GD for `steps` steps (the library's epoch program: one step per epoch at full batch), evaluating
  every `every` steps: (state, list of metric dicts, the steps they were taken after)."""
  fns = bucket_fns(spec)
  x_train, x_test, y_test = (jnp.asarray(a) for a in (ds.x_train, ds.x_test, ds.y_test))
  out, at = [], []
  for i in range(1, steps + 1):
    state, _, _ = fns.epoch(state, hp, labels, x_train, jnp.int32(i))
    if i % every == 0:
      out.append(jax.device_get(fns.evaluate(state, hp, labels, x_train, x_test, y_test, jnp.float32(0))))
      at.append(i)
  return state, out, np.asarray(at)


def test_two_layer_modes_follow_saxe_solution(teacher):
  """From a decoupled, balanced init (hidden unit r carries mode r with strength u0), full-batch GD moves each
  mode as Saxe et al.'s two-layer solution (references: du/dt = 2u(s - u), t = (1/(2s)) ln[u_f (s - u0) /
  (u0 (s - u_f))], with t = 2 lr x steps since the loss has no 1/2), the modes stay uncoupled and the layers
  balanced."""
  lr, u0 = 0.002, 1e-3
  model = make_model('deep_linear', W, (DIM,), DIM, 'im2col', depth=1)
  spec = StepSpec(model, 'sgd', len(teacher.y_train), DIM, task='regress',
                    probes=(*BASE, use('modes', {'count': 3})))
  hp = hp_for([K], **{'optim.lr': lr, 'optim.momentum': 0.0})
  state = bucket_fns(spec).init(hp, jnp.asarray(teacher.x_train[0]))
  x, y = teacher.x_train.astype(np.float64), teacher.y_train.astype(np.float64)
  a, s, bt = np.linalg.svd(x.T @ y / len(x))  # input directions a_r, output directions b_r
  k1, k2 = np.zeros((1, DIM, W), np.float32), np.zeros((1, W, DIM), np.float32)
  k1[0, :, :K] = np.sqrt(u0) * a[:, :K]
  k2[0, :K, :] = np.sqrt(u0) * bt[:K]
  state['params'] = {'dense0': {'kernel': jnp.asarray(k1)}, 'head': {'kernel': jnp.asarray(k2)}}
  labels = jnp.asarray(teacher.y_train)[None]
  steps = 1800  # t = 7.2: the weakest mode (s = 0.5) reaches s / 2 at t = 6.2 and 0.73 s by the end
  state, metrics, at = _run_gd(spec, state, hp, labels, teacher, steps, every=10)
  t = 2 * lr * at
  for r, s_r in enumerate(s[:K], start=1):
    got = np.asarray([m[f'mode_{r}'][0] for m in metrics])
    want = s_r / (1 + (s_r / u0 - 1) * np.exp(-2 * s_r * t))  # references.md's solution, written out here
    np.testing.assert_allclose(got, want, atol=0.01 * s_r)  # GD against gradient flow: O(lr s), 0.6% of s here
    half = t[np.argmax(got >= s_r / 2)]
    predicted = np.log((s_r / 2) * (s_r - u0) / (u0 * (s_r - s_r / 2))) / (2 * s_r)
    assert abs(half - predicted) <= 0.02 * predicted + 2 * lr * 10  # within 2% and the 10-step grid
  w = np.asarray(state['params']['dense0']['kernel'][0] @ state['params']['head']['kernel'][0], np.float64)
  coupled = a.T @ w @ bt.T
  assert np.abs(coupled - np.diag(np.diag(coupled))).max() < 1e-4  # modes never mix
  assert max(m['imbalance'][0] for m in metrics) < 1e-5  # balanced layers stay balanced


def _imbalance_matrices(params):
  k1, k2 = (np.asarray(params[n]['kernel'][0], np.float64) for n in ('dense0', 'head'))
  return k2 @ k2.T - k1.T @ k1  # W2^T W2 - W1 W1^T with W = K^T


def test_imbalance_is_conserved_up_to_order_lr(teacher):
  """Gradient flow conserves W2^T W2 - W1 W1^T (references: Arora et al.); gradient descent changes it by O(lr) over a
  fixed flow time: a quarter of the rate, a quarter of the drift. The recorded `imbalance` is its Frobenius norm."""
  drifts = []
  for lr in (0.02, 0.005):
    model = make_model('deep_linear', W, (DIM,), DIM, 'im2col', depth=1)
    spec = StepSpec(model, 'sgd', len(teacher.y_train), DIM, task='regress',
                    probes=(*BASE, use('modes', {'count': 3})))
    hp = hp_for([K], **{'optim.lr': lr, 'optim.momentum': 0.0, 'model.init_scale': 0.5})
    state = bucket_fns(spec).init(hp, jnp.asarray(teacher.x_train[0]))
    start = _imbalance_matrices(state['params'])
    steps = int(round(5.0 / lr))  # flow time t = 2 lr x steps = 10: every mode learned
    state, metrics, _ = _run_gd(spec, state, hp, jnp.asarray(teacher.y_train)[None], teacher, steps, every=steps)
    end = _imbalance_matrices(state['params'])
    assert metrics[-1]['imbalance'][0] == pytest.approx(np.linalg.norm(end), rel=1e-4)
    assert metrics[-1]['test_loss'][0] < 1e-3  # the teacher is learned
    drifts.append(np.linalg.norm(end - start) / np.linalg.norm(start))
  assert drifts[1] < 0.02 and 3.0 < drifts[0] / drifts[1] < 5.0, drifts


SMOKE = ['--preset', 'smoke', '--no-progress']


@pytest.fixture(scope='module')
def smoke_run(tmp_path_factory):
  out = tmp_path_factory.mktemp('deep_linear') / 'run'
  return out, run_experiment('deep_linear', out, *SMOKE)


def test_experiment_learns_as_many_modes_as_the_student_has_width(smoke_run):
  """The smoke preset (a rank-2 teacher, widths 1 and 4): the width-4 student learns both modes, the width-1 student
  (rank 1) only the stronger one; mode strengths are the NumPy projection of the product of each member's kernels."""
  out, stdout = smoke_run
  df = pd.read_parquet(out / 'results.parquet')
  assert len(df) == 4 and set(df['model.width']) == {1, 4} and set(df['model.init_scale']) == {0.1, 1.0}
  for _, r in df.iterrows():
    m1, m2 = r['mode_1'][-1] / r['teacher_s1'], r['mode_2'][-1] / r['teacher_s2']
    assert m1 == pytest.approx(1.0, abs=0.02)
    assert m2 == pytest.approx(1.0 if r['model.width'] == 4 else 0.0, abs=0.02)
    assert len(r['imbalance']) == len(r['epoch']) and np.isfinite(r['test_loss'][-1])
  assert (out / 'modes.png').stat().st_size > 10_000 and (out / 'learning_times.png').exists()
  assert 'half strength at t =' in stdout and 'figure:' in stdout


def test_mode_metric_equals_numpy_on_a_checkpointed_member(smoke_run):
  from ddjax.run import member_variables
  out, _ = smoke_run
  df = pd.read_parquet(out / 'results.parquet')
  ds = linear_teacher(4, '2/1', num_samples=40, train_split=0.5, seed=42)
  x, y = ds.x_train.astype(np.float64), ds.y_train.astype(np.float64)
  a, s, bt = np.linalg.svd(x.T @ y / len(x))
  for _, r in df.iterrows():
    variables, _ = member_variables(out, r['run_id'], 'last')
    w = np.asarray(variables['params']['dense0']['kernel'], np.float64) @ np.asarray(
        variables['params']['head']['kernel'], np.float64)
    np.testing.assert_allclose([r['mode_1'][-1], r['mode_2'][-1]], np.diag(a.T @ w @ bt.T)[:2], atol=1e-5)


@pytest.mark.parametrize('optimizer', ['sgd', 'adam'])
def test_shared_member_shortcuts_and_the_end_to_end_evaluation_change_no_number(teacher, optimizer):
  """A bucket whose members all have the padded width and no momentum or weight decay skips the all-ones masks, the
  momentum buffer and 0 x p (StepSpec.full_width, momentum, decay), and a linear model evaluates through its
  end-to-end map: two epochs of minibatch steps and the evaluation equal those of the general program (masks,
  optax's chain, a forward pass per example); the momentum buffer is left as it was."""
  model = make_model('deep_linear', W, (DIM,), DIM, 'im2col', depth=2)
  hp = hp_for([W, W, W], **{'optim.lr': 0.01, 'optim.momentum': 0.0, 'optim.wd': 0.0, 'seed': [0, 1, 2]})
  x, y = jnp.asarray(teacher.x_train), jnp.asarray(teacher.y_train)
  runs = []
  for shortcuts in (False, True):
    spec = StepSpec(model, optimizer, 10, DIM, task='regress', full_width=shortcuts, momentum=not shortcuts,
                    decay=not shortcuts, linear=shortcuts)
    fns = bucket_fns(spec)
    state, labels = fns.init(hp, x[0]), fns.labels(hp, y)
    for e in range(2):
      state, _, _ = fns.epoch(state, hp, labels, x, jnp.int32(e))
    metrics = fns.evaluate(state, hp, labels, x, jnp.asarray(teacher.x_test), jnp.asarray(teacher.y_test),
                           jnp.float32(2))
    runs.append((jax.tree.map(np.asarray, state), {k: np.asarray(v) for k, v in metrics.items()}))
  (general, m_general), (short, m_short) = runs
  close(short['params'], general['params'], rtol=1e-6)
  for k in ('train_loss', 'test_loss', 'weight_norm', 'update_norm'):
    close(m_short[k], m_general[k], rtol=1e-5)
  if optimizer == 'sgd':  # the buffer kept its init value (0); optax's would hold the last gradient
    assert all(not np.any(b) for b in jax.tree.leaves(short['opt'])) and any(np.any(b) for b in
                                                                             jax.tree.leaves(general['opt']))
  else:
    close(short['opt'], general['opt'], rtol=1e-5)
