"""Channel dependencies of a model, read from the jaxpr of its forward pass.

Private to :mod:`rmda_jax.slim`. The forward pass is traced with
``jax.make_jaxpr`` as a function of the model's variables and one example
batch; an abstract interpreter then walks the equations and tracks, for every
value, which *slots* its elements belong to. A slot is one index of one axis
of one variable (``conv2/kernel`` axis 3, index 5: the sixth output channel of
``conv2``) or one element of an example of the input.

Each value carries *factors*: an integer array of slot ids, broadcastable to
the value's shape, varying only along the factor's ``axes``. An element
belongs to one slot per factor (a kernel element belongs to its input-channel
slot and to its output-channel slot). Slots are merged with a union-find:

* elementwise operations merge the factors of their operands that vary along
  the same axes (a residual addition couples both branches' channels; a bias,
  BatchNorm's scale, mean, variance and offset join their channel);
* a dense layer or a convolution whose weight comes from the variables merges
  the input's channel slots with the weight's input slots (the *consumer*
  group, recorded with whether that slice of the weight is exactly zero); its
  output carries the weight's output slots;
* layout operations (reshape, transpose, broadcast, concatenate, squeeze) move
  factors; a flatten spreads a channel over its contiguous features;
* an operation that mixes positions along a tracked axis (a reduction over
  channels, a strided slice of them, a grouped convolution, the model output)
  *pins* the slots involved: they are never removed.

A class of merged slots is removed when it is not pinned, has at least one
consumer, and every consumer slice is exactly zero. Its channel then reaches
nothing downstream, so dropping its producer slices (kernel outputs, bias,
BatchNorm entries) together with the consumer slices is exact. Every rule that
stops following a factor pins its slots first (so nothing removed can reach the
output unseen), and no axis is ever emptied (its first slot is kept).

An operation on tracked values that none of the rules knows raises
:class:`SlimError` naming the primitive, the source line and the layer.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.extend import core as jcore
from jax.extend import source_info_util

__all__ = ["SlimError", "Plan", "analyze"]


class SlimError(ValueError):
  """The model cannot be slimmed safely (an operation slim cannot follow, or a check failed)."""


# ----------------------------------------------------------------------------
# Union-find over slots.


class _UnionFind:
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


# ----------------------------------------------------------------------------
# Values seen by the interpreter.


@dataclasses.dataclass(frozen=True)
class _Factor:
  labels: np.ndarray      # slot ids (-1: none), full size on `axes`, size 1 elsewhere
  axes: tuple[int, ...]   # sorted


@dataclasses.dataclass
class _Val:
  kind: str                      # "act" (from the input), "par" (from variables only), "const"
  factors: tuple[_Factor, ...] = ()
  layer: str | None = None       # the layer it comes from, for messages and MACs
  value: Any = None              # concrete array for "par" and "const"


@dataclasses.dataclass
class Plan:
  """What the trace found.

  Attributes:
    keep: per variable leaf, per axis, the indices to keep (``None``: all).
    input_keep: boolean mask over one example of the input (``None`` when the
      input is not pruned or keeps everything).
    macs: multiply-adds of the whole example batch, by layer.
    layer_order: layers in the order the forward pass first uses them.
    notes: why channels with all-zero consumers were kept, one line each.
  """
  keep: list[tuple[np.ndarray | None, ...]]
  input_keep: np.ndarray | None
  macs: dict[str, int]
  layer_order: list[str]
  notes: list[str]


_CALLS = frozenset({
    "jit", "pjit", "closed_call", "core_call", "custom_jvp_call", "custom_vjp_call",
    "custom_vjp_call_jaxpr", "checkpoint", "remat", "remat2",
})

_ELEMENTWISE = frozenset({
    "add", "add_any", "sub", "mul", "div", "rem", "pow", "max", "min", "neg", "sign",
    "floor", "ceil", "round", "is_finite", "exp", "exp2", "log", "log1p", "expm1", "tanh",
    "logistic", "sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh", "asinh",
    "acosh", "atanh", "atan2", "sqrt", "rsqrt", "cbrt", "abs", "square", "integer_pow",
    "erf", "erfc", "erf_inv", "lgamma", "digamma", "nextafter", "select_n", "clamp",
    "eq", "ne", "ge", "gt", "le", "lt", "and", "or", "not", "xor", "shift_left",
    "shift_right_logical", "shift_right_arithmetic", "population_count", "convert_element_type",
    "copy", "copy_p", "reduce_precision", "real", "imag", "conj", "complex",
    "sharding_constraint", "mesh_cast", "reshard", "pvary", "stop_gradient",
})

_REDUCTIONS = frozenset({
    "reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "reduce_and", "reduce_or",
    "reduce_xor", "argmax", "argmin",
})

_WINDOWED = frozenset({"reduce_window_sum", "reduce_window_max", "reduce_window_min",
                       "reduce_window"})

_CUMULATIVE = frozenset({"cumsum", "cumprod", "cummax", "cummin", "cumlogsumexp"})

# Index-driven operations: followed conservatively (every tracked slot involved is kept).
_INDEXED = frozenset({"gather", "scatter", "scatter_add", "scatter_mul", "scatter_min",
                      "scatter_max", "scatter-add", "dynamic_update_slice"})


def _shape(v) -> tuple[int, ...]:
  return tuple(int(d) for d in v.aval.shape)


def _summary(eqn) -> str:
  try:
    return source_info_util.summarize(eqn.source_info)
  except Exception:  # pragma: no cover - source info is best effort
    return ""


def _sub_jaxpr(eqn):
  for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
    sub = eqn.params.get(key)
    if isinstance(sub, jcore.ClosedJaxpr):
      return sub.jaxpr, sub.consts
    if isinstance(sub, jcore.Jaxpr):
      return sub, ()
  return None


def _uniform_along(value, axis: int) -> bool:
  a = np.asarray(value)
  return bool(np.all(a == a.take([0], axis=axis)))


def _reshape_groups(src: Sequence[int], dst: Sequence[int]):
  """Splits a reshape into runs of consecutive axes with equal products."""
  groups, i, j = [], 0, 0
  while i < len(src) or j < len(dst):
    gi, gj, ps, pd = [], [], 1, 1
    if i < len(src):
      gi.append(i)
      ps, i = src[i], i + 1
    if j < len(dst):
      gj.append(j)
      pd, j = dst[j], j + 1
    while ps != pd:
      if ps < pd:
        gi.append(i)
        ps, i = ps * src[i], i + 1
      else:
        gj.append(j)
        pd, j = pd * dst[j], j + 1
    groups.append((gi, gj))
  return groups


def _place(labels: np.ndarray, dims: Sequence[int], positions: Sequence[int], out_nd: int):
  """Moves ``labels``' axes ``dims`` to output axes ``positions``; the others must be size 1."""
  drop = tuple(d for d in range(labels.ndim) if d not in dims)
  lab = np.squeeze(labels, axis=drop) if drop else labels
  order = np.argsort(positions)
  lab = np.transpose(lab, order) if lab.ndim else lab
  shape = [1] * out_nd
  for k in order:
    shape[positions[k]] = labels.shape[dims[k]]
  return lab.reshape(shape)


