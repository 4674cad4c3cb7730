"""Checkpoints of a job's bucket states with orbax, and a SIGTERM/SIGINT handler that saves before exiting.

A checkpoint's step is the number of finished epochs. Everything a member's future depends on is in its state
(params, batch_stats, optimizer state, divergence flag, step) or derived from (seeds, epoch), so restoring at
epoch e and training on reproduces the uninterrupted run exactly.

A checkpoint also records its layout: the member (its run id as an integer) in each row of each bucket, and each
bucket's padded width. A run resumed with other buckets (another memory budget, device count or bucketing
setting, or the sweep's values in another order) moves every member's state into its new bucket and row: each
array's leading (active) block is copied, and padding a member did not have before starts at zero. Masked
parameters and optimizer moments are zero anyway; masked channels' running statistics differ from a fresh
bucket's but are never read (their output is multiplied by a zero mask). A checkpoint written before a top-level
state entry existed restores the same way, the new entry at its init value; a checkpoint that lacks a leaf inside an
entry it has (a renamed layer's parameters) is refused; a probe's state ('probes', NAME) counts as an entry of its own,
so a probe switched on when a run resumes starts at its init value.
"""

from __future__ import annotations

import functools
import shutil
import signal
import warnings
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from ddjax import parallel, results


class Checkpoints:
  """One orbax CheckpointManager per job directory; keeps the newest `keep` checkpoints."""

  def __init__(self, directory: Path, keep: int | None = 3):
    """`keep`: checkpoints kept (the newest), None for all (snapshots)."""
    self.manager = ocp.CheckpointManager(
        Path(directory).absolute(), item_handlers=ocp.StandardCheckpointHandler(),  # item_metadata needs it
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=False))

  def save(self, epoch: int, states: list, layout: list[list[int]], widths: list[int], elapsed_s: float,
           attempt: int = 0) -> None:
    """Saves the bucket `states`; layout[b][r] is the member (run id as an integer) in row r of bucket b, padded
    to widths[b]."""
    tree = {'buckets': list(states), 'layout': [np.asarray(ids, np.int64) for ids in layout],
            'widths': np.asarray(widths, np.int64), 'elapsed_s': np.asarray(elapsed_s, np.float64),
            'attempt': np.asarray(attempt, np.int64)}
    if epoch in self.manager.all_steps():  # an unreadable checkpoint that resume fell back from
      self.manager.delete(epoch)
    self.manager.save(epoch, args=ocp.args.StandardSave(tree), force=True)
    self.manager.wait_until_finished()

  def restore(self, states: list, layout: list[list[int]], log=print) -> tuple[int, list, float, int] | None:
    """(epoch, states, elapsed seconds, attempt) of the newest readable checkpoint, placed like `states` (whose
    rows hold the members of `layout`); None if none. A checkpoint of other buckets has its members moved into
    these (relayout), and says so through `log`.

    A newest checkpoint that cannot be read (cut off mid-write, corrupted) is skipped with a warning. In a
    multi-host run every process reads the same one (orbax's restore ends in a barrier that all must reach): they
    agree on the newest step that each of them has, try its data only when each can read its metadata, and take it
    only when each read its data. (A read that fails on some processes inside orbax, before its barrier, can still
    hold the others there until the barrier's timeout.)"""
    steps = sorted(self.manager.all_steps(), reverse=True)
    restored = None
    while restored is None and (step := int(parallel.agree(steps[0] if steps else -1, 'min'))) >= 0:
      steps = [s for s in steps if s < step]
      stored, why = self._metadata(step)
      if parallel.agree(stored is not None, 'min'):
        try:
          restored, same = self._read(step, stored, states, layout)
        except Exception as e:  # noqa: BLE001 - any unreadable checkpoint falls back to the previous one
          why = f'{type(e).__name__}: {e}'
        if not parallel.agree(restored is not None, 'min'):
          restored = None
      if restored is None:
        warnings.warn(f'checkpoint at epoch {step} is unreadable ({why or "not on every process"}); trying an '
                      'older one')
    self._drop_newer(step)
    if restored is None:
      return None
    if not same:
      missing = {(_entry(path), jax.tree_util.keystr(path)) for state in states
                 for path, _ in jax.tree_util.tree_flatten_with_path(state)[0]
                 if not _has(restored['buckets'][0], path)}
      changed = sorted(p for entry, p in missing  # (a probe's state may always start over)
                       if entry[0].key != 'probes' and _has(restored['buckets'][0], entry))
      if changed:  # parameters or optimizer state renamed: copying the rest and re-initialising these would be wrong
        raise ValueError(f'checkpoint at epoch {step} in {self.manager.directory} has no {", ".join(changed)}, which '
                         'the state it restores into has: the model or optimizer changed since it was written; '
                         'resume it with the code that wrote it, or train these members again (--rerun)')
      if missing:
        new = sorted(p for _, p in missing)
        log(f'checkpoint at epoch {step} has no {", ".join(new)} (written by an earlier ddjax, or before a probe '
            'was on): '
            f'{"they start" if len(new) > 1 else "it starts"} at the init value')
      if not all(np.array_equal(a, b) for a, b in zip(restored['layout'], layout)) or len(restored['layout']) != \
          len(layout):
        log(f'checkpoint at epoch {step} has buckets of {[len(ids) for ids in restored["layout"]]} members, now '
            f'{[len(ids) for ids in layout]}: moving each member into its new bucket')
      restored['buckets'] = relayout(restored['buckets'], restored['layout'], states, layout)
    return step, list(restored['buckets']), float(restored['elapsed_s']), int(restored['attempt'])

  def _drop_newer(self, step: int) -> None:
    """Multi-host: removes the checkpoints newer than `step` (the one restored; -1: none) that any process sees.
    Not every process could read them, and saving that epoch again deletes the old one first: orbax's delete ends in
    a barrier, which the processes that do not see it would never reach. With one process they stay (a later save
    of their epoch replaces them)."""
    if jax.process_count() == 1:
      return
    newer = [s for s in self.manager.all_steps() if s > step]
    if not parallel.agree(bool(newer), 'max'):
      return
    for s in newer:  # every process its own view; on a shared filesystem they remove the same folders
      shutil.rmtree(Path(self.manager.directory) / str(s), ignore_errors=True)
    multihost_utils.sync_global_devices(f'ddjax-checkpoints-after-{step}')
    self.manager.reload()

  def _metadata(self, step: int):
    """(the metadata of the checkpoint at `step`, None), or (None, why it cannot be read). Reads no array."""
    if step not in self.manager.all_steps():
      return None, 'this process does not have it'
    try:
      return self.manager.item_metadata(step), None
    except Exception as e:  # noqa: BLE001 - an unreadable checkpoint falls back to the previous one
      return None, f'{type(e).__name__}: {e}'

  def _read(self, step: int, stored, states: list, layout: list[list[int]]) -> tuple[dict, bool]:
    """The checkpoint at `step` (metadata `stored`), and whether its layout is `layout`: then restored placed like
    `states`, else onto the host as it was written."""
    target = {'buckets': jax.tree.map(ocp.utils.to_shape_dtype_struct, list(states)),
              'elapsed_s': np.asarray(0.0, np.float64), 'attempt': np.asarray(0, np.int64)}
    same_shapes = _same_shapes(stored['buckets'], states)
    on_host = lambda: self.manager.restore(step, args=ocp.args.StandardRestore(
        jax.tree.map(lambda m: np.zeros(m.shape, m.dtype), stored)))
    if 'layout' not in stored:  # written before checkpoints recorded their layout: rows as they are now
      if same_shapes:
        return self.manager.restore(step, args=ocp.args.StandardRestore(target)), True
      if not _same_shapes(stored['buckets'], states, exact=False):
        raise ValueError('it was written by an older ddjax that did not record its buckets: resume it with the '
                         'buckets it had (same train.memory_gb, max_buckets, bucket_ratio and devices)')
      restored = on_host()  # a state entry newer than it (a probe's): the rest restored, that entry at its init
      return dict(restored, layout=[np.asarray(ids, np.int64) for ids in layout]), False
    if same_shapes:
      target.update(layout=[np.zeros(len(ids), np.int64) for ids in layout], widths=np.zeros(len(layout), np.int64))
      restored = self.manager.restore(step, args=ocp.args.StandardRestore(target))
      if all(np.array_equal(a, b) for a, b in zip(restored['layout'], layout)):
        return restored, True
    return on_host(), False

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def relayout(old: list, old_layout: list, like: list, layout: list[list[int]]) -> list:
  """Bucket states shaped and placed like `like` (rows: the members of `layout`), filled from the host states
  `old` as orbax restores them without a target (rows: the members of `old_layout`). Each member's arrays are
  copied on the block both shapes share: widths pad every axis at its end, so the block holds the whole active
  part; the rest is zero. A leaf the old states lack (under a top-level key of the state newer than the
  checkpoint; Checkpoints.restore refuses any other) keeps `like`'s value, its init."""
  where = {}
  for b, ids in enumerate(old_layout):
    for r, i in enumerate(np.asarray(ids).tolist()):
      where.setdefault(i, (b, r))

  def fill(rows, path, x):
    if not all(_has(old[b], path) for b, _ in rows):  # a leaf newer than the checkpoint: its init value
      return x
    if any(np.ndim(_at(old[b], path)) != x.ndim for b, _ in rows):  # a probe's state of another rank (reconfigured:
      return x                                                       # options_tag marks it): its init value
    host = np.zeros(x.shape, x.dtype)
    for row, (b, r) in enumerate(rows):
      y = _at(old[b], path)[r]
      block = tuple(slice(0, min(n, m)) for n, m in zip(x.shape[1:], y.shape))
      host[(row,) + block] = y[block]
    return jax.make_array_from_callback(x.shape, x.sharding, lambda index: host[index])

  return [jax.tree_util.tree_map_with_path(functools.partial(fill, [where[i] for i in ids]), state)
          for state, ids in zip(like, layout)]


