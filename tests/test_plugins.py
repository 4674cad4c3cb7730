"""--plugin FILE.py: a toy model and a toy dataset registered in a file of the user's are known to --help and the
grammar, train, are recorded in run.json, and are imported again by a later command on the store."""

import hashlib
import json
import textwrap

import numpy as np
import pytest

from ddjax import cli, plugins, results
from ddjax.data.registry import DATASETS
from ddjax.nn.registry import MODELS
from experiments.double_descent import PRESETS

PLUGIN = textwrap.dedent('''
    import flax.linen as nn
    import jax.numpy as jnp
    import numpy as np

    from ddjax.data.registry import Dataset, register_dataset
    from ddjax.nn.layers import MaskedDense, channel_mask
    from ddjax.nn.registry import register_model, tap


    @register_model('toy_net', inputs=('vector',), help='one tanh hidden layer')
    class ToyNet(nn.Module):
      max_width: int
      num_classes: int = 2
      input_shape: tuple = (3,)
      conv: str = 'lax'
      dtype: str = 'float32'
      INPUT_LAYERS = ('hidden',)
      TAPS = ('tanh',)

      @nn.compact
      def __call__(self, x, width, train=False):
        mask = channel_mask(self.max_width, width)
        h = jnp.tanh(MaskedDense(self.max_width, name='hidden')(x, jnp.ones(x.shape[-1]), mask))
        tap(self, 'tanh', h)
        return MaskedDense(self.num_classes, name='head')(h, mask, jnp.ones(self.num_classes))

      def macs(self, width):
        return width * (self.input_shape[0] + self.num_classes)


    @register_dataset('toy_blobs', shape=lambda d: ((3,), 2), inputs='vector', help='two Gaussian blobs')
    def toy_blobs(d):
      rng = np.random.default_rng(d.seed)
      y = rng.integers(0, 2, d.num_samples).astype(np.int32)
      x = (rng.standard_normal((d.num_samples, 3)) + 2.0 * (2 * y[:, None] - 1)).astype(np.float32)
      n = int(d.num_samples * d.train_split)
      return Dataset(x[:n], y[:n], x[n:], y[n:], 2)
''')
KEYS = ['model.name=toy_net', 'data.name=toy_blobs', 'model.width=2,4', 'seed=0', 'data.noise=0',
        'data.num_samples=200', 'train.epochs=40', 'train.batch_size=40', 'train.eval_points=3', 'optim.lr=0.05',
        '--no-progress']


def forget(path=None):
  """This process forgets the plugin (from any path), as a new process would."""
  MODELS.pop('toy_net', None)
  DATASETS.pop('toy_blobs', None)
  plugins._LOADED.clear()


@pytest.fixture()
def plugin(tmp_path):
  path = tmp_path / 'toy.py'
  path.write_text(PLUGIN)
  yield path
  forget(path)


def test_a_plugin_model_and_dataset_train_and_the_store_remembers_them(plugin, tmp_path, capsys):
  with pytest.raises(SystemExit) as e:
    cli.main('double_descent', PRESETS, ['--plugin', str(plugin), '--help'])
  assert e.value.code == 0
  text = capsys.readouterr().out
  assert 'toy_net' in text and 'toy_blobs' in text
  out = tmp_path / 'store'
  cli.main('double_descent', PRESETS, ['--plugin', str(plugin), *KEYS, '--out', str(out)])
  table = results.load(out)
  assert sorted(table['model.width']) == [2, 4] and table['complete'].all()
  final = [float(v[-1]) for v in table['train_error']]
  assert max(final) < 0.05, final  # blobs at -2 and +2 in each of 3 dimensions: the Bayes error is 1e-4
  # (other tests' plugins, loaded before in this worker process, may be recorded too)
  [record] = [r for r in json.loads((out / 'run.json').read_text())['plugins'] if r['path'] == str(plugin)]
  assert record == {'path': str(plugin), 'sha256': hashlib.sha256(plugin.read_bytes()).hexdigest()}

  forget(plugin)  # a later command, in a new process, names no --plugin: the store's run.json brings it back
  cli.main('double_descent', PRESETS, [*KEYS, '--out', str(out), '--resume'])
  assert '2 of 2 members already complete' in capsys.readouterr().out

  forget(plugin)
  plugin.rename(tmp_path / 'moved.py')
  with pytest.raises(SystemExit) as e:
    cli.main('double_descent', PRESETS, [*KEYS, '--out', str(out), '--resume'])
  err = capsys.readouterr().err.strip()
  assert e.value.code == 2 and len(err.splitlines()) == 1 and f'--plugin {plugin}, which is missing' in err
  cli.main('double_descent', PRESETS, ['--plugin', str(tmp_path / 'moved.py'), *KEYS, '--out', str(out), '--resume'])
  assert '2 of 2 members already complete' in capsys.readouterr().out  # the same file from its new path


@pytest.mark.parametrize('content,needle', [
    ('raise RuntimeError("boom")', 'importing it failed: RuntimeError: boom'),
    (PLUGIN, 'model.name=cnn1d does not fit data.name=toy_blobs: cnn1d takes mnist1d'),
    ('from ddjax.nn.registry import register_model\nregister_model("mlp", inputs=("vector",))(dict)',
     "model 'mlp' is already registered by ddjax.nn.models: choose another name"),  # a plugin never replaces one
])
def test_plugin_errors_are_one_line(content, needle, tmp_path, capsys):
  path = tmp_path / 'bad.py'
  path.write_text(content)
  out = tmp_path / 'store'
  try:
    with pytest.raises(SystemExit) as e:
      cli.main('double_descent', PRESETS, ['--plugin', str(path), *KEYS, 'model.name=cnn1d', '--out', str(out)])
  finally:
    forget(path)
  err = capsys.readouterr().err.strip()
  assert e.value.code == 2 and len(err.splitlines()) == 1 and needle in err, err
  assert not out.exists()


def test_toy_model_taps_are_its_hidden_layer(plugin):
  import jax
  import jax.numpy as jnp
  from ddjax.nn.registry import make_model, taps
  plugins.load(plugin)
  model = make_model('toy_net', 5, (3,), 2, 'lax')
  x = jnp.asarray(np.random.default_rng(0).standard_normal((4, 3)), jnp.float32)
  variables = model.init(jax.random.key(0), x, 3)
  kernel, bias = (variables['params']['hidden'][k] for k in ('kernel', 'bias'))
  expected = np.tanh(np.asarray(x) @ np.asarray(kernel)[:, :3] + np.asarray(bias)[:3])
  got = np.asarray(taps(model, variables, x, 3)['tanh'])
  np.testing.assert_allclose(got[:, :3], expected, rtol=1e-5, atol=1e-6)
  assert not got[:, 3:].any()  # masked channels are zero


def test_worker_processes_import_the_plugin(plugin, tmp_path):
  """--workers 2: each spawned worker imports the plugin before it trains a job of its model and dataset."""
  out = tmp_path / 'store'
  cli.main('double_descent', PRESETS, ['--plugin', str(plugin), *KEYS, 'optim.name=adam,sgd', 'train.epochs=2',
                                       '--workers', '2', '--out', str(out)])
  table = results.load(out)
  assert len(table) == 4 and table['complete'].all() and set(table['optim.name']) == {'adam', 'sgd'}