class _Interpreter:

  def __init__(self):
    self.uf = _UnionFind()
    self.owner_leaf: list[np.ndarray] = []
    self.owner_axis: list[np.ndarray] = []
    self.owner_index: list[np.ndarray] = []
    self.pins: dict[int, str] = {}
    self.cons_nodes: list[np.ndarray] = []
    self.cons_zero: list[np.ndarray] = []
    self.macs: collections.Counter = collections.Counter()
    self.layer_order: dict[str, None] = {}
    self.calls: list = []     # the equations whose bodies are being interpreted

  def where(self, eqn) -> str:
    """The source line of ``eqn``, or of the innermost enclosing call that has one."""
    for e in (eqn, *reversed(self.calls)):
      summary = _summary(e)
      if summary and not summary.startswith("<unknown"):
        return summary
    return "unknown location"

  # -- slots ------------------------------------------------------------------

  def new_slots(self, n: int, leaf: int, axis: int) -> np.ndarray:
    ids = self.uf.make(n)
    self.owner_leaf.append(np.full(n, leaf))
    self.owner_axis.append(np.full(n, axis))
    self.owner_index.append(np.arange(n))
    return ids

  def param(self, leaf: int, value, layer: str) -> _Val:
    shape = tuple(value.shape)
    factors = []
    for d, n in enumerate(shape):
      ids = self.new_slots(n, leaf, d)
      factors.append(_Factor(ids.reshape([n if k == d else 1 for k in range(len(shape))]), (d,)))
    return _Val("par", tuple(factors), layer, np.asarray(value))

  def input(self, shape: Sequence[int]) -> _Val:
    n = math.prod(shape[1:])
    ids = self.new_slots(n, -1, -1).reshape((1, *shape[1:]))
    return _Val("act", (_Factor(ids, tuple(range(1, len(shape)))),), "model input")

  def pin(self, labels: np.ndarray, reason: str) -> None:
    for i in np.unique(labels[labels >= 0]):
      self.pins.setdefault(int(i), reason)

  def pin_val(self, v: _Val, reason: str) -> None:
    for f in v.factors:
      self.pin(f.labels, reason)

  def consume(self, slots: np.ndarray, zero: np.ndarray) -> None:
    slots, zero = np.broadcast_arrays(slots, zero)
    ok = slots >= 0
    self.cons_nodes.append(slots[ok].ravel())
    self.cons_zero.append(zero[ok].ravel())

  # -- interpretation ---------------------------------------------------------

  def run(self, jaxpr, consts, args: Sequence[_Val]) -> list[_Val]:
    env: dict[Any, _Val] = {}

    def read(v) -> _Val:
      if isinstance(v, jcore.Literal):
        return _Val("const", value=v.val)
      return env[v]

    for v, c in zip(jaxpr.constvars, consts):
      env[v] = _Val("const", value=c)
    if len(args) != len(jaxpr.invars):
      raise SlimError(f"slim: internal error, {len(args)} arguments for {len(jaxpr.invars)} inputs")
    for v, a in zip(jaxpr.invars, args):
      env[v] = a
    for eqn in jaxpr.eqns:
      outs = self.eqn(eqn, [read(v) for v in eqn.invars])
      for v, o in zip(eqn.outvars, outs):
        if not isinstance(v, jcore.DropVar):
          env[v] = o
    return [read(v) for v in jaxpr.outvars]

  def eqn(self, eqn, ins: list[_Val]) -> list[_Val]:
    name = eqn.primitive.name
    sub = _sub_jaxpr(eqn) if name in _CALLS else None
    if sub is not None:
      self.calls.append(eqn)
      try:
        return self.run(sub[0], sub[1], ins)
      finally:
        self.calls.pop()
    if all(a.kind == "const" for a in ins):
      return [_Val("const", value=o) for o in _evaluate(eqn, [a.value for a in ins])]
    for a in ins:
      if a.kind == "par" and a.layer is not None:
        self.layer_order.setdefault(a.layer, None)
    kind = "act" if any(a.kind == "act" for a in ins) else "par"
    rule = _RULES.get(name)
    if rule is None:
      if name in _ELEMENTWISE:
        rule = _Interpreter.elementwise
      elif name in _REDUCTIONS:
        rule = _Interpreter.reduction
      elif name in _WINDOWED:
        rule = _Interpreter.windowed
      elif name in _CUMULATIVE:
        rule = _Interpreter.cumulative
      elif name in _INDEXED:
        rule = _Interpreter.indexed
      elif name in ("cond", "while", "scan"):
        raise self.refuse(eqn, ins, "control flow is not followed (unroll the loop or "
                          "compute both branches with jnp.where)")
      else:
        raise self.refuse(eqn, ins, "no rule for this operation")
    factor_lists = rule(self, eqn, ins)
    layer = next((a.layer for a in ins if a.kind == "par"), None)
    if layer is None:
      layer = next((a.layer for a in ins if a.kind == "act"), None)
    if isinstance(factor_lists, _Special):
      layer = factor_lists.layer or layer
      factor_lists = factor_lists.factor_lists
    if kind == "par":
      values = _evaluate(eqn, [a.value for a in ins])
    else:
      values = [None] * len(eqn.outvars)
    return [_Val(kind, tuple(fl), layer, val) for fl, val in zip(factor_lists, values)]

  def refuse(self, eqn, ins, why: str) -> SlimError:
    layer = next((a.layer for a in ins if a.kind in ("act", "par") and a.layer), "model input")
    return SlimError(
        f"slim cannot follow primitive '{eqn.primitive.name}' applied to the output of layer "
        f"'{layer}' (at {self.where(eqn)}): {why}; use supported operations there (convolutions, "
        "dense layers, BatchNorm, elementwise activations, pooling, reshape, concatenate)")

  # -- rules ------------------------------------------------------------------

  def elementwise(self, eqn, ins):
    out_shape = _shape(eqn.outvars[0])
    nd = len(out_shape)
    # The k-th factor varying along axes S of each operand merge (elementwise, the same
    # element of every operand feeds the result's element); factors of one operand stay apart.
    merged: dict[tuple, np.ndarray] = {}
    varying_const: set[int] = set()
    for var, a in zip(eqn.invars, ins):
      count: collections.Counter = collections.Counter()
      shape = _shape(var)
      if len(shape) not in (0, nd):
        raise self.refuse(eqn, ins, f"operand of rank {len(shape)} for a result of rank {nd}")
      if a.kind == "const":
        if len(shape) == nd and not jax.dtypes.issubdtype(var.aval.dtype, jax.dtypes.extended):
          varying_const.update(d for d in range(nd)
                               if shape[d] > 1 and not _uniform_along(a.value, d))
        continue
      for f in a.factors:
        labels = f.labels.reshape((1,) * nd) if len(shape) == 0 else f.labels
        axes = tuple(d for d in f.axes if len(shape) and shape[d] == out_shape[d])
        key = (axes, count[axes])
        count[axes] += 1
        if key in merged:
          self.uf.union_arrays(merged[key], labels)
        else:
          merged[key] = labels
    for (axes, _), labels in merged.items():
      if varying_const & set(axes):
        self.pin(labels, f"'{eqn.primitive.name}' with a constant that varies along the channel "
                 f"axis (at {self.where(eqn)})")
    if eqn.primitive.name == "mul" and {a.kind for a in ins} >= {"act", "par"}:
      par = next(a for a in ins if a.kind == "par")
      self.macs[par.layer] += math.prod(out_shape)
    factors = [_Factor(lab, axes) for (axes, _), lab in merged.items()]
    return [factors for _ in eqn.outvars]

  def broadcast_in_dim(self, eqn, ins):
    in_shape = _shape(eqn.invars[0])
    out_shape = tuple(eqn.params["shape"])
    dims = tuple(eqn.params["broadcast_dimensions"])
    factors = []
    for f in ins[0].factors:
      shape = [1] * len(out_shape)
      for i, d in enumerate(dims):
        shape[d] = f.labels.shape[i]
      axes = tuple(sorted(dims[a] for a in f.axes if in_shape[a] == out_shape[dims[a]]))
      factors.append(_Factor(f.labels.reshape(shape), axes))
    return [factors]

  def reshape(self, eqn, ins):
    in_shape = _shape(eqn.invars[0])
    out_shape = _shape(eqn.outvars[0])
    if eqn.params.get("dimensions") is not None:
      raise self.refuse(eqn, ins, "reshape with a dimension permutation")
    if 0 in in_shape:
      self.pin_val(ins[0], f"reshape of an empty array (at {self.where(eqn)})")
      return [[]]
    groups = _reshape_groups(in_shape, out_shape)
    factors = []
    for f in ins[0].factors:
      full_in, full_out, axes = [1] * len(in_shape), [1] * len(out_shape), []
      for gi, gj in groups:
        if not set(gi) & set(f.axes):
          continue
        for d in gi:
          full_in[d] = in_shape[d]
        for e in gj:
          full_out[e] = out_shape[e]
        if len(gi) == 1 and len(gj) == 1:
          axes.extend(gj)
        else:
          axes.extend(e for e in gj if out_shape[e] > 1)
      labels = np.broadcast_to(f.labels, full_in).reshape(full_out)
      factors.append(_Factor(labels, tuple(sorted(axes))))
    return [factors]

  def transpose(self, eqn, ins):
    perm = tuple(eqn.params["permutation"])
    factors = [_Factor(np.transpose(f.labels, perm), tuple(sorted(perm.index(a) for a in f.axes)))
               for f in ins[0].factors]
    return [factors]

  def squeeze(self, eqn, ins):
    nd = len(_shape(eqn.invars[0]))
    dims = sorted(d % nd for d in eqn.params["dimensions"])
    keep = [d for d in range(nd) if d not in dims]
    factors = [_Factor(np.squeeze(f.labels, axis=tuple(dims)),
                       tuple(keep.index(a) for a in f.axes if a in keep))
               for f in ins[0].factors]
    return [factors]

  def _drop_moving(self, eqn, v: _Val, moving: set[int], what: str) -> list[_Factor]:
    kept = []
    for f in v.factors:
      if moving & set(f.axes):
        self.pin(f.labels, f"{what} along the channel axis (at {self.where(eqn)})")
      else:
        kept.append(f)
    return kept

  def reduction(self, eqn, ins):
    axes = set(eqn.params["axes"])
    factors = []
    for f in self._drop_moving(eqn, ins[0], axes, f"'{eqn.primitive.name}'"):
      keep = [d for d in range(f.labels.ndim) if d not in axes]
      factors.append(_Factor(np.squeeze(f.labels, axis=tuple(sorted(axes))),
                             tuple(keep.index(a) for a in f.axes)))
    return [factors for _ in eqn.outvars]

  def windowed(self, eqn, ins):
    p = eqn.params
    nd = len(_shape(eqn.invars[0]))
    ones = (1,) * nd
    moving = {d for d in range(nd)
              if p["window_dimensions"][d] != 1 or p["window_strides"][d] != 1
              or tuple(p["padding"][d]) != (0, 0) or (p.get("base_dilation") or ones)[d] != 1
              or (p.get("window_dilation") or ones)[d] != 1}
    n = len(eqn.outvars)
    for a in ins[n:]:
      self.pin_val(a, f"'{eqn.primitive.name}' initial value (at {self.where(eqn)})")
    return [self._drop_moving(eqn, a, moving, f"'{eqn.primitive.name}'") for a in ins[:n]]

  def cumulative(self, eqn, ins):
    for f in ins[0].factors:
      if eqn.params["axis"] in f.axes:
        self.pin(f.labels, f"'{eqn.primitive.name}' along the channel axis (at {self.where(eqn)})")
    return [list(ins[0].factors)]

  def indexed(self, eqn, ins):
    for a in ins:
      self.pin_val(a, f"indexing operation '{eqn.primitive.name}' (at {self.where(eqn)})")
    return [[] for _ in eqn.outvars]

  def pad(self, eqn, ins):
    moving = {d for d, c in enumerate(eqn.params["padding_config"]) if tuple(c) != (0, 0, 0)}
    self.pin_val(ins[1], f"padding value (at {self.where(eqn)})")
    return [self._drop_moving(eqn, ins[0], moving, "padding")]

  def slice(self, eqn, ins):
    shape = _shape(eqn.invars[0])
    p = eqn.params
    strides = p.get("strides") or (1,) * len(shape)
    moving = {d for d in range(len(shape))
              if p["start_indices"][d] != 0 or p["limit_indices"][d] != shape[d] or strides[d] != 1}
    return [self._drop_moving(eqn, ins[0], moving, "slicing")]

  def dynamic_slice(self, eqn, ins):
    shape = _shape(eqn.invars[0])
    moving = {d for d, s in enumerate(eqn.params["slice_sizes"]) if s != shape[d]}
    for a in ins[1:]:
      self.pin_val(a, f"index of 'dynamic_slice' (at {self.where(eqn)})")
    return [self._drop_moving(eqn, ins[0], moving, "slicing")]

  def rev(self, eqn, ins):
    return [self._drop_moving(eqn, ins[0], set(eqn.params["dimensions"]), "reversal")]

  def split(self, eqn, ins):
    kept = self._drop_moving(eqn, ins[0], {eqn.params["axis"]}, "splitting")
    return [kept for _ in eqn.outvars]

  def concatenate(self, eqn, ins):
    dim = eqn.params["dimension"]
    out_shape = _shape(eqn.outvars[0])
    keyed: dict[tuple, list] = collections.defaultdict(lambda: [None] * len(ins))
    for k, a in enumerate(ins):
      count: collections.Counter = collections.Counter()
      for f in a.factors:
        key = tuple(x for x in f.axes if x != dim)
        keyed[(key, count[key])][k] = f
        count[key] += 1
    factors = []
    for (key, _), parts in keyed.items():
      blocks = []
      for var, f in zip(eqn.invars, parts):
        shape = [out_shape[d] if d in key else 1 for d in range(len(out_shape))]
        shape[dim] = _shape(var)[dim]
        blocks.append(np.full(shape, -1, np.int64) if f is None
                      else np.broadcast_to(f.labels, shape))
      factors.append(_Factor(np.concatenate(blocks, axis=dim), tuple(sorted({*key, dim}))))
    return [factors]

  def optimization_barrier(self, eqn, ins):
    return [list(a.factors) for a in ins]

  def device_put(self, eqn, ins):
    return [list(a.factors) for a in ins]

  def dot_general(self, eqn, ins):
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    lc, rc, lb, rb = map(tuple, (lc, rc, lb, rb))
    lhs, rhs = ins
    ls, rs = _shape(eqn.invars[0]), _shape(eqn.invars[1])
    out_shape = _shape(eqn.outvars[0])
    out_nd = len(out_shape)
    lfree = [d for d in range(len(ls)) if d not in lc and d not in lb]
    rfree = [d for d in range(len(rs)) if d not in rc and d not in rb]
    pos = [dict(zip(lb, range(len(lb)))), dict(zip(rb, range(len(rb))))]
    pos[0].update({d: len(lb) + k for k, d in enumerate(lfree)})
    pos[1].update({d: len(lb) + len(lfree) + k for k, d in enumerate(rfree)})
    macs = math.prod(out_shape) * math.prod(ls[d] for d in lc)
    contract = (lc, rc)
    shapes = (ls, rs)

    def carried(side: int, f: _Factor) -> _Factor:
      dims = [d for d in range(len(shapes[side])) if d not in contract[side]]
      return _Factor(_place(f.labels, dims, [pos[side][d] for d in dims], out_nd),
                     tuple(sorted(pos[side][a] for a in f.axes)))

    def flat(side: int, labels: np.ndarray) -> np.ndarray:
      full = [shapes[side][d] if d in contract[side] else 1 for d in range(len(shapes[side]))]
      lab = np.broadcast_to(labels, np.maximum(labels.shape, full))
      lab = np.moveaxis(lab, contract[side], range(lab.ndim - len(contract[side]), lab.ndim))
      return lab.reshape(-1)

    out_factors: list[_Factor] = []
    kinds = (lhs.kind, rhs.kind)
    if sorted(kinds) == ["act", "par"]:
      a_side, w_side = (0, 1) if lhs.kind == "act" else (1, 0)
      act, w = ins[a_side], ins[w_side]
      self.macs[w.layer] += macs
      wc = set(contract[w_side])
      used = [False] * len(w.factors)
      w_flat = []
      for k, f in enumerate(w.factors):
        if set(f.axes) <= wc and f.axes:
          w_flat.append((k, flat(w_side, f.labels)))
        elif set(f.axes) & wc:
          self.pin(f.labels, f"weight of '{w.layer}' mixes input and output axes (at {self.where(eqn)})")
        else:
          out_factors.append(carried(w_side, f))
      wval = np.moveaxis(np.asarray(w.value), contract[w_side],
                         range(len(shapes[w_side]) - len(wc), len(shapes[w_side])))
      wval = wval.reshape(-1, math.prod(shapes[w_side][d] for d in contract[w_side]))
      zero = ~np.any(wval != 0, axis=0)
      ac = set(contract[a_side])
      for f in act.factors:
        if not set(f.axes) & ac:
          out_factors.append(carried(a_side, f))
          continue
        if not set(f.axes) <= ac:
          self.pin(f.labels, f"'{w.layer}' contracts an axis that also varies along others "
                   f"(at {self.where(eqn)})")
          continue
        lab = flat(a_side, f.labels)
        matched = False
        for k, r in w_flat:
          if _refines(r, lab):
            matched = used[k] = True
            self.uf.union_arrays(lab, r)
            self.pin(r[lab < 0], f"input of '{w.layer}' not produced by a tracked channel")
            self.pin(lab[r < 0], f"weight of '{w.layer}' not made of parameters everywhere")
        if not matched:
          self.pin(lab, f"input channels of '{w.layer}' do not match its weight's slots "
                   f"(at {self.where(eqn)})")
      for k, r in w_flat:
        self.consume(r, zero)
        if not used[k]:
          self.pin(r, f"input of '{w.layer}' not produced by a tracked channel "
                   f"(at {self.where(eqn)})")
      return _Special([out_factors], w.layer)
    # Activations times activations or constants, or parameters times parameters: the
    # contracted slots are kept; the free ones travel on.
    if "act" in kinds:
      self.macs["(no parameters)"] += macs
    for side, v in enumerate(ins):
      for f in v.factors:
        if set(f.axes) & set(contract[side]):
          self.pin(f.labels, f"contraction without a parameter weight (at {self.where(eqn)})")
        else:
          out_factors.append(carried(side, f))
    return [out_factors]

  def conv_general_dilated(self, eqn, ins):
    p = eqn.params
    lhs_spec, rhs_spec, out_spec = p["dimension_numbers"]
    lhs, rhs = ins
    rs = _shape(eqn.invars[1])
    out_shape = _shape(eqn.outvars[0])
    out_nd = len(out_shape)
    macs = math.prod(out_shape) * math.prod(rs) // rs[rhs_spec[0]]
    grouped = p["feature_group_count"] != 1 or p["batch_group_count"] != 1
    if lhs.kind != "act" or rhs.kind != "par" or grouped:
      why = ("grouped convolution" if grouped else "convolution without a parameter kernel")
      self.macs[rhs.layer if rhs.kind == "par" else "(no parameters)"] += macs
      for v in ins:
        self.pin_val(v, f"{why} (at {self.where(eqn)})")
      return [[]]
    self.macs[rhs.layer] += macs
    lb, lf = lhs_spec[0], lhs_spec[1]
    r_out, r_in = rhs_spec[0], rhs_spec[1]
    out_factors, consumers = [], []
    for f in rhs.factors:
      if f.axes == (r_in,):
        consumers.append(f.labels.reshape(-1))
      elif f.axes == (r_out,):
        out_factors.append(_Factor(_place(f.labels, [r_out], [out_spec[1]], out_nd),
                                   (out_spec[1],)))
      else:  # spatial slots of the kernel feed every output channel: never removed
        self.pin(f.labels, f"kernel of '{rhs.layer}' along axes {f.axes}")
    rval = np.moveaxis(np.asarray(rhs.value), r_in, 0).reshape(rs[r_in], -1)
    zero = ~np.any(rval != 0, axis=1)
    matched = False
    for f in lhs.factors:
      if lf in f.axes:
        if not consumers:
          self.pin(f.labels, f"kernel of '{rhs.layer}' has no input-channel axis to follow")
          continue
        matched = True
        shape = [1] * f.labels.ndim
        shape[lf] = rs[r_in]
        for r in consumers:
          self.uf.union_arrays(f.labels, r.reshape(shape))
          lab = np.moveaxis(np.broadcast_to(f.labels, np.maximum(f.labels.shape, shape)), lf, 0)
          untracked = np.any(lab.reshape(rs[r_in], -1) < 0, axis=1)
          self.pin(r[untracked], f"input of '{rhs.layer}' not produced by a tracked channel")
      elif set(f.axes) <= {lb}:
        out_factors.append(_Factor(_place(f.labels, [lb], [out_spec[0]], out_nd),
                                   (out_spec[0],) if f.axes else ()))
      else:
        self.pin(f.labels, f"spatial positions entering '{rhs.layer}'")
    for r in consumers:
      self.consume(r, zero)
      if not matched:
        self.pin(r, f"input of '{rhs.layer}' not produced by a tracked channel "
                 f"(at {self.where(eqn)})")
    return _Special([out_factors], rhs.layer)