def _entry(path: tuple) -> tuple:
  """The entry of the state a leaf belongs to: its top-level key, or a probe's own state ('probes', NAME). A
  checkpoint that lacks a whole entry (written before it existed, or before that probe was on) restores with the
  entry at its init value."""
  return path[:2] if path[0].key == 'probes' else path[:1]


def _same_shapes(stored: list, states: list, exact: bool = True) -> bool:
  """Whether the checkpoint's buckets (metadata) have the leaves of `states`, no others, with their shapes; not
  `exact`: whether the leaves they have have those shapes."""
  count = lambda tree: len(jax.tree.leaves(tree))  # (orbax gives NamedTuples back as dicts: key paths differ)
  if len(stored) != len(states) or exact and any(count(old) != count(state) for old, state in zip(stored, states)):
    return False

  def shape_at(tree, path):
    try:
      return tuple(_at(tree, path).shape)
    except (KeyError, IndexError, TypeError, AttributeError):
      return None
  return all(
      shape_at(old, path) in ((tuple(x.shape),) if exact else (tuple(x.shape), None))
      for old, state in zip(stored, states) for path, x in jax.tree_util.tree_flatten_with_path(state)[0])


def _has(tree, path) -> bool:
  """Whether a restored tree has a leaf at a key path of the live one."""
  try:
    _at(tree, path)
  except (KeyError, IndexError, TypeError, AttributeError):
    return False
  return True


