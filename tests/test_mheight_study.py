"""The m-height study's pieces: three-way splits (m-height and modular), codes from a file, lower bounds and the
violation-aware loss, and the sudden-drop and step-spike analysis on planted curves."""

from __future__ import annotations

from types import SimpleNamespace

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from ddjax import analysis
from ddjax import config as cfglib
from ddjax.data import codes
from ddjax.data import mheight as mh
from ddjax.data.datasets import modular
from ddjax.nn.models import make_model
from ddjax.train import StepSpec, _loss, init_member
from tests.helpers import hp_for, unstack

GROUPS = '9/4/2+10/5/5'


@pytest.fixture
def cache(tmp_path, monkeypatch):
  monkeypatch.setenv('DDJAX_CACHE', str(tmp_path / 'cache'))


def _codes_of(x: np.ndarray, k: int, r: int) -> np.ndarray:
  """P of each example, read back from the input grid (channel 0 holds P / 100)."""
  return np.rint(x[:, :k, :r, 0] * 100).astype(int)


def test_three_way_split_takes_each_group_in_order_and_two_way_is_unchanged(cache):
  groups = [(9, 4, 2), (10, 5, 5)]
  sampled = {g: mh.sample_group(*g, 60, 42, workers=1) for g in groups}
  two = codes.mheight(GROUPS, 60, 0.8, 42, workers=1)
  three = codes.mheight(GROUPS, 60, 0.8, 42, workers=1, train_per_group=20, val_per_group=25)
  assert two.x_val is None and three.x_val.shape[0] == 50 and three.x_train.shape[0] == 40
  assert three.x_test.shape[0] == 30  # the rest: 60 - 20 - 25 per group
  for ds, cuts in ((two, {'train': (0, 48), 'test': (48, 60)}),
                   (three, {'train': (0, 20), 'val': (20, 45), 'test': (45, 60)})):
    for split, (lo, hi) in cuts.items():
      x, y = getattr(ds, f'x_{split}'), getattr(ds, f'y_{split}')
      start = 0
      for (n, k, m) in groups:
        P, h = sampled[(n, k, m)]
        part = slice(start, start + hi - lo)
        np.testing.assert_array_equal(_codes_of(x[part], k, n - k), P[lo:hi])
        np.testing.assert_array_equal(y[part], np.log2(h[lo:hi]).astype(np.float32))
        assert (x[part, :, :, 1 + m] == 1).all()
        start += hi - lo
  assert dict(three.info) == {'train_infinite': int(np.isinf(three.y_train).sum()),
                              'val_infinite': int(np.isinf(three.y_val).sum()),
                              'test_infinite': int(np.isinf(three.y_test).sum())}
  d = SimpleNamespace(train_per_group=20, val_per_group=30, test_per_group=20, train_split=0.8)
  with pytest.raises(ValueError, match='data.test_per_group'):
    codes.split_sizes(d, 60)


def test_modular_validation_split_is_disjoint_and_covers_every_pair():
  ds = modular('add', 13, 0.5, 3, val_split=0.2)
  pairs = [tuple(map(tuple, a)) for a in (ds.x_train, ds.x_val, ds.x_test)]
  assert [len(p) for p in pairs] == [84, 33, 52]
  assert len(set().union(*map(set, pairs))) == 169
  np.testing.assert_array_equal(ds.y_val, (ds.x_val[:, 0] + ds.x_val[:, 1]) % 13)
  two = modular('add', 13, 0.5, 3)
  np.testing.assert_array_equal(two.x_train, ds.x_train)  # the training pairs do not move
  assert two.x_val is None


def test_sampled_codeword_heights_bound_the_height():
  rng = np.random.default_rng(0)
  P = rng.integers(-100, 101, size=(30, 4, 5))
  h = mh.heights_vertex(P, 2)
  low = mh.heights_sampled(P, 2, 64, 1)
  assert np.all(low <= h * (1 + 1e-9)) and np.all(low >= 1)
  assert np.all(mh.heights_sampled(P, 2, 2048, 1) >= low)  # more codewords, a tighter bound
  P1 = rng.integers(-100, 101, size=(10, 1, 6))  # k = 1: every codeword is a multiple of G, so the bound is h
  np.testing.assert_allclose(mh.heights_sampled(P1, 3, 4, 2), mh.heights_vertex(P1, 3), rtol=1e-12)


