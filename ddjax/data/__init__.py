"""On-device datasets and label noise."""
from ddjax.data.cifar10 import DataMissing
from ddjax.data.datasets import Dataset, check_available, load_dataset
from ddjax.data.noise import noisy_labels, noisy_test_error