def _at(tree, path):
  """The leaf of a restored tree at a key path of the live one (orbax restores a NamedTuple as a dict; a tree from
  the device, moved between phases, keeps it a NamedTuple)."""
  for key in path:
    if hasattr(key, 'name') and not isinstance(tree, dict):
      tree = getattr(tree, key.name)
    else:
      tree = tree[key.key if hasattr(key, 'key') else key.name if hasattr(key, 'name') else key.idx]
  return tree


class StopRequested:
  """Turns SIGTERM and SIGINT into a flag the epoch loop checks, so it can checkpoint and exit cleanly.

  A second signal while stopping raises KeyboardInterrupt at once."""

  def __init__(self):
    self.signal: int | None = None
    self._previous = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread: leave signals alone
        pass
    return self

  def _handle(self, signum, frame):
    if self.signal is not None:
      raise KeyboardInterrupt
    self.signal = signum

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    return False

  def __bool__(self):
    return self.signal is not None


def parse_which(which: str | int) -> tuple[str, int]:
  """Which state of a member to read, the same everywhere (member_variables, member_features): 'last' (its newest
  checkpoint), 'best' or 'best:i' (with train.keep_best or train.checkpoint_best: its i-th best state by
  train.best_metric, 0 the best), or an epoch (a snapshot of train.snapshot_epochs, or a checkpoint at that epoch).
  -> ('last', 0), ('best', i) or ('epoch', E); ValueError in one line otherwise."""
  text = str(which).strip()
  if text in ('last', 'best'):
    return text, 0
  if text.startswith('best:') and text[5:].isdigit():
    return 'best', int(text[5:])
  if text.isdigit():
    return 'epoch', int(text)
  raise ValueError(f"bad which={which!r}: allowed 'last', 'best', 'best:i' (i >= 0) or an epoch number")


