"""Proximal regularizers psi(W) for structured training.

Every regularizer here is *separable over the leaves* of a parameter pytree:
``psi(W) = strength * sum_{leaf in mask} phi(leaf)``. Each one knows

* its value, ``reg.value(params)``;
* its proximal map, plain or in a diagonal metric ``D``:
  ``reg.prox(params, scale, metric=None, solver="pg")`` solves, leaf by leaf,
  ``argmin_U 1/2 ||U - params||_D^2 + scale * psi(U)`` (``D = I`` without a
  metric). This is the one interface the optimizers call: RMDA and ProxSGD
  use the plain prox, ProxGen and ProxSSI the metric one with their inner
  solver (``"pg"`` or ``"newton"``);
* which leaves it acts on (``reg.mask_tree(params)``) and, for the group
  regularizers (:class:`GroupRegularizer`: L1 and group LASSO, where
  ``phi(x) = sum_g w_g ||x_g||``), how each leaf splits into groups, which is
  what the metrics read.

A new regularizer subclasses :class:`Regularizer` and implements
``value_leaf`` and ``prox_leaf``; it then works with every optimizer.

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

import math
import numbers
from typing import Any, Callable, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from rmda_jax import _prox

PyTree = Any
MaskOrFn = Optional[Union[PyTree, Callable[[PyTree], PyTree]]]

__all__ = [
    "Regularizer",
    "GroupRegularizer",
    "L1",
    "GroupLasso",
    "NuclearNorm",
    "SparseGroupLasso",
    "l1",
    "group_lasso",
    "nuclear_norm",
    "sparse_group_lasso",
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


def _check_strength(strength, name: str = "strength"):
  """A strength >= 0: a Python float, or a traced scalar (checked for shape only).

  A traced strength (a regularizer built inside ``jax.jit`` / ``jax.vmap``,
  e.g. one run of a sweep) cannot be checked for its value here.
  """
  if isinstance(strength, jax.core.Tracer):
    if jnp.ndim(strength) != 0:
      raise ValueError(
          f"{name} must be a scalar, got shape {jnp.shape(strength)}.")
    if not jnp.issubdtype(jnp.result_type(strength), jnp.floating):
      raise TypeError(
          f"{name} must be a real floating-point scalar, got dtype "
          f"{jnp.result_type(strength)}.")
    return strength
  if isinstance(strength, bool) or not isinstance(
      strength, (numbers.Real, np.ndarray, jax.Array)):
    raise TypeError(
        f"{name} must be a real number, got {type(strength).__name__}.")
  if np.ndim(strength) != 0:
    raise ValueError(f"{name} must be a scalar, got shape {np.shape(strength)}.")
  value = float(strength)
  if not math.isfinite(value) or value < 0:
    raise ValueError(f"{name} must be finite and >= 0, got {value}.")
  return value


def _safe_sqrt(sq):
  """sqrt with a zero (sub)gradient at 0 instead of inf/NaN."""
  positive = sq > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1)), 0)


def _freeze(value):
  """A hashable, comparable stand-in for a static attribute (masks included)."""
  if value is None or callable(value) or isinstance(value, (str, numbers.Number)):
    return value
  if isinstance(value, (tuple, list)) and not jax.tree.leaves(value):
    return (type(value).__name__, tuple(_freeze(v) for v in value))
  leaves, treedef = jax.tree.flatten(value)
  return ("pytree", treedef, tuple(
      bool(v) if isinstance(v, (bool, np.bool_)) else _freeze(v) for v in leaves))


class _Static:
  """A static (non-leaf) attribute, compared and hashed through :func:`_freeze`."""

  __slots__ = ("value", "key")

  def __init__(self, value):
    self.value = value
    self.key = _freeze(value)

  def __eq__(self, other):
    return isinstance(other, _Static) and self.key == other.key

  def __hash__(self):
    return hash(self.key)

  def __repr__(self):
    return repr(self.value)


def _number_key(x):
  """A leaf as a hashable number when concrete, else ``None``."""
  if isinstance(x, jax.core.Tracer):
    return None
  try:
    return float(x)
  except (TypeError, ValueError):
    return None


def _fmt(x):
  """A strength for a repr: a Python float when concrete."""
  key = _number_key(x)
  return x if key is None else key


class _RegularizerMeta(type):
  """Registers every regularizer class as a pytree and freezes its instances."""

  def __init__(cls, name, bases, namespace, **kwargs):
    super().__init__(name, bases, namespace, **kwargs)
    jax.tree_util.register_pytree_with_keys(
        cls, cls._tree_flatten_with_keys, cls._tree_unflatten,
        flatten_func=cls._tree_flatten)

  def __call__(cls, *args, **kwargs):
    obj = super().__call__(*args, **kwargs)
    object.__setattr__(obj, "_frozen", True)
    return obj


class Regularizer(metaclass=_RegularizerMeta):
  r"""Base class: ``psi(W) = strength * sum_{leaf in mask} phi(leaf)``.

  The interface every optimizer of this package calls, and the only one: a
  new regularizer works with :func:`rmda_jax.rmda` and every baseline by
  implementing

  * ``value_leaf(x)``: :math:`\phi(x)`, without the strength;
  * ``prox_leaf(x, threshold)``:
    :math:`\arg\min_u \tfrac12 \|u - x\|^2 + \mathrm{threshold}\,\phi(u)`;

  and optionally ``check_leaf`` (refuse leaves it cannot act on) and
  ``prox_metric_leaf`` (a faster or more accurate prox in a diagonal
  metric than the generic proximal-gradient solver; list its solver names
  in ``solvers``). The optimizers only call :meth:`check`, :meth:`prox` and
  :meth:`__call__`.

  Attributes:
    strength: the multiplier lambda of psi (a float >= 0).
    mask: ``None`` (kernels only, see :func:`default_mask`), a pytree of bools
      (a prefix of the params tree is accepted) or a function
      ``params -> pytree of bools``.
    solvers: the inner-solver names :meth:`prox` accepts with a ``metric``.
  """

  name = "regularizer"
  solvers: tuple[str, ...] = (_prox.PG,)
  # The attributes that are pytree leaves (traceable, vmappable); every other
  # attribute is static: part of the tree structure, compared by value.
  _leaf_fields: tuple[str, ...] = ("strength",)

  def __init__(self, strength: float, *, mask: MaskOrFn = None):
    self.strength = _check_strength(strength)
    self._set_mask(mask)

  def _set_mask(self, mask: MaskOrFn) -> None:
    if mask is not None and not callable(mask):
      jax.tree.map(_check_mask_leaf, mask)
    self.mask = mask

  # -------------------------------------------------- immutable pytree, by value
  def __setattr__(self, name, value):
    if self.__dict__.get("_frozen", False):
      raise AttributeError(
          f"{type(self).__name__} is immutable: use .with_strength(...) or "
          f".replace({name}=...) for a modified copy.")
    object.__setattr__(self, name, value)

  def _static_items(self):
    return tuple((k, _Static(v)) for k, v in sorted(self.__dict__.items())
                 if k not in self._leaf_fields and k != "_frozen")

  def _tree_flatten(self):
    return (tuple(self.__dict__[f] for f in self._leaf_fields),
            self._static_items())

  def _tree_flatten_with_keys(self):
    children, aux = self._tree_flatten()
    keys = tuple(jax.tree_util.GetAttrKey(f) for f in self._leaf_fields)
    return tuple(zip(keys, children)), aux

  @classmethod
  def _tree_unflatten(cls, aux, children):
    obj = object.__new__(cls)
    for k, v in aux:
      object.__setattr__(obj, k, v.value)
    for f, v in zip(cls._leaf_fields, children):
      object.__setattr__(obj, f, v)
    object.__setattr__(obj, "_frozen", True)
    return obj

  def __eq__(self, other):
    """Equal when of the same class with equal settings and strengths.

    Strengths compare by value when concrete; a traced strength is equal only
    to itself.
    """
    if type(other) is not type(self):
      return NotImplemented
    if self._static_items() != other._static_items():
      return False
    for f in self._leaf_fields:
      a, b = self.__dict__[f], other.__dict__[f]
      ka, kb = _number_key(a), _number_key(b)
      if ka is None or kb is None:
        if a is not b:
          return False
      elif ka != kb:
        return False
    return True

  def __hash__(self):
    keys = tuple(_number_key(self.__dict__[f]) for f in self._leaf_fields)
    return hash((type(self), self._static_items(), keys))

  def replace(self, **changes) -> "Regularizer":
    """A copy with some leaf attributes (e.g. ``strength``) replaced, checked.

    Args:
      **changes: new values for attributes named in the class's leaf fields
        (``strength`` for most regularizers).

    Returns:
      A regularizer of the same class, groups and mask.
    """
    unknown = sorted(set(changes) - set(self._leaf_fields))
    if unknown:
      raise TypeError(
          f"{type(self).__name__}.replace: unknown field(s) {unknown}; the "
          f"replaceable fields are {list(self._leaf_fields)}.")
    checked = {k: _check_strength(v, k) for k, v in changes.items()}
    children, aux = self._tree_flatten()
    new = [checked.get(f, c) for f, c in zip(self._leaf_fields, children)]
    return self._tree_unflatten(aux, new)

  # -------------------------------------------------------------- per leaf
  def value_leaf(self, x):
    """``phi(x)`` for one leaf (no strength), at least float32."""
    raise NotImplementedError

  def prox_leaf(self, x, threshold):
    """``argmin_u 1/2 ||u - x||^2 + threshold * phi(u)`` for one leaf."""
    raise NotImplementedError

  def prox_metric_leaf(self, x, d, threshold, *, solver, max_steps, tol,
                       init=None, origin=None):
    r"""``argmin_u 1/2 (u - x)^T diag(d) (u - x) + threshold * phi(u)``.

    The generic solver: proximal gradient with step ``1 / max(d)`` over the
    leaf, using :meth:`prox_leaf` (see :func:`rmda_jax._prox.prox_pg`).
    ``solver`` has been checked against :attr:`solvers`. With a warm start
    ``init``, RAMDA's solver (:func:`rmda_jax._prox.warm_prox_pg`, which also
    reads :meth:`value_leaf`). Every override returns the pair
    ``(u, steps)``: the solution and its inner iterations (an int32 scalar;
    0 for a closed form).
    """
    del solver
    if init is not None:
      return _prox.warm_prox_pg(self.prox_leaf, self.value_leaf, x, d,
                                threshold, init=init, origin=origin,
                                max_steps=max_steps, tol=tol)
    return _prox.prox_pg(self.prox_leaf, x, d, threshold, max_steps=max_steps,
                         tol=tol)

  def check_leaf(self, path, x) -> None:
    """Raises if the masked-in leaf ``x`` at ``path`` cannot be regularized."""
    if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
      raise TypeError(
          f"{self.name} regularizer: leaf {path_str(path)} has dtype "
          f"{jnp.result_type(x)}; only floating-point leaves can be regularized "
          "(exclude it with `mask`).")

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

  def check(self, params: PyTree) -> None:
    """Raises, naming the leaf, if ``params`` cannot be regularized (see :meth:`mask_tree`)."""
    self.mask_tree(params)

  def check_solver(self, solver: str) -> None:
    """Raises ValueError unless ``solver`` is one of :attr:`solvers`."""
    if solver not in self.solvers:
      known = "" if solver in _prox.SOLVERS else (
          f" (the solvers are {', '.join(map(repr, _prox.SOLVERS))})")
      raise ValueError(
          f"{self.name} regularizer: unknown or unsupported solver {solver!r}"
          f"{known}; it supports {', '.join(map(repr, self.solvers))}.")

  def value(self, params: PyTree):
    """psi(params), strength included (a scalar, at least float32).

    (A regularizer is deliberately not callable: ``optax.inject_hyperparams``
    treats every callable argument as a schedule.)
    """
    mask = self.mask_tree(params)
    terms = [self.value_leaf(x) for m, x in
             zip(jax.tree.leaves(mask), jax.tree.leaves(params)) if m]
    if not terms:
      return jnp.zeros((), jnp.result_type(float))
    return self.strength * sum(terms)

  def check_prox_args(self, solver, metric, *, max_steps=None, tol=None,
                      init=None, origin=None, return_steps=False) -> None:
    """Raises ValueError for arguments of :meth:`prox` that do not go together.

    ``solver`` must be one of :attr:`solvers`; ``max_steps`` and ``tol`` bound
    the metric prox's inner solver (not the closed form); ``init`` (a warm
    start) needs a ``metric`` and ``"pg"``; ``origin`` needs ``init``;
    ``return_steps`` needs a ``metric``. Subclasses that override
    :meth:`prox` call it first.
    """
    self.check_solver(solver)
    if init is None and origin is not None:
      raise ValueError(
          f"{self.name} regularizer: origin= applies to the warm-started "
          "solver; pass init= too.")
    if metric is None and return_steps:
      raise ValueError(
          f"{self.name} regularizer: return_steps= counts the inner "
          "iterations of the metric prox; without metric= the prox is in "
          "closed form.")
    if init is not None and (metric is None or solver != _prox.PG):
      raise ValueError(
          f"{self.name} regularizer: init= (a warm start) needs metric= and "
          f"solver='pg', got metric={'None' if metric is None else 'a pytree'}"
          f" and solver={solver!r}.")
    if metric is None and (max_steps is not None or tol is not None):
      raise ValueError(
          f"{self.name} regularizer: max_steps= and tol= bound the inner "
          "solver of the metric prox; without metric= the prox is in closed "
          "form and takes neither.")

  def prox(self, params: PyTree, scale=1.0, metric: Optional[PyTree] = None, *,
           solver: str = _prox.PG, max_steps=None, tol=None,
           init: Optional[PyTree] = None, origin: Optional[PyTree] = None,
           return_steps: bool = False):
    r"""The proximal map of ``scale * psi``, plain or in a diagonal metric.

    .. math::

      \arg\min_U \tfrac12 \|U - X\|_D^2 + \mathrm{scale}\,\psi(U),
      \quad \|V\|_D^2 = \textstyle\sum_i d_i V_i^2,

    leaf by leaf, with :math:`D = I` when ``metric`` is ``None`` (a closed
    form) and :math:`D = \mathrm{diag}(\text{metric})` otherwise (what
    ProxGen, ProxSSI and RAMDA solve every step), by the inner solver
    ``solver``.

    Args:
      params: the point ``X``, a pytree of arrays.
      scale: a scalar >= 0 (may be a traced value).
      metric: ``None`` or a pytree like ``params`` of positive entries.
      solver: the inner solver when ``metric`` is given: ``"pg"`` (proximal
        gradient, every regularizer) or ``"newton"`` (per group, group
        regularizers); see :attr:`solvers`. An unsupported name raises.
      max_steps: with ``metric`` only: bound on the inner iterations
        (default: 100 for ``"pg"``, 50 for ``"newton"``); may be a traced
        integer.
      tol: with ``metric`` only: stopping tolerance of the inner solver
        (default: 1e-8 on the
        largest change of an entry for ``"pg"``, 1e-7 relative on each group
        norm for ``"newton"``; with ``init``, 1e-8 on the relative decrease
        of the objective).
      init: ``None``, or a pytree like ``params``: a warm start, which
        selects RAMDA's inexact solver (needs ``metric`` and ``"pg"``): the
        proximal-gradient iterations start at ``init`` (on the groups that
        are not screened out) and stop when the relative decrease of the
        objective is under ``tol`` (at least 2 steps) or after ``max_steps``
        (see :func:`rmda_jax._prox.warm_group_prox_pg`).
      origin: with ``init``, ``None`` or a pytree like ``params``: the point
        the objective of that stop rule is measured from (RAMDA: its
        restart point :math:`W^0`); default ``params``.
      return_steps: with ``metric``, also return the number of inner
        iterations of every leaf (int32 scalars; 0 outside the mask, for a
        closed form, or when every group is screened out).

    Returns:
      A pytree like ``params``; leaves outside the mask are returned
      unchanged. With ``return_steps``, the pair ``(prox, steps)``.

    Raises:
      ValueError: for an unsupported ``solver``, or ``init`` without a
        ``metric`` or with another solver than ``"pg"``, ``origin``
        without ``init``, or ``return_steps`` without ``metric``.
    """
    self.check_prox_args(solver, metric, max_steps=max_steps, tol=tol, init=init,
                         origin=origin, return_steps=return_steps)
    mask = self.mask_tree(params)
    threshold = scale * self.strength
    if metric is None:
      return jax.tree.map(
          lambda m, x: self.prox_leaf(x, threshold) if m else x, mask, params)
    default_steps, default_tol = _prox.DEFAULTS[solver]
    max_steps = default_steps if max_steps is None else max_steps
    tol = default_tol if tol is None else tol

    def leaf(m, x, d, w, o):
      if not m or x.size == 0:
        return x, jnp.zeros([], jnp.int32)
      warm = {} if init is None else dict(init=w.astype(x.dtype),
                                          origin=o.astype(x.dtype))
      return self.prox_metric_leaf(
          x, d.astype(x.dtype), jnp.asarray(threshold, x.dtype), solver=solver,
          max_steps=max_steps, tol=tol, **warm)

    out = jax.tree.map(leaf, mask, params, metric,
                       params if init is None else init,
                       params if origin is None else origin)
    u = jax.tree.map(lambda _, o: o[0], mask, out)
    if not return_steps:
      return u
    return u, jax.tree.map(lambda _, o: o[1], mask, out)

  def with_strength(self, strength: float) -> "Regularizer":
    """A copy of this regularizer with another strength (same groups, mask)."""
    return self.replace(strength=strength)

  def __repr__(self):
    return f"{type(self).__name__}(strength={_fmt(self.strength)!r})"


class GroupRegularizer(Regularizer):
  r"""A weighted sum of group norms: ``phi(x) = sum_g w_g ||x_g||_2``.

  Subclasses say how a leaf splits into groups (``group_axes``) and the
  weight of every group (``group_weight``). The metrics of
  :mod:`rmda_jax.metrics` read the groups through ``group_zero`` and
  ``group_size``. The prox is group shrinkage; in a diagonal metric it is
  solved per group by proximal gradient (``"pg"``, step ``1 / max_g d``) or
  by Newton's method on each group's secular equation (``"newton"``).
  """

  solvers = (_prox.PG, _prox.NEWTON)

  def group_axes(self, x) -> tuple[int, ...]:
    """Axes of ``x`` that one group spans (``()``: every entry is a group)."""
    raise NotImplementedError

  def group_weight(self, x) -> float:
    """The weight ``w_g`` of every group of ``x`` (a Python float)."""
    raise NotImplementedError

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

  def _tau(self, x, threshold):
    return (jnp.asarray(threshold, x.dtype)
            * jnp.asarray(self.group_weight(x), x.dtype))

  def prox_leaf(self, x, threshold):
    """Group shrinkage ``x_g * max(0, 1 - threshold * w_g / ||x_g||)``.

    Args:
      x: one leaf.
      threshold: ``scale * strength``, a scalar >= 0.

    Returns:
      The shrunk leaf: an exact 0 for groups at or under the threshold,
      never NaN.
    """
    return _prox.group_shrink(x, self._tau(x, threshold), self.group_axes(x))

  def prox_metric_leaf(self, x, d, threshold, *, solver, max_steps, tol,
                       init=None, origin=None):
    """The per-group solvers :func:`rmda_jax._prox.group_prox_pg` / ``_newton``.

    With a warm start ``init``: :func:`rmda_jax._prox.warm_group_prox_pg`.
    Returns ``(u, steps)``.
    """
    if init is not None:
      return _prox.warm_group_prox_pg(
          x, d, self._tau(x, threshold), self.group_axes(x), init=init,
          origin=origin, max_steps=max_steps, tol=tol)
    solve = (_prox.group_prox_newton if solver == _prox.NEWTON
             else _prox.group_prox_pg)
    return solve(x, d, self._tau(x, threshold), self.group_axes(x),
                 max_steps=max_steps, tol=tol)

  def group_zero(self, x):
    """Boolean array, one entry per group of ``x``: True where the group is all 0."""
    axes = self.group_axes(x)
    return jnp.all(x == 0, axis=axes) if axes else (x == 0)

  def group_size(self, x) -> int:
    """Number of entries in one group of ``x``."""
    return int(np.prod([x.shape[a] for a in self.group_axes(x)], dtype=np.int64))


class L1(GroupRegularizer):
  """``psi(W) = strength * sum |W_ij|`` over the masked-in leaves.

  Every entry is its own group (size 1, weight 1); the prox is soft
  thresholding, which gives unstructured sparsity. In a diagonal metric the
  prox is also closed form (entry ``i`` thresholded at ``threshold / d_i``),
  whichever solver is named.
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
    return _prox.soft_threshold(x, jnp.asarray(threshold, x.dtype))

  def prox_metric_leaf(self, x, d, threshold, *, solver, max_steps, tol,
                       init=None, origin=None):
    """Closed form: soft thresholding of ``x_i`` at ``threshold / d_i``.

    Returns ``(u, 0)``: no iteration (a warm start ``init`` is ignored).
    """
    del solver, max_steps, tol, init, origin
    u = _prox.soft_threshold_metric(x, d, jnp.asarray(threshold, x.dtype))
    return u, jnp.zeros([], jnp.int32)


