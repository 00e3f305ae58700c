"""Sparsity and structure metrics, as the RMDA papers report them.

* :func:`sparsity`: exact zeros / all entries (every leaf, biases included).
* :func:`group_sparsity`: all-zero groups / groups over the regularized leaves,
  optionally weighted by group size (= the fraction of regularized weights
  that lie in zero groups, the follow-up paper's headline metric).
* :func:`group_support` and :func:`support_changes`: which groups are nonzero,
  and how many changed status between two checkpoints (the identification
  signal: RMDA's count reaches 0 and stays there).
* :func:`sparsity_report`: the same per leaf, printable as a table.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from rmda_jax.regularizers import Regularizer, path_str

PyTree = Any

__all__ = [
    "sparsity",
    "group_sparsity",
    "group_support",
    "support_changes",
    "sparsity_report",
    "LeafReport",
    "SparsityReport",
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
    group is nonzero), each other leaf by ``None``.
  """
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
  """
  return int(sum(jnp.sum(a != b) for a, b in zip(
      jax.tree.leaves(old_support), jax.tree.leaves(new_support))))


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
  zero = total = 0
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
