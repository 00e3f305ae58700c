"""Channel dependencies of a model, read from the jaxpr of its forward pass.

Private to :mod:`rmda_jax.slim`. The forward pass is traced with
``jax.make_jaxpr`` as a function of the model's variables and one example
batch; an abstract interpreter then walks the equations and tracks, for every
value, which *slots* its elements belong to (:mod:`rmda_jax._slim_graph`),
following each primitive by its rule (:mod:`rmda_jax._slim_rules`).

A class of merged slots is removed when it is not pinned, has at least one
consumer, and every consumer slice is exactly zero. Its channel then reaches
nothing downstream, so dropping its producer slices (kernel outputs, bias,
BatchNorm entries) together with the consumer slices is exact. Every rule that
stops following a factor pins its slots first (so nothing removed can reach the
output unseen), and no axis is ever emptied (its first slot is kept).

A dense layer that reads a flattened feature map (the features of a channel
spread over positions) may keep a channel that is zero at some positions only;
when the layer can gather its inputs (``nnx.Linear``), the plan also drops its
remaining zero input rows and tells which features it gathers.

Multiply-adds are recorded per operation as the slots along each axis of its
output and of its contraction, so the counts after slimming follow from the
plan (a removed slot removes its positions).

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

from rmda_jax._slim_graph import Factor
from rmda_jax._slim_graph import SlimError
from rmda_jax._slim_graph import Special
from rmda_jax._slim_graph import UnionFind
from rmda_jax._slim_graph import Val
from rmda_jax._slim_graph import refines
from rmda_jax._slim_rules import RULES
from rmda_jax._slim_rules import evaluate

__all__ = ["SlimError", "Plan", "trace", "analyze"]


@dataclasses.dataclass
class Plan:
  """What the trace found.

  Attributes:
    keep: per variable leaf, per axis, the indices to keep (``None``: all).
    input_keep: boolean mask over one example of the input (``None`` when the
      input is not pruned or keeps everything).
    macs: multiply-adds of the whole example batch, by layer.
    macs_after: the same once ``keep`` (and the gathers) are applied.
    layer_order: layers in the order the forward pass first uses them.
    gathers: per kernel leaf (of a dense layer that gathers its input), the
      input features it keeps, as indices into its input once the rest of the
      plan is applied.
    notes: why channels with all-zero consumers were kept, one line each.
  """
  keep: list[tuple[np.ndarray | None, ...]]
  input_keep: np.ndarray | None
  macs: dict[str, int]
  macs_after: dict[str, int]
  layer_order: list[str]
  gathers: dict[int, np.ndarray]
  notes: list[str]


def _summary(eqn) -> str:
  try:
    return source_info_util.summarize(eqn.source_info)
  except Exception:  # pragma: no cover - source info is best effort
    return ""


@dataclasses.dataclass(frozen=True)
class _Macs:
  """One operation's multiply-adds: its output's slots, times its contraction's."""
  layer: str
  out_shape: tuple[int, ...]
  out_labels: tuple[np.ndarray, ...]      # broadcastable to out_shape
  size: int                               # contracted elements not labelled
  contract_labels: np.ndarray | None      # (n,): slots of the labelled contracted positions


@dataclasses.dataclass(frozen=True)
class _Consumer:
  layer: str
  slots: np.ndarray       # (n,) the weight's slots of its contracted positions
  zero: np.ndarray        # (n,) whether the weight is exactly zero there
  spread: bool            # some input slot reaches several of these positions (a flatten)
  gather: bool            # the operation could read a gathered input instead