_GROUP_AXES = {"input": -2, "output": -1}


def _group_axis(groups) -> int:
  """The axis a group is one index of, from ``groups`` ('input', 'output', int)."""
  if isinstance(groups, str):
    if groups not in _GROUP_AXES:
      raise ValueError(
          f"groups must be 'input', 'output' or an int axis, got {groups!r}.")
    return _GROUP_AXES[groups]
  if isinstance(groups, numbers.Integral) and not isinstance(groups, bool):
    return int(groups)
  raise ValueError(
      f"groups must be 'input', 'output' or an int axis, got {groups!r}.")


class _AxisGroups(GroupRegularizer):
  """Groups that are one index of an axis, weighted by ``sqrt(group size)``.

  The grouping of :class:`GroupLasso` and :class:`SparseGroupLasso`: a group
  is one index of ``axis`` together with every entry along the other axes.
  Subclasses call :meth:`_set_groups` from their constructor.
  """

  def _set_groups(self, groups: Union[str, int]) -> None:
    self.axis = _group_axis(groups)
    self.groups = groups

  def check_leaf(self, path, x):
    super().check_leaf(path, x)
    ndim = jnp.ndim(x)
    if not -ndim <= self.axis < ndim:
      raise ValueError(
          f"{self.name}(groups={self.groups!r}) needs axis {self.axis}, but leaf "
          f"{path_str(path)} has shape {tuple(jnp.shape(x))} (ndim {ndim}); "
          "exclude it with `mask` or choose another `groups`.")

  def group_axes(self, x):
    ndim = jnp.ndim(x)
    axis = self.axis % ndim
    return tuple(a for a in range(ndim) if a != axis)

  def group_weight(self, x):
    return math.sqrt(self.group_size(x))


