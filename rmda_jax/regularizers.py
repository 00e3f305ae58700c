"""Proximal regularizers psi(W) for structured training.

Every regularizer here is *separable over the leaves* of a parameter pytree
and, inside a leaf, over disjoint groups of entries:

    psi(W) = strength * sum_{leaf in mask} sum_{g in groups(leaf)} w_g ||W_g||

with ``||.||`` the Euclidean norm of the group and ``w_g`` its weight. Each
regularizer knows

* its value, ``reg(params)``,
* its proximal operator, ``reg.prox(params, scale)``, which solves, leaf by
  leaf, ``argmin_U 1/2 ||U - params||^2 + scale * psi(U)``,
* which leaves it acts on (``reg.mask_tree(params)``) and how each leaf splits
  into groups (``reg.group_axes(x)``, ``reg.group_weight(x)``), which is what
  the metrics and the preconditioned baselines read.

Naming and signatures follow ``jaxopt.prox``: the prox takes the point and a
scale and returns a point of the same structure.

References:
  Huang & Lee, `Training Structured Neural Networks Through Manifold
  Identification and Variance Reduction <https://arxiv.org/abs/2112.02612>`_,
  ICLR 2022.
  Yuan & Lin, `Model selection and estimation in regression with grouped
  variables <https://doi.org/10.1111/j.1467-9868.2005.00532.x>`_, 2006.
"""

from __future__ import annotations

import copy
import math
import numbers
from typing import Any, Callable, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any
MaskOrFn = Optional[Union[PyTree, Callable[[PyTree], PyTree]]]

__all__ = [
    "Regularizer",
    "L1",
    "GroupLasso",
    "l1",
    "group_lasso",
    "default_mask",
    "path_str",
]


def path_str(path) -> str:
  """Readable pytree path, e.g. ``['conv1']['kernel']`` (``<root>`` if empty)."""
  s = jax.tree_util.keystr(tuple(path))
  s = s[: -len(".value")] if s.endswith(".value") else s  # flax.nnx Variables
  return s if s else "<root>"


_EMBEDDING_NAMES = ("embedding",)


def _key_name(key) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def default_mask(params: PyTree) -> PyTree:
  """Regularize kernels only: leaves with ``ndim >= 2``, embeddings excepted.

  Biases, normalization scales and offsets (1-D) and scalars are optimized but
  never shrunk, as in the authors' code; so are embedding tables (leaves
  named ``embedding``, as in Flax's ``Embed``), which are 2-D but not kernels.

  Args:
    params: a pytree of arrays.

  Returns:
    A pytree of Python bools with the structure of ``params``.
  """
  def is_kernel(path, x):
    names = [_key_name(k) for k in path]
    while names and names[-1] == "value":  # flax.nnx Variable
      names.pop()
    if names and names[-1] in _EMBEDDING_NAMES:
      return False
    return bool(jnp.ndim(x) >= 2)
  return jax.tree_util.tree_map_with_path(is_kernel, params)


def _check_strength(strength) -> float:
  if isinstance(strength, bool) or not isinstance(
      strength, (numbers.Real, np.ndarray, jax.Array)):
    raise TypeError(
        f"strength must be a real number, got {type(strength).__name__}.")
  if np.ndim(strength) != 0:
    raise ValueError(f"strength must be a scalar, got shape {np.shape(strength)}.")
  value = float(strength)
  if not math.isfinite(value) or value < 0:
    raise ValueError(f"strength must be finite and >= 0, got {value}.")
  return value


def _safe_sqrt(sq):
  """sqrt with a zero (sub)gradient at 0 instead of inf/NaN."""
  positive = sq > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1)), 0)


