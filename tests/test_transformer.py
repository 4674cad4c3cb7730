"""The masked Transformer: a width-K member padded to W is the dense width-K transformer (logits, gradients, 5 AdamW
steps), its init does not depend on the padding, attention is causal, and bad widths are refused."""

from __future__ import annotations

import flax.linen as nn
import flax.traverse_util as tu
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ddjax.nn.transformer import Transformer
from ddjax.train import StepSpec, init_member, train_step
from tests.helpers import close, hp_for, unstack

P, K, W, H = 7, 8, 16, 4  # modulus, member width, padded width, heads


class DenseTransformer(nn.Module):
  """Plain Flax 1-layer transformer of one width (nn.Embed, MultiHeadDotProductAttention, nn.Dense)."""
  width: int
  p: int
  attention_fn: object = nn.dot_product_attention

  @nn.compact
  def __call__(self, x):
    tokens = jnp.concatenate([x, jnp.full((x.shape[0], 1), self.p, x.dtype)], axis=1)
    pos = self.param('pos_embed', nn.initializers.normal(1.0), (3, self.width))
    h = nn.Embed(self.p + 1, self.width, name='embed')(tokens) + pos
    mask = nn.make_causal_mask(tokens)
    h = h + nn.MultiHeadDotProductAttention(H, qkv_features=self.width, out_features=self.width, use_bias=False,
                                            attention_fn=self.attention_fn, name='attn')(h, mask=mask)
    h = h + nn.Dense(self.width, name='mlp_out')(nn.relu(nn.Dense(4 * self.width, name='mlp_in')(h)))
    return nn.Dense(self.p, use_bias=False, name='head')(h[:, -1])


def active_mask(path, shape, k):
  """Boolean mask of the width-k active block of a padded leaf (each head's block: its first k // H columns)."""
  name = '/'.join(path)
  m = np.zeros(shape, bool)
  if name in ('attn/query/kernel', 'attn/key/kernel', 'attn/value/kernel'):
    m[:k, :, :k // H] = True
  elif name == 'attn/out/kernel':
    m[:, :k // H, :k] = True
  elif name in ('embed/embedding', 'pos_embed'):
    m[:, :k] = True
  elif name in ('mlp_in/kernel', 'mlp_out/kernel', 'mlp_in/bias', 'mlp_out/bias', 'head/kernel'):
    dense = {'mlp_in/kernel': (k, 4 * k), 'mlp_out/kernel': (4 * k, k), 'mlp_in/bias': (4 * k,),
             'mlp_out/bias': (k,), 'head/kernel': (k, P)}[name]
    m[tuple(slice(0, s) for s in dense)] = True
  else:
    raise KeyError(name)
  return m


def active(tree, k=K):
  """The active block of every leaf, shaped like the dense width-k model's leaf."""
  out = {}
  for path, leaf in tu.flatten_dict(tree).items():
    m = active_mask(path, leaf.shape, k)
    shape = tuple(int(n) for n in np.max(np.nonzero(m), axis=1) + 1)
    out[path] = leaf[tuple(slice(0, s) for s in shape)]
  return tu.unflatten_dict(out)


def inactive_abs_max(tree, k=K):
  return max(float(np.abs(np.asarray(leaf)[~active_mask(path, leaf.shape, k)]).max(initial=0.0))
             for path, leaf in tu.flatten_dict(tree).items())


@pytest.fixture(scope='module')
def data():
  a, b = np.meshgrid(np.arange(P), np.arange(P), indexing='ij')
  x = np.stack([a.ravel(), b.ravel()], 1).astype(np.int32)
  return jnp.asarray(x), jnp.asarray((x[:, 0] + x[:, 1]) % P)


def spec_for(max_width):
  return StepSpec(Transformer(max_width=max_width, num_classes=P), 'adamw', P * P, P)


def init_fn(max_width):
  """init_member, jitted with the member's numbers (its width included) traced."""
  spec = spec_for(max_width)
  return jax.jit(lambda hp: init_member(spec, hp, jnp.zeros((2,), jnp.int32)))


@pytest.fixture(scope='module')
def init_w():
  return init_fn(W)


@pytest.fixture(scope='module')
def padded(init_w):
  """The width-K member's init, padded to W."""
  return init_w(unstack(hp_for([K]), 0))['params']


def logits_grads_and_steps(apply_fn, params, x, y):
  """Logits, cross-entropy gradients, and the parameters after 5 full-batch AdamW steps (wd 0.1)."""
  loss_fn = lambda p: optax.softmax_cross_entropy_with_integer_labels(apply_fn(p, x), y).mean()
  tx = optax.adamw(1e-3, weight_decay=0.1)

  def step(carry, _):
    p, opt = carry
    g = jax.grad(loss_fn)(p)
    updates, opt = tx.update(g, opt, p)
    return (optax.apply_updates(p, updates), opt), g

  (p, _), g = jax.lax.scan(step, (params, tx.init(params)), length=5)
  return apply_fn(params, x), jax.tree.map(lambda a: a[0], g), p, apply_fn(p, x)


def test_matches_dense_logits_gradients_and_adamw_steps(data, padded):
  x, y = data
  model, dense = Transformer(max_width=W, num_classes=P), DenseTransformer(K, P)
  ref = active(padded)
  want_shapes = jax.eval_shape(dense.init, jax.random.key(1), x[:2])['params']
  assert jax.tree.map(jnp.shape, ref) == jax.tree.map(lambda s: s.shape, want_shapes)
  assert inactive_abs_max(padded) == 0.0

  run = lambda apply_fn, p: jax.jit(logits_grads_and_steps, static_argnums=0)(apply_fn, p, x, y)
  logits, g, params, logits5 = run(lambda p, x: model.apply({'params': p}, x, K), padded)
  want_logits, want_g, want_params, want_logits5 = run(lambda p, x: dense.apply({'params': p}, x), ref)
  close(logits, want_logits)
  close(active(g), want_g)
  assert inactive_abs_max(g) == 0.0
  close(active(params), want_params)
  assert inactive_abs_max(params) == 0.0
  close(logits5, want_logits5)


def test_init_does_not_depend_on_padding(padded):
  jax.tree.map(lambda u, v: np.testing.assert_array_equal(np.asarray(u), np.asarray(v)),
               active(init_fn(32)(unstack(hp_for([K]), 0))['params']), active(padded))
  kernel = np.asarray(active(padded)['mlp_out']['kernel'])  # variance 1/fan_in, the active fan-in 4K
  assert 0.5 < kernel.std() * np.sqrt(4 * K) < 1.5


def test_attention_is_causal_and_logits_read_both_tokens(padded):
  model, params = Transformer(max_width=W, num_classes=P), padded
  tokens = jnp.array([[1, 2], [1, 5], [4, 2]])  # base, another b, another a
  logits, state = jax.jit(lambda t: model.apply({'params': params}, t, K, capture_intermediates=True))(tokens)
  attn, logits = np.asarray(state['intermediates']['attn']['__call__'][0]), np.asarray(logits)
  np.testing.assert_array_equal(attn[0, 0], attn[1, 0])  # position 0 never sees b
  assert not np.allclose(attn[0, 1:], attn[1, 1:])
  assert not np.allclose(logits[0], logits[1]) and not np.allclose(logits[0], logits[2])


def test_members_of_several_widths_train_in_one_bucket(data, init_w):
  x, y = data
  spec = spec_for(W)
  widths = (4, 8, 16)
  hp = hp_for(widths, **{'optim.lr': 1e-3, 'optim.wd': 0.1})
  state = jax.tree.map(lambda *a: jnp.stack(a), *[init_w(unstack(hp, i)) for i in range(len(widths))])
  state, loss = jax.jit(jax.vmap(lambda s, h: train_step(spec, s, h, x, y)))(state, hp)
  assert np.all(np.isfinite(np.asarray(loss))) and not np.any(np.asarray(state['diverged']))
  for i, k in enumerate(widths):
    assert inactive_abs_max(unstack(state['params'], i), k) == 0.0


def test_macs_counts_the_dense_width_model():
  model = Transformer(max_width=W, num_classes=P)
  # 3 positions: q, k, v, o (4 d^2 each), scores and values (3 d each), MLP (8 d^2); unembedding at '=' only.
  assert model.macs(K) == 3 * (4 * K * K + 2 * 3 * K + 8 * K * K) + K * P


def test_bfloat16_compute_stays_close(data, padded):
  x, _ = data
  want, got = jax.jit(lambda p: [Transformer(max_width=W, num_classes=P, dtype=d).apply({'params': p}, x, K)
                                 for d in ('float32', 'bfloat16')])(padded)
  assert got.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want), atol=0.1)