class GroupLasso(_AxisGroups):
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
    _group_axis(groups)  # a bad `groups` is reported before a bad strength
    super().__init__(strength, mask=mask)
    self._set_groups(groups)

  def __repr__(self):
    return f"GroupLasso(strength={_fmt(self.strength)!r}, groups={self.groups!r})"


def l1(strength: float, *, mask: MaskOrFn = None) -> L1:
  """L1 regularizer ``strength * ||W||_1`` (unstructured sparsity).

  Args:
    strength: lambda >= 0.
    mask: which leaves to regularize: ``None`` for every leaf with
      ``ndim >= 2``, a pytree of bools (or a prefix of the params tree), or a
      function ``params -> pytree of bools``.

  Returns:
    An :class:`L1` regularizer: ``reg.value(params)`` is its value and
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
    A :class:`GroupLasso` regularizer: ``reg.value(params)`` is its value and
    ``reg.prox(params, scale)`` its proximal operator (group shrinkage).

  Examples:
    >>> import jax.numpy as jnp, rmda_jax as rj
    >>> reg = rj.group_lasso(0.5)  # groups: the rows (inputs) of a Dense kernel
    >>> w = jnp.array([[3.0, 4.0], [0.3, 0.4]])  # row norms 5 and 0.5
    >>> reg.prox({"w": w}, 1.0)["w"]  # threshold 0.5 * sqrt(2) per row
    Array([[2.5757358, 3.4343145],
           [0.       , 0.       ]], dtype=float32)
    >>> float(reg.value({"w": w}))  # 0.5 * sqrt(2) * (5 + 0.5)
    3.889087200164795

  References:
    Huang & Lee, `Training Structured Neural Networks Through Manifold
    Identification and Variance Reduction <https://arxiv.org/abs/2112.02612>`_,
    ICLR 2022.
  """
  return GroupLasso(strength, groups=groups, mask=mask)


