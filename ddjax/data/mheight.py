"""m-heights of real [n, k] codes with systematic generator G = [I_k | P]: exact LP, tuple-LP and vertex methods.

The m-height of a nonzero codeword c is |c|_(0) / |c|_(m) (entries of |c| sorted decreasingly, index m counted
from 0; infinite when |c|_(m) = 0); the m-height h_m of the code is its maximum over nonzero codewords.
`sample_group` builds the regression data set (random integer P, target h_m) with the fast vertex method.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import os
import re
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache
from pathlib import Path

import numpy as np

from ddjax.parallel import cache_dir

GROUPS: list[tuple[int, int, int]] = sorted((n, k, m) for n in (9, 10) for k in (4, 5, 6) for m in range(2, n - k + 1))
P_LOW, P_HIGH = -100, 100   # integer entries of P, both ends included
CACHE_VERSION = 1           # bump when the sampling or the height computation changes
_CHUNK = 256                # codes per task of `sample_group` (fixed, so results never depend on the worker count)
_BATCH = 8                  # codes per numpy batch inside `heights_vertex` (small: its arrays stay in cache)
_GROUP_FORM = 'n/k/m joined by "+" (e.g. 9/4/2+10/5/3) with 1 <= k < n and 1 <= m <= n-k, or "all"'


def parse_groups(text: str) -> list[tuple[int, int, int]]:
  """'all' -> GROUPS; otherwise 'n/k/m' groups joined by '+', e.g. '9/4/2+10/5/3'."""
  text = text.strip()
  if text == 'all':
    return list(GROUPS)
  groups = []
  for part in text.split('+'):
    match = re.fullmatch(r'\s*(\d+)/(\d+)/(\d+)\s*', part)
    if match is None:
      raise ValueError(f'bad m-height group {part!r}: expected {_GROUP_FORM}')
    n, k, m = map(int, match.groups())
    if not (1 <= k < n and 1 <= m <= n - k):
      raise ValueError(f'bad m-height group {part!r}: expected {_GROUP_FORM}')
    groups.append((n, k, m))
  return groups


def generator_matrix(P: np.ndarray) -> np.ndarray:
  """G = [I_k | P] as float64, batched over leading axes of P (..., k, n-k) -> (..., k, n)."""
  P = np.asarray(P, dtype=np.float64)
  k = P.shape[-2]
  eye = np.broadcast_to(np.eye(k), P.shape[:-2] + (k, k))
  return np.concatenate([eye, P], axis=-1)


def _check(P: np.ndarray, m: int) -> tuple[np.ndarray, int, int]:
  P = np.asarray(P)
  if P.ndim < 2:
    raise ValueError(f'P must have shape (..., k, n-k), got {P.shape}')
  k, r = P.shape[-2:]
  n = k + r
  if not (1 <= k < n and 1 <= m < n):
    raise ValueError(f'need 1 <= k < n and 1 <= m < n, got n={n}, k={k}, m={m}')
  return P, n, k


# ---------------------------------------------------------------- LP methods (references; slow)

def _linprog(cost, A_ub, b_ub, A_eq=None, b_eq=None) -> float | None:
  """Minimum of cost @ u over the polyhedron (u free): a float, -inf when unbounded, None when infeasible."""
  from scipy.optimize import linprog
  kw = dict(A_ub=A_ub, b_ub=b_ub, A_eq=A_eq, b_eq=b_eq, bounds=(None, None), method='highs')
  res = linprog(cost, **kw)
  if res.status == 4:  # HiGHS' presolve may only say 'unbounded or infeasible': ask again without it
    res = linprog(cost, options={'presolve': False}, **kw)
  if res.status == 0:
    return float(res.fun)
  if res.status == 3:
    return -math.inf
  if res.status == 2:
    return None
  raise RuntimeError(f'linprog failed: {res.message}')


def height_lp(P: np.ndarray, m: int) -> float:
  """h_m by C(n, m) * m LPs: for each set S of n-m positions and i outside S, max c_i s.t. |c_j| <= 1 on S.

  (The sign -c_i is left out: the feasible set is symmetric under u -> -u, so it gives the same optimum.)
  """
  P, n, k = _check(P, m)
  G = generator_matrix(P)
  best = 1.0
  for S in itertools.combinations(range(n), n - m):
    GS = G[:, S].T
    A_ub, b_ub = np.concatenate([GS, -GS]), np.ones(2 * len(S))
    for i in sorted(set(range(n)) - set(S)):
      low = _linprog(-G[:, i], A_ub, b_ub)
      if low is None:
        raise RuntimeError('an LP with the feasible point u = 0 was reported infeasible')
      if low == -math.inf:
        return math.inf
      best = max(best, -low)
  return best


# ---------------------------------------------------------------- vertex method (exact, fast)

@lru_cache(maxsize=None)
def _tables(n: int, k: int, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """k-subsets T (nT, k), their complements (nT, n-k), 0/1 matrix 'T lies inside S' over the (n-m)-subsets S."""
  subsets = list(itertools.combinations(range(n), k))
  rest = [[j for j in range(n) if j not in T] for T in subsets]
  big = [set(S) for S in itertools.combinations(range(n), n - m)]
  inside = np.array([[set(T) <= S for S in big] for T in subsets], dtype=np.float64).reshape(len(subsets), len(big))
  return np.array(subsets), np.array(rest, dtype=np.int64).reshape(len(subsets), n - k), inside


def _is_integer(P: np.ndarray) -> bool:
  return np.issubdtype(P.dtype, np.integer) or bool(np.all(P == np.round(P)))


def _gauss_jordan(A: np.ndarray, B: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """X = A^{-1} B and det(A) for stacks (N, k, k), (N, k, r): Gauss-Jordan with partial pivoting.

  Plain numpy over the whole stack: faster than one LAPACK call per tiny matrix, and free of BLAS threads.
  Singular A gives garbage X (finite or not) with det = 0; callers mask those out.
  """
  k = A.shape[-1]
  W = np.concatenate([A, B], axis=-1)
  rows = np.arange(W.shape[0])
  det = np.ones(W.shape[0])
  for j in range(k):
    p = j + np.argmax(np.abs(W[:, j:, j]), axis=1)
    det = np.where(p != j, -det, det)
    row = W[rows, p]
    W[rows, p] = W[:, j]
    pivot = row[:, j]
    det = det * pivot
    row = row / np.where(pivot == 0, 1.0, pivot)[:, None]
    W -= W[:, :, j, None] * row[:, None, :]
    W[:, j] = row
  return W[:, :, k:], det


def _invertible(det: np.ndarray, GT: np.ndarray, integer: bool) -> np.ndarray:
  """Which matrices of the stack GT (with determinants det) are invertible: exact for integer P, else relative."""
  hadamard = np.prod(np.linalg.norm(GT, axis=-2), axis=-1)  # |det| <= product of the column norms
  # An integer determinant is 0 or >= 1, and elimination errs far less than 0.5 while the Hadamard bound is < 2^40.
  tol = np.maximum(0.5, 1e-12 * hadamard) if integer else 1e-12 * hadamard
  return np.abs(det) > tol


def _vertex_batch(P: np.ndarray, m: int, integer: bool) -> np.ndarray:
  B, k, r = P.shape
  n = k + r
  subsets, rest, inside = _tables(n, k, m)
  G = generator_matrix(P)                                               # (B, k, n)
  GT = np.moveaxis(G[:, :, subsets], 1, 2).reshape(-1, k, k)            # columns T of G, for every T
  GR = np.moveaxis(G[:, :, rest], 1, 2).reshape(-1, k, r)               # the other columns
  X, det = _gauss_jordan(GT, GR)                                        # c_R = s G_T^{-1} G_R, and c_T = s
  ok = _invertible(det, GT, integer).reshape(B, -1)                     # (B, nT)
  infinite = ((ok.astype(np.float64) @ inside) == 0).any(axis=-1)      # some S holds no invertible T
  c = X[:, :1]                                                          # c_R for all s with s_0 = +1, built by doubling
  for i in range(1, k):
    c = np.concatenate([c + X[:, i:i + 1], c - X[:, i:i + 1]], axis=1)  # (N, 2^i, r)
  x = np.sort(np.abs(c), axis=-1)[..., ::-1]                            # |c_R| decreasing; |c_T| are all 1
  top = np.maximum(x[..., 0], 1.0)
  # |c|_(m) of the merge of k ones with x: max(x_(m), min(1, x_(m-k))), x_(j) = 0 past the end and inf before it
  low = x[..., m] if m < r else 0.0
  if m >= k:
    low = np.maximum(low, np.minimum(x[..., m - k], 1.0))
  else:
    low = np.maximum(low, 1.0)
  with np.errstate(divide='ignore', invalid='ignore'):
    ratio = (top / low).reshape(B, len(subsets), -1)
  ratio = np.where(ok[..., None] & np.isfinite(ratio), ratio, 1.0)
  return np.where(infinite, math.inf, ratio.max(axis=(-2, -1)))


def heights_vertex(P: np.ndarray, m: int) -> np.ndarray:
  """h_m of every code in a batch P (..., k, n-k) by the vertex method; math.inf where infinite.

  h_m is infinite iff some n-m columns of G have rank < k (no invertible k-subset inside). Otherwise every
  LP of `height_lp` is bounded with an optimal vertex where |c_j| = 1 on a k-subset T with G_T invertible, so
  h_m is the largest height among the codewords c = s G_T^{-1} G over such T and signs s in {+1, -1}^k.
  """
  P, n, k = _check(P, m)
  lead = P.shape[:-2]
  integer = _is_integer(P)
  P = P.reshape((-1, k, n - k))
  out = np.empty(P.shape[0])
  for lo in range(0, P.shape[0], _BATCH):
    with np.errstate(divide='ignore', invalid='ignore', over='ignore'):
      out[lo:lo + _BATCH] = _vertex_batch(P[lo:lo + _BATCH], m, integer)
  return out.reshape(lead)


def height_vertex(P: np.ndarray, m: int) -> float:
  """h_m of one code P (k, n-k) by the vertex method."""
  return float(heights_vertex(np.asarray(P)[None], m)[0])


def heights_sampled(P: np.ndarray, m: int, codewords: int, seed: int) -> np.ndarray:
  """Per code of P (N, k, n-k): the largest m-height among `codewords` random codewords c = u G (u ~ N(0, I_k),
  from `seed`), a lower bound of h_m (every c is a nonzero codeword; equal to h_m only by luck)."""
  P = np.asarray(P)
  # All draws at once (codewords x N x k), so that more codewords keep the same first ones; chunks bound the rest.
  u = np.random.default_rng(seed).standard_normal((codewords, P.shape[0], P.shape[-2]))
  out = np.empty(P.shape[0])
  for lo in range(0, P.shape[0], _CHUNK):  # (chunk, codewords, n) at a time
    G = generator_matrix(P[lo:lo + _CHUNK])                                    # (chunk, k, n)
    c = np.sort(np.abs(np.einsum('cNk,Nkn->Ncn', u[:, lo:lo + _CHUNK], G)), axis=-1)[..., ::-1]  # decreasing
    with np.errstate(divide='ignore', invalid='ignore'):
      ratio = c[..., 0] / c[..., m]
    out[lo:lo + _CHUNK] = np.where(np.isnan(ratio), 1.0, ratio).max(axis=-1)
  return out


# ---------------------------------------------------------------- data set

def _cache_path(n: int, k: int, m: int, count: int, seed: int) -> Path:
  key = hashlib.sha1(f'mheight-v{CACHE_VERSION}-{n}-{k}-{m}-{count}-{seed}-{P_LOW}-{P_HIGH}'.encode()).hexdigest()[:16]
  return cache_dir() / 'mheight' / f'mheight-{n}-{k}-{m}-{key}.npz'


def _heights_task(args: tuple[np.ndarray, int]) -> np.ndarray:
  P, m = args
  return heights_vertex(P, m)


def sample_group(n: int, k: int, m: int, count: int, seed: int,
                 workers: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """`count` random codes of one group: P (count, k, n-k) int8 with entries in [-100, 100] and h_m (count,) float64.

  P comes from a generator seeded by (seed, n, k, m); heights by the vertex method in `workers` processes
  (default os.cpu_count(); 1 = in this process; results never depend on it). Workers are spawned, so a script
  calling this with workers > 1 needs the usual `if __name__ == '__main__':` guard. Cached on disk under
  cache_dir()/mheight; infinite heights are kept as math.inf.
  """
  if not (1 <= k < n and 1 <= m <= n - k) or count < 0:
    raise ValueError(f'bad group n={n}, k={k}, m={m} or count={count}')
  path = _cache_path(n, k, m, count, seed)
  if path.exists():
    try:
      with np.load(path) as z:
        P, h = z['P'], z['h']
      if P.shape == (count, k, n - k) and P.dtype == np.int8 and h.shape == (count,) and h.dtype == np.float64:
        return P, h
    except Exception:  # noqa: BLE001 - a damaged cache file (truncated zip, missing key) is regenerated below
      pass
  rng = np.random.default_rng([seed, n, k, m])
  P = rng.integers(P_LOW, P_HIGH + 1, size=(count, k, n - k)).astype(np.int8)
  tasks = [(P[lo:lo + _CHUNK], m) for lo in range(0, count, _CHUNK)]
  workers = (os.cpu_count() or 1) if workers is None else workers
  if workers <= 1 or len(tasks) <= 1:
    parts = [_heights_task(t) for t in tasks]
  else:
    import multiprocessing
    ctx = multiprocessing.get_context('spawn')  # never fork a process that may run JAX's threads
    with ProcessPoolExecutor(min(workers, len(tasks)), mp_context=ctx) as pool:
      parts = list(pool.map(_heights_task, tasks))
  h = np.concatenate(parts) if parts else np.empty(0)
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f'.{os.getpid()}.tmp.npz')
    np.savez(tmp, P=P, h=h)
    os.replace(tmp, path)
  except OSError:
    pass  # caching is an optimisation only
  return P, h