class Regularizer:
  """Base class: a weighted sum of group norms over the masked-in leaves.

  Subclasses define how a leaf splits into groups (``group_axes``) and the
  weight of each group (``group_weight``), and may override ``prox_leaf``
  with a cheaper closed form.

  Attributes:
    strength: the multiplier lambda of psi (a float >= 0).
    mask: ``None`` (kernels only, see :func:`default_mask`), a pytree of bools
      (a prefix of the params tree is accepted) or a function
      ``params -> pytree of bools``.
  """

  name = "regularizer"

  def __init__(self, strength: float, *, mask: MaskOrFn = None):
    self.strength = _check_strength(strength)
    if mask is not None and not callable(mask):
      jax.tree.map(_check_mask_leaf, mask)
    self.mask = mask

  # -------------------------------------------------------------- per leaf
  def group_axes(self, x) -> tuple[int, ...]:
    """Axes of ``x`` that one group spans (``()``: every entry is a group)."""
    raise NotImplementedError

  def group_weight(self, x) -> float:
    """The weight ``w_g`` of every group of ``x`` (a Python float)."""
    raise NotImplementedError

  def check_leaf(self, path, x) -> None:
    """Raises if the masked-in leaf ``x`` at ``path`` cannot be regularized."""
    if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
      raise TypeError(
          f"{self.name} regularizer: leaf {path_str(path)} has dtype "
          f"{jnp.result_type(x)}; only floating-point leaves can be regularized "
          "(exclude it with `mask`).")

  def group_norms(self, x):
    """Euclidean norm of each group of ``x``, with the group axes kept (size 1)."""
    axes = self.group_axes(x)
    if not axes:
      return jnp.abs(x)
    return _safe_sqrt(jnp.sum(jnp.square(x), axis=axes, keepdims=True))

  def value_leaf(self, x):
    """``sum_g w_g ||x_g||`` for one leaf (no strength)."""
    norms = self.group_norms(x.astype(jnp.promote_types(x.dtype, jnp.float32)))
    return self.group_weight(x) * jnp.sum(norms)

  def prox_leaf(self, x, threshold):
    """``argmin_u 1/2 ||u - x||^2 + threshold * sum_g w_g ||u_g||`` (group shrinkage).

    Args:
      x: one leaf.
      threshold: ``scale * strength``, a scalar >= 0.

    Returns:
      ``x_g * max(0, 1 - threshold * w_g / ||x_g||)`` for every group, an exact
      0 for groups at or under the threshold, never NaN.
    """
    axes = self.group_axes(x)
    t = jnp.asarray(threshold, x.dtype) * jnp.asarray(self.group_weight(x), x.dtype)
    sq = jnp.sum(jnp.square(x), axis=axes, keepdims=True)
    keep = sq > jnp.square(t)
    factor = jnp.where(keep, 1 - t * jax.lax.rsqrt(jnp.where(keep, sq, 1)), 0)
    return x * factor

  # -------------------------------------------------------------- per tree
  def mask_tree(self, params: PyTree) -> PyTree:
    """Which leaves of ``params`` this regularizer acts on (validated).

    Args:
      params: the parameter pytree (``optax.MaskedNode`` subtrees allowed).

    Returns:
      A pytree of Python bools with the structure of ``params``.

    Raises:
      ValueError or TypeError naming the pytree path of a masked-in leaf that
      cannot be regularized (non-float dtype, missing group axis), or when the
      mask does not match the structure of ``params``.
    """
    if self.mask is None:
      mask = default_mask(params)
    else:
      mask = self.mask(params) if callable(self.mask) else self.mask
      mask = _broadcast_mask(mask, params)
    for (path, m), x in zip(
        jax.tree_util.tree_leaves_with_path(mask), jax.tree.leaves(params)):
      if m:
        self.check_leaf(path, x)
    return mask

  def __call__(self, params: PyTree):
    """psi(params), strength included (a scalar, at least float32)."""
    _refuse_schedule_use(params)
    mask = self.mask_tree(params)
    terms = [self.value_leaf(x) for m, x in
             zip(jax.tree.leaves(mask), jax.tree.leaves(params)) if m]
    if not terms:
      return jnp.zeros((), jnp.result_type(float))
    return self.strength * sum(terms)

  def prox(self, params: PyTree, scale=1.0) -> PyTree:
    """``argmin_U 1/2 ||U - params||^2 + scale * psi(U)``, leaf by leaf.

    Args:
      params: a pytree of arrays.
      scale: a scalar >= 0 (may be a traced value).

    Returns:
      A pytree like ``params``; leaves outside the mask are returned unchanged.
    """
    mask = self.mask_tree(params)
    threshold = scale * self.strength
    return jax.tree.map(
        lambda m, x: self.prox_leaf(x, threshold) if m else x, mask, params)

  # --------------------------------------------------------------- groups
  def group_zero(self, x):
    """Boolean array, one entry per group of ``x``: True where the group is all 0."""
    axes = self.group_axes(x)
    return jnp.all(x == 0, axis=axes) if axes else (x == 0)

  def group_size(self, x) -> int:
    """Number of entries in one group of ``x``."""
    return int(np.prod([x.shape[a] for a in self.group_axes(x)], dtype=np.int64))

  def with_strength(self, strength: float) -> "Regularizer":
    """A copy of this regularizer with another strength (same groups, mask)."""
    other = copy.copy(self)
    other.strength = _check_strength(strength)
    return other

  def __repr__(self):
    return f"{type(self).__name__}(strength={self.strength!r})"


class L1(Regularizer):
  """``psi(W) = strength * sum |W_ij|`` over the masked-in leaves.

  Every entry is its own group (size 1, weight 1); the prox is soft
  thresholding, which gives unstructured sparsity.
  """

  name = "l1"

  def group_axes(self, x):
    return ()

  def group_weight(self, x):
    return 1.0

  def value_leaf(self, x):
    return jnp.sum(jnp.abs(x.astype(jnp.promote_types(x.dtype, jnp.float32))))

  def prox_leaf(self, x, threshold):
    """Soft thresholding: ``sign(x) * max(|x| - threshold, 0)`` (+0.0 below it)."""
    t = jnp.asarray(threshold, x.dtype)
    return x - jnp.clip(x, -t, t)


_GROUP_AXES = {"input": -2, "output": -1}