def _as_matrix(x):
  """A kernel as a matrix: ``(prod(shape[:-1]), shape[-1])``.

  A conv kernel ``(kh, kw, in, out)`` (Flax's HWIO) becomes
  ``(kh * kw * in, out)``: one column per output channel; a Dense kernel
  ``(in, out)`` is itself.
  """
  shape = jnp.shape(x)
  return jnp.reshape(x, (math.prod(shape[:-1]), shape[-1]))


def _matrix_shape(shape) -> tuple[int, int]:
  return math.prod(shape[:-1]), shape[-1]


def _singular_value_threshold(x, threshold):
  """``U max(S - threshold, 0) V^T`` of the matrix view of ``x`` (shape kept)."""
  if x.size == 0:
    return x
  work = jnp.promote_types(x.dtype, jnp.float32)  # no SVD in (b)float16
  m = _as_matrix(x).astype(work)
  u, s, vt = jnp.linalg.svd(m, full_matrices=False)
  s = jnp.maximum(s - jnp.asarray(threshold, work), 0)
  # Components with s = 0 contribute exact zeros: the result has exactly the
  # rank of the thresholded spectrum, up to the rounding of this product.
  out = jnp.matmul(u * s, vt, precision=jax.lax.Precision.HIGHEST)
  out = jnp.reshape(out, x.shape).astype(x.dtype)
  # A zero threshold is the identity exactly (no SVD round trip).
  return jnp.where(jnp.asarray(threshold) > 0, out, x)