@dataclasses.dataclass
class _Special:
  factor_lists: list
  layer: str | None


def _refines(r: np.ndarray, lab: np.ndarray) -> bool:
  """Whether every slot of ``r`` sits on positions of a single ``lab`` class."""
  ok = r >= 0
  if not ok.any():
    return False
  r, lab = r[ok], lab[ok]
  order = np.argsort(r, kind="stable")
  r, lab = r[order], lab[order]
  same_slot = r[1:] == r[:-1]
  return bool(np.all(lab[1:][same_slot] == lab[:-1][same_slot]))


# Values of parameters and constants are needed only to find exact zeros (and constants that
# vary along a channel); NumPy computes the common cases without compiling an XLA program per
# operation. Anything else goes through JAX.
_NUMPY_UNARY = {
    "neg": np.negative, "exp": np.exp, "log": np.log, "sqrt": np.sqrt,
    "rsqrt": lambda x: 1 / np.sqrt(x), "abs": np.abs, "sign": np.sign, "floor": np.floor,
    "ceil": np.ceil, "tanh": np.tanh, "logistic": lambda x: 1 / (1 + np.exp(-x)),
    "square": np.square, "copy": np.copy, "copy_p": np.copy, "not": np.logical_not,
}
_NUMPY_BINARY = {
    "add": np.add, "add_any": np.add, "sub": np.subtract, "mul": np.multiply,
    "max": np.maximum, "min": np.minimum, "eq": np.equal, "ne": np.not_equal,
    "gt": np.greater, "ge": np.greater_equal, "lt": np.less, "le": np.less_equal,
}


