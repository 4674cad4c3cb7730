"""The m-height regression data set (data.name=mheight): codes generated per (n, k, m) group (ddjax.data.mheight) or
read from a table the user has (data.file), split per group into training, validation and test codes.

Input per code (K, R, 2 + M): P / 100 zero-padded to the largest k x (n - k), a mask of P's entries, and a one-hot
of m (broadcast); target log2(h_m), +inf where the height is infinite (kept, excluded from the loss). With
data.bound_codewords the target is (log2 h, log2 b): b, the largest height of that many random codewords, is a lower
bound of h that train.violation penalises predictions below.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

import numpy as np

from ddjax.data import mheight as mh
from ddjax.data.registry import Dataset, register_dataset

Group = tuple[int, int, int]
SUFFIXES = ('.csv', '.parquet', '.npz', '.npy')


# ---------------------------------------------------------------- codes from a file

def _bad(path, why: str) -> ValueError:
  return ValueError(f'bad value {str(path)!r} for data.file: {why}')


@functools.lru_cache(maxsize=8)
def _digest(path: str, mtime_ns: int, size: int) -> str:
  h = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      h.update(block)
  return h.hexdigest()[:16]


def file_digest(path: str) -> str:
  """The content hash that stands for data.file in run ids (so a moved or renamed file keeps its runs)."""
  try:
    st = os.stat(path)
  except OSError:
    return f'missing:{path}'
  return 'sha256:' + _digest(os.path.abspath(path), st.st_mtime_ns, st.st_size)


def _table(path: Path):
  """The file as a DataFrame of columns n, k, m, p0, p1, ..., h."""
  import pandas as pd
  suffix = path.suffix.lower()
  if suffix not in SUFFIXES:
    raise _bad(path, f"unknown format {suffix or '(none)'} (allowed: {', '.join(SUFFIXES)})")
  if not path.is_file():
    raise _bad(path, 'no such file')
  try:
    if suffix == '.csv':
      return pd.read_csv(path)
    if suffix == '.parquet':
      return pd.read_parquet(path)
    if suffix == '.npz':
      with np.load(path) as z:
        return pd.DataFrame({k: np.asarray(z[k]).ravel() for k in z.files})
    a = np.load(path)
  except Exception as e:  # noqa: BLE001 - whatever the reader says, in one line
    raise _bad(path, f'cannot be read ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""})') from None
  if a.dtype.names:  # a structured array names its columns
    return pd.DataFrame({k: a[k] for k in a.dtype.names})
  if a.ndim != 2 or a.shape[1] < 5:
    raise _bad(path, f'a plain .npy table is 2-D with columns n, k, m, the P entries and h last; got shape {a.shape}')
  return pd.DataFrame(a, columns=['n', 'k', 'm', *(f'p{i}' for i in range(a.shape[1] - 4)), 'h'])


@functools.lru_cache(maxsize=4)
def _read(path: str, digest: str) -> dict[Group, tuple[np.ndarray, np.ndarray]]:
  df = _table(Path(path))
  missing = [c for c in ('n', 'k', 'm', 'h', 'p0') if c not in df.columns]
  if missing:
    raise _bad(path, f"missing column(s) {', '.join(missing)} (needed: n, k, m, p0, p1, ... row by row, and h)")
  p_cols = sorted((c for c in df.columns if isinstance(c, str) and c[:1] == 'p' and c[1:].isdigit()),
                  key=lambda c: int(c[1:]))
  if p_cols != [f'p{i}' for i in range(len(p_cols))]:
    raise _bad(path, f'the P columns must be p0 .. p{len(p_cols) - 1} without gaps')
  nkm = df[['n', 'k', 'm']].to_numpy(float)
  if not np.all(np.isfinite(nkm) & (nkm == np.round(nkm))):
    raise _bad(path, 'columns n, k, m must be whole numbers')
  P_all, h_all = df[p_cols].to_numpy(float), df['h'].to_numpy(float)
  if np.isnan(h_all).any() or (h_all < 1).any():
    raise _bad(path, f'h must be a height >= 1 or inf (row {int(np.argmax(np.isnan(h_all) | (h_all < 1)))})')
  out = {}
  for group in sorted({tuple(int(v) for v in row) for row in nkm}):
    n, k, m = group
    if not (1 <= k < n and 1 <= m <= n - k):
      raise _bad(path, f'mixed groups: rows of n={n}, k={k}, m={m}, which is no group (1 <= k < n, 1 <= m <= n-k)')
    rows = np.all(nkm == group, axis=1)
    size = k * (n - k)
    P = P_all[rows]
    if size > P.shape[1] or not np.isfinite(P[:, :size]).all() or np.isfinite(P[:, size:]).any():
      raise _bad(path, f'bad shape: group {n}/{k}/{m} needs exactly {size} P entries per row (p0 .. p{size - 1}, '
                       f'row-major k x (n-k)), and no others')
    out[group] = (P[:, :size].reshape(-1, k, n - k), h_all[rows])
  return out


def read_codes(path: str) -> dict[Group, tuple[np.ndarray, np.ndarray]]:
  """{(n, k, m): (P (N, k, n-k), h (N,))} of a table of codes in file order (ValueError: one line, for data.file)."""
  return _read(str(path), file_digest(str(path)))


# ---------------------------------------------------------------- groups and splits

def groups_of(d) -> list[Group]:
  """The groups of a data config: data.groups (of the file, with data.file; 'all': every group it holds)."""
  if not d.file:
    return mh.parse_groups(d.groups)
  held = list(read_codes(d.file))
  if d.groups.strip() == 'all':
    return held
  wanted = mh.parse_groups(d.groups)
  if lacking := [g for g in wanted if g not in held]:
    raise ValueError(f"bad value {d.groups!r} for data.groups: {d.file} holds no codes of "
                     f"{', '.join('/'.join(map(str, g)) for g in lacking)} (it has "
                     f"{', '.join('/'.join(map(str, g)) for g in held)})")
  return wanted


def split_sizes(d, count: int) -> tuple[int, int, int]:
  """(train, validation, test) codes of a group of `count` codes, taken in that order (ValueError if they do not
  fit)."""
  n_train = d.train_per_group or int(count * d.train_split)
  n_val = d.val_per_group
  n_test = d.test_per_group or count - n_train - n_val
  if n_train < 1 or n_test < 1 or n_train + n_val + n_test > count:
    key = 'data.test_per_group' if d.test_per_group else 'data.train_per_group' if d.train_per_group else \
        'data.train_split'
    raise ValueError(f'bad value {getattr(d, key.split(".")[1])!r} for {key}: {n_train} training, {n_val} validation '
                     f'and {max(n_test, 0)} test codes of a group of {count}; train and test need at least one '
                     'each, and all must fit')
  return n_train, n_val, n_test


def _count(d, group: Group) -> int:
  return len(read_codes(d.file)[group][1]) if d.file else d.num_samples


def _shape(d) -> tuple[tuple[int, ...], int]:
  spec = groups_of(d)
  return (max(k for _, k, _ in spec), max(n - k for n, k, _ in spec), 2 + max(m for *_, m in spec)), 1


def _check(d) -> None:
  try:
    spec = groups_of(d)
  except ValueError as e:
    raise ValueError(str(e) if 'data.' in str(e) else f'bad value {d.groups!r} for data.groups: {e}') from None
  for key in ('train_per_group', 'val_per_group', 'test_per_group', 'bound_codewords'):
    if getattr(d, key) < 0:
      raise ValueError(f'bad value {getattr(d, key)!r} for data.{key}: must be >= 0')
  if d.test_per_group and not d.val_per_group:
    raise ValueError(f'bad value {d.test_per_group!r} for data.test_per_group: it sizes the test split beside a '
                     'validation split (data.val_per_group); without one the test codes are the rest')
  for group in spec:
    split_sizes(d, _count(d, group))


def _train_examples(d) -> int:
  return sum(split_sizes(d, _count(d, g))[0] for g in groups_of(d))


@register_dataset('mheight', shape=_shape, inputs='grid', task='regress',
                  options=('groups', 'workers', 'train_per_group', 'val_per_group', 'test_per_group',
                           'bound_codewords', 'file'),
                  validate=_check, train_examples=_train_examples, has_validation=lambda d: d.val_per_group > 0,
                  help='log2 m-heights of random systematic codes over (n, k, m) groups, or of data.file '
                       '(regression)')
def _load(d) -> Dataset:
  return mheight(d.groups, d.num_samples, d.train_split, d.seed, d.workers, train_per_group=d.train_per_group,
                 val_per_group=d.val_per_group, test_per_group=d.test_per_group, bound_codewords=d.bound_codewords,
                 file=d.file)


def mheight(groups: str = 'all', num_samples: int = 6250, train_split: float = 0.8, seed: int = 42,
            workers: int = 0, *, train_per_group: int = 0, val_per_group: int = 0, test_per_group: int = 0,
            bound_codewords: int = 0, file: str = '') -> Dataset:
  """The m-height data set: per group, `num_samples` generated codes (or the file's), the first for training (as
  many as train_per_group, else train_split of them), then val_per_group for validation, then the test codes
  (test_per_group, else the rest)."""
  from types import SimpleNamespace
  d = SimpleNamespace(groups=groups, num_samples=num_samples, train_split=train_split, train_per_group=train_per_group,
                      val_per_group=val_per_group, test_per_group=test_per_group, file=file)
  spec = groups_of(d)
  rows, cols, ms = max(k for _, k, _ in spec), max(n - k for n, k, _ in spec), max(m for *_, m in spec)
  names = ('train', 'val', 'test') if val_per_group else ('train', 'test')
  parts = {f'{a}_{s}': [] for s in names for a in 'xy'}
  for n, k, m in spec:
    P, h = read_codes(file)[(n, k, m)] if file else mh.sample_group(n, k, m, num_samples, seed,
                                                                     workers=workers or None)
    x = np.zeros((len(h), rows, cols, 2 + ms), np.float32)
    x[:, :k, :n - k, 0] = P / 100.0
    x[:, :k, :n - k, 1] = 1.0
    x[:, :, :, 1 + m] = 1.0
    with np.errstate(divide='ignore'):
      y = np.log2(h).astype(np.float32)
      if bound_codewords:
        bound = np.minimum(mh.heights_sampled(P, m, bound_codewords, [seed, n, k, m, 1]), h)
        y = np.stack([y, np.log2(bound).astype(np.float32)], axis=1)
    sizes = dict(zip(('train', 'val', 'test'), split_sizes(d, len(h))))
    start = 0
    for split in ('train', 'val', 'test'):
      if split in names:
        parts[f'x_{split}'].append(x[start:start + sizes[split]])
        parts[f'y_{split}'].append(y[start:start + sizes[split]])
      start += sizes[split]
  arrays = {k: np.concatenate(v) for k, v in parts.items()}
  info = tuple((f'{s}_infinite', int(np.isinf(arrays[f'y_{s}'].reshape(len(arrays[f'y_{s}']), -1)[:, 0]).sum()))
               for s in names)
  return Dataset(arrays['x_train'], arrays['y_train'], arrays['x_test'], arrays['y_test'], 1, task='regress',
                 info=info, x_val=arrays.get('x_val'), y_val=arrays.get('y_val'), bounds=bool(bound_codewords))