class _Interpreter:

  def __init__(self):
    self.uf = UnionFind()
    self.owner_leaf: list[np.ndarray] = []
    self.owner_axis: list[np.ndarray] = []
    self.owner_index: list[np.ndarray] = []
    self.pins: dict[int, str] = {}
    self.consumers: list[_Consumer] = []
    self.mac_events: list[_Macs] = []
    self.heads: list[np.ndarray] = []
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

  def param(self, leaf: int, value, layer: str) -> Val:
    shape = tuple(value.shape)
    factors = []
    for d, n in enumerate(shape):
      ids = self.new_slots(n, leaf, d)
      factors.append(Factor(ids.reshape([n if k == d else 1 for k in range(len(shape))]), (d,)))
    return Val("par", tuple(factors), layer, np.asarray(value))

  def input(self, shape: Sequence[int]) -> Val:
    n = math.prod(shape[1:])
    ids = self.new_slots(n, -1, -1).reshape((1, *shape[1:]))
    return Val("act", (Factor(ids, tuple(range(1, len(shape)))),), "model input")

  def pin(self, labels: np.ndarray, reason: str) -> None:
    for i in np.unique(labels[labels >= 0]):
      self.pins.setdefault(int(i), reason)

  def pin_val(self, v: Val, reason: str) -> None:
    for f in v.factors:
      self.pin(f.labels, reason)

  def mark_heads(self, labels: Sequence[np.ndarray]) -> None:
    """Slots coupled across the batch axes of a product of two activations: attention heads."""
    for lab in labels:
      self.heads.append(np.unique(lab[lab >= 0]))

  def mac(self, layer: str, out_shape, factors: Sequence[Factor], size: int = 1,
          contract: Sequence[np.ndarray] = ()) -> None:
    """Records multiply-adds: the output's elements times the contracted ones."""
    self.mac_events.append(_Macs(layer, tuple(out_shape), tuple(f.labels for f in factors),
                                 int(size), np.asarray(contract[0]) if contract else None))

  # -- the consumer rule (dense layers and convolutions) ------------------------

  def consumer(self, eqn, layer: str, acts: Sequence[np.ndarray], weights: Sequence[np.ndarray],
               zero: np.ndarray, *, gather: bool = False) -> None:
    """A weight from the variables reads activations along its contracted positions.

    Args:
      eqn: the equation (for messages).
      layer: the weight's layer.
      acts: per activation factor that varies along the contracted positions,
        its slots there, shape (n, m): n contracted positions, m other positions
        (a convolution's spatial positions) that all meet the same weight slice.
      weights: per weight factor over the contracted positions, its slots, (n,).
      zero: (n,), whether the weight is exactly zero at each contracted position.
      gather: whether the operation could read a gathered input instead.
    """
    used = [False] * len(weights)
    spread = False
    for lab in acts:
      matched = False
      for k, r in enumerate(weights):
        if refines(r, lab):
          matched = used[k] = True
          self.uf.union_arrays(lab, r[:, None])
          self.pin(np.broadcast_to(r[:, None], lab.shape)[lab < 0],
                   f"input of '{layer}' not produced by a tracked channel")
          self.pin(lab[r < 0], f"weight of '{layer}' not made of parameters everywhere")
          tracked = lab[:, 0][lab[:, 0] >= 0]
          spread |= lab.shape[1] == 1 and len(np.unique(tracked)) < len(tracked)
      if not matched:
        self.pin(lab, f"input channels of '{layer}' do not match its weight's slots "
                 f"(at {self.where(eqn)})")
    for k, r in enumerate(weights):
      slots, z = np.broadcast_arrays(r, zero)
      ok = slots >= 0
      self.consumers.append(_Consumer(layer, slots[ok].ravel(), z[ok].ravel(), spread,
                                      gather and len(weights) == 1 and bool(ok.all())))
      if not used[k]:
        self.pin(r, f"input of '{layer}' not produced by a tracked channel "
                 f"(at {self.where(eqn)})")

  # -- interpretation ---------------------------------------------------------

  def call(self, eqn, jaxpr, consts, ins: Sequence[Val]) -> list[Val]:
    """Interprets the body of a call equation (``jit``, ``custom_jvp_call``, ...)."""
    self.calls.append(eqn)
    try:
      return self.run(jaxpr, consts, ins)
    finally:
      self.calls.pop()

  def run(self, jaxpr, consts, args: Sequence[Val]) -> list[Val]:
    env: dict[Any, Val] = {}

    def read(v) -> Val:
      if isinstance(v, jcore.Literal):
        return Val("const", value=v.val)
      return env[v]

    for v, c in zip(jaxpr.constvars, consts):
      env[v] = Val("const", value=c)
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

  def eqn(self, eqn, ins: list[Val]) -> list[Val]:
    rule = RULES.get(eqn.primitive.name)
    if rule is not None and rule.call:
      return rule.fn(self, eqn, ins)
    if all(a.kind == "const" for a in ins):
      return [Val("const", value=o) for o in evaluate(eqn, [a.value for a in ins])]
    for a in ins:
      if a.kind == "par" and a.layer is not None:
        self.layer_order.setdefault(a.layer, None)
    if rule is None:
      raise self.refuse(eqn, ins, "no rule for this operation")
    kind = "act" if any(a.kind == "act" for a in ins) else "par"
    factor_lists = rule.fn(self, eqn, ins)
    layer = next((a.layer for a in ins if a.kind == "par"), None)
    if layer is None:
      layer = next((a.layer for a in ins if a.kind == "act"), None)
    if isinstance(factor_lists, Special):
      layer = factor_lists.layer or layer
      factor_lists = factor_lists.factor_lists
    if kind == "par":
      values = evaluate(eqn, [a.value for a in ins])
    else:
      values = [None] * len(eqn.outvars)
    return [Val(kind, tuple(fl), layer, val) for fl, val in zip(factor_lists, values)]

  def refuse(self, eqn, ins, why: str) -> SlimError:
    layer = next((a.layer for a in ins if a.kind in ("act", "par") and a.layer), "model input")
    return SlimError(
        f"slim cannot follow primitive '{eqn.primitive.name}' applied to the output of layer "
        f"'{layer}' (at {self.where(eqn)}): {why}; use supported operations there (convolutions, "
        "dense layers, BatchNorm, elementwise activations, pooling, reshape, concatenate)")


