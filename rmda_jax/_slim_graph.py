"""The values :mod:`rmda_jax._slim_trace` follows: slots, factors, and their union-find.

Private to :mod:`rmda_jax.slim`. A *slot* is one index of one axis of one
variable (``conv2/kernel`` axis 3, index 5: the sixth output channel of
``conv2``) or one element of an example of the input. Every value of the
traced forward pass carries *factors*: an integer array of slot ids,
broadcastable to the value's shape, varying only along the factor's ``axes``.
An element belongs to one slot per factor (a kernel element belongs to its
input-channel slot and to its output-channel slot). Slots that must be removed
together are merged with a union-find.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["SlimError", "UnionFind", "Factor", "Val", "Special", "shape_of", "place",
           "refines"]


class SlimError(ValueError):
  """The model cannot be slimmed safely (an operation slim cannot follow, or a check failed)."""


class UnionFind:
  """Slot ids and the pairs to merge; the classes are computed once, at the end."""

  def __init__(self):
    self.size = 0
    self._pairs: list[np.ndarray] = []

  def make(self, n: int) -> np.ndarray:
    ids = np.arange(self.size, self.size + n, dtype=np.int64)
    self.size += n
    return ids

  def union_arrays(self, a: np.ndarray, b: np.ndarray) -> None:
    a, b = np.broadcast_arrays(a, b)
    both = (a >= 0) & (b >= 0) & (a != b)
    if both.any():
      self._pairs.append(np.unique(np.stack([a[both], b[both]], axis=1).astype(np.int64), axis=0))

  def roots(self) -> np.ndarray:
    """The smallest slot id of each slot's class (connected components of the pairs)."""
    label = np.arange(self.size, dtype=np.int64)
    if not self._pairs:
      return label
    a, b = np.concatenate(self._pairs).T
    while True:
      low = np.minimum(label[a], label[b])
      new = label.copy()
      np.minimum.at(new, a, low)
      np.minimum.at(new, b, low)
      new = new[new]
      if np.array_equal(new, label):
        return label
      label = new


@dataclasses.dataclass(frozen=True)
class Factor:
  labels: np.ndarray      # slot ids (-1: none), full size on `axes`, size 1 elsewhere
  axes: tuple[int, ...]   # sorted


@dataclasses.dataclass
class Val:
  kind: str                      # "act" (from the input), "par" (from variables only), "const"
  factors: tuple[Factor, ...] = ()
  layer: str | None = None       # the layer it comes from, for messages and MACs
  value: Any = None              # concrete array for "par" and "const"


@dataclasses.dataclass
class Special:
  """A rule's result that also names the layer its outputs come from."""
  factor_lists: list
  layer: str | None


def shape_of(v) -> tuple[int, ...]:
  return tuple(int(d) for d in v.aval.shape)


def place(labels: np.ndarray, dims: Sequence[int], positions: Sequence[int], out_nd: int):
  """Moves ``labels``' axes ``dims`` to output axes ``positions``; the others must be size 1."""
  drop = tuple(d for d in range(labels.ndim) if d not in dims)
  lab = np.squeeze(labels, axis=drop) if drop else labels
  order = np.argsort(positions)
  lab = np.transpose(lab, order) if lab.ndim else lab
  shape = [1] * out_nd
  for k in order:
    shape[positions[k]] = labels.shape[dims[k]]
  return lab.reshape(shape)


def refines(r: np.ndarray, lab: np.ndarray) -> bool:
  """Whether, within each column of ``lab`` (n, m), every slot of ``r`` (n,) sits on one class.

  ``r`` labels the n contracted positions of a weight, ``lab`` the same positions
  of an activation at m other (broadcast) positions.
  """
  lab = np.asarray(lab).reshape(len(r), -1)
  ok = np.broadcast_to((r >= 0)[:, None], lab.shape)
  if not ok.any():
    return False
  key = np.broadcast_to(r[:, None] * lab.shape[1], lab.shape) + np.arange(lab.shape[1])
  key, lab = key[ok], lab[ok]
  order = np.argsort(key, kind="stable")
  key, lab = key[order], lab[order]
  same_slot = key[1:] == key[:-1]
  return bool(np.all(lab[1:][same_slot] == lab[:-1][same_slot]))
