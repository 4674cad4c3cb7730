"""Datasets: the registry (ddjax.data.registry) with the built-in datasets registered, and label noise."""
from ddjax.data import datasets, teacher  # noqa: F401 - registers the built-in datasets
from ddjax.data.cifar10 import DataMissing
from ddjax.data.registry import (DATASETS, Dataset, DatasetSpec, check_available, dataset_shape, dataset_spec,
                                 load_dataset, register_dataset, train_examples)
from ddjax.data.noise import noisy_labels, noisy_test_error