def singular_values(x) -> np.ndarray:
  """Singular values of the matrix view of ``x``, descending, in float64 (host).

  Args:
    x: an array with ``ndim >= 2``, viewed as ``(prod(shape[:-1]), shape[-1])``.

  Returns:
    A NumPy float64 array of length ``min(m, n)``.
  """
  a = np.asarray(jnp.asarray(x, jnp.promote_types(jnp.result_type(x), jnp.float32)),
                 np.float64)
  m, n = _matrix_shape(a.shape)
  if m * n == 0:
    return np.zeros((min(m, n),), np.float64)
  return np.linalg.svd(a.reshape(m, n), compute_uv=False)


def rank_tolerance(shape, dtype, sigma_max) -> float:
  """``max(m, n) * eps(dtype) * sigma_max``: NumPy's ``matrix_rank`` default.

  Singular values at or under it count as zero. ``eps`` is that of the
  leaf's dtype (``float32``: 1.19e-7), the precision the leaf is stored in.
  """
  m, n = _matrix_shape(tuple(shape))
  return max(m, n) * float(jnp.finfo(dtype).eps) * float(sigma_max)


class NuclearNorm(Regularizer):
  r"""``psi(W) = strength * sum_{leaf in mask} ||mat(leaf)||_*``: low rank.

  :math:`\|A\|_* = \sum_i \sigma_i(A)`, the sum of singular values, of each
  masked-in kernel viewed as a matrix: a conv kernel ``(kh, kw, in, out)`` as
  ``(kh * kw * in, out)``, a Dense kernel ``(in, out)`` as itself (every
  masked-in leaf needs ``ndim >= 2``). The prox soft-thresholds the singular
  values,

  .. math::

    \mathrm{prox}_{t \|\cdot\|_*}(X) = U \max(\Sigma - t, 0) V^\top,
    \quad X = U \Sigma V^\top,

  one thin SVD (``jnp.linalg.svd``, ``full_matrices=False``) per leaf, inside
  the jitted step: the result has exactly as many nonzero singular values as
  exceed ``t``. In a diagonal metric there is no closed form: the generic
  proximal-gradient solver (``"pg"``, one SVD per inner step) is used; there
  is no ``"newton"`` solver (so no :func:`rmda_jax.prox_ssi`).

  For the metrics of :mod:`rmda_jax.metrics` the "groups" of a leaf are its
  ``min(m, n)`` rank-one components: ``group_zero`` is True for the singular
  values that are numerically zero (at or under :func:`rank_tolerance`, as
  ``numpy.linalg.matrix_rank``), so the support is the rank, and
  :func:`rmda_jax.support_changes` counts rank changes. ``group_size`` is
  ``max(m, n)``, so that a leaf's groups hold its ``m * n`` entries and the
  weighted group sparsity is the entry-weighted fraction of rank dropped.
  :func:`rmda_jax.rank_report` gives the ranks themselves.
  """

  name = "nuclear_norm"
  solvers = (_prox.PG,)

  def check_leaf(self, path, x):
    super().check_leaf(path, x)
    if jnp.ndim(x) < 2:
      raise ValueError(
          f"nuclear_norm: leaf {path_str(path)} has shape {tuple(jnp.shape(x))} "
          f"(ndim {jnp.ndim(x)}); the nuclear norm needs a matrix or a kernel "
          "with ndim >= 2 (exclude the leaf with `mask`).")

  def check_solver(self, solver: str) -> None:
    if solver == _prox.NEWTON:
      raise ValueError(
          "nuclear_norm regularizer: no 'newton' solver (that is the per-group "
          "Newton method of rj.prox_ssi, for group regularizers); it supports "
          "'pg': use rj.prox_adam (ProxGen) for an Adam-preconditioned step.")
    super().check_solver(solver)

  def value_leaf(self, x):
    """``sum_i sigma_i(mat(x))`` (no strength), at least float32; finite gradient."""
    m = _as_matrix(x.astype(jnp.promote_types(x.dtype, jnp.float32)))
    if m.size == 0:
      return jnp.zeros((), m.dtype)
    # The JVP of the singular values alone, U^T dA V, has no 1 / sigma terms:
    # finite at rank-deficient and zero kernels (a subgradient).
    return jnp.sum(jnp.linalg.svd(m, compute_uv=False))

  def prox_leaf(self, x, threshold):
    """Singular-value soft thresholding of the matrix view at ``threshold``.

    Args:
      x: one leaf, ``ndim >= 2``.
      threshold: ``scale * strength``, a scalar >= 0 (may be traced).

    Returns:
      ``U max(S - threshold, 0) V^T`` reshaped like ``x``; ``x`` itself when
      ``threshold`` is 0.
    """
    return _singular_value_threshold(x, threshold)

  def prox_metric_leaf(self, x, d, threshold, *, solver, max_steps, tol,
                       init=None, origin=None):
    """The generic solver; with a warm start ``init``, one SVD per iteration.

    The warm-started loop (:func:`rmda_jax._prox.warm_prox_pg`) reads the
    nuclear norm of each iterate from the thresholded singular values of
    its own SVD.
    """
    if init is None:
      return super().prox_metric_leaf(x, d, threshold, solver=solver,
                                      max_steps=max_steps, tol=tol)

    def prox_value(z, t):
      work = jnp.promote_types(z.dtype, jnp.float32)
      u, s, vt = jnp.linalg.svd(_as_matrix(z).astype(work), full_matrices=False)
      s = jnp.maximum(s - jnp.asarray(t, work), 0)
      out = jnp.matmul(u * s, vt, precision=jax.lax.Precision.HIGHEST)
      return jnp.reshape(out, z.shape).astype(z.dtype), jnp.sum(s)

    return _prox.warm_prox_pg(self.prox_leaf, self.value_leaf, x, d, threshold,
                              init=init, origin=origin, max_steps=max_steps,
                              tol=tol, prox_value=prox_value)

  def group_zero(self, x):
    """NumPy bools, one per singular value (descending): True where numerically 0.

    Host-side (not jittable): the singular values are computed in float64 and
    compared with :func:`rank_tolerance` of ``x``'s dtype.
    """
    s = singular_values(x)
    if s.size == 0:
      return np.zeros((0,), bool)
    return s <= rank_tolerance(jnp.shape(x), jnp.result_type(x), s[0])

  def group_size(self, x) -> int:
    """``max(m, n)``: the ``min(m, n)`` components then hold the ``m n`` entries."""
    return int(max(_matrix_shape(tuple(jnp.shape(x)))))