def test_violation_loss_adds_the_squared_shortfall_below_the_bound_in_training_only():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(12, 6)), jnp.float32)
  y = rng.normal(size=(12, 2)).astype(np.float32) * 3
  y[3, 0] = np.inf  # an infinite height: weight 0, and its bound does not count either
  model = make_model('mlp', 4, (6,), 1, 'im2col', depth=1)
  spec = StepSpec(model, 'adam', 12, 1, task='regress', bounds=True, violation=2.5)
  state = unstack(init_member_m(spec, x), 0)
  out = np.asarray(model.apply({'params': state['params']}, x, 4))[:, 0]
  finite = np.isfinite(y[:, 0])
  want_eval = np.where(finite, (out - np.where(finite, y[:, 0], 0)) ** 2, 0)
  want_train = want_eval + np.where(finite, 2.5 * np.maximum(y[:, 1] - out, 0) ** 2, 0)
  for train, want in ((False, want_eval), (True, want_train)):
    (loss, _, weight), _ = _loss(spec, state['params'], {}, {'width': 4}, x, jnp.asarray(y), train)
    np.testing.assert_allclose(np.asarray(loss), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(weight), finite.astype(np.float32))


def init_member_m(spec, x):
  import jax
  return jax.vmap(lambda hp: init_member(spec, hp, x[0]))(hp_for([4]))


def _write_codes(path, groups, count=12):
  rows = []
  for n, k, m in groups:
    P, h = mh.sample_group(n, k, m, count, 42, workers=1)
    for p, v in zip(P.reshape(count, -1), h):
      rows.append({'n': n, 'k': k, 'm': m, **{f'p{i}': float(e) for i, e in enumerate(p)}, 'h': v})
  df = pd.DataFrame(rows)
  if path.suffix == '.csv':
    df.to_csv(path, index=False)
  else:
    df.to_parquet(path)
  return df


@pytest.mark.parametrize('suffix', ['.csv', '.parquet'])
def test_codes_from_a_file_are_the_generated_data_and_ids_follow_the_content(cache, tmp_path, suffix):
  groups = [(9, 4, 2), (10, 5, 5)]
  path = tmp_path / f'codes{suffix}'
  _write_codes(path, groups)
  ds = codes.mheight('all', file=str(path), train_split=0.5)
  want = codes.mheight(GROUPS, 12, 0.5, 42, workers=1)
  for a in ('x_train', 'y_train', 'x_test', 'y_test'):
    np.testing.assert_array_equal(getattr(ds, a), getattr(want, a))
  copy = tmp_path / 'moved' / f'other{suffix}'
  copy.parent.mkdir()
  copy.write_bytes(path.read_bytes())
  flat = lambda p: {'data.name': 'mheight', 'data.file': str(p)}
  assert cfglib.identity(flat(path)) == cfglib.identity(flat(copy))  # the content, not the path
  _write_codes(copy, groups[:1])
  assert cfglib.identity(flat(path)) != cfglib.identity(flat(copy))


def test_codes_file_errors_are_one_line(cache, tmp_path):
  df = _write_codes(tmp_path / 'ok.csv', [(9, 4, 2)], count=4)

  def error(frame, name):
    path = tmp_path / name
    frame.to_csv(path, index=False)
    with pytest.raises(ValueError) as e:
      codes.read_codes(str(path))
    assert '\n' not in str(e.value) and 'data.file' in str(e.value)
    return str(e.value)
  assert 'missing column(s) h' in error(df.drop(columns='h'), 'a.csv')
  assert 'bad shape' in error(df.drop(columns='p19'), 'b.csv')  # 9/4/2 needs 20 entries
  assert 'bad shape' in error(df.assign(p20=1.0), 'c.csv')
  assert 'mixed groups' in error(df.assign(k=9), 'd.csv')
  with pytest.raises(ValueError, match='holds no codes of 10/5/5'):
    codes.groups_of(SimpleNamespace(file=str(tmp_path / 'ok.csv'), groups='9/4/2+10/5/5'))


