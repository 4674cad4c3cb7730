"""data.subset (ddjax.data.subset): members of different n in one compiled bucket each train as a plain optax loop
on the n examples alone does, under train.budget epochs and steps; the examples and labels it trains on; the cost
accounting; the config checks."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ddjax import config as cfglib
from ddjax.data.noise import noisy_labels
from ddjax.data.subset import orders_needed
from ddjax.members import Job, job_padded_ratio, subset_steps
from ddjax.nn.models import make_model
from ddjax.train import StepSpec, bucket_fns, member_key
from tests.helpers import close, hp_for, unstack

B, WIDTH, LR, NOISE, EPOCHS = 20, 8, 3e-3, 0.2, 2


def run(data, subsets, budget='epochs', epochs=EPOCHS, spec_subset=True):
  """Members of `subsets` (None: all) at width WIDTH trained `epochs` epochs in one bucket: (state, metrics, hp,
  labels)."""
  n = len(data.y_train)
  own, steps = subset_steps([{'data.subset': s} for s in subsets], n, B, budget)
  least = min(max((s or n) // B, 1) for s in subsets)
  fields = dict(subset=steps * B, budget=budget, subset_orders=orders_needed(steps, least) if budget == 'steps' else 1)
  spec = StepSpec(make_model('mlp', WIDTH, (40,), 10, 'lax'), 'adam', B, 10, eval_batch=64,
                  **(fields if spec_subset else {}))
  fns = bucket_fns(spec)
  hp = hp_for([WIDTH] * len(subsets), **{'data.noise': NOISE, 'optim.lr': LR, 'data.subset': list(subsets),
                                          'seed': list(range(len(subsets)))})
  x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
  state, labels = fns.init(hp, x[0]), fns.labels(hp, y)
  init = jax.tree.map(np.asarray, state['params'])
  for e in range(epochs):
    state, _, _ = fns.epoch(state, hp, labels, x, jnp.int32(e))
  metrics = fns.evaluate(state, hp, labels, x, jnp.asarray(data.x_test), jnp.asarray(data.y_test), jnp.float32(0))
  return state, metrics, hp, labels, init


def reference(data, hp_i, init_params, budget, epochs=EPOCHS):
  """A plain optax loop on the member's n examples alone, as data.subset defines them: the first n of the permutation
  of the training split from its noise seed (all with none), labels noised as without a subset, pass p's order the
  examples sorted by uniform draws from fold_in(batch key, p); under epochs a pass per epoch, under steps
  n_train // B steps per epoch running through the passes. Returns (params, train loss, train error, examples)."""
  n_train = len(data.y_train)
  size = int(hp_i['subset'])
  perm = np.asarray(jax.random.permutation(member_key(hp_i, 'subset'), n_train))
  mine = np.sort(perm[:size]) if size else np.arange(n_train)
  labels = np.asarray(noisy_labels(member_key(hp_i, 'noise'), jnp.asarray(data.y_train), NOISE, 10))
  model = make_model('mlp', WIDTH, (40,), 10, 'lax')

  def loss_fn(params, x, y):
    out = model.apply({'params': params}, x, WIDTH, train=True)
    return optax.softmax_cross_entropy_with_integer_labels(out, y).mean()

  opt = optax.adam(LR, eps=1e-8)
  params = init_params
  opt_state = opt.init(params)
  step = jax.jit(lambda p, s, x, y: (lambda g: (optax.apply_updates(p, opt.update(g, s, p)[0]),
                                                opt.update(g, s, p)[1]))(jax.grad(loss_fn)(p, x, y)))
  own = len(mine) // B
  total = epochs * (own if budget == 'epochs' else n_train // B)
  keep = np.zeros(n_train, bool)
  keep[mine] = True
  for t in range(total):
    p, j = divmod(t, own)
    u = np.asarray(jax.random.uniform(jax.random.fold_in(member_key(hp_i, 'batches'), p), (n_train,)))
    if size:
      order = np.argsort(np.where(keep, u, 2.0), kind='stable')[:len(mine)]
    else:  # no subset: the order of a run without any
      order = np.asarray(jax.random.permutation(jax.random.fold_in(member_key(hp_i, 'batches'), p), n_train))
    idx = order[j * B:(j + 1) * B]
    assert keep[idx].all()
    params, opt_state = step(params, opt_state, data.x_train[idx], labels[idx])
  out = np.asarray(model.apply({'params': params}, data.x_train[mine], WIDTH, train=False))
  ce = np.asarray(optax.softmax_cross_entropy_with_integer_labels(out, labels[mine]))
  return params, ce.mean(), (out.argmax(-1) != labels[mine]).mean(), mine


@pytest.mark.parametrize('budget', ['epochs', 'steps'])
def test_each_member_trains_as_alone_on_its_own_examples(tiny_mnist1d, budget):
  """Members of 40, 60, 100 and all 240 examples in one bucket: each one's parameters, training loss and error (on
  its own examples and labels) equal a plain loop on its examples alone; under epochs the smaller members' steps
  past their own pass change nothing, under steps they run through 6, 4 and 2.4 passes per epoch."""
  subsets = (40, 60, 100, None)
  state, metrics, hp, labels, init = run(tiny_mnist1d, subsets, budget)
  for i, size in enumerate(subsets):
    hp_i = unstack(hp, i)
    params, loss, error, mine = reference(tiny_mnist1d, hp_i, unstack(init, i), budget)
    close(unstack(state['params'], i), params, rtol=2e-5)
    np.testing.assert_allclose(float(metrics['train_loss'][i]), loss, rtol=1e-5)
    assert float(metrics['train_error'][i]) == pytest.approx(error, abs=1e-6)
    marked = np.asarray(labels[i])
    assert (marked >= 0).sum() == (size or 240) and set(np.flatnonzero(marked >= 0)) == set(mine)


def test_a_member_without_a_subset_trains_as_in_a_run_without_any(tiny_mnist1d):
  """The member with none (all examples) beside subset members equals it in a bucket whose program has no subset
  path (bitwise up to XLA's fusion)."""
  with_subsets = run(tiny_mnist1d, (None, 60), epochs=1)
  without = run(tiny_mnist1d, (None, None), epochs=1, spec_subset=False)
  close(unstack(with_subsets[0]['params'], 0), unstack(without[0]['params'], 0), rtol=1e-6)
  np.testing.assert_allclose(float(with_subsets[1]['test_loss'][0]), float(without[1]['test_loss'][0]), rtol=1e-6)


def test_subsets_are_nested_and_keep_their_labels(tiny_mnist1d):
  """A member's n examples are the first n of its permutation: a larger n keeps a smaller one's and more, each
  kept label is the label (noise included) the member has without a subset, the others are marked -1."""
  y = jnp.asarray(tiny_mnist1d.y_train)
  spec = StepSpec(make_model('mlp', WIDTH, (40,), 10, 'lax'), 'adam', B, 10, subset=240)
  hp = hp_for([WIDTH] * 4, **{'data.noise': NOISE, 'data.subset': [30, 90, 200, None], 'seed': 5})
  labels = np.asarray(bucket_fns(spec).labels(hp, y))
  plain = np.asarray(noisy_labels(member_key(unstack(hp, 0), 'noise'), y, NOISE, 10))
  kept = [set(np.flatnonzero(row >= 0)) for row in labels]
  assert [len(k) for k in kept] == [30, 90, 200, 240]
  assert kept[0] < kept[1] < kept[2] < kept[3]
  for row in labels:
    assert (row[row >= 0] == plain[row >= 0]).all()
  other = bucket_fns(spec).labels(hp_for([WIDTH], **{'data.noise': NOISE, 'data.subset': 30, 'seed': 6}), y)
  assert set(np.flatnonzero(np.asarray(other)[0] >= 0)) != kept[0]  # another noise seed, other examples


def test_padded_useful_counts_the_steps_members_skip():
  """Under epochs a member of half the largest n does half the epoch's steps usefully; under steps every member
  does them all (against the count by hand)."""
  cfg = cfglib.Config()
  members = [{'model.width': 8, 'data.subset': s} for s in (1000, 500, 250)]
  own, steps = subset_steps(members, 4000, 100, 'epochs')
  assert (own, steps) == ([10, 5, 2], 10)
  cost = lambda w: float(w)
  assert job_padded_ratio(Job(0, cfg, {}, members), [[8, 8, 8]], cost, 4000, 100) == pytest.approx(30 / 17)
  steps_cfg = cfglib.replace(cfg, 'train.budget', 'steps')
  assert job_padded_ratio(Job(0, steps_cfg, {}, members), [[8, 8, 8]], cost, 4000, 100) == pytest.approx(1.0)
  assert subset_steps(members, 4000, 100, 'steps') == ([40, 40, 40], 40)


def test_train_size_buckets_keep_small_members_off_the_largest_ns_steps():
  """Under epochs, members of 250 and 4000 examples go to separate buckets (each scanning its own largest steps),
  widths bucketed within each: padded/useful falls from the masked 1.90 of one step group to 1."""
  from ddjax.buckets import job_plan
  from ddjax.members import expand, group_members
  cfg, sweep = cfglib.apply_overrides(cfglib.Config(), {}, ['model.name=mlp', 'model.width=16,64',
                                                            'data.subset=250,4000'])
  job = expand(cfg, sweep)[0]
  plan, cost = job_plan(job, (40,), 10, 4000)
  groups = group_members(job, plan)
  assert sorted(sorted(job.members[i]['data.subset'] for i in g) for g in groups) == [[250], [250], [4000], [4000]]
  assert [max(b) for b in plan] == [max(job.members[i]['model.width'] for i in g) for g in groups]
  assert job_padded_ratio(job, plan, cost, 4000, 100) == pytest.approx(1.0)
  one, _ = job_plan(job, (40,), 10, None)  # no training-set size known: width buckets only, masked steps
  useful = 2 * (cost(16) + cost(64)) + 40 * (cost(16) + cost(64))
  assert job_padded_ratio(job, one, cost, 4000, 100) == pytest.approx(40 * 2 * (cost(16) + cost(64)) / useful)


@pytest.mark.parametrize('args, says', [
    (['data.subset=5000'], 'at most the 4000 training examples'),
    (['data.subset=50'], 'from one batch (100)'),
    (['data.subset=500', 'train.max_steps=100'], 'use train.budget=steps'),
    (['data.subset=500', 'probes=step_metrics'], 'probe step_metrics counts steps'),
    (['data.subset=500', 'train.eval_every_steps=10'], 'train.eval_every_steps counts steps'),
    (['data.subset=500', 'callbacks=lr_decay', 'callback.every=10', 'callback.factor=0.5'], 'callback lr_decay'),
    (['data.subset=500', 'model.name=resnet1d', 'train.batch_size=0'], "BatchNorm's batch statistics"),
])
def test_bad_subsets_are_refused_in_one_line(args, says):
  with pytest.raises(cfglib.ConfigError) as e:
    cfglib.apply_overrides(cfglib.Config(), {}, args)
  assert says in str(e.value) and '\n' not in str(e.value)


def test_a_new_key_at_its_default_keeps_run_ids():
  """data.subset none and train.budget without a subset leave a run's id as it was before them."""
  from ddjax.store import run_id
  cfg = cfglib.Config()
  assert run_id(cfglib.replace(cfg, 'train.budget', 'steps')) == run_id(cfg)
  assert run_id(cfglib.replace(cfg, 'data.subset', 500)) != run_id(cfg)


def test_samplewise_figures_draw_the_grid_threshold_and_rises(tmp_path):
  """On a made-up store (2 widths x 3 sizes x 2 seeds): the heatmap draws the mean final test error per cell, the
  threshold line passes through the narrowest width under 1% train error per size, a red box marks the one rise
  larger than its seeds' spread; the curves draw the same means; the summary says both."""
  import json
  import matplotlib
  matplotlib.use('Agg')
  import pandas as pd
  from plots import samplewise
  config = json.dumps(cfglib.to_dict(cfglib.Config()))
  test = {(8, 500): (0.30, 0.32), (8, 1000): (0.40, 0.40), (8, 4000): (0.35, 0.37),
          (32, 500): (0.25, 0.25), (32, 1000): (0.24, 0.26), (32, 4000): (0.25, 0.29)}
  train = {(8, 500): 0.0, (8, 1000): 0.05, (8, 4000): 0.2, (32, 500): 0.0, (32, 1000): 0.0, (32, 4000): 0.005}
  rows = [{'model.width': w, 'data.subset': n if n < 4000 else None, 'seed': s, 'config': config,
           'epoch': [1.0, 2.0], 'test_error': [0.9, test[w, n][s]], 'train_error': [0.9, train[w, n]]}
          for (w, n) in test for s in (0, 1)]
  df = pd.DataFrame(rows)
  widths, ns, mean, sd = samplewise.grid(df, 'test_error')
  assert list(widths) == [8, 32] and list(ns) == [500, 1000, 4000]  # none: every one of mnist1d's 4,000
  np.testing.assert_allclose(mean, [[0.31, 0.25], [0.40, 0.25], [0.36, 0.27]])
  assert samplewise.thresholds(df) == {500: 8.0, 1000: 32.0, 4000: 32.0}
  # width 8: 500 -> 1000 rose 0.09 (2 x standard error 0.02); width 32: 1000 -> 4000 rose 0.02, within noise
  # (standard errors 0.01 and 0.02: 2 x 0.022 = 0.045)
  hurt = samplewise.hurts(df)
  assert list(hurt) == [8] and [(h.n_from, h.n_to) for h in hurt[8]] == [(500, 1000)]
  assert hurt[8][0].rise == pytest.approx(0.09)

  import matplotlib.pyplot as plt
  drawn = {}
  real_save = samplewise.save
  samplewise.save = lambda fig, path: drawn.setdefault(path.name, fig) and path
  try:
    samplewise.heatmap(df, tmp_path / 'h.png')
    samplewise.curves(df, tmp_path / 'c.png')
  finally:
    samplewise.save = real_save
  ax = drawn['h.png'].axes[0]
  np.testing.assert_allclose(ax.collections[0].get_array().reshape(3, 2), mean)
  line = next(ln for ln in ax.lines if ln.get_label().startswith('interpolation threshold'))
  assert list(line.get_xdata()) == [0, 1, 1] and list(line.get_ydata()) == [0, 1, 2]  # cell indices
  boxes = [p for p in ax.patches if isinstance(p, plt.Rectangle) and p.get_edgecolor()[:3] == (1.0, 0.0, 0.0)]
  assert [(b.get_x(), b.get_y()) for b in boxes] == [(-0.5, 0.5)]  # width 8, n = 1000
  curves = [ln for ln in drawn['c.png'].axes[0].lines if ln.get_label().startswith('width')]
  np.testing.assert_allclose([ln.get_ydata() for ln in curves], mean.T)
  text = samplewise.summary(df)
  assert 'n=500: width 8, n=1000: width 32' in text and 'width 8: more data hurt 1 time(s)' in text
  # another swept key: a panel each, never averaged together
  two = pd.concat([df.assign(**{'data.noise': 0.15}),
                   df.assign(**{'data.noise': 0.3, 'test_error': df['test_error'].map(lambda v: [0.9, 0.5])})])
  assert [label for label, _ in samplewise.groups(two)] == ['data.noise=0.15', 'data.noise=0.3']
  np.testing.assert_allclose(samplewise.grid(samplewise.groups(two)[0][1], 'test_error')[2], mean)
  assert 'data.noise=0.3: more data never raised' in samplewise.summary(two)
  plt.close('all')


@pytest.mark.parametrize('budget, steps', [('epochs', {40: [2, 4], 120: [6, 12]}), ('steps', {40: [12, 24],
                                                                                                120: [12, 24]})])
def test_a_run_records_each_members_own_steps_and_validates(tmp_path, budget, steps):
  """Through the runner: under epochs a member of 40 examples (batch 20) takes 2 steps an epoch and its rows say so;
  under steps every member takes the 12 of a pass over all 240; the store's audit finds nothing wrong."""
  from ddjax import run as runlib
  from ddjax.analysis.validate import validate
  from ddjax.members import expand
  from plots.common import load
  cfg, sweep = cfglib.apply_overrides(cfglib.Config(), {}, [
      'model.name=mlp', 'model.width=4', 'data.num_samples=300', 'data.seed=3', 'data.subset=40,120',
      'train.batch_size=20', 'train.epochs=2', 'train.eval_every=1', f'train.budget={budget}'])
  runlib.run(cfg, sweep, expand(cfg, sweep), tmp_path, progress=False, log=lambda *a: None)
  df = load(tmp_path)
  assert {int(n): [int(s) for s in st] for n, st in zip(df['data.subset'], df['step'])} == steps
  assert (validate(tmp_path)['problems'] == '').all()


def test_probes_on_the_probe_batch_see_only_the_members_examples(tiny_mnist1d):
  """The losses probe on a probe batch as large as a member's subset reads exactly its examples: its training loss
  and error equal those on all of them."""
  from ddjax.probes import use
  state, metrics, hp, labels, _ = run(tiny_mnist1d, (40, 100), epochs=1)
  spec = StepSpec(make_model('mlp', WIDTH, (40,), 10, 'lax'), 'adam', B, 10, eval_batch=64, subset=100,
                  probes=(use('losses', {'train_examples': 40}),))
  x = jnp.asarray(tiny_mnist1d.x_train)
  probed = bucket_fns(spec).evaluate(unstack_first(state), unstack_first(hp), labels[:1], x,
                                     jnp.asarray(tiny_mnist1d.x_test), jnp.asarray(tiny_mnist1d.y_test),
                                     jnp.float32(0))
  np.testing.assert_allclose(float(probed['train_loss'][0]), float(metrics['train_loss'][0]), rtol=1e-5)
  assert float(probed['train_error'][0]) == pytest.approx(float(metrics['train_error'][0]), abs=1e-6)


def unstack_first(tree):
  return jax.tree.map(lambda a: a[:1], tree)


def test_a_full_batch_through_batchnorm_is_refused_for_models_without_a_norm_option(tmp_path):
  """cnn1d_bn has BatchNorm and no model.norm: a full batch with data.subset stops before training, in one line."""
  from ddjax import run as runlib
  from ddjax.members import expand
  cfg, sweep = cfglib.apply_overrides(cfglib.Config(), {}, [
      'model.name=cnn1d_bn', 'model.width=4', 'data.num_samples=300', 'data.subset=40', 'train.batch_size=0',
      'train.epochs=1'])
  with pytest.raises(cfglib.ConfigError, match="BatchNorm's batch statistics"):
    runlib.run(cfg, sweep, expand(cfg, sweep), tmp_path, progress=False, log=lambda *a: None)
