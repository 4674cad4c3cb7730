"""The model registry and the protocol every width-masked model follows.

A model is one file: a Flax module that follows `WidthMaskedModel`, registered with `@register_model(...)`. The
config's `model.name` choices, `--help`, the model/data check and `make_model` all read this registry, so nothing
else changes to add one (a `--plugin FILE.py` can register one too).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Protocol, Sequence, runtime_checkable

from ddjax import plugins

# What kind of input a dataset gives (data.registry.DatasetSpec.inputs), and so which models can read it:
#   signal  1-D sequences, (L,) or (L, C)         image   (H, W, C) uint8 images
#   grid    small 2-D float arrays, (H, W, C)     vector  flat float features, (D,)
#   tokens  int32 token ids, (T,)
INPUT_KINDS = ('signal', 'image', 'grid', 'vector', 'tokens')


@runtime_checkable
class WidthMaskedModel(Protocol):
  """What the engine needs of a model. Construct with the fields below; every other field has a default.

  The model is built padded to `max_width` and called per member as `model.apply(variables, x_B, width, train)`:
  `width` is that member's (traced) active width, and the model masks its *parameters* with it (ddjax.nn.layers),
  so a member of width k computes exactly the dense width-k model (invariant 1) and its init uses its own fan-in
  (invariant 2). `x_B` is a batch of the dataset's inputs (`input_shape` per example, already preprocessed); the
  output is (B, num_classes) logits, or regression outputs.

  Conventions the engine relies on:
  - the output layer is a submodule named `head` whose first argument is its input (neural collapse reads it);
  - `macs(width)` is the multiply-accumulates per example of the dense width-`width` model: the cost model of the
    width buckets (only its ratios between widths matter);
  - `TAPS` names the points where representations can be read (`taps(...)` below): the model marks each with
    `tap(self, name, x)`, which does nothing unless a caller asks for the 'taps' collection. Tap points are
    post-activation or post-residual values, not necessarily module outputs;
  - `depth`, where a model takes it (ModelSpec.options), counts hidden layers or residual blocks, as its ModelSpec
    says;
  - `SIZES` (optional) names member keys `model.NAME` that the model masks like width (the projector dimension
    `proj`): it is built with the job's largest value (the build option NAME) and called with the member's own as
    a traced keyword `NAME=` (omitted: all of the padding active); the parameter group NAME's output dimension is
    that padding (`padded_sizes`);
  - `MEMBER_ARGS` (optional) names other per-member numbers (ddjax.members.member_hp) the call reads as traced
    keywords (the transformer: `param` and `base_width`, for muP's attention scale); omitted: their defaults;
  - `INPUT_LAYERS` names the top-level parameter groups that read the data (their fan-in is the input's), `head`
    is the output layer, and every other group is hidden (`param_roles`; a model whose kernels are not all laid out
    (..., in, out) defines its own `param_roles(params)`).
  """
  max_width: int
  num_classes: int
  input_shape: Sequence[int]
  conv: str    # convolution form, 'lax' or 'im2col' (models without convolutions ignore it)
  dtype: str   # compute dtype of dense and conv layers; parameters stay float32

  def __call__(self, x, width, train: bool = False) -> Any: ...

  def macs(self, width: int) -> float: ...


@dataclass(frozen=True)
class ModelSpec:
  """A registered model: how to build it and what it takes."""
  name: str
  build: Callable[..., Any]      # (max_width=, num_classes=, input_shape=, conv=, dtype=, **options) -> module
  inputs: tuple[str, ...]        # the INPUT_KINDS it reads
  options: tuple[str, ...] = ()  # model.* keys it takes besides width (e.g. 'depth'), passed to `build`
  help: str = ''                 # one line for --help
  linear: bool = False           # a deep linear network: runs report its singular-mode strengths

  @property
  def module(self) -> str:
    """Where it was registered (a plugin's module name starts with ddjax_plugin_)."""
    return self.build.__module__


MODELS: dict[str, ModelSpec] = {}


def register_model(name: str, *, inputs: Sequence[str], options: Sequence[str] = (), help: str = '',
                   linear: bool = False) -> Callable:
  """Decorator registering a model class (or a function returning a module) as `model.name=NAME`."""
  bad = [k for k in inputs if k not in INPUT_KINDS]
  if bad:
    raise ValueError(f'model {name}: unknown input kind(s) {bad}; allowed: {", ".join(INPUT_KINDS)}')

  def register(build):
    return plugins.add(MODELS, 'model', name, ModelSpec(name, build, tuple(inputs), tuple(options), help, linear),
                       build)
  return register


def model_spec(name: str) -> ModelSpec:
  return plugins.lookup(MODELS, 'model', name)


def make_model(name: str, max_width: int, input_shape: Sequence[int], num_classes: int, conv: str,
               dtype: str = 'float32', depth: int = 2, **options) -> Any:
  """The registered model `name` padded to `max_width`; `depth` and `options` are passed where its spec takes
  them."""
  spec = model_spec(name)
  given = dict(options, depth=depth)
  kwargs = {k: given[k] for k in spec.options if k in given}
  return spec.build(max_width=max_width, num_classes=num_classes, input_shape=tuple(input_shape), conv=conv,
                    dtype=dtype, **kwargs)


def tap(module, name: str, x) -> None:
  """Marks a tap point inside a model's __call__: records x under `name` when the caller asked for the 'taps'
  collection (`taps` below), and does nothing otherwise, not even at init, so a model's programs and numbers are
  the same with or without tap points."""
  if module.is_mutable_collection('taps') and not module.is_initializing():
    module.sow('taps', name, x)


def size_args(model, hp) -> dict[str, Any]:
  """The keyword arguments of a member's call besides its width: its own value of each of the model's SIZES and
  MEMBER_ARGS."""
  return {k: hp[k] for k in (*getattr(model, 'SIZES', ()), *getattr(model, 'MEMBER_ARGS', ()))}


def padded_sizes(model, params) -> dict[str, int]:
  """The padding of each of the model's SIZES, read from parameters: the output dimension of the parameter group of
  that name (a checkpoint holds its job's padding)."""
  return {k: int(params[k]['kernel'].shape[-1]) for k in getattr(model, 'SIZES', ())}


def taps(model, variables, x, width, names: Sequence[str] | None = None, **sizes) -> dict[str, Any]:
  """The representations at the model's tap points (all of `model.TAPS`, or `names`) for inputs x, in evaluation
  mode: {name: (B, ...) array}; `sizes`: the member's SIZES (size_args). Masked channels are zero, so a member's
  features are those of its own width."""
  _, state = model.apply(variables, x, width, train=False, mutable=['taps'], **sizes)
  found = {k: v[-1] for k, v in state.get('taps', {}).items()}  # sow keeps a tuple of calls
  wanted = list(getattr(model, 'TAPS', ())) if names is None else list(names)
  missing = [n for n in wanted if n not in found]
  if missing:
    raise KeyError(f'{type(model).__name__} has no tap point(s) {missing}; it has {sorted(found)}')
  return {n: found[n] for n in wanted}


class Role(NamedTuple):
  """A parameter's role: 'input', 'hidden' or 'output' layer, and the axes of its kernel that are its fan-in
  (() for biases, norm scales and embedding tables, which have none)."""
  layer: str
  fan_in_axes: tuple[int, ...]


def param_roles(model, params) -> dict:
  """A tree like `params` of each leaf's Role: the top-level groups in model.INPUT_LAYERS are input layers, `head`
  is the output layer, the rest hidden; a 'kernel' leaf's fan-in is every axis but the last (dense, conv and einsum
  kernels alike: (..., in, out)), other leaves have none."""
  import jax
  if hasattr(model, 'param_roles'):  # a model whose kernels are not all (..., in, out) says so itself
    return model.param_roles(params)
  inputs = tuple(getattr(model, 'INPUT_LAYERS', ()))

  def role(path, leaf):
    top = getattr(path[0], 'key', str(path[0]))
    last = getattr(path[-1], 'key', str(path[-1]))
    layer = 'output' if top == 'head' else 'input' if top in inputs else 'hidden'
    return Role(layer, tuple(range(leaf.ndim - 1)) if last == 'kernel' else ())
  return jax.tree_util.tree_map_with_path(role, params)