def _numpy(eqn, args):
  name, p = eqn.primitive.name, eqn.params
  inexact = all(np.issubdtype(np.asarray(a).dtype, np.inexact) or np.ndim(a) == 0 for a in args)
  if name in _NUMPY_UNARY and inexact:
    return _NUMPY_UNARY[name](args[0])
  if name in _NUMPY_BINARY:
    return _NUMPY_BINARY[name](args[0], args[1])
  if name == "div" and inexact:
    return np.true_divide(args[0], args[1])
  if name == "integer_pow":
    return np.power(args[0], p["y"])
  if name == "convert_element_type":
    return np.asarray(args[0]).astype(p["new_dtype"])
  if name == "select_n" and np.asarray(args[0]).dtype == bool and len(args) == 3:
    return np.where(args[0], args[2], args[1])
  if name == "broadcast_in_dim" and len(args) == 1:
    shape = [1] * len(p["shape"])
    for i, d in enumerate(p["broadcast_dimensions"]):
      shape[d] = np.shape(args[0])[i]
    return np.broadcast_to(np.reshape(args[0], shape), p["shape"])
  if name == "reshape" and p.get("dimensions") is None and len(args) == 1:
    return np.reshape(args[0], p["new_sizes"])
  if name == "squeeze":
    return np.squeeze(args[0], axis=tuple(p["dimensions"]))
  if name == "transpose":
    return np.transpose(args[0], p["permutation"])
  if name == "slice":
    strides = p.get("strides") or (1,) * len(p["start_indices"])
    return np.asarray(args[0])[tuple(slice(a, b, c) for a, b, c in
                                     zip(p["start_indices"], p["limit_indices"], strides))]
  if name == "concatenate":
    return np.concatenate(args, axis=p["dimension"])
  if name in ("reduce_sum", "reduce_max", "reduce_min"):
    fn = {"reduce_sum": np.sum, "reduce_max": np.max, "reduce_min": np.min}[name]
    return fn(args[0], axis=tuple(p["axes"]))
  return None


