r"""Group LASSO over groups that span several leaves: attention heads, MLP neurons.

A transformer's structure does not live in one kernel. One attention head of
an ``nnx.MultiHeadAttention`` is its slice of the query, key and value
kernels (layout ``(in, heads, head_dim)``: index ``h`` of axis 1), of their
biases (``(heads, head_dim)``: index ``h`` of axis 0) and of the output
kernel (``(heads, head_dim, out)``: index ``h`` of axis 0); one hidden unit
of an MLP is a column of the first dense kernel, its bias entry and the
matching row of the second kernel. Removing a head or a unit means zeroing
all of these together: they form one *coupled group*.

:class:`CoupledGroupLasso` is the group LASSO over such groups,

.. math::

  \psi(W) = \lambda \sum_{g} \sqrt{|g|}\, \|W_g\|_2,
  \qquad \|W_g\|_2^2 = \sum_{j} \|W^{(j)}_{g}\|_2^2,

where :math:`W^{(j)}_g` are the slices of the leaves :math:`j` a group is made
of and :math:`|g|` its total number of entries. Groups are given in
*families* (:class:`CoupledGroups`): the ``n`` heads of one attention module,
the ``n`` hidden units of one MLP; group ``i`` of a family is index ``i`` (or
the ``i``-th block of ``block`` indices) along the given axis of each of the
family's leaves (:class:`Slice`).

It is a :class:`rmda_jax.Regularizer` with tree-level ``value``, ``prox``,
``check`` and ``mask_tree`` (the base class is separable per leaf; these
groups are not), so :func:`rmda_jax.rmda` and every baseline use it
unchanged. The metrics of :mod:`rmda_jax.metrics` read its groups through
:meth:`CoupledGroupLasso.group_sets`: one entry per family (and one per leaf
of the optional ``rest`` regularizer).

:func:`attention_heads` and :func:`mlp_neurons` find the families of
``nnx.MultiHeadAttention`` modules and two-``nnx.Linear`` MLPs in a model or
a parameter tree; :func:`head_and_neuron_lasso` regularizes both.

References:
  Huang & Lee, `Training Structured Neural Networks Through Manifold
  Identification and Variance Reduction <https://arxiv.org/abs/2112.02612>`_,
  ICLR 2022.

  Michel, Levy & Neubig, `Are Sixteen Heads Really Better than One?
  <https://arxiv.org/abs/1905.10650>`_, NeurIPS 2019.

  Yuan & Lin, `Model selection and estimation in regression with grouped
  variables <https://doi.org/10.1111/j.1467-9868.2005.00532.x>`_, 2006.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from rmda_jax import _prox
from rmda_jax.regularizers import Regularizer
from rmda_jax.regularizers import _check_strength
from rmda_jax.regularizers import _key_name
from rmda_jax.regularizers import _number_key
from rmda_jax.regularizers import _safe_sqrt
from rmda_jax.regularizers import path_str

PyTree = Any

__all__ = [
    "Slice",
    "CoupledGroups",
    "GroupSet",
    "CoupledGroupLasso",
    "coupled_group_lasso",
    "attention_heads",
    "mlp_neurons",
    "head_and_neuron_lasso",
]


# ----------------------------------------------------------------- the specs
def _as_path(path) -> tuple[str, ...]:
  """``"blocks/0/fc1/kernel"`` or ``("blocks", 0, "fc1", "kernel")`` -> names."""
  if isinstance(path, str):
    parts = tuple(p for p in path.split("/") if p)
  elif isinstance(path, (tuple, list)):
    parts = tuple(str(p) for p in path)
  else:
    raise TypeError(
        f"a slice's path must be a '/'-separated string or a tuple of keys, got "
        f"{type(path).__name__} {path!r}.")
  if not parts:
    raise ValueError("a slice's path must name a leaf, got an empty path.")
  return parts


def _show(names: Sequence[str]) -> str:
  return "/".join(names)


class Slice(NamedTuple):
  """One leaf's share of every group of a family.

  Group ``i`` of the family takes the indices ``[i * block, (i + 1) * block)``
  of ``axis`` of the leaf at ``path`` (with every entry along the other axes),
  so the leaf needs ``shape[axis] == num_groups * block``.

  Attributes:
    path: key names from the root to the leaf, e.g.
      ``("blocks", "0", "attn", "query", "kernel")`` (ints as strings).
    axis: the axis that indexes the groups (negative counts from the end).
    block: consecutive indices of ``axis`` per group (1: one index; e.g. the
      head dimension for a hand-written attention kernel ``(in, heads *
      head_dim)``).
  """

  path: tuple
  axis: int
  block: int = 1

  @classmethod
  def make(cls, spec) -> "Slice":
    """A :class:`Slice` from itself or ``(path, axis[, block])``."""
    if isinstance(spec, Slice):
      path, axis, block = spec
    elif isinstance(spec, (tuple, list)) and len(spec) in (2, 3):
      path, axis, block = (*spec, 1) if len(spec) == 2 else spec
    else:
      raise TypeError(
          f"a slice is (path, axis) or (path, axis, block), got {spec!r}.")
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
      raise TypeError(f"slice {spec!r}: axis must be an int, got {axis!r}.")
    if isinstance(block, bool) or not isinstance(block, (int, np.integer)) or block < 1:
      raise ValueError(f"slice {spec!r}: block must be an int >= 1, got {block!r}.")
    return cls(_as_path(path), int(axis), int(block))


class CoupledGroups(NamedTuple):
  """A family of coupled groups: group ``i`` is slice ``i`` of every leaf listed.

  Attributes:
    name: where the family lives, e.g. ``"blocks/0/attn"`` (used in errors,
      reports and as the key of :func:`rmda_jax.group_support`).
    kind: what a group is, e.g. ``"heads"`` or ``"neurons"``.
    slices: the :class:`Slice` of each leaf the groups are made of.
  """

  name: str
  kind: str
  slices: tuple

  @classmethod
  def make(cls, name: str, slices, kind: str = "groups") -> "CoupledGroups":
    """Checks and normalises: ``slices`` as :class:`Slice` or ``(path, axis[, block])``."""
    if not isinstance(name, str) or not name:
      raise TypeError(f"a family of coupled groups needs a name (str), got {name!r}.")
    slices = tuple(Slice.make(s) for s in slices)
    if not slices:
      raise ValueError(f"coupled groups {name!r}: no slices.")
    return cls(name, str(kind), slices)

  @property
  def key(self) -> str:
    """``"name kind"``, e.g. ``"blocks/0/attn heads"``: the family in reports."""
    return f"{self.name} {self.kind}"


class GroupSet(NamedTuple):
  """The groups of one family (or one leaf of ``rest``), read by the metrics.

  Attributes:
    key: the family's :attr:`CoupledGroups.key`, or the leaf's path.
    shape: ``(num_groups,)`` for a family, the leaf's shape for a leaf.
    zero: NumPy bools, one per group: True where every entry is exactly 0.
    group_size: entries per group.
    entries: entries over all the groups.
    zero_entries: exact zeros among them.
    leaves: the paths (``path_str``) of the leaves the groups are made of.
  """

  key: str
  shape: tuple
  zero: np.ndarray
  group_size: int
  entries: int
  zero_entries: int
  leaves: tuple


# ------------------------------------------------------- leaves of a params tree
def _leaf_names(path) -> tuple[str, ...]:
  names = [_key_name(k) for k in path]
  while names and names[-1] == "value":  # flax.nnx Variable
    names.pop()
  return tuple(names)


def _index(params) -> dict:
  """``{names: (position among the leaves, jax path)}`` of every leaf."""
  out = {}
  for i, (path, _) in enumerate(jax.tree_util.tree_leaves_with_path(params)):
    out[_leaf_names(path)] = (i, path)
  return out


def _params_of(model_or_params) -> PyTree:
  """The parameters of an ``nnx.Module`` (``nnx.Param`` only) or the tree itself."""
  try:
    from flax import nnx  # optional: only models need it
  except ImportError:  # pragma: no cover
    return model_or_params
  if isinstance(model_or_params, nnx.Module):
    return nnx.to_pure_dict(nnx.state(model_or_params, nnx.Param))
  return model_or_params


def _under(names, under) -> bool:
  return under is None or names[:len(under)] == under


def attention_heads(model_or_params, *, under=None, query: str = "query",
                    key: str = "key", value: str = "value", out: str = "out",
                    biases: bool = True) -> tuple[CoupledGroups, ...]:
  """The head groups of every ``nnx.MultiHeadAttention`` in a model or params tree.

  An attention module is a subtree with the children ``query``, ``key``,
  ``value`` and ``out``, each with a ``kernel``: ``(in, heads, head_dim)``
  for the first three, ``(heads, head_dim, out)`` for ``out`` (flax.nnx's
  layouts). Head ``h`` is index ``h`` of axis 1 of the query, key and value
  kernels, of axis 0 of their biases (``(heads, head_dim)``, if
  ``biases``) and of axis 0 of the output kernel; the output bias is shared
  by all heads and belongs to none.

  Args:
    model_or_params: an ``nnx.Module`` or its parameter pytree.
    under: only modules under this path (``"blocks/0"`` or a tuple of keys).
    query, key, value, out: the children's names.
    biases: include the query, key and value biases' head slices.

  Returns:
    One :class:`CoupledGroups` (kind ``"heads"``) per attention module, named
    by its path, in the order of the tree's leaves.

  Examples:
    >>> from flax import nnx
    >>> import rmda_jax as rj
    >>> attn = nnx.MultiHeadAttention(num_heads=4, in_features=8, decode=False,
    ...                               rngs=nnx.Rngs(0))
    >>> (heads,) = rj.attention_heads(attn)
    >>> heads.key, len(heads.slices)
    ('<root> heads', 7)
  """
  params = _params_of(model_or_params)
  under = None if under is None else _as_path(under)
  shapes = {_leaf_names(p): np.shape(x)
            for p, x in jax.tree_util.tree_leaves_with_path(params)}
  found = []
  seen = set()
  for leaf in shapes:
    if len(leaf) < 2 or leaf[-1] != "kernel" or leaf[-2] != query:
      continue
    prefix = leaf[:-2]
    if prefix in seen or not _under(prefix, under):
      continue
    kernels = {c: prefix + (c, "kernel") for c in (query, key, value, out)}
    if not all(k in shapes for k in kernels.values()):
      continue
    if any(len(shapes[kernels[c]]) != 3 for c in kernels):
      continue
    seen.add(prefix)
    slices = [Slice(kernels[c], 1) for c in (query, key, value)]
    if biases:
      slices += [Slice(prefix + (c, "bias"), 0) for c in (query, key, value)
                 if prefix + (c, "bias") in shapes]
    slices.append(Slice(kernels[out], 0))
    found.append(CoupledGroups(_show(prefix) or "<root>", "heads", tuple(slices)))
  return tuple(found)


def mlp_neurons(model_or_params, *, under=None, first: str = "fc1",
                second: str = "fc2", biases: bool = True) -> tuple[CoupledGroups, ...]:
  """The hidden-unit groups of every two-layer MLP in a model or params tree.

  An MLP is a subtree with the children ``first`` and ``second``, each with a
  2-D ``kernel`` (``nnx.Linear``: ``(in, hidden)`` and ``(hidden, out)``).
  Unit ``i`` is column ``i`` of the first kernel (axis 1), entry ``i`` of
  its bias (if ``biases``) and row ``i`` of the second kernel (axis 0); the
  second bias belongs to no unit.

  Args:
    model_or_params: an ``nnx.Module`` or its parameter pytree.
    under: only MLPs under this path.
    first, second: the two dense layers' names.
    biases: include the first layer's bias entry.

  Returns:
    One :class:`CoupledGroups` (kind ``"neurons"``) per MLP, named by the
    path of the subtree holding both layers.
  """
  params = _params_of(model_or_params)
  under = None if under is None else _as_path(under)
  shapes = {_leaf_names(p): np.shape(x)
            for p, x in jax.tree_util.tree_leaves_with_path(params)}
  found = []
  for leaf in shapes:
    if len(leaf) < 2 or leaf[-1] != "kernel" or leaf[-2] != first:
      continue
    prefix = leaf[:-2]
    k2 = prefix + (second, "kernel")
    if not _under(prefix, under) or k2 not in shapes:
      continue
    if len(shapes[leaf]) != 2 or len(shapes[k2]) != 2:
      continue
    slices = [Slice(leaf, 1)]
    if biases and prefix + (first, "bias") in shapes:
      slices.append(Slice(prefix + (first, "bias"), 0))
    slices.append(Slice(k2, 0))
    found.append(CoupledGroups(_show(prefix) or "<root>", "neurons", tuple(slices)))
  return tuple(found)


class _Find(NamedTuple):
  """Groups found in the params tree at each use (hashable, static)."""

  heads: bool
  neurons: bool
  names: tuple  # query, key, value, out, first, second
  biases: bool

  def __call__(self, params) -> tuple[CoupledGroups, ...]:
    q, k, v, o, f1, f2 = self.names
    found = ()
    if self.heads:
      found += attention_heads(params, query=q, key=k, value=v, out=o,
                               biases=self.biases)
    if self.neurons:
      found += mlp_neurons(params, first=f1, second=f2, biases=self.biases)
    if not found:
      what = " or ".join(
          w for w, on in (
              (f"attention modules ({q}/{k}/{v}/{o} kernels)", self.heads),
              (f"MLPs ({f1}/{f2} kernels)", self.neurons)) if on)
      raise ValueError(
          f"head_and_neuron_lasso: found no {what} in params; name the groups "
          "with rj.coupled_group_lasso(strength, [rj.CoupledGroups.make(...)]).")
    return found


# ------------------------------------------------------------- the regularizer
class _Resolved(NamedTuple):
  family: CoupledGroups
  positions: tuple   # leaf position of each slice
  paths: tuple       # jax path of each slice's leaf
  num_groups: int
  group_size: int    # entries per group, all slices together


def _resolve(families, params, name: str) -> tuple[_Resolved, ...]:
  """Checks the families against ``params``: leaves exist, sizes agree, no overlap."""
  index = _index(params)
  leaves = jax.tree.leaves(params)
  owner = {}
  out = []
  for fam in families:
    positions, paths, n, size = [], [], None, 0
    first = None
    for s in fam.slices:
      if s.path not in index:
        parent = s.path[:-1]
        near = sorted(_show(p) for p in index if p[:len(parent)] == parent)[:8]
        hint = (f"; leaves under {_show(parent) or '<root>'}: {', '.join(near)}"
                if near else "")
        raise ValueError(
            f"{name}: coupled group {fam.key!r} names the leaf {_show(s.path)}, "
            f"which params does not have{hint}.")
      pos, jpath = index[s.path]
      x = leaves[pos]
      shape = tuple(np.shape(x))
      where = f"{name}: coupled group {fam.key!r}, leaf {path_str(jpath)}"
      if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
        raise TypeError(f"{where} has dtype {jnp.result_type(x)}; only "
                        "floating-point leaves can be regularized.")
      if not -len(shape) <= s.axis < len(shape):
        raise ValueError(f"{where} has shape {shape}: no axis {s.axis}.")
      length = shape[s.axis]
      if length % s.block:
        raise ValueError(
            f"{where}: axis {s.axis} has length {length}, not a multiple of "
            f"block {s.block}.")
      count = length // s.block
      if n is None:
        n, first = count, (path_str(jpath), s.axis)
      elif count != n:
        raise ValueError(
            f"{where}: the slices disagree in size: {count} groups along axis "
            f"{s.axis} (shape {shape}), but {first[0]} has {n} along axis "
            f"{first[1]}.")
      if pos in owner:
        raise ValueError(
            f"{where} overlaps coupled group {owner[pos]!r}, which also takes "
            "slices of it; a leaf may belong to one family, through one slice.")
      owner[pos] = fam.key
      positions.append(pos)
      paths.append(jpath)
      size += (math.prod(shape) // n) if n else 0
    out.append(_Resolved(fam, tuple(positions), tuple(paths), n, size))
  return tuple(out)


def _rows(x, s: Slice, n: int):
  """The leaf as ``(n, entries per group)``: row ``i`` = group ``i``'s entries."""
  return jnp.reshape(jnp.moveaxis(x, s.axis, 0), (n, -1))


