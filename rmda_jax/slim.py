"""Slim: a structured-sparse Flax model becomes a smaller dense model with the same outputs.

RMDA with group LASSO zeroes whole *input groups* (kernel axis -2: an input
channel of a convolution, an input feature of a dense layer). When every layer
that reads a channel has zeroed it, the channel reaches nothing: the layer that
produces it can drop that output (its kernel slice, bias entry and BatchNorm
entries), and the readers drop their zero input slices. The model gets
genuinely smaller and faster, and computes the same function.

:func:`slim` finds these channels from the model itself, like Torch-Pruning's
dependency graph: it traces the forward pass with ``jax.make_jaxpr`` over the
model's variables and follows every channel through convolutions, dense
layers, BatchNorm, elementwise activations, pooling, reshapes and flattening,
residual additions and concatenations (see ``rmda_jax/_slim_trace.py``). An
operation it cannot follow on a traced channel raises :class:`SlimError`
naming the primitive, the source line and the layer; an operation that mixes
channels (a reduction over them, a strided slice, a grouped convolution, the
model output) keeps them. The slim model is then run on the example batch and
compared with the model before it is returned.

This module needs Flax and Orbax: ``pip install rmda_jax[examples]``.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import os
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

try:
  import orbax.checkpoint as ocp
  from flax import nnx
except ImportError as _e:  # pragma: no cover - exercised by a test that hides Flax
  raise ImportError(
      "rmda_jax.slim needs Flax and Orbax; install them with `pip install rmda_jax[examples]`"
  ) from _e

from rmda_jax._slim_trace import SlimError
from rmda_jax._slim_trace import analyze

__all__ = ["slim", "save", "load", "SlimResult", "SlimReport", "LayerReport", "SlimError"]

_FORMAT = "rmda_jax.slim/1"
_SPEC_FILE = "slim.json"
_STATE_DIR = "state"


# ----------------------------------------------------------------------------
# Report.


@dataclasses.dataclass(frozen=True)
class LayerReport:
  """One layer of a :class:`SlimReport`.

  Attributes:
    name: the layer's path in the model (``"blocks/0/conv1"``).
    params_before: trainable parameters (``nnx.Param``) before slimming.
    params_after: the same after slimming.
    macs_before: multiply-adds per example before slimming.
    macs_after: the same after slimming.
    change: the largest variable's shape change (``"kernel 5x5x6x16 -> 5x5x6x9"``),
      empty when the layer is unchanged.
  """
  name: str
  params_before: int
  params_after: int
  macs_before: int
  macs_after: int
  change: str = ""


@dataclasses.dataclass(frozen=True)
class SlimReport:
  """What slimming removed and what it bought; ``str(report)`` is a table.

  Multiply-adds count convolutions and dense layers (output elements times
  the contracted size) and elementwise products with parameters (BatchNorm's
  scale, and convolutions written as shifted products, such as the CPU fast
  path of the examples' LeNet5), per example of the batch.

  Attributes:
    layers: one :class:`LayerReport` per layer, in the order the forward pass
      uses them.
    batch_size: the example batch's size.
    seconds_before: median inference time per batch of the jitted model
      (warm, same batch, runs interleaved with the slim model's), or ``None``
      when not measured.
    seconds_after: the same for the slim model.
    timing_runs: how many runs the medians are over.
    input_features_before: features per example of the model's input.
    input_features_after: features per example the slim model expects.
    notes: why some channels whose readers are all zero were kept.
  """
  layers: tuple[LayerReport, ...]
  batch_size: int
  seconds_before: float | None
  seconds_after: float | None
  timing_runs: int
  input_features_before: int
  input_features_after: int
  notes: tuple[str, ...] = ()

  @property
  def params_before(self) -> int:
    return sum(l.params_before for l in self.layers)

  @property
  def params_after(self) -> int:
    return sum(l.params_after for l in self.layers)

  @property
  def macs_before(self) -> int:
    return sum(l.macs_before for l in self.layers)

  @property
  def macs_after(self) -> int:
    return sum(l.macs_after for l in self.layers)

  @property
  def nothing_removed(self) -> bool:
    """Whether the slim model has the same shapes as the model."""
    return (all(not l.change for l in self.layers)
            and self.input_features_after == self.input_features_before)

  def to_dict(self) -> dict:
    """A JSON-ready dict (layers, totals, times)."""
    d = dataclasses.asdict(self)
    d.update(params_before=self.params_before, params_after=self.params_after,
             macs_before=self.macs_before, macs_after=self.macs_after,
             nothing_removed=self.nothing_removed)
    return d

  def __str__(self) -> str:
    head = ("layer", "params before", "params after", "MACs/example before",
            "MACs/example after", "change")
    rows = [(l.name, f"{l.params_before:,}", f"{l.params_after:,}", f"{l.macs_before:,}",
             f"{l.macs_after:,}", l.change) for l in self.layers]
    rows.append(("total", f"{self.params_before:,}", f"{self.params_after:,}",
                 f"{self.macs_before:,}", f"{self.macs_after:,}", ""))
    widths = [max(len(r[k]) for r in [head, *rows]) for k in range(len(head))]

    def line(r):
      cells = [r[0].ljust(widths[0])] + [r[k].rjust(widths[k]) for k in range(1, 5)] + [r[5]]
      return "  ".join(cells).rstrip()

    out = [line(head), "  ".join("-" * w for w in widths[:5]) + "  " + "-" * widths[5]]
    out += [line(r) for r in rows[:-1]]
    out += ["  ".join("-" * w for w in widths[:5]), line(rows[-1])]

    def pct(a, b):
      return f" ({100 * (1 - b / a):.1f}% fewer)" if a else ""

    out.append(f"parameters: {self.params_before:,} -> {self.params_after:,}"
               f"{pct(self.params_before, self.params_after)}")
    out.append(f"multiply-adds per example: {self.macs_before:,} -> {self.macs_after:,}"
               f"{pct(self.macs_before, self.macs_after)}")
    out.append(f"input features per example: {self.input_features_before:,} -> "
               f"{self.input_features_after:,}")
    if self.seconds_before is not None and self.seconds_after is not None:
      ratio = self.seconds_before / self.seconds_after if self.seconds_after else float("inf")
      out.append(f"inference time per batch of {self.batch_size} (jit, warm, median of "
                 f"{self.timing_runs}): {1e3 * self.seconds_before:.3f} ms -> "
                 f"{1e3 * self.seconds_after:.3f} ms ({ratio:.2f}x)")
    if self.nothing_removed:
      out.append("nothing removed: no channel is zero in every layer that reads it")
    out += [f"note: {n}" for n in self.notes]
    return "\n".join(out)


@dataclasses.dataclass(frozen=True)
class SlimResult:
  """The slim model and its report.

  Attributes:
    model: the slim ``nnx.Module`` (new; the model passed to :func:`slim` is
      untouched). Same class and code, smaller variables.
    report: the :class:`SlimReport`.
    input_axis: with ``prune_inputs=True``, the input axis whose entries were
      removed, or ``None`` when the kept input features are given as indices
      into the flattened example (``x.reshape(n, -1)``).
    input_index: the kept input entries (indices along ``input_axis``, or into
      the flattened example), or ``None`` when the input is unchanged.
  """
  model: Any
  report: SlimReport
  input_axis: int | None = None
  input_index: np.ndarray | None = None

  def select_input(self, x: jax.Array) -> jax.Array:
    """The input the slim model expects, from a batch for the original model."""
    return _select(x, self.input_axis, self.input_index)


def _select(x, axis, index):
  if index is None:
    return x
  x = jnp.asarray(x)
  if axis is None:
    return x.reshape(x.shape[0], -1)[:, index]
  return jnp.take(x, jnp.asarray(index), axis=axis)


# ----------------------------------------------------------------------------
# The model's variables.


def _part(key) -> str:
  for attr in ("key", "idx", "name"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def _split(model):
  """graphdef, leaf treedef, leaves, variables and their path parts, in one order."""
  graphdef, state = nnx.split(model)
  with_paths, _ = jax.tree_util.tree_flatten_with_path(
      state, is_leaf=lambda v: isinstance(v, nnx.Variable))
  leaves, treedef = jax.tree.flatten(state)
  if len(leaves) != len(with_paths):
    raise SlimError("slim: every variable of the model must hold exactly one array")
  parts = [tuple(_part(k) for k in p) for p, _ in with_paths]
  variables = [v for _, v in with_paths]
  return graphdef, treedef, leaves, variables, parts


def _layer_name(parts: tuple[str, ...]) -> str:
  return "/".join(parts[:-1]) or "(model)"


def _sliceable(leaf) -> bool:
  dtype = getattr(leaf, "dtype", None)
  return (dtype is not None and np.ndim(leaf) >= 1 and jnp.issubdtype(dtype, jnp.inexact))


def _forward_fn(graphdef, treedef, forward):
  def fn(leaves, x):
    return forward(nnx.merge(graphdef, jax.tree.unflatten(treedef, leaves)), x)
  return fn


def _size_attributes(module) -> dict[str, Any]:
  """The size attributes of Flax layers that must follow their variables' shapes."""
  if isinstance(module, nnx.Conv):
    k = tuple(module.kernel.shape)
    return {"kernel_shape": k, "in_features": k[-2] * module.feature_group_count,
            "out_features": k[-1]}
  if isinstance(module, nnx.ConvTranspose):
    k = tuple(module.kernel.shape)
    i, o = (k[-1], k[-2]) if module.transpose_kernel else (k[-2], k[-1])
    return {"kernel_shape": k, "in_features": i, "out_features": o}
  if isinstance(module, nnx.Linear):
    i, o = module.kernel.shape
    return {"in_features": int(i), "out_features": int(o)}
  if isinstance(module, (nnx.BatchNorm, nnx.LayerNorm, nnx.RMSNorm, nnx.GroupNorm)):
    for name in ("scale", "bias", "mean"):
      v = getattr(module, name, None)
      if isinstance(v, nnx.Variable):
        return {"num_features": int(math.prod(v.shape))}
  return {}


def _fix_attributes(model) -> None:
  for _, module in nnx.iter_modules(model):
    for name, value in _size_attributes(module).items():
      setattr(module, name, value)


def _is_plain(value) -> bool:
  if value is None or isinstance(value, (bool, int, float, str)):
    return True
  return isinstance(value, (tuple, list)) and all(_is_plain(v) for v in value)


def _plain_attributes(module) -> dict[str, Any]:
  """A module's attributes that JSON can hold (sizes, modes, plans), by name."""
  return {k: v for k, v in vars(module).items()
          if not k.startswith(("_pytree__", "_object__")) and _is_plain(v)}


def _modules(model) -> dict[str, Any]:
  return {"/".join(map(str, path)): m for path, m in nnx.iter_modules(model)}


def _apply_attributes(model, attributes: Mapping[str, Mapping[str, Any]]) -> None:
  for path, module in _modules(model).items():
    for name, value in attributes.get(path, {}).items():
      setattr(module, name, _decode(value))


def _take(leaf, keep):
  if all(index is None for index in keep):
    return leaf
  sliced = np.asarray(leaf)
  for axis, index in enumerate(keep):
    if index is not None:
      sliced = np.take(sliced, index, axis=axis)
  return jax.device_put(sliced, getattr(leaf, "sharding", None))


def _input_selection(mask: np.ndarray | None):
  """(axis, index): one input axis when the kept entries are whole slices of it."""
  if mask is None:
    return None, None
  for a in range(mask.ndim):
    others = tuple(d for d in range(mask.ndim) if d != a)
    line = np.all(mask, axis=others)
    if np.array_equal(mask, np.broadcast_to(np.expand_dims(line, others), mask.shape)):
      return a + 1, np.flatnonzero(line)
  return None, np.flatnonzero(mask)


def _time(calls, runs: int) -> list[float | None]:
  """Median seconds per call of each ``(f, args)``, warm, runs interleaved (fair under noise)."""
  if runs <= 0:
    return [None] * len(calls)
  for f, args in calls:
    jax.block_until_ready(f(*args))
  times = [[] for _ in calls]
  for _ in range(runs):
    for (f, args), ts in zip(calls, times):
      t = time.perf_counter()
      jax.block_until_ready(f(*args))
      ts.append(time.perf_counter() - t)
  return [statistics.median(ts) for ts in times]


def _describe(before: tuple, after: tuple) -> str:
  return f"{'x'.join(map(str, before))} -> {'x'.join(map(str, after))}"


# ----------------------------------------------------------------------------
# slim.


def slim(
    model,
    example_input: jax.Array,
    *,
    prune_inputs: bool = False,
    forward: Callable[[Any, jax.Array], Any] | None = None,
    timing_runs: int = 10,
    rtol: float = 1e-4,
    atol: float = 1e-5,
) -> SlimResult:
  r"""Removes the channels that every reader has zeroed; the outputs stay the same.

  A channel produced by a layer (a convolution's output channel, a dense
  layer's output feature) is removed when each layer that reads it has an
  exactly zero input group for it (in Flax layouts, the slice ``[..., i, :]``
  of its kernel, i.e. axis -2: the group RMDA's group LASSO zeroes). With it go
  the producer's kernel output slice, its bias entry and the BatchNorm entries
  (scale, offset, running mean and variance) of that channel, and the readers'
  zero input slices. A channel that reaches a residual addition is coupled to
  the other branch's channel: the pair goes only when all readers of the sum
  have zeroed it. Flattening spreads a channel over its features: it goes when
  all of them are zero in the dense layer that reads them.

  The dependencies are found by tracing ``forward(model, example_input)`` with
  ``jax.make_jaxpr`` over the model's variables (Torch-Pruning's idea, in
  JAX), so a user's own model built from ``nnx.Conv``, ``nnx.Linear``,
  ``nnx.BatchNorm`` and JAX operations works, not only the examples' zoo.
  Calls to ``jax.jit``, ``custom_jvp`` and ``custom_vjp`` functions are
  followed through their bodies.

  Args:
    model: a ``flax.nnx.Module``. BatchNorm is traced in the mode the model is
      in; call ``model.eval()`` first to slim a model for inference.
    example_input: one batch (axis 0 is the batch axis). Its values are used to
      check the result and time both models.
    prune_inputs: whether the model's own input features (pixels, image
      channels) that the first layers have zeroed are removed too. The slim
      model then expects ``result.select_input(x)`` instead of ``x``.
    forward: ``forward(model, x)`` computes the outputs; default ``model(x)``.
    timing_runs: runs of each jitted model timed for the report (median); 0
      skips the timing.
    rtol: relative tolerance (to the largest output magnitude) of the final
      check that the slim model's outputs equal the model's.
    atol: absolute tolerance of that check.

  Returns:
    A :class:`SlimResult`: ``model`` (a new, smaller model), ``report`` (a
    :class:`SlimReport`; ``print(result.report)`` shows the table), and the
    input selection when ``prune_inputs=True`` removed input features.

  Raises:
    TypeError: ``model`` is not an ``nnx.Module``.
    ValueError: ``example_input`` does not fit the model.
    SlimError: the forward pass uses an operation on traced channels that
      slim cannot follow (the message names the primitive, the source line and
      the layer), or the slim model does not reproduce the model's outputs.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from flax import nnx
    >>> from rmda_jax.slim import slim
    >>> model = nnx.Sequential(nnx.Linear(4, 3, rngs=nnx.Rngs(0)), jax.nn.relu,
    ...                        nnx.Linear(3, 2, rngs=nnx.Rngs(1)))
    >>> model.layers[2].kernel[...] = model.layers[2].kernel[...].at[1].set(0.0)
    >>> result = slim(model, jnp.ones((8, 4)), timing_runs=0)
    >>> result.model.layers[0].kernel.shape, result.model.layers[2].kernel.shape
    ((4, 2), (2, 2))
    >>> result.report.params_before - result.report.params_after  # 4 + 1 + 2
    7

  References:
    Fang et al., `DepGraph: Towards Any Structural Pruning
    <https://arxiv.org/abs/2301.12900>`_, CVPR 2023 (Torch-Pruning).

    Huang & Lee, `Training Structured Neural Networks Through Manifold
    Identification and Variance Reduction <https://arxiv.org/abs/2112.02612>`_,
    ICLR 2022 (RMDA).
  """
  if not isinstance(model, nnx.Module):
    raise TypeError(f"slim: model must be a flax.nnx.Module, got {type(model).__name__}")
  try:
    x = jnp.asarray(example_input)
  except TypeError as e:
    raise TypeError(f"slim: example_input must be an array, got "
                    f"{type(example_input).__name__}") from e
  if x.ndim < 1 or x.shape[0] < 1:
    raise ValueError(f"slim: example_input must be a batch with a leading batch axis, got "
                     f"shape {x.shape}")
  forward = forward or (lambda m, inputs: m(inputs))
  graphdef, treedef, leaves, variables, parts = _split(model)
  layers = [_layer_name(p) if _sliceable(l) else None for l, p in zip(leaves, parts)]
  fn = _forward_fn(graphdef, treedef, forward)
  try:
    plan = analyze(fn, leaves, layers, x, prune_inputs=prune_inputs)
  except SlimError:
    raise
  except (TypeError, ValueError, IndexError) as e:
    raise ValueError(f"slim: the model does not run on example_input of shape "
                     f"{tuple(x.shape)}: {type(e).__name__}: {e}".splitlines()[0]) from e

  new_leaves = [_take(l, k) for l, k in zip(leaves, plan.keep)]
  slim_model = nnx.merge(graphdef, jax.tree.unflatten(treedef, new_leaves))
  _fix_attributes(slim_model)
  input_axis, input_index = _input_selection(plan.input_keep)
  x_slim = _select(x, input_axis, input_index)

  # The check: the slim model computes the model's outputs on the example batch.
  s_graphdef, s_treedef, s_leaves, _, _ = _split(slim_model)
  run_before = jax.jit(fn)
  run_after = jax.jit(_forward_fn(s_graphdef, s_treedef, forward))
  y_before = run_before(leaves, x)
  try:
    y_after = run_after(s_leaves, x_slim)
  except Exception as e:  # the user's code may fail in any way on the new shapes
    raise SlimError(f"slim: the slimmed model does not run ({type(e).__name__}: "
                    f"{str(e).splitlines()[0] if str(e) else ''}); its code probably fixes a "
                    "channel count that slimming changed") from e
  _check_equal(y_before, y_after, rtol, atol)

  # The report.
  s_layers = [_layer_name(p) if _sliceable(l) else None for l, p in zip(s_leaves, parts)]
  fn_after = _forward_fn(s_graphdef, s_treedef, forward)
  macs_after = analyze(fn_after, s_leaves, s_layers, x_slim, prune_inputs=False).macs
  batch = int(x.shape[0])
  seconds_before, seconds_after = _time(
      [(run_before, (leaves, x)), (run_after, (s_leaves, x_slim))], timing_runs)
  names = list(dict.fromkeys([*plan.layer_order, *plan.macs,
                              *(_layer_name(p) for p, v in zip(parts, variables)
                                if isinstance(v, nnx.Param))]))
  rows = []
  for name in names:
    idx = [i for i, p in enumerate(parts) if _layer_name(p) == name]
    n_before = sum(int(np.size(leaves[i])) for i in idx if isinstance(variables[i], nnx.Param))
    n_after = sum(int(np.size(new_leaves[i])) for i in idx if isinstance(variables[i], nnx.Param))
    changed = [i for i in idx if np.shape(leaves[i]) != np.shape(new_leaves[i])]
    change = ""
    if changed:
      i = max(changed, key=lambda i: (np.ndim(leaves[i]), np.size(leaves[i])))
      change = f"{parts[i][-1]} {_describe(np.shape(leaves[i]), np.shape(new_leaves[i]))}"
    rows.append(LayerReport(name, n_before, n_after, plan.macs.get(name, 0) // batch,
                            macs_after.get(name, 0) // batch, change))
  features = math.prod(x.shape[1:])
  report = SlimReport(
      layers=tuple(rows), batch_size=batch, seconds_before=seconds_before,
      seconds_after=seconds_after, timing_runs=timing_runs,
      input_features_before=features,
      input_features_after=features if plan.input_keep is None else int(plan.input_keep.sum()),
      notes=tuple(plan.notes))
  return SlimResult(slim_model, report, input_axis, input_index)


def _check_equal(before, after, rtol: float, atol: float) -> None:
  b_leaves, b_tree = jax.tree.flatten(before)
  a_leaves, a_tree = jax.tree.flatten(after)
  if b_tree != a_tree:
    raise SlimError(f"slim: the slimmed model returns {a_tree}, the model {b_tree}")
  for b, a in zip(b_leaves, a_leaves):
    b, a = np.asarray(b, np.float64), np.asarray(a, np.float64)
    if b.shape != a.shape:
      raise SlimError(f"slim: the slimmed model's output has shape {a.shape}, the model's "
                      f"{b.shape}; its code probably fixes a channel count")
    if b.size == 0:
      continue
    tol = atol + rtol * float(np.max(np.abs(b[np.isfinite(b)]), initial=0.0))
    diff = np.abs(a - b)
    same_nonfinite = ~np.isfinite(b) & (a == b)
    worst = float(np.max(np.where(same_nonfinite, 0.0, np.nan_to_num(diff, nan=np.inf))))
    if worst > tol:
      raise SlimError(f"slim: the slimmed model's outputs differ from the model's by {worst:.3g} "
                      f"(tolerance {tol:.3g}); please report this model")


# ----------------------------------------------------------------------------
# save / load.


def _encode(value, where: str):
  if value is None or isinstance(value, (bool, int, float, str)):
    return value
  if isinstance(value, np.integer):
    return int(value)
  if isinstance(value, np.floating):
    return float(value)
  if isinstance(value, tuple):
    return {"__tuple__": [_encode(v, f"{where}[{i}]") for i, v in enumerate(value)]}
  if isinstance(value, list):
    return [_encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
  if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
    return {k: _encode(v, f"{where}[{k!r}]") for k, v in value.items()}
  raise TypeError(f"save: constructor_kwargs{where} is a {type(value).__name__}; only JSON "
                  "values (and tuples) can be stored")


def _decode(value):
  if isinstance(value, list):
    return [_decode(v) for v in value]
  if isinstance(value, dict):
    if set(value) == {"__tuple__"}:
      return tuple(_decode(v) for v in value["__tuple__"])
    return {k: _decode(v) for k, v in value.items()}
  return value


def _resolve(ref: str):
  module, _, qualname = ref.partition(":")
  if not module or not qualname:
    raise ValueError(f"constructor {ref!r} must read 'package.module:name'")
  obj = importlib.import_module(module)
  for part in qualname.split("."):
    obj = getattr(obj, part)
  return obj


def _constructor_ref(constructor) -> str:
  if isinstance(constructor, str):
    ref = constructor
  else:
    qualname = getattr(constructor, "__qualname__", "")
    if "<" in qualname or not getattr(constructor, "__module__", None):
      raise ValueError(f"save: constructor must be a module-level function or class that load "
                       f"can import, got {constructor!r}")
    ref = f"{constructor.__module__}:{qualname}"
  try:
    obj = _resolve(ref)
  except (ImportError, AttributeError, ValueError) as e:
    raise ValueError(f"save: constructor {ref!r} cannot be imported: {e}") from e
  if not isinstance(constructor, str) and obj is not constructor:
    raise ValueError(f"save: constructor {ref!r} imports as another object; pass a "
                     "module-level function or class")
  return ref


def _construct(spec: Mapping[str, Any]):
  """The constructor's model, abstract (shapes only): ``nnx.eval_shape`` of the call."""
  ctor = _resolve(spec["constructor"])
  kwargs = _decode(spec["constructor_kwargs"])
  return nnx.eval_shape(lambda: ctor(**kwargs, rngs=nnx.Rngs(0)))


def _rebuild(spec: Mapping[str, Any]):
  """graphdef, leaf treedef and variable paths of the model ``spec`` describes."""
  abstract = _construct(spec)
  _apply_attributes(abstract, spec["attributes"])
  graphdef, treedef, leaves, _, parts = _split(abstract)
  stored = {tuple(v["path"]): v for v in spec["variables"]}
  missing = sorted("/".join(p) for p in set(stored) - set(parts))
  extra = sorted("/".join(p) for p in set(parts) - set(stored))
  if missing or extra:
    raise ValueError(f"{spec['constructor']}(**constructor_kwargs) builds other variables than "
                     f"the slim model (missing: {missing[:5]}, not in the slim model: {extra[:5]})")
  for p, leaf in zip(parts, leaves):
    if len(stored[p]["shape"]) != np.ndim(leaf):
      raise ValueError(f"{spec['constructor']}(**constructor_kwargs) builds "
                       f"{'/'.join(p)} of rank {np.ndim(leaf)}; the slim model's has rank "
                       f"{len(stored[p]['shape'])}")
  return graphdef, treedef, parts


def _nested(parts_list, values) -> dict:
  tree: dict = {}
  for parts, value in zip(parts_list, values):
    node = tree
    for p in parts[:-1]:
      node = node.setdefault(p, {})
    node[parts[-1]] = value
  return tree


def _lookup(tree, parts):
  for p in parts:
    tree = tree[p]
  return tree


def _is_key(leaf) -> bool:
  return jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def save(path: str | os.PathLike, result: SlimResult, *, constructor: Callable | str,
         constructor_kwargs: Mapping[str, Any] | None = None, overwrite: bool = False) -> Path:
  """Writes the slim model (Orbax) and what :func:`load` needs to rebuild it.

  The directory holds ``state/`` (an Orbax checkpoint of every variable) and
  ``slim.json``: the constructor's import path and keyword arguments, each
  variable's path, shape and dtype, the modules' plain attributes (numbers,
  strings, tuples) that differ from a freshly constructed model (the Flax
  layers' ``in_features``, ``out_features``, ``num_features``,
  ``kernel_shape``; BatchNorm's ``use_running_average``), the input selection
  and the report. :func:`load` builds the model's structure
  with ``nnx.eval_shape(lambda: constructor(**constructor_kwargs, rngs=...))``,
  resizes it to the stored shapes and restores the values. Nothing is pickled.

  The write is atomic: everything goes to a temporary directory next to
  ``path``, renamed onto ``path`` when complete; on failure it is removed and
  ``path`` is untouched.

  Args:
    path: the directory to write.
    result: what :func:`slim` returned.
    constructor: what built the original model: a module-level function or
      class (or its ``"package.module:name"``) accepting ``rngs=`` and the
      keyword arguments below, e.g. ``rmda_jax.examples.models.get_model``.
    constructor_kwargs: its keyword arguments (JSON values and tuples), e.g.
      ``{"name": "lenet5_small", "num_classes": 10, "input_shape": (28, 28, 1)}``.
    overwrite: whether an existing ``path`` is replaced.

  Returns:
    ``path``.

  Raises:
    FileExistsError: ``path`` exists and ``overwrite`` is false.
    ValueError: the constructor cannot be imported, or does not build a model
      with the slim model's variables.
    TypeError: a keyword argument cannot be stored as JSON.

  Examples:
    >>> import tempfile, jax.numpy as jnp
    >>> from flax import nnx
    >>> from rmda_jax import slim as slim_lib
    >>> from rmda_jax.examples import models
    >>> model = models.get_model("logreg", 10, nnx.Rngs(0), (4, 4, 1))
    >>> result = slim_lib.slim(model, jnp.ones((2, 4, 4, 1)), timing_runs=0)
    >>> d = tempfile.mkdtemp()
    >>> _ = slim_lib.save(f"{d}/logreg", result, constructor=models.get_model,
    ...                   constructor_kwargs={"name": "logreg", "input_shape": (4, 4, 1)})
    >>> slim_lib.load(f"{d}/logreg").fc.kernel.shape
    (16, 10)
  """
  if not isinstance(result, SlimResult):
    raise TypeError(f"save: result must be what slim() returned, got {type(result).__name__}")
  path = Path(path).absolute()
  if path.exists() and not overwrite:
    raise FileExistsError(f"save: {path} exists; pass overwrite=True to replace it")
  ref = _constructor_ref(constructor)
  kwargs = _encode(dict(constructor_kwargs or {}), "")
  _, _, leaves, _, parts = _split(result.model)
  spec = {
      "format": _FORMAT,
      "constructor": ref,
      "constructor_kwargs": kwargs,
      "attributes": {},
      "variables": [{"path": list(p), "shape": list(np.shape(l)),
                     "dtype": str(l.dtype) if not _is_key(l) else "key",
                     "key_impl": str(jax.random.key_impl(l)) if _is_key(l) else None}
                    for p, l in zip(parts, leaves)],
      "input": (None if result.input_index is None else
                {"axis": result.input_axis, "index": [int(i) for i in result.input_index]}),
      "report": result.report.to_dict(),
  }
  try:
    built = _modules(_construct(spec))
    # The attributes where the slim model differs from a fresh one: sizes, eval mode, ...
    for where, module in _modules(result.model).items():
      fresh = _plain_attributes(built[where]) if where in built else {}
      diff = {k: _encode(v, "") for k, v in _plain_attributes(module).items()
              if k not in fresh or fresh[k] != v or type(fresh[k]) is not type(v)}
      if diff:
        spec["attributes"][where] = diff
    _rebuild(spec)
  except (ImportError, AttributeError, TypeError) as e:
    raise ValueError(f"save: {ref}(**constructor_kwargs, rngs=...) fails: "
                     f"{type(e).__name__}: {e}") from e
  except ValueError as e:
    raise ValueError(f"save: {e}") from e
  arrays = [jax.random.key_data(l) if _is_key(l) else l for l in leaves]
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
  try:
    checkpointer = ocp.StandardCheckpointer()
    try:
      checkpointer.save(tmp / _STATE_DIR, _nested(parts, arrays))
      checkpointer.wait_until_finished()
    finally:
      checkpointer.close()
    with open(tmp / _SPEC_FILE, "w") as f:
      json.dump(spec, f, indent=1)
      f.flush()
      os.fsync(f.fileno())
    if path.exists():
      old = path.parent / f".{path.name}.old-{uuid.uuid4().hex}"
      os.replace(path, old)
      os.replace(tmp, path)
      shutil.rmtree(old, ignore_errors=True)
    else:
      os.replace(tmp, path)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return path


def load(path: str | os.PathLike):
  """Reads a slim model written by :func:`save`.

  Args:
    path: the directory :func:`save` wrote.

  Returns:
    The slim ``nnx.Module``; its outputs equal those of ``result.model``. When
    the input was pruned, it expects the selected input (``slim.json`` holds
    the ``input`` axis and indices, as ``SlimResult.select_input`` applies them).

  Raises:
    FileNotFoundError: ``path`` is not a directory written by :func:`save`.
    ValueError: the checkpoint's format is unknown, or its constructor no
      longer builds a model with its variables.
  """
  path = Path(path).absolute()
  spec_file = path / _SPEC_FILE
  if not spec_file.is_file():
    raise FileNotFoundError(f"load: {path} is not a slim checkpoint (no {_SPEC_FILE})")
  with open(spec_file) as f:
    spec = json.load(f)
  if spec.get("format") != _FORMAT:
    raise ValueError(f"load: {spec_file} has format {spec.get('format')!r}, expected {_FORMAT!r}")
  try:
    graphdef, treedef, parts = _rebuild(spec)
  except ValueError as e:
    raise ValueError(f"load: {e}") from e
  stored = {tuple(v["path"]): v for v in spec["variables"]}
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  targets = []
  for p in parts:
    v = stored[p]
    dtype = jnp.uint32 if v["dtype"] == "key" else jnp.dtype(v["dtype"])
    shape = tuple(v["shape"])
    if v["dtype"] == "key":
      shape = shape + tuple(jax.random.key_data(
          jax.random.key(0, impl=v["key_impl"])).shape)
    targets.append(jax.ShapeDtypeStruct(shape, dtype, sharding=sharding))
  checkpointer = ocp.StandardCheckpointer()
  try:
    restored = checkpointer.restore(path / _STATE_DIR, _nested(parts, targets))
  finally:
    checkpointer.close()
  leaves = []
  for p in parts:
    leaf = _lookup(restored, p)
    if stored[p]["dtype"] == "key":
      leaf = jax.random.wrap_key_data(leaf, impl=stored[p]["key_impl"])
    leaves.append(leaf)
  model = nnx.merge(graphdef, jax.tree.unflatten(treedef, leaves))
  return model