def trace(fn: Callable, leaves: Sequence[Any], example_input):
  """``jax.make_jaxpr`` of ``fn(leaves, example_input)``: runs the model's own code."""
  return jax.make_jaxpr(fn)(list(leaves), example_input)


def analyze(closed, leaves: Sequence[Any], layers: Sequence[str | None], example_input, *,
            prune_inputs: bool, gatherable: frozenset[int] = frozenset(),
            names: Sequence[str] | None = None) -> Plan:
  """Interprets the traced forward pass and decides which slots can go.

  Args:
    closed: :func:`trace`'s jaxpr of the forward pass.
    leaves: the variable leaves (arrays).
    layers: per leaf, the layer (module path) it belongs to, or ``None`` for a
      leaf that must not be sliced (counters, keys, integer state).
    example_input: one batch; axis 0 is the batch axis.
    prune_inputs: whether the input's own features may be removed.
    gatherable: the leaves that are kernels of dense layers able to gather
      their inputs (their remaining zero input rows can be dropped).
    names: per leaf, its path for messages (``blocks/0/attn/key/bias``);
      default: its layer.

  Returns:
    The :class:`Plan`.
  """
  it = _Interpreter()
  args = []
  for i, (leaf, layer) in enumerate(zip(leaves, layers)):
    args.append(it.param(i, leaf, layer) if layer is not None else Val("const", value=leaf))
  x = it.input(np.shape(example_input))
  if not prune_inputs:
    it.pin_val(x, "model input (prune_inputs=False)")
  args.append(x)
  outs = it.run(closed.jaxpr, closed.consts, args)
  for o in outs:
    it.pin_val(o, "model output")
  return _decide(it, leaves, layers, np.shape(example_input), gatherable,
                 list(names) if names is not None else list(layers))


def _kept(shape: Sequence[int], labels: Sequence[np.ndarray], keep: np.ndarray) -> int:
  """How many elements of an array of ``shape`` remain, each slot in ``labels`` kept or not."""
  labels = [np.asarray(l) for l in labels]
  axes_of = [frozenset(d for d in range(len(shape)) if l.ndim and l.shape[d] > 1) for l in labels]
  groups: list[set] = []
  for axes in axes_of:
    touching = [g for g in groups if g & axes]
    merged = set(axes).union(*touching)
    groups = [g for g in groups if not g & axes] + [merged]
  total = 1
  for d in range(len(shape)):
    if not any(d in g for g in groups):
      total *= int(shape[d])
  for g in groups:
    dims = sorted(g)
    mask = np.ones([shape[d] for d in dims], bool)
    for l, axes in zip(labels, axes_of):
      if axes and axes <= g:
        sub = l.reshape([l.shape[d] for d in dims]) if l.ndim else l
        mask &= np.where(sub >= 0, keep[np.maximum(sub, 0)], True)
    total *= int(mask.sum())
  return total


