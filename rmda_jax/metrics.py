"""Sparsity and structure metrics, as the RMDA papers report them.

* :func:`sparsity`: exact zeros / all entries (every leaf, biases included).
* :func:`group_sparsity`: all-zero groups / groups over the regularized leaves,
  optionally weighted by group size (= the fraction of regularized weights
  that lie in zero groups, the follow-up paper's headline metric).
* :func:`group_support` and :func:`support_changes`: which groups are nonzero,
  and how many changed status between two checkpoints (the identification
  signal: RMDA's count reaches 0 and stays there).
* :func:`sparsity_report`: the same per leaf, printable as a table.
* :func:`rank_report`: the numerical rank of every regularized kernel against
  its full rank (the structure of :func:`rmda_jax.nuclear_norm`).

The group metrics read the regularizer's groups (``group_zero``,
``group_size``): for :func:`rmda_jax.l1` every entry, for
:func:`rmda_jax.group_lasso` and :func:`rmda_jax.sparse_group_lasso` the
input (or output) units, for :func:`rmda_jax.nuclear_norm` the rank-one
components of each kernel (a zero "group" is a numerically zero singular
value: the support is the rank, and :func:`support_changes` counts rank
changes). A regularizer without groups is an error naming it.

Groups that span several leaves (:func:`rmda_jax.coupled_group_lasso`:
attention heads, MLP neurons) are read through the regularizer's
``group_sets``: :func:`group_support` then returns a dict with one bool array
per family of groups, and :func:`sparsity_report` one row per family.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from rmda_jax.regularizers import Regularizer
from rmda_jax.regularizers import default_mask
from rmda_jax.regularizers import path_str
from rmda_jax.regularizers import rank_tolerance
from rmda_jax.regularizers import singular_values

PyTree = Any

__all__ = [
    "sparsity",
    "group_sparsity",
    "group_support",
    "support_changes",
    "sparsity_report",
    "rank_report",
    "LeafReport",
    "SparsityReport",
    "LeafRank",
    "RankReport",
]


def sparsity(params: PyTree) -> float:
  """Fraction of entries that are exactly zero, over every leaf.

  Args:
    params: a pytree of arrays.

  Returns:
    A Python float in [0, 1] (0 for an empty tree).
  """
  leaves = jax.tree.leaves(params)
  total = sum(int(np.size(x)) for x in leaves)
  if total == 0:
    return 0.0
  zeros = sum(int(jnp.sum(jnp.asarray(x) == 0)) for x in leaves)
  return zeros / total


def _check_groups(regularizer, fn: str) -> None:
  if hasattr(regularizer, "group_sets"):  # groups that span leaves (rj.coupled_group_lasso)
    return
  if not (hasattr(regularizer, "group_zero") and hasattr(regularizer, "group_size")):
    name = getattr(regularizer, "name", type(regularizer).__name__)
    raise TypeError(
        f"{fn}: the {name} regularizer ({type(regularizer).__name__}) defines no "
        "groups (no group_zero / group_size); use rj.sparsity for zero entries "
        "or rj.rank_report for ranks.")


def _regularized(params, regularizer):
  mask = regularizer.mask_tree(params)
  return [(path, x) for (path, m), x in zip(
      jax.tree_util.tree_leaves_with_path(mask), jax.tree.leaves(params)) if m]


def group_support(params: PyTree, regularizer: Regularizer) -> PyTree:
  """Which groups are nonzero: a pytree of bool arrays (None where unregularized).

  Args:
    params: the parameters.
    regularizer: the regularizer that defines the groups and the mask.

  Returns:
    A pytree with the structure of ``params``; each regularized leaf is
    replaced by a bool array with one entry per group (True: some entry of the
    group is nonzero), each other leaf by ``None``. For a regularizer whose
    groups span leaves (:func:`rmda_jax.coupled_group_lasso`): a dict with
    one such array per family of groups (and per leaf of its ``rest``),
    keyed as its ``group_sets``.
  """
  _check_groups(regularizer, "group_support")
  if hasattr(regularizer, "group_sets"):
    return {s.key: ~s.zero for s in regularizer.group_sets(params)}
  mask = regularizer.mask_tree(params)
  return jax.tree.map(
      lambda m, x: ~regularizer.group_zero(x) if m else None, mask, params)


def support_changes(old_support: PyTree, new_support: PyTree) -> int:
  """Number of groups whose zero/nonzero status differs between two supports.

  Args:
    old_support, new_support: outputs of :func:`group_support` for the same
      parameter structure.

  Returns:
    A Python int.

  Raises:
    ValueError: if the two supports differ in structure (other leaves,
      another regularized set) or a leaf differs in its number of groups,
      naming the first path that differs.
  """
  old_s, new_s = jax.tree.structure(old_support), jax.tree.structure(new_support)
  if old_s != new_s:
    raise ValueError(
        "support_changes: the two supports have different structures (were "
        "they taken from the same parameters with the same regularizer?): "
        f"{old_s} vs {new_s}.")
  total = 0
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(old_support),
                          jax.tree.leaves(new_support)):
    if np.shape(a) != np.shape(b):
      raise ValueError(
          f"support_changes: leaf {path_str(path)} has {np.shape(a)} groups in "
          f"old_support but {np.shape(b)} in new_support.")
    total += int(np.sum(np.asarray(a) != np.asarray(b)))
  return total


def group_sparsity(params: PyTree, regularizer: Regularizer,
                   weighted: bool = False) -> float:
  """Fraction of all-zero groups over the leaves the regularizer acts on.

  Args:
    params: the parameters.
    regularizer: defines the groups (an L1 regularizer makes every entry a
      group) and the mask.
    weighted: if True, weight each group by its size, i.e. return the
      fraction of regularized entries that lie in all-zero groups.

  Returns:
    A Python float in [0, 1] (0 if nothing is regularized).
  """
  _check_groups(regularizer, "group_sparsity")
  zero = total = 0
  if hasattr(regularizer, "group_sets"):
    for s in regularizer.group_sets(params):
      size = s.group_size if weighted else 1
      zero += int(np.sum(s.zero)) * size
      total += int(np.size(s.zero)) * size
    return zero / total if total else 0.0
  for _, x in _regularized(params, regularizer):
    g_zero = regularizer.group_zero(jnp.asarray(x))
    size = regularizer.group_size(x) if weighted else 1
    zero += int(jnp.sum(g_zero)) * size
    total += int(np.size(g_zero)) * size
  return zero / total if total else 0.0


class LeafReport(NamedTuple):
  """One row of a :class:`SparsityReport`."""

  path: str
  shape: tuple
  regularized: bool
  groups: int  # 0 for unregularized leaves
  zero_groups: int
  entries: int
  zero_entries: int


class SparsityReport(NamedTuple):
  """Per-leaf structure of a parameter tree; ``print(report)`` shows a table."""

  rows: tuple

  @property
  def sparsity(self) -> float:
    entries = sum(r.entries for r in self.rows)
    return sum(r.zero_entries for r in self.rows) / entries if entries else 0.0

  @property
  def group_sparsity(self) -> float:
    groups = sum(r.groups for r in self.rows)
    return sum(r.zero_groups for r in self.rows) / groups if groups else 0.0

  @property
  def regularized_sparsity(self) -> float:
    """Zero entries / entries over the regularized leaves only (0 if none)."""
    entries = sum(r.entries for r in self.rows if r.regularized)
    zeros = sum(r.zero_entries for r in self.rows if r.regularized)
    return zeros / entries if entries else 0.0

  def to_dicts(self) -> list:
    """Rows as JSON-friendly dicts."""
    return [dict(r._asdict(), shape=list(r.shape)) for r in self.rows]

  def __str__(self) -> str:
    head = ("leaf", "shape", "groups", "zero groups", "kept", "zero entries")
    body = []
    for r in self.rows:
      if r.regularized:
        groups, zg = str(r.groups), str(r.zero_groups)
        kept = f"{r.groups - r.zero_groups}/{r.groups}"
      else:
        groups, zg, kept = "-", "-", "-"
      body.append((r.path, "x".join(map(str, r.shape)) or "()", groups, zg, kept,
                   f"{r.zero_entries}/{r.entries} ({_pct(r.zero_entries, r.entries)})"))
    total_groups = sum(r.groups for r in self.rows)
    total_zero = sum(r.zero_groups for r in self.rows)
    entries = sum(r.entries for r in self.rows)
    zeros = sum(r.zero_entries for r in self.rows)
    body.append(("total", "", str(total_groups), str(total_zero),
                 f"{total_groups - total_zero}/{total_groups}",
                 f"{zeros}/{entries} ({_pct(zeros, entries)})"))
    widths = [max(len(row[i]) for row in (head, *body)) for i in range(len(head))]
    fmt = lambda row: "  ".join(
        c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
    rule = "-" * len(fmt(head))
    return "\n".join([fmt(head), rule, *map(fmt, body[:-1]), rule, fmt(body[-1])])


def _pct(a, b):
  return f"{100.0 * a / b:.1f}%" if b else "-"


def sparsity_report(params: PyTree,
                    regularizer: Optional[Regularizer] = None) -> SparsityReport:
  """Per-leaf shapes, groups, zero groups and zero entries.

  Args:
    params: the parameters.
    regularizer: defines groups and mask; ``None`` reports entries only.

  Returns:
    A :class:`SparsityReport`; ``print()`` it for a readable table, or use
    ``.rows`` / ``.to_dicts()``.
  """
  if regularizer is not None:
    _check_groups(regularizer, "sparsity_report")
  if hasattr(regularizer, "group_sets"):
    return _sparsity_report_sets(params, regularizer)
  mask = (regularizer.mask_tree(params) if regularizer is not None
          else jax.tree.map(lambda _: False, params))
  rows = []
  for (path, x), m in zip(jax.tree_util.tree_leaves_with_path(params),
                          jax.tree.leaves(mask)):
    x = jnp.asarray(x)
    groups = zero_groups = 0
    if m:
      g_zero = regularizer.group_zero(x)
      groups, zero_groups = int(np.size(g_zero)), int(jnp.sum(g_zero))
    rows.append(LeafReport(path_str(path), tuple(x.shape), bool(m), groups,
                           zero_groups, int(x.size), int(jnp.sum(x == 0))))
  return SparsityReport(tuple(rows))


def _sparsity_report_sets(params, regularizer) -> SparsityReport:
  """One row per family of groups spanning leaves, then one per leaf in none."""
  sets = regularizer.group_sets(params)
  covered = {leaf for s in sets for leaf in s.leaves}
  rows = [LeafReport(s.key, tuple(s.shape), True, int(np.size(s.zero)),
                     int(np.sum(s.zero)), s.entries, s.zero_entries) for s in sets]
  for path, x in jax.tree_util.tree_leaves_with_path(params):
    if path_str(path) in covered:
      continue
    x = jnp.asarray(x)
    rows.append(LeafReport(path_str(path), tuple(x.shape), False, 0, 0,
                           int(x.size), int(jnp.sum(x == 0))))
  return SparsityReport(tuple(rows))


class LeafRank(NamedTuple):
  """One row of a :class:`RankReport`."""

  path: str
  shape: tuple
  matrix_shape: tuple  # (m, n): prod(shape[:-1]) x shape[-1] (see rank_report)
  rank: int            # singular values > tol
  full_rank: int       # min(m, n)
  sigma_max: float
  tol: float


class RankReport(NamedTuple):
  """Numerical rank of every regularized kernel; ``print(report)`` shows a table."""

  rows: tuple

  @property
  def rank(self) -> int:
    """Total rank kept: the sum of the kernels' numerical ranks."""
    return sum(r.rank for r in self.rows)

  @property
  def full_rank(self) -> int:
    """The sum of the kernels' full ranks ``min(m, n)``."""
    return sum(r.full_rank for r in self.rows)

  @property
  def rank_fraction(self) -> float:
    """``rank / full_rank`` (0 if no kernel)."""
    return self.rank / self.full_rank if self.full_rank else 0.0

  def to_dicts(self) -> list:
    """Rows as JSON-friendly dicts."""
    return [dict(r._asdict(), shape=list(r.shape), matrix_shape=list(r.matrix_shape))
            for r in self.rows]

  def __str__(self) -> str:
    head = ("leaf", "shape", "matrix", "rank", "sigma_max", "tol")
    body = [(r.path, "x".join(map(str, r.shape)),
             "x".join(map(str, r.matrix_shape)), f"{r.rank}/{r.full_rank}",
             f"{r.sigma_max:.3g}", f"{r.tol:.2g}") for r in self.rows]
    total = ("total", "", "", f"{self.rank}/{self.full_rank}", "", "")
    widths = [max(len(row[i]) for row in (head, *body, total))
              for i in range(len(head))]
    fmt = lambda row: "  ".join(
        c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
    rule = "-" * len(fmt(head))
    return "\n".join([fmt(head), rule, *map(fmt, body), rule, fmt(total)])


def _coupled_leaves(params: PyTree, regularizer) -> tuple[set, dict]:
  """(skipped, matrix views) of the leaves groups spanning leaves take slices of.

  Skipped: the regularizer's families' leaves whose last key is ``bias`` or
  with ``ndim < 2``. Views: a kernel a family slices on a middle axis ``a``
  (``0 < a < ndim - 1``, flax's query/key/value ``(in, heads, head_dim)``) as
  ``(prod(shape[:a]), prod(shape[a:]))``, inputs against the groups' outputs.
  """
  if regularizer is None or not hasattr(regularizer, "group_sets"):
    return set(), {}
  shapes = {path_str(p): np.shape(x)
            for p, x in jax.tree_util.tree_leaves_with_path(params)}
  families = regularizer.families(params) if hasattr(regularizer, "families") else ()
  skipped, views = set(), {}
  for i, s in enumerate(regularizer.group_sets(params)):
    if i >= len(families):   # one leaf of ``rest``: a per-leaf regularizer
      break
    for leaf, sl in zip(s.leaves, families[i].slices):
      shape = shapes[leaf]
      if leaf.endswith("['bias']") or len(shape) < 2:
        skipped.add(leaf)
        continue
      axis = sl.axis % len(shape)
      if 0 < axis < len(shape) - 1:
        views[leaf] = (int(np.prod(shape[:axis])), int(np.prod(shape[axis:])))
  return skipped, views


def rank_report(params: PyTree, regularizer: Optional[Regularizer] = None, *,
                rtol: Optional[float] = None) -> RankReport:
  r"""Numerical rank of each kernel the regularizer acts on, against its full rank.

  Each masked-in leaf is viewed as the matrix ``(prod(shape[:-1]),
  shape[-1])`` (a conv kernel ``(kh, kw, in, out)`` as ``(kh*kw*in, out)``, as
  :func:`rmda_jax.nuclear_norm` does), its singular values
  :math:`\sigma_1 \ge \dots` are computed on the host in float64, and its
  numerical rank is the number of them above the tolerance

  .. math::

    \mathrm{tol} = \max(m, n)\, arepsilon\, \sigma_1,

  with :math:`arepsilon` the machine epsilon of the leaf's dtype
  (``float32``: 1.19e-7): the default of ``numpy.linalg.matrix_rank``, i.e.
  singular values the leaf's own rounding can produce count as zero. The
  full rank is ``min(m, n)``.

  With groups that span leaves (:func:`rmda_jax.coupled_group_lasso`,
  :func:`rmda_jax.head_and_neuron_lasso`) only the kernels of the groups are
  reported: the leaves the groups span whose last key is ``bias`` (an MLP
  unit's bias entry, a head's ``(heads, head_dim)`` query/key/value bias
  slices) or with ``ndim < 2`` are skipped, since they are slices of groups,
  not matrices; a kernel the groups slice on a middle axis ``a`` (flax's
  query/key/value kernels ``(in, heads, head_dim)``, ``a = 1``) is viewed as
  the map it is, ``(prod(shape[:a]), prod(shape[a:]))`` (``(in, heads *
  head_dim)``). A vector the ``rest`` regularizer acts on is refused as
  below.

  Args:
    params: the parameters.
    regularizer: defines the mask (any regularizer; ``None``: every leaf with
      ``ndim >= 2``, see :func:`rmda_jax.default_mask`).
    rtol: if given, the tolerance is ``rtol * sigma_1`` instead.

  Returns:
    A :class:`RankReport`: ``.rank`` is the total rank kept, ``.full_rank``
    the total full rank, ``.rows`` one :class:`LeafRank` per kernel;
    ``print()`` it for a table.

  Raises:
    ValueError naming the path of a masked-in leaf with ``ndim < 2``.

  Examples:
    >>> import jax.numpy as jnp, rmda_jax as rj
    >>> w = jnp.outer(jnp.arange(1.0, 5.0), jnp.ones(3))  # 4 x 3, rank 1
    >>> report = rj.rank_report({"dense": {"kernel": w}, "bias": jnp.ones(3)})
    >>> report.rank, report.full_rank
    (1, 3)
  """
  if rtol is not None and not (isinstance(rtol, (int, float)) and rtol >= 0):
    raise ValueError(f"rank_report: rtol must be a number >= 0, got {rtol!r}.")
  mask = (regularizer.mask_tree(params) if regularizer is not None
          else default_mask(params))
  skipped, views = _coupled_leaves(params, regularizer)
  rows = []
  for (path, x), m in zip(jax.tree_util.tree_leaves_with_path(params),
                          jax.tree.leaves(mask)):
    if not m or path_str(path) in skipped:
      continue
    shape = tuple(np.shape(x))
    if len(shape) < 2:
      raise ValueError(
          f"rank_report: leaf {path_str(path)} has shape {shape}; a rank needs "
          "ndim >= 2 (exclude the leaf with the regularizer's mask).")
    matrix_shape = views.get(path_str(path), (int(np.prod(shape[:-1])), shape[-1]))
    s = singular_values(jnp.reshape(x, matrix_shape))
    sigma_max = float(s[0]) if s.size else 0.0
    tol = (rank_tolerance(matrix_shape, jnp.result_type(x), sigma_max) if rtol is None
           else float(rtol) * sigma_max)
    rows.append(LeafRank(path_str(path), shape, matrix_shape,
                         int(np.sum(s > tol)), int(s.size), sigma_max, tol))
  return RankReport(tuple(rows))