def _evaluate(eqn, args) -> list:
  if not eqn.primitive.multiple_results and all(
      isinstance(a, (np.ndarray, np.generic, int, float, bool)) for a in args):
    with np.errstate(all="ignore"):
      out = _numpy(eqn, args)
    if out is not None:
      return [np.asarray(out, dtype=eqn.outvars[0].aval.dtype)]
  out = eqn.primitive.bind(*args, **eqn.params)
  out = out if eqn.primitive.multiple_results else [out]
  return [np.asarray(o) if not jax.dtypes.issubdtype(o.dtype, jax.dtypes.extended) else o
          for o in out]


_RULES: dict[str, Callable] = {
    "broadcast_in_dim": _Interpreter.broadcast_in_dim,
    "reshape": _Interpreter.reshape,
    "transpose": _Interpreter.transpose,
    "squeeze": _Interpreter.squeeze,
    "pad": _Interpreter.pad,
    "slice": _Interpreter.slice,
    "dynamic_slice": _Interpreter.dynamic_slice,
    "rev": _Interpreter.rev,
    "split": _Interpreter.split,
    "concatenate": _Interpreter.concatenate,
    "optimization_barrier": _Interpreter.optimization_barrier,
    "device_put": _Interpreter.device_put,
    "dot_general": _Interpreter.dot_general,
    "conv_general_dilated": _Interpreter.conv_general_dilated,
}