class GroupLasso(Regularizer):
  """``psi(W) = strength * sum_g sqrt(|g|) ||W_g||_2`` over masked-in leaves.

  A group is one index of ``axis`` together with every entry along the other
  axes. ``groups="input"`` (axis -2) is the authors' choice: in Flax layouts
  (conv HWIO, Dense (in, out)) a group holds every weight that reads one input
  channel or feature, so a zero group removes that input unit.
  ``groups="output"`` (axis -1) groups by filter / output neuron.
  """

  name = "group_lasso"

  def __init__(self, strength: float, *, groups: Union[str, int] = "input",
               mask: MaskOrFn = None):
    if isinstance(groups, str):
      if groups not in _GROUP_AXES:
        raise ValueError(
            f"groups must be 'input', 'output' or an int axis, got {groups!r}.")
      axis = _GROUP_AXES[groups]
    elif isinstance(groups, numbers.Integral) and not isinstance(groups, bool):
      axis = int(groups)
    else:
      raise ValueError(
          f"groups must be 'input', 'output' or an int axis, got {groups!r}.")
    super().__init__(strength, mask=mask)
    self.groups = groups
    self.axis = axis

  def check_leaf(self, path, x):
    super().check_leaf(path, x)
    ndim = jnp.ndim(x)
    if not -ndim <= self.axis < ndim:
      raise ValueError(
          f"group_lasso(groups={self.groups!r}) needs axis {self.axis}, but leaf "
          f"{path_str(path)} has shape {tuple(jnp.shape(x))} (ndim {ndim}); "
          "exclude it with `mask` or choose another `groups`.")

  def group_axes(self, x):
    ndim = jnp.ndim(x)
    axis = self.axis % ndim
    return tuple(a for a in range(ndim) if a != axis)

  def group_weight(self, x):
    return math.sqrt(self.group_size(x))

  def __repr__(self):
    return f"GroupLasso(strength={self.strength!r}, groups={self.groups!r})"


def l1(strength: float, *, mask: MaskOrFn = None) -> L1:
  """L1 regularizer ``strength * ||W||_1`` (unstructured sparsity).

  Args:
    strength: lambda >= 0.
    mask: which leaves to regularize: ``None`` for every leaf with
      ``ndim >= 2``, a pytree of bools (or a prefix of the params tree), or a
      function ``params -> pytree of bools``.

  Returns:
    An :class:`L1` regularizer: ``reg(params)`` is its value and
    ``reg.prox(params, scale)`` its proximal operator (soft thresholding).

  Examples:
    >>> import jax.numpy as jnp, rmda_jax as rj
    >>> reg = rj.l1(0.5)
    >>> reg.prox({"w": jnp.array([[1.0, -0.2]])}, 1.0)["w"]
    Array([[0.5, 0. ]], dtype=float32)
  """
  return L1(strength, mask=mask)


def group_lasso(strength: float, *, groups: Union[str, int] = "input",
                mask: MaskOrFn = None) -> GroupLasso:
  """Group LASSO ``strength * sum_g sqrt(|g|) ||W_g||_2`` (structured sparsity).

  Args:
    strength: lambda >= 0.
    groups: ``"input"`` (kernel axis -2: input channel of an HWIO conv kernel,
      input feature of an ``(in, out)`` Dense kernel; the authors' grouping),
      ``"output"`` (axis -1: filters / neurons) or an int axis. Each group is
      one index of that axis with all entries along the other axes, weighted
      by ``sqrt(group size)``.
    mask: which leaves to regularize: ``None`` for every leaf with
      ``ndim >= 2`` (kernels; biases and norm scales are left alone), a pytree
      of bools (or a prefix of the params tree), or a function
      ``params -> pytree of bools``.

  Returns:
    A :class:`GroupLasso` regularizer: ``reg(params)`` is its value and
    ``reg.prox(params, scale)`` its proximal operator (group shrinkage).

  References:
    Huang & Lee, `Training Structured Neural Networks Through Manifold
    Identification and Variance Reduction <https://arxiv.org/abs/2112.02612>`_,
    ICLR 2022.
  """
  return GroupLasso(strength, groups=groups, mask=mask)


def _check_mask_leaf(m):
  if not isinstance(m, (bool, np.bool_)):
    raise TypeError(
        f"mask leaves must be Python or NumPy bools, got {type(m).__name__}.")
  return m


def _broadcast_mask(mask, params):
  """Expands a mask that is a prefix of the params tree to its full structure."""
  try:
    return jax.tree.map(
        lambda m, sub: jax.tree.map(lambda _: bool(_check_mask_leaf(m)), sub),
        mask, params)
  except ValueError as e:
    raise ValueError(
        "mask does not match the structure of params (it must be the same "
        f"pytree or a prefix of it): {e}") from None


def _refuse_schedule_use(params):
  # optax.inject_hyperparams treats every callable argument as a schedule and
  # would call reg(step_count); say what to do instead of failing obscurely.
  leaves = jax.tree.leaves(params)
  if len(leaves) == 1 and jnp.ndim(leaves[0]) == 0 and jnp.issubdtype(
      jnp.result_type(leaves[0]), jnp.integer):
    raise TypeError(
        "A regularizer was called with an integer step count, as a schedule. "
        "With optax.inject_hyperparams, pass static_args='regularizer', e.g. "
        "optax.inject_hyperparams(rj.rmda, static_args='regularizer')(...).")
