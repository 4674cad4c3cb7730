"""Memory estimates against XLA's accounting of the compiled step, and buckets split to fit a budget."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ddjax import config as cfglib
from ddjax.members import expand
from ddjax.memory import member_bytes_split, split_to_fit
from ddjax.nn.models import make_model
from ddjax.buckets import make_buckets
from ddjax.train import StepSpec, eval_context, init_member, train_step
from tests.helpers import hp_for, unstack


@pytest.mark.parametrize('name,width,shape,batch,conv', [
    ('cnn1d', 64, (40,), 100, 'im2col'), ('resnet18k', 8, (16, 16, 3), 16, 'lax'),
    ('resnet18k', 8, (16, 16, 3), 16, 'im2col')])
def test_estimate_is_close_to_xla_accounting(name, width, shape, batch, conv):
  model = make_model(name, width, shape, 10, conv)
  spec = StepSpec(model, 'adam', batch, 10)
  hp = unstack(hp_for([width]), 0)
  state = jax.eval_shape(lambda: init_member(spec, hp, jnp.zeros(shape)))
  x, y = jax.ShapeDtypeStruct((batch, *shape), jnp.float32), jax.ShapeDtypeStruct((batch,), jnp.int32)
  compiled = jax.jit(lambda s, x, y: train_step(spec, s, hp, x, y)).lower(state, x, y).compile()
  m = compiled.memory_analysis()
  xla = m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes
  assert 0.7 <= member_bytes(model, width, shape, batch, 'adam') / xla <= 2.5


@pytest.mark.parametrize('name,width,shape,chunk,conv,most', [
    ('resnet18k', 8, (16, 16, 3), 64, 'lax', 2.5), ('resnet18k', 8, (16, 16, 3), 64, 'im2col', 2.5),
    ('resnet1d', 16, (40,), 500, 'im2col', None)])
def test_evaluation_estimate_is_close_to_xla_accounting(name, width, shape, chunk, conv, most):
  # Evaluation keeps no activations for a backward pass but runs larger chunks (train.eval_batch): its peak is
  # estimated from the largest layer output. Conservative for 1-D models, whose largest output is not a conv's input.
  model = make_model(name, width, shape, 10, conv)
  spec = StepSpec(model, 'adam', 32, 10, eval_batch=chunk)
  hp = unstack(hp_for([width]), 0)
  state = jax.eval_shape(lambda: init_member(spec, hp, jnp.zeros(shape)))
  x, y = jax.ShapeDtypeStruct((2 * chunk, *shape), jnp.float32), jax.ShapeDtypeStruct((2 * chunk,), jnp.int32)
  stats = lambda s, x, y: eval_context(spec, s, hp, y, x, x, y).dataset_stats(x, y)
  xla = jax.jit(stats).lower(state, x, y).compile().memory_analysis()
  ratio = chunk * member_bytes_split(model, width, shape, 32, 'adam').eval_per_example / xla.temp_size_in_bytes
  assert 0.9 <= ratio <= (most or np.inf)


@pytest.mark.parametrize('name,width,shape,conv,monitor_batch,hessian', [
    ('resnet1d', 16, (40,), 'lax', 256, True), ('cnn1d', 32, (40,), 'im2col', 500, True),
    ('resnet1d', 16, (40,), 'lax', 256, False)])
def test_monitor_estimate_is_close_to_xla_accounting(name, width, shape, conv, monitor_batch, hessian):
  """The monitors' memory (with Adam, power iteration's Hessian-vector products on H and on P^-1 H; or the noise
  scale's per-example gradients) against XLA's accounting of the compiled monitors; a run sizes its buckets by the
  larger of that and a step."""
  from ddjax import buckets
  from ddjax.probes import use
  from ddjax.train import evaluate
  model = make_model(name, width, shape, 10, conv)
  probe = use('sharpness', {'iters': 3, 'batch': monitor_batch}) if hessian else use('noise_scale',
                                                                                      {'batch': monitor_batch})
  spec = StepSpec(model, 'adam', 32, 10, probes=(probe,))
  hp = unstack(hp_for([width]), 0)
  state = jax.eval_shape(lambda: init_member(spec, hp, jnp.zeros(shape)))
  x = jax.ShapeDtypeStruct((monitor_batch, *shape), jnp.float32)
  y = jax.ShapeDtypeStruct((monitor_batch,), jnp.int32)
  xla = jax.jit(lambda s, x, y: evaluate(spec, s, hp, y, x, x, y)).lower(state, x, y).compile().memory_analysis()
  estimate = buckets.probe_bytes((probe,), model, width, shape, 'adam')
  assert 0.9 <= estimate / xla.temp_size_in_bytes <= 2.5
  cfg, _ = cfglib.apply_overrides(cfglib.Config(), {}, [f'model.name={name}', f'model.conv={conv}',
                                                        f'train.monitor_batch={monitor_batch}'])
  plain = buckets.member_sizes(cfg, [[width]], shape, 10, 32)[0]
  on = buckets.member_sizes(cfglib.replace(cfg, 'train.sharpness' if hessian else 'train.noise_scale',
                                           3 if hessian else True), [[width]], shape, 10, 32)[0]
  assert on.transient == max(plain.transient, estimate) and on.resident == plain.resident


def member_bytes(model, width: int, input_shape, batch_size: int, optimizer: str) -> float:
  """Estimated bytes one member of `model` (padded to its max_width) needs while its bucket trains."""
  sizes = member_bytes_split(model, width, input_shape, batch_size, optimizer)
  return sizes.resident + sizes.transient


def under_budgets(ds, overrides, plan, room):
  """Buckets of a cnn1d job after one epoch each, with no memory limit and with a budget that leaves
  room(transient, eval_per_example) bytes per device after the data and every member's state: [(buckets, log,
  {member: metrics}) for each]."""
  cfg, sweep = cfglib.apply_overrides(cfglib.Config(), {}, ['model.name=cnn1d', 'train.batch_size=40'] + overrides)
  width = max(plan[0])
  resident, transient, per_example = member_bytes_split(make_model('cnn1d', width, (40,), 10, 'im2col'), width,
                                                        (40,), 40, 'adam')
  data_bytes = sum(a.nbytes for a in (ds.x_train, ds.y_train, ds.x_test, ds.y_test))
  tight = (data_bytes + len(plan[0]) * resident / jax.local_device_count() + room(transient, per_example)) / 2 ** 30
  results = []
  for memory_gb in (0.0, tight):
    job = expand(cfglib.replace(cfg, 'train.memory_gb', memory_gb), sweep)[0]
    logs = []
    buckets = make_buckets(job, ds, plan, lambda w: w * w, log=logs.append)
    for b in buckets:
      b.train_epoch(0)
    metrics = {i: {k: float(v[row]) for k, v in jax.device_get(b.evaluate(1)).items() if np.ndim(v) == 1}
               for b in buckets for row, i in enumerate(b.member_ids)}
    results.append((buckets, logs, metrics))
  return results


def test_evaluation_chunks_shrink_to_fit_with_the_same_results(tiny_mnist1d):
  # A budget that fits the training steps but not evaluation in chunks of train.eval_batch: the bucket stays whole
  # and evaluates in smaller chunks (about 60 examples; whole buckets go to one device), to the same numbers.
  free, tight = under_budgets(tiny_mnist1d, ['model.width=4,8', 'seed=0,1,2', 'train.eval_batch=240'],
                              [[4, 4, 4, 8, 8, 8]], lambda transient, per_example: max(6.06 * transient,
                                                                                       360 * per_example))
  assert [b.spec.eval_batch for b in free[0]] == [240] and free[1] == []
  [bucket], said, _ = tight
  chunk = bucket.spec.eval_batch
  assert 40 <= chunk < 240 and len(said) == 1 and f'evaluation in chunks of {chunk} examples' in said[0]
  for i, metrics in free[2].items():
    for key in ('train_loss', 'train_error', 'test_loss', 'test_error'):
      np.testing.assert_allclose(tight[2][i][key], metrics[key], rtol=1e-5, err_msg=key)


def test_split_to_fit():
  assert split_to_fit([1, 2, 3, 4, 5], 10.0, 25.0) == [[1, 2], [3, 4], [5]]
  assert split_to_fit([1, 2], 10.0, 5.0) == [[1], [2]]  # one member per bucket at least
  # sharded over 4 devices that fit 3.5 members each: chunks of 12 (3 per device), never 14 padded to 16
  assert [len(c) for c in split_to_fit(list(range(30)), 10.0, 35.0, multiple=4)] == [12, 12, 6]
  # 40 members of which 38 fit: two even halves, not 38 and a remainder step of 2
  assert [len(c) for c in split_to_fit(list(range(40)), 1.0, 38.5)] == [20, 20]
  assert [len(c) for c in split_to_fit(list(range(41)), 1.0, 38.5)] == [21, 20]
  assert split_to_fit(list(range(6)), 1.0, 6.0) == [list(range(6))]
  assert [len(c) for c in split_to_fit(list(range(7)), 1.0, 3.0)] == [3, 2, 2]
  assert [len(c) for c in split_to_fit(list(range(10)), 1.0, 4.0)] == [4, 3, 3]


def test_buckets_over_budget_are_split_with_the_same_results(tiny_mnist1d):
  # room for two and a half members' steps: 6 members in 3 buckets of 2 (whole buckets: auto would shard this
  # one-bucket plan over both devices, in multiples of 2)
  free, tight = under_budgets(tiny_mnist1d, ['model.width=4,6,8', 'seed=0,1', 'train.placement=bucket'],
                              [[4, 4, 6, 6, 8, 8]],
                              lambda transient, per_example: 2.5 * transient)
  assert len(free[0]) == 1 and len(tight[0]) == 3 and 'split into 3 buckets' in tight[1][0]
  for i, metrics in free[2].items():
    np.testing.assert_allclose(tight[2][i]['train_loss'], metrics['train_loss'], rtol=1e-5)


def test_buckets_are_made_again_when_xla_needs_more_than_the_estimate(tiny_mnist1d, monkeypatch):
  # An estimate far too low (as it might be on another backend) is caught by XLA's own figures once the bucket's
  # programs are compiled: the bucket is split after all, to the same numbers.
  from ddjax import memory
  cfg, sweep = cfglib.apply_overrides(cfglib.Config(), {}, ['model.name=cnn1d', 'model.width=4,8', 'seed=0,1,2',
                                                            'train.batch_size=40', 'train.placement=bucket'])
  plan = [[4, 4, 4, 8, 8, 8]]  # one bucket, placed whole (auto would shard it)
  job = expand(cfg, sweep)[0]
  [whole] = make_buckets(job, tiny_mnist1d, plan, lambda w: w * w, log=lambda *a: None, check='train')
  step, _ = whole.compiled_bytes(evaluation=False)
  resident = member_bytes_split(make_model('cnn1d', 8, (40,), 10, 'im2col'), 8, (40,), 40, 'adam').resident
  data_bytes = sum(a.nbytes for a in (tiny_mnist1d.x_train, tiny_mnist1d.y_train, tiny_mnist1d.x_test,
                                      tiny_mnist1d.y_test))
  tight = (data_bytes + 6 * resident / jax.local_device_count() + 0.7 * step) / 2 ** 30
  for name, nothing in (('ACTIVATION_FACTOR', {'lax': 0.0, 'im2col': 0.0}), ('TRANSIENT_COPIES', 0),
                        ('EVAL_FACTOR', {'lax': 0.0, 'im2col': 0.0})):
    monkeypatch.setattr(memory, name, nothing)  # the estimate: no step memory at all
  said = []
  buckets = make_buckets(expand(cfglib.replace(cfg, 'train.memory_gb', tight), sweep)[0], tiny_mnist1d, plan,
                         lambda w: w * w, log=said.append, check='train')  # the training step checked, not eval
  assert len(said) == 2 and "XLA's compiled programs need" in said[0] and 'made again' in said[0]
  assert 'split into 2 buckets' in said[1] and [len(b.member_ids) for b in buckets] == [3, 3]
  assert all(b.compiled_bytes(evaluation=False)[0] <= 0.7 * step for b in buckets)
  whole.train_epoch(0)
  want = jax.device_get(whole.evaluate(1))
  for b in buckets:
    b.train_epoch(0)
    got = jax.device_get(b.evaluate(1))
    for row, i in enumerate(b.member_ids):
      np.testing.assert_allclose(got['train_loss'][row], want['train_loss'][whole.member_ids.index(i)], rtol=1e-5)