def nuclear_norm(strength: float, *, mask: MaskOrFn = None) -> NuclearNorm:
  r"""Nuclear norm ``strength * sum_i sigma_i(W)`` of every kernel (low rank).

  .. math::

    \psi(W) = \lambda \sum_{\text{leaf}} \|\mathrm{mat}(\text{leaf})\|_*,
    \qquad \mathrm{prox}_{t\psi}(X) = U \max(\Sigma - t\lambda, 0) V^\top,

  with a conv kernel ``(kh, kw, in, out)`` viewed as the matrix
  ``(kh * kw * in, out)``. See :class:`NuclearNorm`.

  Args:
    strength: lambda >= 0.
    mask: which leaves to regularize: ``None`` for every leaf with
      ``ndim >= 2`` (embeddings excepted, see :func:`default_mask`), a pytree
      of bools (or a prefix of the params tree), or a function
      ``params -> pytree of bools``. A masked-in leaf with ``ndim < 2`` is an
      error naming its path.

  Returns:
    A :class:`NuclearNorm` regularizer: ``reg.value(params)`` is its value and
    ``reg.prox(params, scale)`` its proximal operator (singular-value soft
    thresholding). It works with :func:`rmda_jax.rmda`,
    :func:`rmda_jax.prox_sgd` and :func:`rmda_jax.prox_adam` (not
    :func:`rmda_jax.prox_ssi`, whose Newton solver is per group).

  Examples:
    >>> import jax.numpy as jnp, rmda_jax as rj
    >>> reg = rj.nuclear_norm(1.0)
    >>> w = jnp.array([[3.0, 0.0], [0.0, 0.5]])  # singular values 3 and 0.5
    >>> float(reg.value({"w": w}))
    3.5
    >>> z = reg.prox({"w": w}, 1.0)["w"]  # singular values 2 and 0: rank 1
    >>> jnp.abs(z)
    Array([[2., 0.],
           [0., 0.]], dtype=float32)
    >>> rj.rank_report({"w": z}, reg).rank
    1

  References:
    Cai, Candès & Shen, `A Singular Value Thresholding Algorithm for Matrix
    Completion <https://doi.org/10.1137/080738970>`_, SIAM J. Optim., 2010.

    Huang & Lee, `Regularized Adaptive Momentum Dual Averaging with an
    Efficient Inexact Subproblem Solver for Training Structured Neural
    Network <https://arxiv.org/abs/2403.14398>`_, NeurIPS 2024.
  """
  return NuclearNorm(strength, mask=mask)


