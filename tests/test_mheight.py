"""m-heights of codes: the vertex method against the LP and tuple-LP methods, hand-computed codes, the data set."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ddjax.data import mheight as mh
from tests import mheight_reference as ref


def _random_P(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
  return rng.integers(mh.P_LOW, mh.P_HIGH + 1, size=(k, n - k)).astype(np.int8)


def _close(a: float, b: float, rtol: float = 1e-6) -> bool:
  return (math.isinf(a) and math.isinf(b)) or math.isclose(a, b, rel_tol=rtol)


@pytest.mark.parametrize('n,k,m', [(6, 3, 2), (6, 3, 3), (7, 3, 2), (9, 4, 2)])
def test_vertex_matches_lp(n, k, m):
  rng = np.random.default_rng([1, n, k, m])
  codes = [_random_P(rng, n, k) for _ in range(2)] + [rng.normal(size=(k, n - k))]
  for P in codes:
    hv, hl = mh.height_vertex(P, m), mh.height_lp(P, m)
    assert math.isfinite(hl) and _close(hv, hl), (P, hv, hl)


def _infinite_codes() -> list[tuple[np.ndarray, int]]:
  zero_row = np.array([[0, 0, 0], [3, -7, 2], [5, 1, -4]])     # e_0 G has weight 1
  equal_rows = np.array([[4, -2, 9], [4, -2, 9], [1, 6, -3]])  # (e_0 - e_1) G has weight 2
  zero_entry = np.array([[0, 5, -2], [7, 3, 8], [-6, 2, 9]])   # G_T singular for T = {1, 2, 3}: |S| = n - m = 3
  return [(zero_row, 1), (zero_row, 2), (equal_rows, 2), (zero_entry, 3)]


@pytest.mark.parametrize('case', range(4))
def test_infinite_height(case):
  P, m = _infinite_codes()[case]
  assert mh.height_vertex(P, m) == math.inf
  assert mh.height_lp(P, m) == math.inf
  assert math.isfinite(mh.height_vertex(P + 100 * np.eye(3, dtype=int), 1))  # a nearby code is fine


@pytest.mark.parametrize('n,k,m', [(5, 2, 1), (5, 2, 2), (5, 2, 3), (6, 3, 2)])
def test_tuples_match_lp_and_vertex(n, k, m):
  rng = np.random.default_rng([2, n, k, m])
  P = _random_P(rng, n, k)
  ht, hl, hv = ref.height_tuples(P, m), mh.height_lp(P, m), mh.height_vertex(P, m)
  assert math.isfinite(ht) and _close(ht, hl) and _close(ht, hv), (P, ht, hl, hv)


def test_tuples_on_float_and_infinite_codes():
  P = np.random.default_rng(3).normal(size=(2, 3))
  assert _close(ref.height_tuples(P, 2), mh.height_vertex(P, 2))
  equal_rows = np.array([[4, -2, 9], [4, -2, 9]])
  assert ref.height_tuples(equal_rows, 2) == math.inf == mh.height_vertex(equal_rows, 2)
  assert ref.height_tuples(np.array([[0]]), 1) == math.inf  # [2,1] code G = [1 0]: every LP is infeasible


def _heights(C: np.ndarray, m: int) -> np.ndarray:
  return np.array([ref.codeword_height(c, m) for c in C])


@pytest.mark.parametrize('n,k,m,integer', [(7, 3, 2, True), (9, 4, 3, True), (8, 4, 3, True), (7, 3, 2, False)])
def test_no_codeword_exceeds_the_height(n, k, m, integer):
  rng = np.random.default_rng([4, n, k, m])
  P = _random_P(rng, n, k) if integer else rng.normal(size=(k, n - k))
  h = mh.height_vertex(P, m)
  assert math.isfinite(h)
  G = mh.generator_matrix(P)
  random_words = rng.normal(size=(2000, k)) @ G
  assert _heights(random_words, m).max() <= h * (1 + 1e-9)
  vertex = _heights(ref.vertex_codewords(P), m)
  assert vertex.max() <= h * (1 + 1e-9)
  assert vertex.max() >= h * (1 - 1e-9)  # some vertex codeword reaches h_m


@pytest.mark.parametrize('a', [3.0, -0.25, 1.0, 7.5, -40.0])
def test_two_one_code(a):
  """[2, 1] code G = [1 a]: its only codeword direction (1, a) has 1-height max(|a|, 1/|a|)."""
  P = np.array([[a]])
  want = max(abs(a), 1 / abs(a))
  for got in (mh.height_vertex(P, 1), mh.height_lp(P, 1), ref.height_tuples(P, 1)):
    assert math.isclose(got, want, rel_tol=1e-9)
  assert mh.height_vertex(np.array([[0.0]]), 1) == math.inf


def test_one_dimensional_codes_by_hand():
  P = np.array([[2, -3, 5]])  # the codewords are multiples of (1, 2, -3, 5)
  for m, want in [(1, 5 / 3), (2, 5 / 2), (3, 5.0)]:
    assert math.isclose(mh.height_vertex(P, m), want, rel_tol=1e-12)
    assert math.isclose(mh.height_lp(P, m), want, rel_tol=1e-9)
  for m in (1, 2):
    assert mh.height_vertex(np.array([[1, -1]]), m) == 1.0  # the repetition code (up to signs)


def test_codeword_height():
  c = np.array([3.0, -1.0, 2.0, 0.0])
  assert ref.codeword_height(c, 0) == 1.0
  assert ref.codeword_height(c, 1) == 1.5
  assert ref.codeword_height(c, 2) == 3.0
  assert ref.codeword_height(c, 3) == math.inf
  with pytest.raises(ValueError):
    ref.codeword_height(np.zeros(3), 1)


def test_heights_vertex_batched_shapes():
  rng = np.random.default_rng(5)
  P = rng.integers(-100, 101, size=(2, 11, 3, 4))  # more codes than one internal batch
  h = mh.heights_vertex(P, 2)
  assert h.shape == (2, 11)
  assert h[1, 7] == mh.height_vertex(P[1, 7], 2)
  G = mh.generator_matrix(P)
  assert G.shape == (2, 11, 3, 7) and np.array_equal(G[0, 0, :, :3], np.eye(3))


def test_parse_groups():
  groups = mh.parse_groups('all')
  assert len(groups) == 21 and groups == sorted(groups) == mh.GROUPS
  assert all(n in (9, 10) and k in (4, 5, 6) and 2 <= m <= n - k for n, k, m in groups)
  assert mh.parse_groups('9/4/2+10/5/3') == [(9, 4, 2), (10, 5, 3)]
  assert mh.parse_groups('6/3/1') == [(6, 3, 1)]
  for bad in ['', '9/4', '9/4/2+', '9-4-2', '9/4/6', '9/9/1', '9/0/1', '9/4/0', 'x/4/2', 'al']:
    with pytest.raises(ValueError, match='n/k/m'):
      mh.parse_groups(bad)


@pytest.fixture
def cache(tmp_path, monkeypatch):
  monkeypatch.setenv('DDJAX_CACHE', str(tmp_path / 'cache'))
  monkeypatch.setattr(mh, '_CHUNK', 8)  # several tasks even for a small count
  return tmp_path / 'cache' / 'mheight'


def test_sample_group_values_and_cache(cache, monkeypatch):
  P, h = mh.sample_group(9, 4, 5, 40, seed=7, workers=1)
  assert P.shape == (40, 4, 5) and P.dtype == np.int8 and h.shape == (40,) and h.dtype == np.float64
  assert P.min() >= -100 and P.max() <= 100
  np.testing.assert_array_equal(h, mh.heights_vertex(P, 5))
  assert np.isinf(h).any() and np.isfinite(h).any()  # m = n - k: some codes have a singular G_T; inf is kept
  files = list(cache.glob('*.npz'))
  assert len(files) == 1

  def fail(*args):
    raise AssertionError('the cache should have been read')
  with monkeypatch.context() as patch:
    patch.setattr(mh, 'heights_vertex', fail)
    P2, h2 = mh.sample_group(9, 4, 5, 40, seed=7, workers=1)
  np.testing.assert_array_equal(P, P2)
  np.testing.assert_array_equal(h, h2)

  data = files[0].read_bytes()
  files[0].write_bytes(data[:len(data) // 2])  # a truncated cache file is regenerated
  P3, h3 = mh.sample_group(9, 4, 5, 40, seed=7, workers=1)
  np.testing.assert_array_equal(P, P3)
  np.testing.assert_array_equal(h, h3)
  with np.load(files[0]) as z:
    np.testing.assert_array_equal(z['h'], h)
  assert list(cache.glob('*.npz')) == files  # no temporary file left behind

  P4, _ = mh.sample_group(9, 4, 5, 40, seed=8, workers=1)
  assert not np.array_equal(P, P4)


def test_sample_group_workers_agree(cache, monkeypatch):
  P1, h1 = mh.sample_group(10, 6, 3, 20, seed=3, workers=1)
  monkeypatch.setenv('DDJAX_CACHE', str(cache.parent.parent / 'other'))  # recompute, in two processes
  P2, h2 = mh.sample_group(10, 6, 3, 20, seed=3, workers=2)
  np.testing.assert_array_equal(P1, P2)
  np.testing.assert_array_equal(h1, h2)
  assert list((cache.parent.parent / 'other' / 'mheight').glob('*.npz'))


def test_bad_arguments():
  with pytest.raises(ValueError):
    mh.sample_group(9, 4, 6, 10, seed=0)
  with pytest.raises(ValueError):
    mh.height_vertex(np.ones((3, 3)), 0)
