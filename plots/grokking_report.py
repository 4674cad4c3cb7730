"""report.md of a grokking run, in the structure of a short scientific note: setup, methods, results per weight
decay (the crossings, the sudden validation drop and what moved with it, spikes, late overfitting), figures,
limitations. Everything in it is read from the results table and run.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ddjax import results
from plots.grokking import WD, _fmt, _label, grokking_vs_wd, held, is_regression


def _num(v, fmt: str = '.3g') -> str:
  return 'n/a' if v is None or (isinstance(v, float) and not np.isfinite(v)) else format(v, fmt)


def _setup(cfg: dict, df: pd.DataFrame) -> list[str]:
  d, m, o, t = (cfg.get(k, {}) for k in ('data', 'model', 'optim', 'train'))
  if d.get('name') == 'modular':
    data = f"every pair (a, b) labelled a {d.get('op')} b mod {d.get('p')}, {d.get('train_split')} of them for training"
    if d.get('val_split'):
      data += f", {d.get('val_split')} for validation, the rest held out as test"
  elif d.get('name') == 'mheight':
    source = f"codes from {d.get('file')}" if d.get('file') else f"{d.get('num_samples')} random codes per group"
    train = d.get('train_per_group') or f"{d.get('train_split')} of them"
    data = f"log2 m-heights, groups {d.get('groups')}, {source}; per group {train} for training"
    if d.get('val_per_group'):
      data += f", {d.get('val_per_group')} for validation, {d.get('test_per_group') or 'the rest'} held out as test"
  else:
    data = str(d.get('name', '?'))
  batch = 'full batch' if not t.get('batch_size') else f"batch {t.get('batch_size')}"
  model = f"{m.get('name')} width {m.get('width')}"
  model += f", depth {m.get('depth')}" if m.get('name') in ('resnet_ln', 'resmlp', 'mlp') else ''
  model += f", head {m.get('head')}" if m.get('head', 'linear') != 'linear' else ''
  evals = (f"every {t.get('eval_every')} epochs" if t.get('eval_every') else
           f"at {t.get('eval_points')} log-spaced epochs")
  lines = [f'- Data: {data}.', f'- Model: {model}.',
           f"- Training: {o.get('name')} lr {o.get('lr')}, {batch}, {t.get('epochs')} epochs; weight decay "
           f"{', '.join(f'{v:g}' for v in sorted(df[WD].unique())) if WD in df.columns else o.get('wd')}"
           + (f"; violation weight {t.get('violation')}" if t.get('violation') else '') + '.',
           f'- Evaluation {evals}; members: {len(df)}, trained together on {df["device"].iloc[0]} in '
           f'{df["wall_time_s"].max():.0f} s.']
  return lines


def _moved(change: float) -> str:
  return '' if not np.isfinite(change) else ' (it rose)' if change > 0 else ' (it fell)'


def _member(df: pd.DataFrame, r, split: str) -> str:
  """One paragraph of results for a member."""
  name = _label(df, r) or f'member {r["member"]}'
  held_name = 'validation' if split == 'val' else 'test'
  if not np.isfinite(r.get('drop_epoch', np.nan)):
    text = (f'**{name}**: no sudden {held_name} drop (no fall off a plateau by '
            f'{100 * r.get("drop_min_fall", 0.3):.0f}% or more between windows of '
            f'{_num(r.get("drop_window"), "g")} epochs).')
  else:
    text = (f'**{name}**: the {held_name} loss fell at epoch {r["drop_epoch"]:g} from {_num(r["drop_val_before"])} to '
            f'{_num(r["drop_val_after"])} ({100 * r["drop_fall"]:.0f}%, medians over {r["drop_window"]:g} epochs on '
            f'each side). Over the same windows the train loss ({r["drop_train_from"]}) went from '
            f'{_num(r["drop_train_before"])} to {_num(r["drop_train_after"])}'
            f'{_moved(r["drop_train_change"])}, and the weight norm changed by '
            f'{_num(r["drop_norm_change"], "+.3g")}.')
  if np.isfinite(r.get('val_min', np.nan)):
    text += (f' Lowest {held_name} loss {_num(r["val_min"])} at epoch {r["val_min_epoch"]:g}; at the end {held_name} '
             f'{_num(r["val_final"])} (up {_num(r["val_rise"])} from its lowest) and train {_num(r["train_final"])}.')
  return text


def write(out: Path, dest: Path, df: pd.DataFrame, figures: list[Path]) -> Path:
  cfg = json.loads((out / 'run.json').read_text())['config'] if (out / 'run.json').exists() else {}
  regress, split = is_regression(df), held(df)
  metric = 'log2-MSE' if regress else 'accuracy'
  ordered = df.sort_values(WD) if WD in df.columns else df
  held_name = 'validation' if split == 'val' else 'test'
  min_fall = df['drop_min_fall'].iloc[0] if 'drop_min_fall' in df.columns else 0.3
  seeds = ('One seed per weight decay: nothing here measures seed-to-seed spread.' if _one_seed(df) else
           'Several seeds: the table lists each member.')
  lines = [f"# Grokking on {cfg.get('data', {}).get('name', '?')}: {len(df)} members", '', '## Setup', '',
           *_setup(cfg, df), '', '## Methods', '',
           f'- Memorisation / grokking epoch: the first evaluation where the train / {held_name} {metric} reaches '
           f"{df['grokking_threshold'].iloc[0]:g} (validation at or after memorisation)"
           + ('; selection (keep_best) and this analysis read the validation split, the test split is only reported.'
              if split == 'val' else '; there is no separate validation split, so the test split plays its part.'),
           f'- Sudden drop: at each evaluation, the median {held_name} loss over the window before it against the '
           'median over the window after it, where the window before is a plateau (its second half at most 10% below '
           'its first, so the first descent from the init is none); the evaluation with the largest relative fall, '
           f'if it is at least {100 * min_fall:.0f}% (ddjax.analysis.sudden_drop). The train loss '
           'over the same windows comes from the step table (every optimizer step\'s batch loss, a violation '
           'penalty included) where the run recorded one, else from the evaluations.',
           '- Spikes: train loss above 10x its running minimum (and above 1e-3), at evaluation points and, with a '
           'step table, over a running median of one epoch of steps.', '', '## Results', '']
  lines += [_member(df, r, split) + '\n' for _, r in ordered.iterrows()]
  head = ['member', 'drop epoch', f'{split} before', f'{split} after', 'train before', 'train after',
          'weight norm change',
          'eval spikes', 'step spikes', f'min {split} loss (epoch)', f'final {split}', 'final train', 'final test']
  lines += ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for _, r in ordered.iterrows():
    lines.append('| ' + ' | '.join([
        _label(df, r) or str(r['member']), _fmt(r.get('drop_epoch', np.nan)), _num(r.get('drop_val_before')),
        _num(r.get('drop_val_after')), _num(r.get('drop_train_before')), _num(r.get('drop_train_after')),
        _num(r.get('drop_norm_change'), '+.3g'), str(r['spike_count']), str(r.get('step_spike_count', 'n/a')),
        f"{_num(r.get('val_min'))} ({_fmt(r.get('val_min_epoch', np.nan))})", _num(r.get('val_final')),
        _num(r.get('train_final')), _num(r.get('final_test_loss'))]) + ' |')
  if WD in df.columns and df[WD].nunique() > 1 and np.isfinite(df['grokking_epoch']).sum() >= 2:
    _, slope = grokking_vs_wd(df, dest / 'grokking_vs_wd.png')
    lines += ['', f'Grokking epoch against weight decay: fitted slope {slope:.2f} on log-log axes (-1 is time '
                  'proportional to 1/wd).']
  lines += ['', '## Figures', ''] + [f'![{p.stem}]({p.name})' for p in figures]
  lines += ['', '## Limitations', '',
            '- Written from the results table alone: every number is measured, none is interpreted; whether a drop '
            'is grokking is for the reader to judge from the curves.',
            f'- Events are located to the evaluation cadence ({_cadence(df)}); the drop window and threshold are '
            'choices (python -m plots.grokking DIR --drop-window E --drop-min-fall F --report redoes the analysis).',
            f'- {seeds}']
  path = dest / 'report.md'
  results.atomic_write_bytes(path, lambda tmp: Path(tmp).write_text('\n'.join(lines) + '\n'))
  return path


def _cadence(df: pd.DataFrame) -> str:
  e = np.asarray(df['epoch'].iloc[0], float)
  return f'evaluations every {np.median(np.diff(e)):g} epochs (median)' if len(e) > 1 else 'one evaluation'


def _one_seed(df: pd.DataFrame) -> bool:
  keys = [k for k in ('seed', 'model.seed', 'train.batch_seed') if k in df.columns]
  return not any(df[k].nunique(dropna=False) > 1 for k in keys)