def _unrows(rows, x, s: Slice):
  """Inverse of :func:`_rows` (shape and dtype of ``x``)."""
  moved = jnp.moveaxis(x, s.axis, 0).shape
  return jnp.moveaxis(jnp.reshape(rows, moved), 0, s.axis).astype(x.dtype)


def _group_sq(leaves, r: _Resolved, dtype):
  """Squared norm of each group of one family, ``(n,)`` in ``dtype``."""
  sq = jnp.zeros((r.num_groups,), dtype)
  for pos, s in zip(r.positions, r.family.slices):
    sq = sq + jnp.sum(jnp.square(_rows(leaves[pos].astype(dtype), s, r.num_groups)),
                      axis=1)
  return sq


def _scale_rows(x, factor, s: Slice):
  """``x`` with group ``i``'s entries (index block ``i`` of ``s.axis``) times ``factor[i]``."""
  f = jnp.repeat(factor, s.block) if s.block > 1 else factor
  shape = [1] * x.ndim
  shape[s.axis] = -1
  return (x * jnp.reshape(f, shape).astype(x.dtype)).astype(x.dtype)


def _work_dtype(xs):
  return jnp.promote_types(jnp.result_type(*xs), jnp.float32)


class CoupledGroupLasso(Regularizer):
  r"""Group LASSO over coupled groups: ``strength * sum_g sqrt(|g|) ||W_g||``.

  A group is made of slices of several leaves (see the module docstring and
  :class:`CoupledGroups`); :math:`|g|` is its total number of entries and
  :math:`\|W_g\|^2` the sum of its slices' squared norms.

  **Prox** (closed form, coupled group shrinkage): every slice of group
  :math:`g` is multiplied by the same factor,

  .. math::

    \mathrm{prox}_{t\psi}(X)_g = X_g \max\Big(0, 1 - \frac{t \lambda
    \sqrt{|g|}}{\|X_g\|}\Big),

  so a group is exactly zero in all its slices at once, or in none of them.
  **In a diagonal metric** :math:`D` (ProxGen, ProxSSI) each group's entries
  are gathered into one row and solved by the per-group solvers of the other
  group regularizers: proximal gradient (``"pg"``) or Newton's method on the
  secular equation (``"newton"``).

  Leaves in no group are left alone, or regularized by ``rest`` (any
  separable regularizer, e.g. :func:`rmda_jax.group_lasso`; its own mask
  minus the leaves of the groups).

  For the metrics (:func:`rmda_jax.group_sparsity`,
  :func:`rmda_jax.group_support`, :func:`rmda_jax.support_changes`,
  :func:`rmda_jax.sparsity_report`), each family is one entry keyed by
  :attr:`CoupledGroups.key` (e.g. ``"blocks/0/attn heads"``), each leaf of
  ``rest`` one entry keyed by its path (see :meth:`group_sets`).

  Attributes:
    strength: :math:`\lambda` of the coupled groups (a pytree leaf).
    groups: a tuple of :class:`CoupledGroups`, or a finder that builds them
      from the params tree at each use (:func:`head_and_neuron_lasso`
      without a model).
    rest: ``None`` or the regularizer of the leaves outside the groups (a
      pytree leaf too: its strength is traceable).
  """

  name = "coupled_group_lasso"
  solvers = (_prox.PG, _prox.NEWTON)
  _leaf_fields = ("strength", "rest")

  def __init__(self, strength: float, groups, *, rest: Optional[Regularizer] = None):
    self.strength = _check_strength(strength)
    if callable(groups) and isinstance(groups, _Find):
      self.groups = groups
    else:
      if isinstance(groups, CoupledGroups):
        groups = (groups,)
      if not isinstance(groups, (tuple, list)) or not groups:
        raise TypeError(
            "coupled_group_lasso: groups must be a non-empty sequence of "
            f"rj.CoupledGroups, got {groups!r}.")
      fams = []
      for g in groups:
        if not isinstance(g, CoupledGroups):
          raise TypeError(
              "coupled_group_lasso: every group family must be an "
              f"rj.CoupledGroups (rj.CoupledGroups.make(name, slices)), got {g!r}.")
        fams.append(CoupledGroups.make(g.name, g.slices, g.kind))
      keys = [f.key for f in fams]
      dup = sorted({k for k in keys if keys.count(k) > 1})
      if dup:
        raise ValueError(f"coupled_group_lasso: two families are both named {dup[0]!r}.")
      self.groups = tuple(fams)
    if rest is not None and not isinstance(rest, Regularizer):
      raise TypeError(
          "coupled_group_lasso: rest must be an rmda_jax regularizer or None, "
          f"got {type(rest).__name__}.")
    if isinstance(rest, CoupledGroupLasso):
      raise TypeError("coupled_group_lasso: rest must be a separable regularizer, "
                      "not another coupled_group_lasso (put all families in one).")
    self.rest = rest
    self.mask = None

  # ------------------------------------------------------------ structure
  def families(self, params: PyTree) -> tuple[CoupledGroups, ...]:
    """The families of coupled groups of ``params`` (found there for a finder)."""
    return self.groups(params) if isinstance(self.groups, _Find) else self.groups

  def _resolve(self, params):
    return _resolve(self.families(params), params, self.name)

  def _rest_mask(self, params, resolved) -> list:
    """Per leaf (flat): True where ``rest`` acts (its mask minus the groups' leaves)."""
    n = len(jax.tree.leaves(params))
    if self.rest is None:
      return [False] * n
    taken = {p for r in resolved for p in r.positions}
    mask = jax.tree.leaves(self.rest.mask_tree(params))
    return [bool(m) and i not in taken for i, m in enumerate(mask)]

  def mask_tree(self, params: PyTree) -> PyTree:
    """True on every leaf some coupled group (or ``rest``) acts on; checks ``params``.

    Raises:
      ValueError or TypeError naming the family and the leaf's path for a
      leaf that does not exist, is not floating point, lacks the axis, whose
      group count disagrees with the family's other slices, or that belongs
      to two families (or twice to one).
    """
    resolved = self._resolve(params)
    flags = self._rest_mask(params, resolved)
    for r in resolved:
      for p in r.positions:
        flags[p] = True
    return jax.tree.unflatten(jax.tree.structure(params), flags)

  def check(self, params: PyTree) -> None:
    """Raises, naming the family and the leaf, if ``params`` does not fit (see :meth:`mask_tree`)."""
    self.mask_tree(params)

  def check_solver(self, solver: str) -> None:
    super().check_solver(solver)
    if self.rest is not None:
      self.rest.check_solver(solver)

  # ------------------------------------------------------------ value, prox
  def value(self, params: PyTree):
    """psi(params), strength included (a scalar, at least float32; finite gradient)."""
    resolved = self._resolve(params)
    leaves = jax.tree.leaves(params)
    total = jnp.zeros((), jnp.result_type(float))
    for r in resolved:
      xs = [leaves[p] for p in r.positions]
      sq = _group_sq(leaves, r, _work_dtype(xs))
      total = total + self.strength * math.sqrt(r.group_size) * jnp.sum(_safe_sqrt(sq))
    if self.rest is not None:
      terms = [self.rest.value_leaf(x) for m, x in
               zip(self._rest_mask(params, resolved), leaves) if m]
      if terms:
        total = total + self.rest.strength * sum(terms)
    return total

  def prox(self, params: PyTree, scale=1.0, metric: Optional[PyTree] = None, *,
           solver: str = _prox.PG, max_steps=None, tol=None,
           init: Optional[PyTree] = None, origin: Optional[PyTree] = None,
           return_steps: bool = False):
    r"""The proximal map of ``scale * psi``, plain or in a diagonal metric.

    .. math::

      \arg\min_U \tfrac12 \|U - X\|_D^2 + \mathrm{scale}\,\psi(U).

    Without ``metric``: coupled group shrinkage (closed form, see the class).
    With ``metric``: the entries of each group gathered into one row and
    solved by ``solver`` (``"pg"`` or ``"newton"``), per group.

    Args:
      params: the point ``X``.
      scale: a scalar >= 0 (may be traced).
      metric: ``None`` or a pytree like ``params`` of positive entries.
      solver: ``"pg"`` or ``"newton"`` (used with ``metric`` only).
      max_steps, tol: the inner solver's bounds (see
        :meth:`rmda_jax.Regularizer.prox`).
      init, origin: a warm start (and the point the stop rule measures the
        objective from), for RAMDA's inexact solver
        (:func:`rmda_jax._prox.warm_group_prox_pg` on each family's rows;
        needs ``metric`` and ``"pg"``).
      return_steps: with ``metric``, also return the inner iterations per
        leaf (a family's count on each of its leaves; 0 on leaves in no
        group).

    Returns:
      A pytree like ``params``; leaves in no group (and not ``rest``'s) are
      returned unchanged. With ``return_steps``, the pair ``(prox, steps)``.
    """
    self.check_prox_args(solver, metric, max_steps=max_steps, tol=tol, init=init,
                         origin=origin, return_steps=return_steps)
    resolved = self._resolve(params)
    rest_mask = self._rest_mask(params, resolved)
    leaves = list(jax.tree.leaves(params))
    treedef = jax.tree.structure(params)
    out = list(leaves)
    steps = [jnp.zeros([], jnp.int32)] * len(leaves)
    if init is not None:
      init_leaves = jax.tree.leaves(init)
      origin_leaves = leaves if origin is None else jax.tree.leaves(origin)
    if metric is not None:
      d_leaves = jax.tree.leaves(metric)
      default_steps, default_tol = _prox.DEFAULTS[solver]
      max_steps = default_steps if max_steps is None else max_steps
      tol = default_tol if tol is None else tol
    for r in resolved:
      xs = [leaves[p] for p in r.positions]
      work = _work_dtype(xs)
      tau = jnp.asarray(scale * self.strength * math.sqrt(r.group_size), work)
      if r.num_groups == 0 or r.group_size == 0:
        continue
      if metric is None:
        sq = _group_sq(leaves, r, work)
        keep = sq > jnp.square(tau)
        factor = jnp.where(keep, 1 - tau * jax.lax.rsqrt(jnp.where(keep, sq, 1)), 0)
        for p, s in zip(r.positions, r.family.slices):
          out[p] = _scale_rows(leaves[p], factor, s)
        continue
      rows = [_rows(leaves[p].astype(work), s, r.num_groups)
              for p, s in zip(r.positions, r.family.slices)]
      d_rows = [_rows(d_leaves[p].astype(work), s, r.num_groups)
                for p, s in zip(r.positions, r.family.slices)]
      y, d = jnp.concatenate(rows, axis=1), jnp.concatenate(d_rows, axis=1)
      if init is not None:
        stack = lambda ls: jnp.concatenate(
            [_rows(ls[p].astype(work), s, r.num_groups)
             for p, s in zip(r.positions, r.family.slices)], axis=1)
        u, n_steps = _prox.warm_group_prox_pg(
            y, d, tau, (1,), init=stack(init_leaves), origin=stack(origin_leaves),
            max_steps=max_steps, tol=tol)
      else:
        solve = (_prox.group_prox_newton if solver == _prox.NEWTON
                 else _prox.group_prox_pg)
        u, n_steps = solve(y, d, tau, (1,), max_steps=max_steps, tol=tol)
      for p in r.positions:
        steps[p] = jnp.asarray(n_steps, jnp.int32)
      start = 0
      for p, s, part in zip(r.positions, r.family.slices, rows):
        width = part.shape[1]
        out[p] = _unrows(u[:, start:start + width], leaves[p], s)
        start += width
    if self.rest is not None:
      threshold = scale * self.rest.strength
      for i, m in enumerate(rest_mask):
        if not m:
          continue
        x = leaves[i]
        if metric is None:
          out[i] = self.rest.prox_leaf(x, threshold)
        elif x.size:
          warm = {} if init is None else dict(
              init=init_leaves[i].astype(x.dtype),
              origin=origin_leaves[i].astype(x.dtype))
          out[i], steps[i] = self.rest.prox_metric_leaf(
              x, d_leaves[i].astype(x.dtype), jnp.asarray(threshold, x.dtype),
              solver=solver, max_steps=max_steps, tol=tol, **warm)
    u = jax.tree.unflatten(treedef, out)
    return (u, jax.tree.unflatten(treedef, steps)) if return_steps else u

  # ------------------------------------------------------------ metrics
  def group_sets(self, params: PyTree) -> tuple[GroupSet, ...]:
    """The groups of ``params`` for the metrics, on the host.

    Returns:
      One :class:`GroupSet` per family (a group is zero when all its slices
      are exactly zero), then one per leaf of ``rest`` (its ``group_zero``
      and ``group_size``).
    """
    resolved = self._resolve(params)
    leaves = jax.tree.leaves(params)
    sets = []
    for r in resolved:
      zero = np.ones((r.num_groups,), bool)
      entries = zeros = 0
      for p, s in zip(r.positions, r.family.slices):
        x = np.asarray(leaves[p])
        rows = np.moveaxis(x, s.axis, 0).reshape(r.num_groups, -1)
        zero &= np.all(rows == 0, axis=1)
        entries += x.size
        zeros += int(np.sum(x == 0))
      sets.append(GroupSet(r.family.key, (r.num_groups,), zero, r.group_size,
                           entries, zeros, tuple(path_str(p) for p in r.paths)))
    if self.rest is not None:
      paths = [p for p, _ in jax.tree_util.tree_leaves_with_path(params)]
      for i, m in enumerate(self._rest_mask(params, resolved)):
        if not m:
          continue
        x = jnp.asarray(leaves[i])
        if not hasattr(self.rest, "group_zero"):
          raise TypeError(
              f"{self.name}: its rest regularizer {self.rest!r} defines no groups "
              "(no group_zero / group_size) for the metrics.")
        zero = np.asarray(self.rest.group_zero(x))
        sets.append(GroupSet(path_str(paths[i]), tuple(x.shape), zero.ravel(),
                             int(self.rest.group_size(x)), int(x.size),
                             int(jnp.sum(x == 0)), (path_str(paths[i]),)))
    return tuple(sets)

  # ------------------------------------------------------------ immutability
  def __eq__(self, other):
    """Equal when of the same class with equal groups, strengths and ``rest``."""
    if type(other) is not type(self):
      return NotImplemented
    if self.groups != other.groups or self.rest != other.rest:
      return False
    a, b = _number_key(self.strength), _number_key(other.strength)
    if a is None or b is None:
      return self.strength is other.strength
    return a == b

  def __hash__(self):
    return hash((type(self), self.groups, self.rest, _number_key(self.strength)))

  def with_strength(self, strength: float) -> "CoupledGroupLasso":
    """A copy with the groups' strength ``strength``; ``rest`` is scaled alike.

    ``rest``'s strength is multiplied by ``strength / self.strength`` (the
    whole psi scales); with ``self.strength == 0`` it is kept.
    """
    value = _check_strength(strength)
    rest = self.rest
    old = _number_key(self.strength)
    if rest is not None and (old is None or old > 0):
      rest = rest.with_strength(rest.strength * value / self.strength)
    _, aux = self._tree_flatten()
    return self._tree_unflatten(aux, (value, rest))

  def __repr__(self):
    groups = ("found in params" if isinstance(self.groups, _Find)
              else f"{len(self.groups)} families")
    rest = "" if self.rest is None else f", rest={self.rest!r}"
    return f"CoupledGroupLasso(strength={self.strength!r}, groups={groups}{rest})"