def test_sudden_drop_and_train_change_from_the_step_table():
  """A planted validation drop at epoch 500 (3 -> 1.3) while the step-level train loss rises across it; a planted
  step spike; noise that is neither."""
  rng = np.random.default_rng(0)
  epochs = np.arange(0, 2001, 5.0)
  val = np.where(epochs < 500, 3.0, 1.3) + rng.normal(0, 0.05, len(epochs))
  weight_norm = np.where(epochs < 500, 40.0, 35.0)
  step_epochs = np.arange(0, 2000, 0.25)
  step_loss = np.where(step_epochs < 500, 0.2, 0.5) * np.exp(rng.normal(0, 0.1, len(step_epochs)))
  step_loss[(step_epochs >= 1200) & (step_epochs < 1203)] = 50.0  # a 12-step spike
  step_loss[np.searchsorted(step_epochs, 1600.0)] = 50.0  # one bad batch: no spike
  train = np.interp(epochs, step_epochs, step_loss)
  s = analysis.drop_summary(epochs, val, train, weight_norm, step_epochs, step_loss, window=50)
  assert s['drop_epoch'] in (495.0, 500.0) and s['drop_val_before'] == pytest.approx(3.0, abs=0.05)
  assert s['drop_val_after'] == pytest.approx(1.3, abs=0.05) and s['drop_train_from'] == 'steps'
  assert s['drop_train_before'] == pytest.approx(0.2, rel=0.05)
  assert s['drop_train_after'] == pytest.approx(0.5, rel=0.05)
  assert s['drop_train_change'] > 0 and s['drop_norm_change'] == pytest.approx(-5.0)
  descent = np.where(epochs < 100, 30.0 * np.exp(-epochs / 10), 0.0)  # the first descent from the init: no drop
  s2 = analysis.drop_summary(epochs, val + descent, train, weight_norm, window=50)
  assert s2['drop_epoch'] in (495.0, 500.0)
  flat = analysis.drop_summary(epochs, 2.0 + rng.normal(0, 0.05, len(epochs)), train, weight_norm)
  assert np.isnan(flat['drop_epoch']) and flat['val_min'] < 2.0
  spikes = analysis.step_spikes(step_epochs, step_loss, smooth=4)
  assert spikes['step_spike_count'] == 1 and 1200 <= spikes['step_spike_epochs'][0] < 1204
  assert analysis.step_spikes(step_epochs, step_loss, smooth=32)['step_spike_count'] == 0  # under half the median


@pytest.mark.parametrize('argv,message', [
    (['data.name=teacher', 'model.name=deep_linear', 'data.bound_codewords=8', 'train.violation=1'],
     'data.bound_codewords: data.name=teacher does not read it'),
    (['data.name=modular', 'model.name=embed_mlp', 'data.val_per_group=10'], 'data.val_per_group: data.name=modular'),
    (['data.name=mheight', 'model.name=resnet_ln', 'train.keep_best=true', 'train.best_metric=val_loss'],
     'has no validation split'),
    (['data.name=mheight', 'model.name=resnet_ln', 'train.violation=1'], 'there is none'),
    (['data.name=mheight', 'model.name=resmlp', 'model.head=softplus'], 'resmlp has a linear output'),
    (['model.name=resnet1d_small', 'model.proj=4', 'model.param=mup'], 'not with model.proj'),
])
def test_study_keys_are_refused_where_they_mean_nothing(argv, message):
  with pytest.raises(cfglib.ConfigError, match=message):  # apply_overrides validates
    cfglib.apply_overrides(cfglib.Config(), {}, argv)


def test_resume_compares_the_codes_file_by_its_content_when_the_run_started(cache, tmp_path):
  """A moved file (same content) is the same run; a file edited in place since the run started is not."""
  path = tmp_path / 'codes.csv'
  _write_codes(path, [(9, 4, 2)])
  cfg = cfglib.replace(cfglib.replace(cfglib.Config(), 'data.name', 'mheight'), 'data.file', str(path))
  from ddjax.store import run_record
  record = run_record(cfg, {}, [])
  moved = tmp_path / 'moved.csv'
  path.rename(moved)
  now = cfglib.replace(cfg, 'data.file', str(moved))
  before = cfglib.what_trains(record['config'], {}, [], record['contents'])
  assert before == cfglib.what_trains(cfglib.to_dict(now), {}, [])
  _write_codes(moved, [(9, 4, 3)])
  assert before != cfglib.what_trains(cfglib.to_dict(now), {}, [])