def analyze(fn: Callable, leaves: Sequence[Any], layers: Sequence[str | None],
            example_input, *, prune_inputs: bool) -> Plan:
  """Traces ``fn(leaves, example_input)`` and decides which slots can go.

  Args:
    fn: the forward pass as a function of the variable leaves and the input.
    leaves: the variable leaves (arrays).
    layers: per leaf, the layer (module path) it belongs to, or ``None`` for a
      leaf that must not be sliced (counters, keys, integer state).
    example_input: one batch; axis 0 is the batch axis.
    prune_inputs: whether the input's own features may be removed.

  Returns:
    The :class:`Plan`.
  """
  closed = jax.make_jaxpr(fn)(list(leaves), example_input)
  it = _Interpreter()
  args = []
  for i, (leaf, layer) in enumerate(zip(leaves, layers)):
    args.append(it.param(i, leaf, layer) if layer is not None else _Val("const", value=leaf))
  x = it.input(np.shape(example_input))
  if not prune_inputs:
    it.pin_val(x, "model input (prune_inputs=False)")
  args.append(x)
  outs = it.run(closed.jaxpr, closed.consts, args)
  for o in outs:
    it.pin_val(o, "model output")
  return _decide(it, leaves, layers, np.shape(example_input))


def _decide(it: _Interpreter, leaves, layers, input_shape) -> Plan:
  n = it.uf.size
  roots = it.uf.roots() if n else np.zeros(0, np.int64)
  leaf_of = np.concatenate(it.owner_leaf) if n else np.zeros(0, np.int64)
  axis_of = np.concatenate(it.owner_axis) if n else np.zeros(0, np.int64)
  index_of = np.concatenate(it.owner_index) if n else np.zeros(0, np.int64)
  pinned = np.zeros(n, bool)
  pin_ids = np.fromiter(it.pins, np.int64, len(it.pins))
  pinned[roots[pin_ids]] = True
  cons = np.concatenate(it.cons_nodes) if it.cons_nodes else np.zeros(0, np.int64)
  zero = np.concatenate(it.cons_zero) if it.cons_zero else np.zeros(0, bool)
  has_consumer = np.zeros(n, bool)
  has_consumer[roots[cons]] = True
  nonzero = np.zeros(n, bool)
  nonzero[roots[cons[~zero]]] = True
  removable = has_consumer & ~nonzero & ~pinned        # indexed by root
  notes = []
  # Never empty an axis: keep the first slot of an axis that would lose them all.
  keys = (leaf_of << 32) + axis_of
  _, first, group = np.unique(keys, return_index=True, return_inverse=True)
  changed = True
  while changed:
    changed = False
    emptied = ~np.bincount(group, weights=~removable[roots], minlength=len(first)).astype(bool)
    for g in np.flatnonzero(emptied):
      removable[roots[first[g]]] = False
      changed = True
      leaf, axis = int(leaf_of[first[g]]), int(axis_of[first[g]])
      what = "the model input" if leaf < 0 else f"'{layers[leaf]}' axis {axis}"
      notes.append(f"{what}: every entry could go; the first is kept so that no axis is empty")
  # Why channels whose consumers are all zero were kept anyway.
  held = has_consumer & ~nonzero & pinned
  reason_of: dict[int, str] = {}
  for node, reason in it.pins.items():     # insertion order: the first pin names the reason
    reason_of.setdefault(int(roots[node]), reason)
  by_reason: dict[str, set] = collections.defaultdict(set)
  held_node = held[roots]
  unused_inputs = int(np.sum(held_node & (leaf_of < 0)))
  for r in np.unique(roots[held_node & (leaf_of >= 0)]).tolist():
    reason = reason_of[r]
    if reason != "model output" and not reason.startswith("model input"):
      by_reason[reason].add(r)
  if unused_inputs:
    notes.append(f"{unused_inputs} input feature(s) have zero weights in every consumer; "
                 "prune_inputs=True removes them")
  for reason, rs in by_reason.items():
    notes.append(f"{len(rs)} channel group(s) with all-zero consumers kept: {reason}")
  keep_node = ~removable[roots]
  keep: list[tuple] = []
  for i, leaf in enumerate(leaves):
    axes = []
    for d in range(np.ndim(leaf) if layers[i] is not None else 0):
      sel = (leaf_of == i) & (axis_of == d)
      kept = index_of[sel & keep_node]
      axes.append(None if len(kept) == np.shape(leaf)[d] else np.sort(kept))
    keep.append(tuple(axes) if axes else (None,) * np.ndim(leaf))
  sel = leaf_of == -1
  input_keep = None
  if sel.any() and not keep_node[sel].all():
    input_keep = keep_node[sel][np.argsort(index_of[sel])].reshape(input_shape[1:])
  return Plan(keep, input_keep, dict(it.macs), list(it.layer_order), notes)