def coupled_group_lasso(strength: float, groups, *,
                        rest: Optional[Regularizer] = None) -> CoupledGroupLasso:
  r"""Group LASSO over groups made of slices of several leaves.

  .. math::

    \psi(W) = \lambda \sum_g \sqrt{|g|}\,\|W_g\|_2,
    \qquad \mathrm{prox}_{t\psi}(X)_g = X_g \max\Big(0,
    1 - \frac{t\lambda\sqrt{|g|}}{\|X_g\|}\Big),

  where group ``g`` collects its slice of every leaf of its family. See
  :class:`CoupledGroupLasso`.

  Args:
    strength: lambda >= 0.
    groups: one :class:`CoupledGroups` or a sequence of them (e.g. from
      :func:`attention_heads` and :func:`mlp_neurons`, or
      ``rj.CoupledGroups.make(name, [(path, axis), ...])``).
    rest: optional regularizer of the leaves in no group.

  Returns:
    A :class:`CoupledGroupLasso`.

  Examples:
    >>> import jax.numpy as jnp, rmda_jax as rj
    >>> params = {"fc1": {"kernel": jnp.array([[3.0, 0.1]])},   # (in 1, hidden 2)
    ...           "fc2": {"kernel": jnp.array([[4.0], [0.1]])}}  # (hidden 2, out 1)
    >>> units = rj.CoupledGroups.make("mlp", [("fc1/kernel", 1), ("fc2/kernel", 0)])
    >>> reg = rj.coupled_group_lasso(0.5, units)   # unit norms 5 and 0.14; w = sqrt(2)
    >>> out = reg.prox(params, 1.0)
    >>> out["fc1"]["kernel"], out["fc2"]["kernel"]
    (Array([[2.5757358, 0.       ]], dtype=float32), Array([[3.4343145],
           [0.       ]], dtype=float32))
  """
  return CoupledGroupLasso(strength, groups, rest=rest)


