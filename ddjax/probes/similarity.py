"""Representation similarity during a run, linear CKA (ddjax.metrics.similarity) of a layer's features on a fixed
batch of training examples: `drift` against the member's own features at a reference epoch (kept in the probe's
state), `cka` between members of the job (seeds, widths; ddjax/probes/cross.py)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from ddjax.probes.cross import compare_members, valid_rules, valid_widths
from ddjax.probes.registry import Option, register_probe


def centred_gram(h_NxD, size: int):
  """The n x n Gram matrix of column-centred features, zero-padded to size x size (padding changes no CKA)."""
  h_NxD = h_NxD - h_NxD.mean(0)
  n = h_NxD.shape[0]
  return jnp.zeros((size, size), jnp.float32).at[:n, :n].set(h_NxD @ h_NxD.T)


def gram_cka(k_NxN, l_NxN):
  """Linear CKA of two centred Gram matrices: <K, L> / (||K|| ||L||)."""
  return jnp.sum(k_NxN * l_NxN) / (jnp.linalg.norm(k_NxN) * jnp.linalg.norm(l_NxN))


LAYER = Option('', "the model's tap point compared (empty: the output layer's input; --help lists each model's), or "
                   'several, A/B/...: one column per layer', tap=True, several=True)
BATCH = Option(256, 'training examples, evenly spaced through the training set, whose features are compared',
               check=lambda v: v >= 2, must='must be >= 2')


def layer_names(layer: str) -> tuple[str, ...]:
  """The tap points of a `layer` option naming several (A/B/...), or () for one."""
  names = tuple(n for n in str(layer).split('/') if n)
  return names if len(names) > 1 else ()


def layer_gram(ctx, layer: str, batch: int):
  """The centred Gram matrix of the features at `layer` of the member's probe batch (ctx.probe_batch); with several
  layers (A/B/...) one per layer, stacked (L, batch, batch)."""
  x = ctx.probe_batch(batch, own=False)[0]  # the same inputs for every member (CKA compares members on them)
  if names := layer_names(layer):  # one forward pass for every layer
    return jnp.stack([centred_gram(h, batch) for h in ctx.tap_features(x, names).values()])
  return centred_gram(ctx.features(x, layer or None)[1], batch)


def _state(batch: int, layer: str = '', **_):
  layers = (len(layer_names(layer)),) if layer_names(layer) else ()
  return {'gram': jnp.zeros(layers + (batch, batch), jnp.float32), 'taken': jnp.zeros((), bool)}


def _memory(q, batch: int, layer: str = '', **_):
  """A forward pass on the probe batch (at most what a training step on it holds) and two Gram matrices per layer."""
  return q.step_bytes(batch) + 2 * 4 * batch * batch * max(len(layer_names(layer)), 1)


@register_probe('drift', columns=('drift_cka', 'drift_cka_<layer>'), state=_state, epochs=lambda epoch, **_: (epoch,),
                memory=_memory,
                options={'layer': LAYER,
                         'epoch': Option(1, 'the reference epoch: features after it are what later ones are '
                                            'compared with', check=lambda v: v >= 1, must='must be >= 1'),
                         'batch': BATCH},
                help="representational drift: linear CKA between a layer's features on a fixed batch of training "
                     'examples now and after the reference epoch (1 there, NaN before it, and NaN throughout where '
                     'the reference was never taken: switched on or reconfigured past that epoch); the reference, '
                     'its centred batch x batch Gram matrix, is kept in the probe state and checkpointed; with '
                     'several layers (A/B/...), drift_cka_<layer> for each')
def drift(ctx, layer: str = '', epoch: int = 1, batch: int = 256):
  gram = layer_gram(ctx, layer, batch)
  state = ctx.probe_state
  take = ~state['taken'] & (ctx.epoch == epoch)  # at the end of the reference epoch (it always runs there)
  reference = jnp.where(take, gram, state['gram'])
  taken = state['taken'] | take
  if names := layer_names(layer):
    values = {f'drift_cka_{n}': jnp.where(taken, gram_cka(gram[i], reference[i]), jnp.nan)
              for i, n in enumerate(names)}
  else:
    values = {'drift_cka': jnp.where(taken, gram_cka(gram, reference), jnp.nan)}
  return values, {'gram': reference, 'taken': taken}


def gram_similarity(grams_KxNxN: np.ndarray) -> np.ndarray:
  """Linear CKA between every two of k centred Gram matrices, in float64: one k x k product of the normalised,
  flattened matrices (NaN for a matrix of zeros)."""
  flat = grams_KxNxN.reshape(grams_KxNxN.shape[0], -1).astype(np.float64)
  norm = np.linalg.norm(flat, axis=1, keepdims=True)
  flat = np.where(norm > 0, flat / np.where(norm > 0, norm, 1.0), np.nan)  # features all zero: no similarity
  return flat @ flat.T


@register_probe('cka', columns=('cka_seeds', 'cka_seed<seed>', 'cka_w<width>', 'cka_seeds_<layer>',
                                 'cka_seed<seed>_<layer>', 'cka_w<width>_<layer>_<layer>'), memory=_memory,
                pairs=lambda summaries, members, pairs='seeds', widths='', layer='', **_: compare_members(
                    summaries, members, 'cka', pairs, widths, gram_similarity, layer_names(layer)),
                options={'layer': LAYER,
                         'pairs': Option('seeds', 'which members are compared: seeds (those that differ only in '
                                                  'their seeds), widths (those that differ only in width) or '
                                                  'seeds/widths', check=valid_rules,
                                         must="must be seeds, widths or seeds/widths"),
                         'widths': Option('', 'with pairs=widths: the widths each member is compared with, W/W/... '
                                              '(empty: every width of the job)', check=valid_widths,
                                          must='must be widths W/W/...'),
                         'batch': BATCH},
                help="representational similarity across members: linear CKA of a layer's features on a fixed batch "
                     'of training examples between members of the job that differ only in their seeds (cka_seeds, '
                     'the mean over them; cka_seed<S>, with the one of seed S) or only in width (cka_w<W>, with the '
                     'member of width W); with several layers (A/B/...) per layer (cka_seeds_<layer>, ...) and, '
                     'across widths, for every pair of layers (cka_w<W>_<own layer>_<its layer>); each member sends '
                     'its centred batch x batch Gram matrices, never its features')
def cka(ctx, layer: str = '', batch: int = 256, **_):
  return layer_gram(ctx, layer, batch)
