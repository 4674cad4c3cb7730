"""On-device datasets and label noise."""
from ddjax.data.datasets import Dataset, load_dataset
from ddjax.data.noise import noisy_labels, noisy_test_error
