"""The shape of a loss curve L(t) over optimizer steps (or epochs) t, one member's arrays at a time.

  kneedle        the knee of a curve (Satopaa et al. 2011), with its sensitivity S
  power_law_fit  L(t) = a t^-b + c by variable projection: for each b, a and c by linear least squares; b by a bounded
                 1-D search; standard errors from the Jacobian at the optimum
  local_slope    b_loc(t) = -d log L / d log t (central differences in log-log)
  resid_power    the mean squared residual of log L around a straight line in log t over a window: how far the loss
                 is from a local power law
  psd_tail       the log-log slope of the Welch power spectral density of those residuals over the upper half of
                 its frequencies in log scale: white noise gives 0; a random walk -2 at low frequencies, less steep
                 near the Nyquist frequency (its discrete spectrum is 1 / (4 sin^2(pi f)))
  loss_shape     both, over consecutive windows of a curve
  log_binned     a noisy curve as medians on log-spaced bins (what kneedle and local_slope need of a batch loss)
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import optimize, signal


def _sorted(x, y) -> tuple[np.ndarray, np.ndarray]:
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  keep = np.isfinite(x) & np.isfinite(y)
  order = np.argsort(x[keep], kind='stable')
  return x[keep][order], y[keep][order]


def kneedle(x, y, sensitivity: float = 1.0, curve: str = 'convex', direction: str = 'decreasing') -> float | None:
  """The knee (the point of maximum curvature, offline Kneedle) of y(x), or None if it has none. `curve` is 'convex'
  or 'concave', `direction` 'increasing' or 'decreasing' (a falling loss curve: convex, decreasing); a larger
  `sensitivity` S asks for a more pronounced knee.

  Both axes are scaled to [0, 1] and the curve turned into a concave increasing one; the knee is the first local
  maximum of the difference curve y - x after which the difference drops below that maximum less S times the mean
  spacing of x before reaching a local minimum."""
  if curve not in ('convex', 'concave') or direction not in ('increasing', 'decreasing'):
    raise ValueError(f'kneedle: curve must be convex or concave and direction increasing or decreasing, not '
                     f'{curve!r}, {direction!r}')
  x, y = _sorted(x, y)
  n = len(x)
  if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
    return None
  xs, ys = (x - x.min()) / np.ptp(x), (y - y.min()) / np.ptp(y)
  mirrored = (curve, direction) in (('convex', 'increasing'), ('concave', 'decreasing'))  # read from the right
  if curve == 'convex':
    ys = 1.0 - ys
  if mirrored:  # the curve reflected left to right (x too: its spacing may be uneven)
    xs, ys = 1.0 - xs[::-1], ys[::-1]
  diff = ys - xs
  left, right = diff[np.r_[0, :n - 1]], diff[np.r_[1:n, n - 1]]
  peak, trough = (diff >= left) & (diff >= right), (diff <= left) & (diff <= right)
  if not peak.any():
    return None
  drop = sensitivity * np.abs(np.diff(xs)).mean()
  threshold, at = np.inf, -1
  for i in range(int(np.argmax(peak)), n - 1):
    if peak[i]:
      threshold, at = diff[i] - drop, i
    if trough[i]:  # past a local minimum, no knee until the next maximum (kneed >= 0.9; the paper reset to 0)
      threshold = -np.inf
    if diff[i + 1] < threshold:
      return float(x[n - 1 - at] if mirrored else x[at])
  return None


class PowerLaw(NamedTuple):
  """L(t) = a t^-b + c with standard errors, and the residual RMS of the fit."""
  a: float
  b: float
  c: float
  se_a: float
  se_b: float
  se_c: float
  rms: float

  def __call__(self, t):
    return self.a * np.asarray(t, np.float64) ** -self.b + self.c


def _linear_part(t, y, b):
  """For exponent b: (a, c) of the least-squares fit y ~ a t^-b + c, and its residual sum of squares."""
  design = np.stack([t ** -b, np.ones_like(t)], axis=1)
  (a, c), *_ = np.linalg.lstsq(design, y, rcond=None)
  return a, c, float(np.sum(np.square(design @ np.asarray([a, c]) - y)))


def power_law_fit(t, loss, b_bounds: tuple[float, float] = (1e-3, 5.0)) -> PowerLaw:
  """The least-squares fit of loss ~ a t^-b + c over the points with t > 0 (at least 4), b in `b_bounds`: a and c
  are linear given b (variable projection), so b is found by a bounded 1-D search of the residual over a grid of
  log-spaced exponents and then Brent's method around the best. Standard errors: sigma^2 (J^T J)^-1 with J the
  Jacobian in (a, b, c) and sigma^2 the residual sum of squares over n - 3; NaN where b is at a bound or the
  Jacobian is rank-deficient (constant data)."""
  t, y = _sorted(t, loss)
  keep = t > 0
  t, y = t[keep], y[keep]
  if len(t) < 4:
    raise ValueError(f'power_law_fit needs at least 4 points with t > 0, got {len(t)}')
  lo, hi = b_bounds
  grid = np.geomspace(lo, hi, 64)
  sse = [_linear_part(t, y, b)[2] for b in grid]
  k = int(np.argmin(sse))
  bracket = (grid[max(k - 1, 0)], grid[min(k + 1, len(grid) - 1)])
  best = optimize.minimize_scalar(lambda b: _linear_part(t, y, b)[2], bounds=bracket, method='bounded',
                                  options={'xatol': 1e-10})
  b = float(best.x) if best.fun <= sse[k] else float(grid[k])
  a, c, rss = _linear_part(t, y, b)
  jac = np.stack([t ** -b, -a * np.log(t) * t ** -b, np.ones_like(t)], axis=1)
  sigma2 = rss / max(len(t) - 3, 1)
  at_bound = min(b - lo, hi - b) <= 1e-6 * hi
  if at_bound or np.linalg.matrix_rank(jac) < 3:  # b not determined within its bounds: no error to give
    se = np.full(3, np.nan)
  else:
    se = np.sqrt(np.diag(sigma2 * np.linalg.pinv(jac.T @ jac)))
  return PowerLaw(float(a), b, float(c), *map(float, se), float(np.sqrt(rss / len(t))))


def local_slope(t, loss) -> np.ndarray:
  """b_loc(t) = -d log L / d log t at each point with t > 0 and L > 0 (NaN elsewhere), by central differences in
  log-log coordinates (one-sided at the ends)."""
  t, y = np.asarray(t, np.float64), np.asarray(loss, np.float64)
  out = np.full(t.shape, np.nan)
  ok = (t > 0) & (y > 0) & np.isfinite(t) & np.isfinite(y)
  if ok.sum() >= 2:
    out[ok] = -np.gradient(np.log(y[ok]), np.log(t[ok]))
  return out


def _log_residuals(t, loss) -> np.ndarray:
  """Residuals of log L around its least-squares line in log t (points with t, L > 0); empty if fewer than 3."""
  t, y = _sorted(t, loss)
  keep = (t > 0) & (y > 0)
  if keep.sum() < 3 or np.ptp(t[keep]) == 0:
    return np.zeros(0)
  lt, ly = np.log(t[keep]), np.log(y[keep])
  slope, intercept = np.polyfit(lt, ly, 1)
  return ly - (slope * lt + intercept)


def log_binned(t, loss, bins: int = 64, least: int = 8) -> tuple[np.ndarray, np.ndarray]:
  """A noisy curve (a step table's batch loss) on at most `bins` log-spaced bins of t > 0, each of at least `least`
  points (narrow bins at the start merged): each bin's geometric mean t and median loss. Kneedle and local slopes
  need such a smooth curve: on raw batch losses both follow the noise."""
  t, y = _sorted(t, loss)
  t, y = t[t > 0], y[t > 0]
  if len(t) <= bins:
    return t, y
  cuts = np.searchsorted(t, np.geomspace(t[0], t[-1], bins + 1)[1:-1])
  bounds = [0]
  for c in [*cuts, len(t)]:
    if c - bounds[-1] >= least:
      bounds.append(int(c))
  bounds[-1] = len(t)
  pieces = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
  return (np.asarray([np.exp(np.mean(np.log(t[p]))) for p in pieces]), np.asarray([np.median(y[p]) for p in pieces]))


def resid_power(t, loss) -> float:
  """The mean squared residual of log L around the least-squares line of log L against log t (over the points with
  t, L > 0): 0 for an exact power law."""
  r = _log_residuals(t, loss)
  return float(np.mean(np.square(r))) if len(r) >= 3 else float('nan')


def psd_tail(t, loss, segment: int = 256) -> float:
  """The log-log slope of the Welch PSD (Hann segments of `segment` points, half overlapping) of the residuals of
  resid_power, over the upper half of its nonzero frequencies in log scale (those at least the geometric mean of the
  lowest and the highest). Needs at least 16 points."""
  r = _log_residuals(t, loss)
  if len(r) < 16 or np.mean(np.square(r)) < 1e-20:  # (an exact power law: residuals of rounding, no spectrum)
    return float('nan')
  f, p = signal.welch(r, nperseg=min(segment, len(r)))
  f, p = f[1:], p[1:]
  keep = (np.log(f) >= 0.5 * (np.log(f[0]) + np.log(f[-1]))) & (p > 0)
  return float(np.polyfit(np.log(f[keep]), np.log(p[keep]), 1)[0])


def loss_shape(t, loss, window: int = 256) -> dict[str, np.ndarray]:
  """resid_power and psd_tail over consecutive windows of `window` points (at least 256 steps in the monitoring
  plan): {'t_end': the last t of each window, 'resid_power', 'psd_tail'}; a shorter tail is left out."""
  t, y = _sorted(t, loss)
  ends, power, tail = [], [], []
  for start in range(0, len(t) - window + 1, window):
    ts, ys = t[start:start + window], y[start:start + window]
    ends.append(ts[-1])
    power.append(resid_power(ts, ys))
    tail.append(psd_tail(ts, ys))
  return {'t_end': np.asarray(ends), 'resid_power': np.asarray(power), 'psd_tail': np.asarray(tail)}