def _saved_state(out: Path, job: str, kind: str, epoch: int) -> tuple[dict, int]:
  """The saved tree of job `job` (all its buckets) and its epoch: the newest checkpoint, or the snapshot or
  checkpoint at `epoch` (kind 'epoch')."""
  folders = {'snapshots': Path(out) / 'snapshots' / job, 'checkpoints': Path(out) / 'checkpoints' / job}
  have = {}
  for name, folder in folders.items():
    if folder.is_dir():
      manager = Checkpoints(folder, None)
      have[name] = (manager, set(manager.manager.all_steps()))
  try:
    if kind == 'epoch':
      where = next((n for n, (_, steps) in have.items() if epoch in steps), None)
      if where is None:
        kept = sorted({s for _, steps in have.values() for s in steps})
        raise FileNotFoundError(f'no state of job {job} at epoch {epoch} in {out}: it has epochs {kept} (snapshots '
                                'and checkpoints); keep others with train.snapshot_epochs=E/E/...')
    else:
      where = 'checkpoints'
      if not have.get(where, (None, set()))[1]:
        raise FileNotFoundError(f'no checkpoint of job {job} in {out}')
      epoch = max(have[where][1])
    manager = have[where][0].manager  # onto the host as numpy, whatever devices wrote it (a notebook has one)
    host = jax.tree.map(lambda m: np.zeros(m.shape, m.dtype), manager.item_metadata(epoch))
    return manager.restore(epoch, args=ocp.args.StandardRestore(host)), epoch
  finally:
    for manager, _ in have.values():
      manager.close()


def member_variables(out: Path, run: str, which: str | int = 'best') -> tuple[dict[str, Any], int]:
  """One member's {'params', 'batch_stats'} (member `run`: its run id), with the width they are padded to (the
  bucket's): `which` (parse_which) is 'last' (its newest checkpoint), 'best' / 'best:i' (its i-th best state by
  train.best_metric, 0 the best, with train.keep_best or train.checkpoint_best=K) or an epoch (a snapshot kept by
  train.snapshot_epochs, or a checkpoint at that epoch).
  Apply them with make_model(..., that width) and the member's width."""
  from ddjax import plugins
  kind, index = parse_which(which)
  plugins.load_recorded(out)  # a plugin's model: make_model must know it to apply what this returns
  table = results.load(out)
  rows = table[table['run_id'] == run]
  if rows.empty:
    raise KeyError(f'no member with run id {run!r} in {out}')
  row = rows.iloc[0]
  saved, _ = _saved_state(out, row['job_id'], kind, index)
  bucket, slot, width = int(row['bucket']), int(row['bucket_slot']), int(row['bucket_width'])
  if 'layout' in saved:  # where the checkpoint itself has the member (the table may be a moment behind it)
    rows_of = [np.asarray(ids).tolist() for ids in saved['layout']]
    bucket = next(b for b, ids in enumerate(rows_of) if int(run, 16) in ids)
    slot, width = rows_of[bucket].index(int(run, 16)), int(saved['widths'][bucket])
  tree = saved['buckets'][bucket]
  if kind == 'best':
    if 'best' not in tree:
      raise ValueError(f'{out} was trained without train.keep_best: only which="last" or an epoch is available')
    kept = 1 if np.ndim(tree['best']['loss']) == 1 else np.shape(tree['best']['loss'])[1]  # (members, K) with K > 1
    if index >= kept:
      raise ValueError(f"bad which={which!r}: {out} keeps {kept} best state(s) per member (best:0 .. best:{kept - 1})")
    tree = tree['best'] if kept == 1 else jax.tree.map(lambda x: np.asarray(x)[:, index], tree['best'])
    if not np.isfinite(np.asarray(tree['loss'])[slot]):
      raise ValueError(f'member {run} has no best state {which!r} yet (fewer evaluations kept it than asked, or it '
                       'diverged first)')
  pick = lambda t: jax.tree.map(lambda x: np.asarray(x)[slot], t)
  return {'params': pick(tree['params']), 'batch_stats': pick(tree.get('batch_stats', {}))}, width
