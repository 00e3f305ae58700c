"""The model's variables and modules, as :mod:`rmda_jax.slim` reads and resizes them.

Private to :mod:`rmda_jax.slim`: splitting a model into variable leaves with
their paths, slicing leaves, resetting the size attributes of Flax layers to
their new shapes (``nnx.Linear``, ``nnx.LinearGeneral``, ``nnx.Conv``, norms,
``nnx.MultiHeadAttention``'s head counts), and :class:`GatheredLinear`, the
dense layer that reads only the kept features of a flattened input.
"""

from __future__ import annotations

import copy
import math
import statistics
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rmda_jax._slim_graph import SlimError


class InputIndex(nnx.Variable):
  """The input features a :class:`GatheredLinear` reads (indices into its input's last axis)."""


class GatheredLinear(nnx.Linear):
  """An ``nnx.Linear`` that reads only some features of its input.

  ``y = x[..., input_index] @ kernel + bias``: :func:`rmda_jax.slim.slim`
  turns a dense layer whose kernel has zero input rows it could not remove with
  their channel (a flattened feature map, where a channel is zero at some
  positions only) into this layer, with those rows gone.
  """

  def __call__(self, inputs, *args, **kwargs):
    return super().__call__(jnp.take(inputs, self.input_index[...], axis=-1), *args, **kwargs)


def gathered(module: nnx.Linear, index) -> GatheredLinear:
  """A :class:`GatheredLinear` with ``module``'s variables and settings and ``index``."""
  new = object.__new__(GatheredLinear)
  vars(new).update(vars(module))
  vars(new)["_pytree__state"] = copy.copy(vars(module)["_pytree__state"])
  new.input_index = InputIndex(index)
  return new


def child(parent, key: str):
  return parent[int(key)] if key.isdigit() else getattr(parent, key)


def replace_module(model, path: str, new) -> None:
  """Puts ``new`` at ``path`` ("blocks/0/fc1") of ``model``."""
  *up, last = path.split("/")
  parent = model
  for key in up:
    parent = child(parent, key)
  if last.isdigit():
    parent[int(last)] = new
  else:
    setattr(parent, last, new)


def select(x, axis, index):
  if index is None:
    return x
  x = jnp.asarray(x)
  if axis is None:
    return x.reshape(x.shape[0], -1)[:, index]
  return jnp.take(x, jnp.asarray(index), axis=axis)



def part(key) -> str:
  for attr in ("key", "idx", "name"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def split(model):
  """graphdef, leaf treedef, leaves, variables and their path parts, in one order."""
  graphdef, state = nnx.split(model)
  with_paths, _ = jax.tree_util.tree_flatten_with_path(
      state, is_leaf=lambda v: isinstance(v, nnx.Variable))
  leaves, treedef = jax.tree.flatten(state)
  if len(leaves) != len(with_paths):
    raise SlimError("slim: every variable of the model must hold exactly one array")
  parts = [tuple(part(k) for k in p) for p, _ in with_paths]
  variables = [v for _, v in with_paths]
  return graphdef, treedef, leaves, variables, parts


def layer_name(parts: tuple[str, ...]) -> str:
  return "/".join(parts[:-1]) or "(model)"


def sliceable(leaf) -> bool:
  dtype = getattr(leaf, "dtype", None)
  return (dtype is not None and np.ndim(leaf) >= 1 and jnp.issubdtype(dtype, jnp.inexact))


def forward_fn(graphdef, treedef, forward):
  def fn(leaves, x):
    return forward(nnx.merge(graphdef, jax.tree.unflatten(treedef, leaves)), x)
  return fn


def size_attributes(module) -> dict[str, Any]:
  """The size attributes of Flax layers that must follow their variables' shapes."""
  if isinstance(module, nnx.MultiHeadAttention):
    q, k, o = (module.query.kernel.shape, module.key.kernel.shape, module.out.kernel.shape)
    return {"num_heads": int(q[-2]), "num_kv_heads": int(k[-2]), "head_dim": int(q[-1]),
            "qkv_features": int(q[-2] * q[-1]), "in_features": int(q[0]),
            "in_kv_features": int(k[0]), "out_features": int(o[-1])}
  if isinstance(module, nnx.LinearGeneral):
    k = tuple(int(d) for d in module.kernel.shape)
    nb, ni = len(module.batch_axis), len(module.in_features)
    return {"in_features": k[nb:nb + ni], "out_features": k[nb + ni:]}
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


def fix_attributes(model) -> None:
  for _, module in nnx.iter_modules(model):
    for name, value in size_attributes(module).items():
      setattr(module, name, value)


def is_plain(value) -> bool:
  if value is None or isinstance(value, (bool, int, float, str)):
    return True
  return isinstance(value, (tuple, list)) and all(is_plain(v) for v in value)


def plain_attributes(module) -> dict[str, Any]:
  """A module's attributes that JSON can hold (sizes, modes, plans), by name."""
  return {k: v for k, v in vars(module).items()
          if not k.startswith(("_pytree__", "_object__")) and is_plain(v)}


def modules(model) -> dict[str, Any]:
  return {"/".join(map(str, path)): m for path, m in nnx.iter_modules(model)}


def take(leaf, keep):
  if all(index is None for index in keep):
    return leaf
  sliced = np.asarray(leaf)
  for axis, index in enumerate(keep):
    if index is not None:
      sliced = np.take(sliced, index, axis=axis)
  return jax.device_put(sliced, getattr(leaf, "sharding", None))


def input_selection(mask: np.ndarray | None):
  """(axis, index): one input axis when the kept entries are whole slices of it."""
  if mask is None:
    return None, None
  for a in range(mask.ndim):
    others = tuple(d for d in range(mask.ndim) if d != a)
    line = np.all(mask, axis=others)
    if np.array_equal(mask, np.broadcast_to(np.expand_dims(line, others), mask.shape)):
      return a + 1, np.flatnonzero(line)
  return None, np.flatnonzero(mask)


def time_calls(calls, runs: int) -> list[float | None]:
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


def describe(before: tuple, after: tuple) -> str:
  return f"{'x'.join(map(str, before))} -> {'x'.join(map(str, after))}"
