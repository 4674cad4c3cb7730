import os

import tempfile

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ['DDJAX_CACHE'] = tempfile.mkdtemp(prefix='ddjax-test-cache-')  # tests never touch ~/.cache

from ddjax import parallel  # noqa: E402

parallel.use_host_devices(2)  # two CPU devices, so tests can place members on either

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update('jax_default_matmul_precision', 'highest')


@pytest.fixture(scope='session')
def tiny_mnist1d():
  """A 300-example MNIST-1D (240 train / 60 test), generated offline into the tests' private cache."""
  from ddjax.data.datasets import mnist1d
  return mnist1d(num_samples=300, train_split=0.8, seed=3)


@pytest.fixture(scope='module', autouse=True)
def _fresh_compilations():
  """After each test file, its compiled programs go. XLA:CPU maps every kernel it compiles into the process (one test
  file leaves ~16,000 memory maps), and a pytest-xdist worker runs many files: past the kernel's limit of 65,530
  maps, compilation fails with 'Cannot allocate memory'."""
  yield
  from ddjax import train
  train.bucket_fns.cache_clear()
  jax.clear_caches()
