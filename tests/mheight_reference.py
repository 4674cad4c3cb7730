"""Reference computations of m-heights for the tests: the definition on one codeword, a second LP method with many
more LPs than ddjax.data.mheight.height_lp, and the vertex method's candidate codewords (tiny codes only)."""

import itertools
import math

import numpy as np

from ddjax.data.mheight import _check, _invertible, _is_integer, _linprog, generator_matrix


def codeword_height(c: np.ndarray, m: int) -> float:
  """|c|_(0) / |c|_(m) of one nonzero codeword (math.inf when |c|_(m) = 0)."""
  a = np.sort(np.abs(np.asarray(c, dtype=np.float64)))[::-1]
  if not 0 <= m < a.size:
    raise ValueError(f'm={m} must lie in [0, {a.size - 1}]')
  if a[0] == 0:
    raise ValueError('the zero word has no height')
  return math.inf if a[m] == 0 else float(a[0] / a[m])


def height_tuples(P: np.ndarray, m: int) -> float:
  """h_m by enumerating (a, b, X, psi): a largest, b the m-th largest, X the m-1 between, psi the signs.

  LP: max psi_a c_a s.t. psi_b c_b = 1, psi_a c_a >= 1, 1 <= psi_j c_j <= psi_a c_a (j in X), |c_j| <= 1 otherwise.
  Every feasible c then has |c|_(m) = 1 and |c|_(0) = psi_a c_a, and every codeword with finite height is (after
  scaling) feasible for its own tuple; an unbounded LP, or no feasible LP at all, means h_m is infinite.
  Many more LPs than `height_lp`: for tests on tiny codes only.
  """
  P, n, k = _check(P, m)
  G = generator_matrix(P).T  # (n, k): row j gives c_j = G[j] @ u
  best, feasible = 1.0, False
  for a, b in itertools.permutations(range(n), 2):
    rest = [j for j in range(n) if j not in (a, b)]
    for X in itertools.combinations(rest, m - 1):
      others = [j for j in rest if j not in X]
      for signs in itertools.product((1.0, -1.0), repeat=m):  # psi_b, then psi_j for j in X; psi_a = +1
        psi_b, psi_x = signs[0], np.array(signs[1:])
        rows = [-G[a][None]]                                       # c_a >= 1
        rows += [-psi_x[:, None] * G[list(X)]]                     # psi_j c_j >= 1
        rows += [psi_x[:, None] * G[list(X)] - G[a][None]]         # psi_j c_j <= c_a
        rows += [G[others], -G[others]]                            # |c_j| <= 1
        b_ub = np.concatenate([[-1.0], -np.ones(m - 1), np.zeros(m - 1), np.ones(2 * len(others))])
        low = _linprog(-G[a], np.concatenate(rows), b_ub, psi_b * G[b][None], [1.0])
        if low is None:
          continue
        if low == -math.inf:
          return math.inf
        best, feasible = max(best, -low), True
  return best if feasible else math.inf


def vertex_codewords(P: np.ndarray) -> np.ndarray:
  """The candidate codewords s G_T^{-1} G of the vertex method for one code (k, n-k), by LAPACK: (count, n)."""
  P = np.asarray(P)
  k, r = P.shape
  G = generator_matrix(P)
  GT = np.moveaxis(G[:, list(itertools.combinations(range(k + r), k))], 0, 1)
  GT = GT[_invertible(np.linalg.det(GT), GT, _is_integer(P))]
  signs = np.array([(1.0,) + s for s in itertools.product((1.0, -1.0), repeat=k - 1)])
  return (signs @ np.linalg.solve(GT, G[None])).reshape(-1, k + r)
