"""ddjax.analysis on curves whose answers are known by construction."""

import numpy as np
import pytest

from ddjax import analysis


def test_crossing_epoch():
  e = [1, 2, 5, 10, 20, 50]
  acc = [0.1, 0.5, 0.995, 0.98, 0.999, 1.0]
  assert analysis.crossing_epoch(e, acc, 0.99) == 5
  assert analysis.crossing_epoch(e, acc, 0.99, sustained=2) == 20
  assert analysis.crossing_epoch(e, acc, 0.99, after=5) == 20
  assert np.isnan(analysis.crossing_epoch(e, acc, 1.01))
  assert analysis.crossing_epoch(e, [3, 2, 1, 0.5, 0.1, 0.01], 0.2, above=False) == 20


def test_grokking_epochs_and_gap():
  e = np.arange(1, 101)
  train = np.minimum(1.0, e / 10)          # memorised at epoch 10
  val = np.where(e >= 70, 1.0, 0.3)        # generalises at epoch 70
  g = analysis.grokking(e, train, val, threshold=0.99)
  assert (g.memorisation_epoch, g.grokking_epoch, g.gap) == (10, 70, 60)
  never = analysis.grokking(e, train, np.full(100, 0.5))
  assert never.memorisation_epoch == 10 and np.isnan(never.grokking_epoch) and np.isnan(never.gap)


def test_loss_spikes():
  e = np.arange(10)
  loss = [1.0, 0.1, 0.05, 0.04, 0.5, 0.9, 0.03, 0.02, 0.3, 0.01]
  spikes = analysis.loss_spikes(e, loss, factor=2.0)
  assert [(s.start_epoch, s.peak_epoch) for s in spikes] == [(4, 5), (8, 8)]
  assert [s.end_epoch for s in spikes] == [6, 9]  # back under 2x the minimum before the spike
  assert spikes[0].height == pytest.approx(0.9 / 0.04) and spikes[1].height == pytest.approx(0.3 / 0.02)
  assert analysis.loss_spikes(e, np.linspace(1, 0.1, 10)) == []


def test_double_descent_peak():
  w = [2, 4, 8, 16, 32, 64, 128]
  err = [0.6, 0.3, 0.25, 0.33, 0.36, 0.31, 0.28]
  dd = analysis.double_descent_peak(w, err)
  assert (dd.min_x, dd.peak_x, dd.last_x) == (8, 32, 128)
  assert dd.rise == pytest.approx(0.11) and dd.second_descent == pytest.approx(0.08)
  assert analysis.double_descent_peak(w, sorted(err, reverse=True)) is None
