"""Typed configs, dotted `key=value` overrides, sweeps, YAML files and their validation.

  schema      the dataclasses (one field per key), member / execution / later keys
  grammar     `key=value` overrides, sweep values (a,b  a..b  range()  choice()), --zip groups
  files       YAML config files
  validation  ranges, model/data fit, each dataset's own options; --help's key table
  compat      a run's identity (what run ids hash), what it trains (--resume's comparison), the --rerun filter
"""

from ddjax.config.compat import file_content, identity, ignored_keys, rerun_conditions, rerun_filter, what_trains
from ddjax.config.files import load_config_file
from ddjax.config.grammar import apply_overrides, check_zip, parse_scalar, parse_values, parse_zip
from ddjax.config.schema import (EXECUTION_KEYS, LATER_KEYS, MEMBER_KEYS, PROBE_ALIASES, SIZE_KEYS, Config, ConfigError,
                                 DataConfig, ModelConfig, OptimConfig, TrainConfig, choices_of, fields, flatten,
                                 from_dict, get, is_probe_key, probe_uses, replace, snapshot_epochs, to_dict,
                                 to_json)
from ddjax.config.validation import describe, train_examples, validate

__all__ = ['EXECUTION_KEYS', 'LATER_KEYS', 'MEMBER_KEYS', 'PROBE_ALIASES', 'SIZE_KEYS', 'Config', 'ConfigError',
           'DataConfig', 'ModelConfig', 'OptimConfig', 'TrainConfig', 'apply_overrides', 'check_zip', 'choices_of',
           'describe', 'fields', 'file_content', 'flatten', 'from_dict', 'get', 'identity', 'ignored_keys',
           'is_probe_key',
           'load_config_file', 'parse_scalar', 'parse_values', 'parse_zip', 'probe_uses', 'replace',
           'rerun_conditions', 'rerun_filter', 'snapshot_epochs', 'to_dict', 'to_json', 'train_examples', 'validate',
           'what_trains']
