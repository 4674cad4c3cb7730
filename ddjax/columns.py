"""What each column of a results table is: `python -m ddjax.results describe DIR` prints a line per column."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from ddjax import config as cfglib

ENGINE = {
    'run_id': "the member's id: a hash of its resolved config (execution-only keys left out)",
    'job': 'index of its job (one compiled program per combination of static keys)',
    'member': 'its position in the job',
    'job_id': "the job's id (names its checkpoints and part files)",
    'bucket': 'the width bucket it trained in', 'bucket_slot': 'its row in that bucket',
    'bucket_width': 'the width the bucket is padded to',
    'config': "the member's whole resolved config, as JSON",
    'attempt': 'the attempt that wrote the row: its start in nanoseconds since 1970 (a --rerun is a new attempt)',
    'attempt_time': "the attempt's start as UTC time",
    'complete': 'whether the member trained every epoch (False: interrupted, or still running)',
    'versions': 'package versions of the run (JSON)', 'device': 'the device it ran on',
    'recorded_probes': 'the probes the member recorded, comma-separated',
    'wall_time_s': "the job's wall time in seconds",
    'padded_ratio': "padded / useful FLOPs of the job's buckets",
    'epoch': 'evaluation epochs (fractional within an epoch: train.eval_every_steps, train.evaluations)',
    'step': 'optimizer steps at each evaluation', 'time_s': 'seconds since the job started, at each evaluation',
    'diverged': "whether the loss or the update stopped being finite (the member was frozen before it)",
    'diverged_step': 'the step it diverged at (-1: never)',
    'best_epoch': 'epoch of the best state kept (train.keep_best)',
    'final_test_accuracy': '1 - the last test_error (the grokking analysis)',
    'rank': "the linear teacher's rank (a fact of the data set)",
    'train_infinite': 'training examples whose m-height is infinite (a fact of the data set)',
    'test_infinite': 'test examples whose m-height is infinite (a fact of the data set)',
    'source': 'the store a merged row came from',
    # the base probes' curves, one by one
    'train_loss': "loss on the member's own (noisy) training labels (cross-entropy in nats; regression: squared "
                  'error)',
    'train_error': "error on the member's own (noisy) training labels",
    'test_loss': 'loss on the clean test labels', 'test_error': 'error on the clean test labels',
    'val_loss': 'loss on the validation split (data.val_per_group, data.val_split)',
    'val_error': 'error on the validation split', 'val_infinite': 'validation examples whose m-height is infinite',
    'test_error_noisy': 'expected error on test labels noised like the training labels: noise + test_error '
                        '(1 - noise K / (K - 1))',
    'weight_norm': "L2 norm of all parameters", 'weight_norm_last': "L2 norm of the output layer's parameters",
    'update_norm': 'L2 norm of the last optimizer update',
    'nc1': "NC1, Papyan et al.'s Tr(Sigma_W Sigma_B^+) / K", 'nc1_sum': 'NC1 without / K',
    'nc1_trace': 'NC1 as Tr(Sigma_W) / Tr(Sigma_B)', 'nc2_equinorm': 'NC2: std / mean of the class-mean norms',
    'nc2_equiangle': 'NC2: mean |cos + 1/(K-1)| over class pairs',
    'nc2_etf': 'NC2: distance of the normalised class-mean Gram matrix to the simplex ETF',
    'nc3': "NC3: || W/||W|| - M/||M|| ||_F (classifier against class means)", 'nc3_squared': 'NC3 squared',
    'nc4': "NC4: share of training examples whose nearest class mean is not the network's prediction",
}


def _probe_columns() -> list[tuple[re.Pattern, str]]:
  """(pattern, description) for every registered probe's columns ('<...>' matches a name given at run time)."""
  from ddjax.probes import PROBES
  out = []
  for name, spec in PROBES.items():
    first = spec.help.split('; ')[0].split(': ')[0]
    for column in spec.columns:
      pattern = re.escape(column).replace(re.escape('<'), '<').replace(re.escape('>'), '>')
      out.append((re.compile('^' + re.sub(r'<[^>]*>', '.+', pattern) + '$'), f'{first} (probe {name})'))
  return out


def describe_column(name: str, probes: list[tuple[re.Pattern, str]] | None = None) -> str:
  """One line saying what column `name` is."""
  keys = cfglib.fields(cfglib.Config())
  if name in ENGINE:
    return ENGINE[name]
  if name in keys:
    return f"config key: {keys[name].metadata.get('help', '')}"
  if name.endswith('_resolved') and name[:-len('_resolved')] in keys:
    return f"the seed the member used: {name[:-len('_resolved')]}, or seed where that is none"
  if re.fullmatch(r'teacher_s[0-9]+', name):
    return f"the linear teacher's singular value {name[len('teacher_s'):]} (a fact of the data set)"
  if name.startswith('best_') and name[len('best_'):] in ENGINE:
    return f'{name[len("best_"):]} of the best state kept (train.keep_best, by train.best_metric)'
  if name.startswith('norm_'):
    return f'L2 norm of the parameter group {name[len("norm_"):]} (probe norms)'
  if name.startswith('final_'):
    return f'the last recorded value of the curve {name[len("final_"):]}'
  for pattern, text in probes if probes is not None else _probe_columns():
    if pattern.match(name):
      return text
  return 'not described: added by an analysis (--write), a data set or a plugin'


def describe(table: pd.DataFrame) -> list[str]:
  """A line per column: its name, whether it is a curve (a value per evaluation) or one value per member, and what
  it is."""
  probes = _probe_columns()
  pad = max(map(len, table.columns), default=0)
  lines = []
  for c in table.columns:
    first = table[c].iloc[0] if len(table) else None
    kind = 'curve' if isinstance(first, (list, np.ndarray)) else 'scalar'
    lines.append(f'{c:<{pad}}  {kind:<6}  {describe_column(c, probes)}')
  return lines
