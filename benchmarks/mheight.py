"""m-height solvers: the vertex method against the LP method on a few random integer codes per (n, k, m) group.

  python -m benchmarks.mheight

Prints ms per code for each method (the vertex method one code per call and batched), the number of LPs, the
largest |log2 h| difference between the two and how many heights are infinite.
"""

import math

import numpy as np

from ddjax.data.mheight import P_HIGH, P_LOW, height_lp, height_vertex, heights_vertex


def main(groups=((6, 3, 2), (9, 4, 2), (9, 5, 3), (10, 5, 2), (10, 6, 3), (9, 4, 5), (10, 4, 6)),
            codes: int = 5, batch: int = 1000) -> None:
  """Vertex vs LP method on a few random integer codes per group: ms per code and max |log2 h difference|.

  'vertex ms' times one code per call, 'batched ms' `heights_vertex` on `batch` codes at once (in this process).
  """
  import time
  height_lp(np.ones((2, 2), dtype=np.int8), 1)  # import scipy and warm HiGHS up outside the timings
  print(f'{"group":>9} {"vertex ms":>10} {"batched ms":>11} {"LP ms":>9} {"LPs":>5} {"max|dlog2 h|":>13} {"inf":>4}')
  for n, k, m in groups:
    rng = np.random.default_rng([12345, n, k, m])
    Ps = rng.integers(P_LOW, P_HIGH + 1, size=(codes, k, n - k)).astype(np.int8)
    t0 = time.perf_counter()
    hv = [height_vertex(P, m) for P in Ps]
    t1 = time.perf_counter()
    hl = [height_lp(P, m) for P in Ps]
    t2 = time.perf_counter()
    many = rng.integers(P_LOW, P_HIGH + 1, size=(batch, k, n - k)).astype(np.int8)
    t3 = time.perf_counter()
    heights_vertex(many, m)
    t4 = time.perf_counter()
    diff = max((0.0 if math.isinf(a) and math.isinf(b) else abs(math.log2(a) - math.log2(b))) for a, b in zip(hv, hl))
    print(f'{f"{n}/{k}/{m}":>9} {1e3 * (t1 - t0) / codes:10.2f} {1e3 * (t4 - t3) / batch:11.3f} '
          f'{1e3 * (t2 - t1) / codes:9.1f} {math.comb(n, m) * m:5d} {diff:13.2e} {sum(map(math.isinf, hv)):4d}')


if __name__ == '__main__':
  main()