class SparseGroupLasso(_AxisGroups):
  r"""L1 plus group LASSO: sparse groups, and sparse entries inside the groups kept.

  .. math::

    \psi(W) = \lambda_1 \|W\|_1 + \lambda_2 \sum_g \sqrt{|g|}\, \|W_g\|_2

  over the masked-in leaves, with the groups of :class:`GroupLasso`.

  **Strengths.** ``strength`` (the attribute the optimizers scale, and the
  one :meth:`with_strength` sets) is the total
  :math:`\lambda = \lambda_1 + \lambda_2`; the mix
  ``l1_fraction`` :math:`= \lambda_1 / \lambda` is fixed at construction
  (Simon et al.'s :math:`\alpha`), so
  :math:`\psi = \lambda (\alpha \|W\|_1 + (1 - \alpha) \sum_g \sqrt{|g|}
  \|W_g\|)`. ``with_strength(s)`` therefore scales both strengths by the
  same factor (``l1_strength = alpha s``, ``group_strength = (1 - alpha) s``).
  With both strengths 0 there is no mix: ``with_strength(0)`` is allowed and
  any ``s > 0`` raises.

  **Prox.** Soft thresholding at :math:`t \lambda_1`, then group shrinkage
  at :math:`t \lambda_2 \sqrt{|g|}`:

  .. math::

    Z = S_{t\lambda_1}(X), \qquad
    \mathrm{prox}_{t\psi}(X)_g = Z_g \max\big(0, 1 - t\lambda_2\sqrt{|g|}
    / \|Z_g\|\big).

  This composition is the exact prox (Friedman, Hastie & Tibshirani 2010;
  Simon et al. 2013): the optimality condition of the prox is
  :math:`0 \in U - X + t\lambda_1 \partial\|U\|_1 + t\lambda_2 \sqrt{|g|}\,
  \partial\|U_g\|`. Soft thresholding gives :math:`X - Z \in t\lambda_1
  \partial\|Z\|_1`, and the group shrink gives :math:`Z_g - U_g \in
  t\lambda_2\sqrt{|g|}\,\partial\|U_g\|`. Because :math:`U_g` is
  :math:`Z_g` times a factor in :math:`[0, 1]`, it keeps :math:`Z`'s signs
  and zeros (or is 0), so :math:`\partial\|Z\|_1 \subseteq
  \partial\|U\|_1`; adding the two inclusions gives the condition. The same
  argument holds in a diagonal metric :math:`D` (soft thresholding entry
  ``i`` at :math:`t\lambda_1 / d_i`, then the metric group prox), so both
  solvers (``"pg"``, ``"newton"``) solve only the group part and
  :func:`rmda_jax.prox_ssi` works too.

  For the metrics its groups are the group LASSO's: ``rj.group_sparsity``
  counts all-zero groups, ``rj.sparsity`` / the ``zero entries`` column of
  ``rj.sparsity_report`` the zero entries.

  Attributes:
    l1_strength: :math:`\lambda_1`.
    group_strength: :math:`\lambda_2`.
    l1_fraction: :math:`\lambda_1 / (\lambda_1 + \lambda_2)`, or ``None``
      when both are 0.
    strength: :math:`\lambda_1 + \lambda_2`.
  """

  name = "sparse_group_lasso"
  _leaf_fields = ("l1_strength", "group_strength")

  def __init__(self, l1_strength: float, group_strength: float, *,
               groups: Union[str, int] = "input", mask: MaskOrFn = None):
    lam1 = _check_strength(l1_strength, "l1_strength")
    lam2 = _check_strength(group_strength, "group_strength")
    _group_axis(groups)  # a bad `groups` is reported before a bad mask
    self._set_mask(mask)
    self._set_groups(groups)
    self.l1_strength, self.group_strength = lam1, lam2
    # The mix, fixed at construction when the strengths are concrete (kept by
    # with_strength, even through a strength of 0).
    total = _number_key(lam1 + lam2)
    self._fraction = (float(lam1) / total
                      if total is not None and total > 0 else None)

  @property
  def strength(self):
    """The total ``l1_strength + group_strength`` (what the optimizers scale)."""
    return self.l1_strength + self.group_strength

  @property
  def l1_fraction(self):
    """``l1_strength / strength``; ``None`` when both strengths are 0."""
    if self._fraction is not None:
      return self._fraction
    lam1, total = self.l1_strength, self.strength
    if _number_key(total) is not None:
      return None if float(total) <= 0 else float(lam1) / float(total)
    return jnp.where(total > 0, lam1 / jnp.where(total > 0, total, 1), 0.5)

  def _mix(self):
    # With both strengths 0 every threshold is 0 and the mix is irrelevant.
    a = self.l1_fraction
    return 0.5 if a is None else a

  def _taus(self, x, threshold):
    t = jnp.asarray(threshold, x.dtype)
    a = self._mix()
    return (t * jnp.asarray(a, x.dtype),
            t * jnp.asarray((1 - a) * self.group_weight(x), x.dtype))

  def value_leaf(self, x):
    """``alpha ||x||_1 + (1 - alpha) sum_g sqrt(|g|) ||x_g||`` (no strength)."""
    x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    a = self._mix()
    return (a * jnp.sum(jnp.abs(x))
            + (1 - a) * self.group_weight(x) * jnp.sum(self.group_norms(x)))

  def prox_leaf(self, x, threshold):
    """Soft thresholding, then group shrinkage (the exact prox, see the class).

    Args:
      x: one leaf.
      threshold: ``scale * strength``, a scalar >= 0.

    Returns:
      The leaf with entries under ``threshold * alpha`` and groups under
      ``threshold * (1 - alpha) * sqrt(|g|)`` (after the soft threshold) set
      to exact zeros.
    """
    tau1, tau2 = self._taus(x, threshold)
    return _prox.group_shrink(_prox.soft_threshold(x, tau1), tau2,
                              self.group_axes(x))

  def prox_metric_leaf(self, x, d, threshold, *, solver, max_steps, tol,
                       init=None, origin=None):
    """Closed-form L1 part (per entry ``tau1 / d_i``), then the group solver.

    With a warm start ``init``, the group part is solved by
    :func:`rmda_jax._prox.warm_group_prox_pg` from ``init`` (its objective
    measured from ``origin`` with the soft-thresholded centre), returning
    ``(u, steps)``. The start is 0 where the soft-thresholded centre is 0
    (the solution is 0 there, and the iterations keep those exact zeros).
    """
    tau1, tau2 = self._taus(x, threshold)
    z = _prox.soft_threshold_metric(x, d, tau1)
    if init is not None:
      return _prox.warm_group_prox_pg(
          z, d, tau2, self.group_axes(x), init=jnp.where(z == 0, 0, init),
          origin=origin, max_steps=max_steps, tol=tol)
    solve = (_prox.group_prox_newton if solver == _prox.NEWTON
             else _prox.group_prox_pg)
    return solve(z, d, tau2, self.group_axes(x), max_steps=max_steps, tol=tol)

  def with_strength(self, strength: float) -> "SparseGroupLasso":
    """A copy with total strength ``strength`` and the same mix ``l1_fraction``.

    Both strengths are scaled by ``strength / self.strength``. Raises
    ValueError for ``strength > 0`` when both strengths are 0 (no mix).
    """
    value = _check_strength(strength)
    a = self.l1_fraction
    if a is None:
      if _number_key(value) is None or float(value) > 0:
        raise ValueError(
            "sparse_group_lasso with l1_strength = group_strength = 0 has no "
            "mix to scale; build one with rj.sparse_group_lasso(l1_strength, "
            "group_strength).")
      return self
    return self.replace(l1_strength=a * value, group_strength=(1 - a) * value)

  def __repr__(self):
    return (f"SparseGroupLasso(l1_strength={_fmt(self.l1_strength)!r}, "
            f"group_strength={_fmt(self.group_strength)!r}, "
            f"groups={self.groups!r})")


