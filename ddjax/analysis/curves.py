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
  loss_shape     both, over windows of a curve
  fit_curve      knee, power law and local slopes of one curve, as a dict (a row of a table)
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


def _linear_part(t, y, b, c_min=None):
  """For exponent b: (a, c) of the least-squares fit y ~ a t^-b + c with c >= c_min (None: any c), and its residual
  sum of squares. Over one variable the constrained optimum is the unconstrained one or on the bound."""
  design = np.stack([t ** -b, np.ones_like(t)], axis=1)
  (a, c), *_ = np.linalg.lstsq(design, y, rcond=None)
  if c_min is not None and c < c_min:
    c = c_min
    a = float(np.dot(design[:, 0], y - c) / np.dot(design[:, 0], design[:, 0]))
  return a, c, float(np.sum(np.square(design @ np.asarray([a, c]) - y)))


def power_law_fit(t, loss, b_bounds: tuple[float, float] = (1e-3, 5.0), c_min: float | None = 0.0) -> PowerLaw:
  """The least-squares fit of loss ~ a t^-b + c over the points with t > 0 (at least 4), b in `b_bounds`, c >=
  `c_min` (default 0: a loss has no negative floor; None: unbounded): a and c are linear given b (variable
  projection), so b is found by a bounded 1-D search of the residual over a grid of log-spaced exponents and then
  Brent's method around the best. Standard errors: sigma^2 (J^T J)^-1 with J the Jacobian in the free parameters
  ((a, b, c), or (a, b) with c on its bound) and sigma^2 the residual sum of squares over n minus their number;
  NaN where b is at a bound or the Jacobian is rank-deficient (constant data), and for c on its bound."""
  t, y = _sorted(t, loss)
  keep = t > 0
  t, y = t[keep], y[keep]
  if len(t) < 4:
    raise ValueError(f'power_law_fit needs at least 4 points with t > 0, got {len(t)}')
  lo, hi = b_bounds
  grid = np.geomspace(lo, hi, 64)
  sse = [_linear_part(t, y, b, c_min)[2] for b in grid]
  k = int(np.argmin(sse))
  bracket = (grid[max(k - 1, 0)], grid[min(k + 1, len(grid) - 1)])
  best = optimize.minimize_scalar(lambda b: _linear_part(t, y, b, c_min)[2], bounds=bracket, method='bounded',
                                  options={'xatol': 1e-10})
  b = float(best.x) if best.fun <= sse[k] else float(grid[k])
  a, c, rss = _linear_part(t, y, b, c_min)
  free_c = c_min is None or c > c_min
  jac = np.stack([t ** -b, -a * np.log(t) * t ** -b] + ([np.ones_like(t)] if free_c else []), axis=1)
  sigma2 = rss / max(len(t) - jac.shape[1], 1)
  at_bound = min(b - lo, hi - b) <= 1e-6 * hi
  se = np.full(3, np.nan)
  if not at_bound and np.linalg.matrix_rank(jac) == jac.shape[1]:  # else b is not determined: no error to give
    se[:jac.shape[1]] = np.sqrt(np.diag(sigma2 * np.linalg.pinv(jac.T @ jac)))
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


def loss_shape(t, loss, window: int = 256, stride: int | None = None) -> dict[str, np.ndarray]:
  """resid_power and psd_tail over windows of `window` points (at least 256 steps in the monitoring plan), one
  every `stride` points (default `window`: consecutive windows; the monitoring plan's every 2 epochs):
  {'t_end': the last t of each window, 'resid_power', 'psd_tail'}; a shorter tail is left out."""
  t, y = _sorted(t, loss)
  ends, power, tail = [], [], []
  for start in range(0, len(t) - window + 1, stride or window):
    ts, ys = t[start:start + window], y[start:start + window]
    ends.append(ts[-1])
    power.append(resid_power(ts, ys))
    tail.append(psd_tail(ts, ys))
  return {'t_end': np.asarray(ends), 'resid_power': np.asarray(power), 'psd_tail': np.asarray(tail)}


SLOPE_BINS = 16  # log-spaced bins of the local slope in fit_curve: differences of finer medians are mostly noise


def _inner_knee(x, y, sensitivity: float) -> float:
  """kneedle's convex, decreasing knee, NaN where it has none or it is the curve's first or last point (a curve with
  no bend of that kind, such as a loss still steepening in log-log)."""
  knee = kneedle(x, y, sensitivity, 'convex', 'decreasing')
  return np.nan if knee is None or knee in (x[0], x[-1]) else knee


def fit_curve(t, loss, sensitivity: float = 1.0, at: tuple[float, ...] = (0.25, 0.5, 1.0)) -> dict[str, float]:
  """A loss curve's shape in one dict: `points`; with at least 4 points with t, L > 0 also the power law (a, b, c,
  se_a, se_b, se_c, rms; fitted to every point), two knees and `b_loc_<q>`, the local slope at the fraction q of
  the way from the first to the last t. `knee_step`: Kneedle in log-log axes, where the decay levels off towards c
  (NaN for a loss still falling ever faster in log-log, as a training loss going to zero does); `elbow_step`:
  Kneedle in linear axes, where the fast early fall turns slow; either is NaN where it would be an end point. Knees
  are of the curve's medians on 64 log-spaced bins (log_binned), slopes of its medians on SLOPE_BINS: a batch loss
  is too noisy for differences."""
  t, y = _sorted(t, loss)
  ok = (t > 0) & (y > 0)
  t, y = t[ok], y[ok]
  out: dict[str, float] = {'points': len(t)}
  if len(t) < 4:
    return out
  law = power_law_fit(t, y)
  tb, yb = log_binned(t, y)
  ts, ys = log_binned(t, y, SLOPE_BINS)
  slope = local_slope(ts, ys)
  nearest = lambda q: slope[int(np.argmin(np.abs(np.log(ts) - np.log(t[0] + q * (t[-1] - t[0])))))]
  out.update(knee_step=10 ** _inner_knee(np.log10(tb), np.log10(yb), sensitivity),
             elbow_step=_inner_knee(tb, yb, sensitivity), **law._asdict(),
             **{f'b_loc_{q}': float(nearest(q)) for q in at})
  return out