def test_refuses_widths_not_divisible_by_heads(data):
  x, _ = data
  with pytest.raises(ValueError, match='multiple of n_heads'):
    Transformer(max_width=10, num_classes=P)
  with pytest.raises(ValueError, match='multiple of n_heads'):
    Transformer(max_width=W, num_classes=P).init(jax.random.key(0), x[:1], 6)
  with pytest.raises(ValueError, match='multiple of n_heads'):
    Transformer(max_width=W, num_classes=P).macs(6)


def test_mup_scales_attention_by_one_over_d_head(data, padded):
  """Under model.param=mup the member's attention scores scale by sqrt(base d_head) / d_head (muP's 1/d in SP form):
  logits and gradients equal Flax's attention with its query scaled by that over its own 1/sqrt(d_head); at the
  base width (and under sp or ntk) it is the standard 1/sqrt(d_head)."""
  x, y = data
  model = Transformer(max_width=W, num_classes=P)
  base, dh = 4, K // H  # base d_head 1, d_head 2: scale 1/2 where sp has 1/sqrt(2)

  def dense_with(factor):
    attention = lambda q, k, v, **kw: nn.dot_product_attention(q * factor, k, v, **kw)
    return DenseTransformer(K, P, attention_fn=attention)

  loss = lambda apply_fn, p: optax.softmax_cross_entropy_with_integer_labels(apply_fn(p, x), y).mean()
  ref = active(padded)
  for param, base_width, factor in ((2, base, np.sqrt(base / H / dh)), (2, K, 1.0), (0, base, 1.0), (1, base, 1.0)):
    mine = lambda p, x: model.apply({'params': p}, x, K, param=param, base_width=base_width)
    want = lambda p, x: dense_with(factor).apply({'params': p}, x)
    close(mine(padded, x), want(ref, x))
    close(active(jax.grad(lambda p: loss(mine, p))(padded)), jax.grad(lambda p: loss(want, p))(ref))
  mup, sp = (model.apply({'params': padded}, x, K, param=c, base_width=base) for c in (2, 0))
  assert np.abs(np.asarray(mup) - np.asarray(sp)).max() > 1e-4  # the scale changes the logits
