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
residual additions, concatenations and attention (its heads). An operation it
cannot follow on a traced channel raises :class:`SlimError` naming the
primitive, the source line and the layer; an operation that mixes channels (a
reduction over them, a strided slice, a grouped convolution, the model output)
keeps them. The slim model is then run on the example batch and compared with
the model before it is returned.

The parts: ``_slim_graph.py`` (slots and their union-find), ``_slim_rules.py``
(one rule per primitive, in one registry), ``_slim_trace.py`` (the
interpreter and the plan: what goes, MACs before and after),
``_slim_model.py`` (the model's variables and size attributes),
``_slim_report.py`` (the report) and ``_slim_io.py`` (:func:`save`,
:func:`load`).

This module needs Flax and Orbax: ``pip install rmda_jax[examples]``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

try:
  import orbax.checkpoint as ocp  # noqa: F401  (save/load; tests patch it here)
  from flax import nnx
except ImportError as _e:  # pragma: no cover - exercised by a test that hides Flax
  raise ImportError(
      "rmda_jax.slim needs Flax and Orbax; install them with `pip install rmda_jax[examples]`"
  ) from _e

from rmda_jax import _slim_model as mdl
from rmda_jax._slim_io import load
from rmda_jax._slim_io import save
from rmda_jax._slim_model import GatheredLinear
from rmda_jax._slim_report import LayerReport
from rmda_jax._slim_report import SlimReport
from rmda_jax._slim_report import SlimResult
from rmda_jax._slim_report import build_report
from rmda_jax._slim_trace import SlimError
from rmda_jax._slim_trace import analyze
from rmda_jax._slim_trace import trace

__all__ = ["slim", "save", "load", "SlimResult", "SlimReport", "LayerReport", "SlimError",
           "GatheredLinear"]


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
  all of them are zero in the dense layer that reads them; when only some are,
  an ``nnx.Linear`` reading them drops its remaining zero rows and becomes a
  :class:`GatheredLinear` that gathers the features it still reads.

  Attention heads and MLP hidden units are channels too. A head of
  ``nnx.MultiHeadAttention`` (or of attention written with ``jnp.einsum`` and
  per-head kernels ``(in, heads, head_dim)``) goes when its rows of the output
  projection are all zero: with it go its slices of the query, key and value
  kernels and biases, and the module's ``num_heads`` follows. A head zero in
  some of its rows only is kept (the report says so), and so are the channels
  a LayerNorm normalizes (a transformer's residual stream). An MLP hidden unit
  goes when its row of the second dense layer is zero (with the first layer's
  column and bias entry).

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
    ValueError: the model's own code fails on ``example_input`` (its error is
      the ``__cause__``). An error raised while slim interprets the traced
      forward pass is slim's and propagates unchanged.
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
  graphdef, treedef, leaves, variables, parts = mdl.split(model)
  layers = [mdl.layer_name(p) if mdl.sliceable(l) else None for l, p in zip(leaves, parts)]
  fn = mdl.forward_fn(graphdef, treedef, forward)
  try:
    closed = trace(fn, leaves, x)
  except Exception as e:  # the model's own code fails on this input (any error it raises)
    first = str(e).splitlines()[0] if str(e) else ""
    raise ValueError(f"slim: the model does not run on example_input of shape "
                     f"{tuple(x.shape)}: {type(e).__name__}: {first}") from e
  # A failure past this point is slim's, not the model's: it propagates as it is.
  modules = mdl.modules(model)
  gatherable = frozenset(
      i for i, p in enumerate(parts)
      if p[-1] == "kernel" and type(modules.get("/".join(p[:-1]))) is nnx.Linear)
  plan = analyze(closed, leaves, layers, x, prune_inputs=prune_inputs, gatherable=gatherable,
                 names=["/".join(p) for p in parts])

  new_leaves = [mdl.take(l, k) for l, k in zip(leaves, plan.keep)]
  slim_model = nnx.merge(graphdef, jax.tree.unflatten(treedef, new_leaves))
  mdl.fix_attributes(slim_model)
  slim_modules = mdl.modules(slim_model)
  for leaf, index in plan.gathers.items():
    where = "/".join(parts[leaf][:-1])
    mdl.replace_module(slim_model, where, mdl.gathered(
        slim_modules[where], jnp.asarray(index, jnp.int32)))
  input_axis, input_index = mdl.input_selection(plan.input_keep)
  x_slim = mdl.select(x, input_axis, input_index)

  # The check: the slim model computes the model's outputs on the example batch.
  s_graphdef, s_treedef, s_leaves, _, _ = mdl.split(slim_model)
  run_before = jax.jit(fn)
  run_after = jax.jit(mdl.forward_fn(s_graphdef, s_treedef, forward))
  y_before = run_before(leaves, x)
  try:
    y_after = run_after(s_leaves, x_slim)
  except Exception as e:  # the user's code may fail in any way on the new shapes
    raise SlimError(f"slim: the slimmed model does not run ({type(e).__name__}: "
                    f"{str(e).splitlines()[0] if str(e) else ''}); its code probably fixes a "
                    "channel count that slimming changed") from e
  _check_equal(y_before, y_after, rtol, atol)

  seconds = mdl.time_calls([(run_before, (leaves, x)), (run_after, (s_leaves, x_slim))],
                           timing_runs)
  report = build_report(plan, leaves, new_leaves, variables, parts, batch=int(x.shape[0]),
                        input_shape=x.shape, seconds=seconds, timing_runs=timing_runs,
                        notes=[*plan.notes, *_module_notes(model, slim_model)])
  return SlimResult(slim_model, report, input_axis, input_index)


def _module_notes(model, slim_model) -> list[str]:
  """What happened to attention heads, and the channels that normalization keeps."""
  notes, normed = [], []
  after = mdl.modules(slim_model)
  for where, module in mdl.modules(model).items():
    if isinstance(module, nnx.MultiHeadAttention) and where in after:
      notes.append(f"'{where}': {after[where].num_heads} of {module.num_heads} attention heads "
                   "kept")
    elif isinstance(module, (nnx.LayerNorm, nnx.RMSNorm, nnx.GroupNorm)):
      normed.append(f"'{where}'")
  if normed:
    shown = ", ".join(normed[:4]) + (f" and {len(normed) - 4} more" if len(normed) > 4 else "")
    notes.append(f"the channels normalized by {shown} stay: a normalization mixes all of "
                 "them (a transformer's residual stream keeps its width)")
  return notes


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