def sparse_group_lasso(l1_strength: float, group_strength: float, *,
                       groups: Union[str, int] = "input",
                       mask: MaskOrFn = None) -> SparseGroupLasso:
  r"""Sparse group LASSO ``l1_strength ||W||_1 + group_strength sum_g sqrt(|g|) ||W_g||``.

  Removes whole groups (input units by default, as :func:`group_lasso`) and
  makes the weights of the groups that survive sparse. The prox is soft
  thresholding followed by group shrinkage, which is exact (see
  :class:`SparseGroupLasso`).

  Args:
    l1_strength: :math:`\lambda_1 \ge 0`, the weight of the L1 term.
    group_strength: :math:`\lambda_2 \ge 0`, the weight of the group term.
    groups: as in :func:`group_lasso`: ``"input"`` (axis -2, the authors'
      grouping), ``"output"`` (axis -1) or an int axis.
    mask: as in :func:`group_lasso`.

  Returns:
    A :class:`SparseGroupLasso` with ``strength = l1_strength +
    group_strength``; :meth:`~SparseGroupLasso.with_strength` keeps the ratio
    of the two.

  Examples:
    >>> import jax.numpy as jnp, rmda_jax as rj
    >>> reg = rj.sparse_group_lasso(0.5, 0.5)  # rows (inputs) are the groups
    >>> w = jnp.array([[4.0, 0.25], [0.75, 0.5]])
    >>> reg.prox({"w": w}, 1.0)["w"]  # soft threshold: rows (3.5, 0), (0.25, 0)
    Array([[2.7928932, 0.       ],
           [0.       , 0.       ]], dtype=float32)
    >>> float(reg.value({"w": w}))  # 0.5 * 5.5 + 0.5 * sqrt(2) * (||row 0|| + ||row 1||)
    6.221323013305664
    >>> reg.with_strength(2.0)
    SparseGroupLasso(l1_strength=1.0, group_strength=1.0, groups='input')

  References:
    Friedman, Hastie & Tibshirani, `A note on the group lasso and a sparse
    group lasso <https://arxiv.org/abs/1001.0736>`_, 2010.

    Simon, Friedman, Hastie & Tibshirani, `A Sparse-Group Lasso
    <https://doi.org/10.1080/10618600.2012.681250>`_, J. Comput. Graph.
    Stat., 2013.
  """
  return SparseGroupLasso(l1_strength, group_strength, groups=groups, mask=mask)


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