def _count(e: _Macs, keep: np.ndarray) -> int:
  n = _kept(e.out_shape, e.out_labels, keep) * e.size
  if e.contract_labels is not None:
    c = e.contract_labels
    n *= int(np.sum(np.where(c >= 0, keep[np.maximum(c, 0)], True)))
  return n


def _decide(it: _Interpreter, leaves, layers, input_shape, gatherable, names) -> Plan:
  n = it.uf.size
  roots = it.uf.roots() if n else np.zeros(0, np.int64)
  leaf_of = np.concatenate(it.owner_leaf) if n else np.zeros(0, np.int64)
  axis_of = np.concatenate(it.owner_axis) if n else np.zeros(0, np.int64)
  index_of = np.concatenate(it.owner_index) if n else np.zeros(0, np.int64)
  pinned = np.zeros(n, bool)
  pin_ids = np.fromiter(it.pins, np.int64, len(it.pins))
  pinned[roots[pin_ids]] = True
  cons = (np.concatenate([c.slots for c in it.consumers]) if it.consumers
          else np.zeros(0, np.int64))
  zero = np.concatenate([c.zero for c in it.consumers]) if it.consumers else np.zeros(0, bool)
  has_consumer = np.zeros(n, bool)
  has_consumer[roots[cons]] = True
  nonzero = np.zeros(n, bool)
  nonzero[roots[cons[~zero]]] = True
  some_zero = np.zeros(n, bool)
  some_zero[roots[cons[zero]]] = True
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
      what = "the model input" if leaf < 0 else f"'{names[leaf]}' axis {axis}"
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
  keep_node = ~removable[roots]          # per slot
  # Attention heads that are zero in some of their readers' rows only: kept, and said so.
  head_roots = (np.unique(roots[np.concatenate(it.heads)]) if it.heads
                else np.zeros(0, np.int64))
  partial = np.zeros(n, bool)
  partial[head_roots] = True
  partial &= ~removable & nonzero & some_zero
  for r in np.flatnonzero(partial).tolist():
    c = next(c for c in it.consumers if np.any(roots[c.slots] == r))
    rows = roots[c.slots] == r
    heads = np.unique(c.slots[rows])
    z, t = int(c.zero[rows].sum()), int(rows.sum())
    if len(heads) == 1:
      what = f"head {index_of[heads[0]]} is partly zero ({z} of {t} of its rows are zero) and is"
    else:
      what = (f"heads {', '.join(str(index_of[h]) for h in heads)} (coupled) are partly zero "
              f"({z} of {t} of their rows are zero) and are")
    notes.append(f"'{c.layer}' {what} kept: a head goes only when all of it is zero")
  # Dense layers reading a flattened map: their remaining zero rows go, the input is gathered.
  gathers: dict[int, np.ndarray] = {}
  uses = collections.Counter(int(leaf_of[c.slots[0]]) for c in it.consumers if len(c.slots))
  for c in it.consumers:
    if not (c.spread and c.gather and len(c.slots)):
      continue
    leaf = int(leaf_of[c.slots[0]])
    if (leaf not in gatherable or uses[leaf] != 1 or np.any(leaf_of[c.slots] != leaf)
        or np.any(axis_of[c.slots] != 0) or not np.array_equal(index_of[c.slots],
                                                              np.arange(len(c.slots)))):
      continue
    kept_rows = keep_node[c.slots]
    drop = kept_rows & c.zero
    if not drop.any():
      continue
    if drop.sum() == kept_rows.sum():       # never empty the layer's input
      drop[np.flatnonzero(drop)[0]] = False
    keep_node[c.slots[drop]] = False
    gathers[leaf] = np.flatnonzero(keep_node[c.slots][kept_rows])
    notes.append(f"'{c.layer}' gathers {len(gathers[leaf])} of the {int(kept_rows.sum())} "
                 f"features it reads (the other rows of its kernel are zero)")
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
  everything = np.ones(n, bool)
  macs: collections.Counter = collections.Counter()
  macs_after: collections.Counter = collections.Counter()
  layer_of_macs: dict[str, None] = {}
  for e in it.mac_events:
    layer_of_macs.setdefault(e.layer, None)
    macs[e.layer] += _count(e, everything)
    macs_after[e.layer] += _count(e, keep_node)
  return Plan(keep, input_keep, {k: macs[k] for k in layer_of_macs},
              {k: macs_after[k] for k in layer_of_macs}, list(it.layer_order), gathers, notes)