def head_and_neuron_lasso(strength: float, model_or_params=None, *,
                          heads: bool = True, neurons: bool = True,
                          rest: Optional[Regularizer] = None, biases: bool = True,
                          query: str = "query", key: str = "key", value: str = "value",
                          out: str = "out", first: str = "fc1",
                          second: str = "fc2") -> CoupledGroupLasso:
  r"""Group LASSO on the attention heads and MLP hidden units of a transformer.

  The groups are those of :func:`attention_heads` (every
  ``nnx.MultiHeadAttention``) and :func:`mlp_neurons` (every pair of dense
  layers ``first``/``second`` in one module), weighted by ``sqrt(|g|)``;
  other leaves (embeddings, LayerNorms, the classifier, the attention output
  bias) are left alone unless ``rest`` regularizes them.

  Args:
    strength: lambda >= 0.
    model_or_params: an ``nnx.Module`` or its parameters: the groups are
      found once, now; ``None``: they are found in the params tree each time
      the regularizer is used (what ``rmda-train`` does; the search depends
      only on the tree's paths and shapes, so it is static under ``jit``).
    heads, neurons: which kinds of groups.
    rest: optional regularizer of the leaves in no group.
    biases: include the query/key/value biases and the first MLP layer's
      bias in the groups.
    query, key, value, out, first, second: the modules' child names.

  Returns:
    A :class:`CoupledGroupLasso`.

  Raises:
    ValueError if no attention module or MLP is found.

  Examples:
    >>> from flax import nnx
    >>> import rmda_jax as rj
    >>> from rmda_jax.examples.models import ViTTiny
    >>> model = ViTTiny(10, rngs=nnx.Rngs(0), depth=1)
    >>> reg = rj.head_and_neuron_lasso(1e-3, model)
    >>> [f.key for f in reg.groups]
    ['blocks/0/attn heads', 'blocks/0 neurons']
  """
  if not (heads or neurons):
    raise ValueError("head_and_neuron_lasso: heads and neurons are both False: "
                     "no groups.")
  find = _Find(bool(heads), bool(neurons), (query, key, value, out, first, second),
               bool(biases))
  groups = find if model_or_params is None else find(_params_of(model_or_params))
  return CoupledGroupLasso(strength, groups, rest=rest)
