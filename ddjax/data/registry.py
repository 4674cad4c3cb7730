"""The dataset registry: a dataset is one `@register_dataset(...)` loader with its spec.

The config's `data.name` choices, the model/data check, `--help`'s grouping of data options and the validation of
those options all read this registry; so does the run (loading, shapes, token inputs). A `--plugin FILE.py` can
register a dataset too. Built-in datasets register in ddjax.data.datasets and ddjax.data.teacher.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from ddjax import plugins
from ddjax.data.augment import Preprocess


@dataclass(frozen=True)
class Dataset:
  """A dataset as host arrays, moved to the device once per job."""
  x_train: Any  # (N, *input_shape) float32, uint8 images, or int32 tokens
  y_train: Any  # (N,) int32 clean labels, or (N,) / (N, O) float32 regression targets
  x_test: Any
  y_test: Any
  num_classes: int         # classes, or outputs of a regression
  preprocess: Preprocess = Preprocess()  # applied on the device to every gathered batch
  task: str = 'classify'   # 'classify' (cross-entropy on int labels) | 'regress' (MSE on float targets; inf = excluded)
  info: tuple[tuple[str, int | float], ...] = ()  # facts about the data written next to every member
  modes: int = 0           # singular modes of the input-output correlation that deep linear networks report
  online: Any = None       # with data.online: (key, n) -> (x, y), n fresh examples drawn on the device (a hashable
                           # callable: it is part of the compiled step); training batches come from it, not x_train
  x_val: Any = None        # a validation split (data.val_per_group, data.val_split): val_loss, val_error drive
  y_val: Any = None        # keep_best and the grokking analysis; None: train and test only
  bounds: bool = False     # regression targets (N, 2): the target and a lower bound of it (data.bound_codewords)

  @property
  def held_out(self) -> dict[str, Any]:
    """The arrays evaluated besides the training set: test, and validation where there is one."""
    out = {'x_test': self.x_test, 'y_test': self.y_test}
    if self.x_val is not None:
      out.update(x_val=self.x_val, y_val=self.y_val)
    return out

  @property
  def input_shape(self) -> tuple[int, ...]:
    return tuple(self.x_train.shape[1:])


def split_examples(data) -> int:
  """Training examples of a dataset generated as data.num_samples split at data.train_split (the default)."""
  return int(data.num_samples * data.train_split)


@dataclass(frozen=True)
class DatasetSpec:
  """A registered dataset. Functions take the data config (`cfg.data`: name, num_samples, train_split, seed, and
  the dataset's own options)."""
  name: str
  load: Callable[[Any], Dataset]                  # the arrays; raises DataMissing if they are not there
  shape: Callable[[Any], tuple[tuple[int, ...], int]]  # (input shape, classes or outputs) without loading
  inputs: str                                     # ddjax.nn.registry.INPUT_KINDS: which models can read it
  task: str = 'classify'                          # 'classify' | 'regress'
  options: tuple[str, ...] = ()                   # data.* keys of its own (--help groups them under it)
  validate: Callable[[Any], None] | None = None   # raises ValueError('bad value ... for data.KEY: why')
  train_examples: Callable[[Any], int | None] = split_examples  # None where only loading tells
  check_available: Callable[[Any], None] | None = None  # cheap check before any work; raises DataMissing
  augment: str = 'none'                           # what data.augment=auto means for it (load_dataset applies it)
  help: str = ''
  has_validation: Callable[[Any], bool] | None = None  # whether the data config gives a validation split (None:
                                                       # only loading tells)

  @property
  def module(self) -> str:
    """Where it was registered (a plugin's module name starts with ddjax_plugin_)."""
    return self.load.__module__

  @property
  def tokens(self) -> bool:
    """Whether the inputs are int32 token ids (models read them as integers, not floats)."""
    return self.inputs == 'tokens'


DATASETS: dict[str, DatasetSpec] = {}


def register_dataset(name: str, *, shape: Callable, inputs: str, task: str = 'classify',
                     options: Sequence[str] = (), validate: Callable | None = None,
                     train_examples: Callable | None = None, check_available: Callable | None = None,
                     augment: str = 'none', help: str = '', has_validation: Callable | None = None) -> Callable:
  """Decorator registering a loader `load(data_cfg) -> Dataset` as `data.name=NAME`."""
  if task not in ('classify', 'regress'):
    raise ValueError(f"dataset {name}: task must be 'classify' or 'regress', not {task!r}")

  def register(load):
    spec = DatasetSpec(name, load, shape, inputs, task, tuple(options), validate, train_examples or split_examples,
                       check_available, augment, help, has_validation)
    return plugins.add(DATASETS, 'dataset', name, spec, load)
  return register


def dataset_spec(name: str) -> DatasetSpec:
  return plugins.lookup(DATASETS, 'dataset', name)


def load_dataset(data_cfg) -> Dataset:
  """The dataset a config names, with the augmentation data.augment asks for (auto: its spec's default). Raises
  DataMissing (a message for the user) if it is not there."""
  spec = dataset_spec(data_cfg.name)
  ds = spec.load(data_cfg)
  augment = spec.augment if data_cfg.augment == 'auto' else data_cfg.augment
  if augment != ds.preprocess.augment:
    ds = dataclasses.replace(ds, preprocess=dataclasses.replace(ds.preprocess, augment=augment))
  return ds


def dataset_shape(data_cfg) -> tuple[tuple[int, ...], int]:
  """(input shape, classes or outputs) of the dataset a config names, without loading it."""
  return dataset_spec(data_cfg.name).shape(data_cfg)


def check_available(data_cfg) -> None:
  """Cheap check, before any work, that a dataset can be loaded; raises DataMissing if not."""
  check = dataset_spec(data_cfg.name).check_available
  if check is not None:
    check(data_cfg)


def train_examples(data_cfg) -> int | None:
  """Training examples a data config gives (None where only loading tells, e.g. cifar10)."""
  return dataset_spec(data_cfg.name).train_examples(data_cfg)


def check_split(data_cfg, n_train: int, total: int) -> None:
  """Both splits of a dataset of `total` examples, `n_train` for training, need at least one (ValueError)."""
  if n_train < 1 or n_train >= total:
    raise ValueError(f'bad value {data_cfg.train_split!r} for data.train_split: it leaves {n_train} of {total} '
                     'examples for training; both splits need at least one')
