"""The rules of :mod:`rmda_jax._slim_trace`: one registry, one rule per primitive.

Private to :mod:`rmda_jax.slim`. A rule ``rule(it, eqn, ins)`` receives the
interpreter ``it`` (its union-find ``it.uf``, ``it.pin``, ``it.consumer``,
``it.mac``, ``it.refuse``), the equation and its operands' :class:`Val`\\ s, and
returns, per output, the list of :class:`Factor`\\ s it carries (or a
:class:`Special` that also names the layer). A primitive absent from
:data:`RULES` is refused by the interpreter, naming it.

* elementwise operations merge the factors of their operands that vary along
  the same axes (a residual addition couples both branches' channels; a bias,
  BatchNorm's scale, mean, variance and offset join their channel);
* a dense layer (``dot_general``) or a convolution whose weight comes from the
  variables goes through one consumer rule (:meth:`_Interpreter.consumer`):
  the input's channel slots merge with the weight's input slots, and whether
  that slice of the weight is exactly zero is recorded; the output carries the
  weight's output slots;
* a product of two activations (attention's ``q k^T`` and ``weights v``)
  couples the slots of their shared batch axes (the heads) and keeps the rest;
* layout operations (reshape, transpose, broadcast, concatenate, squeeze) move
  factors; a flatten spreads a channel over its contiguous features;
* an operation that mixes positions along a tracked axis (a reduction over
  channels, a strided slice of them, a grouped convolution) *pins* the slots
  involved: they are never removed.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from collections.abc import Callable, Sequence

import jax
import numpy as np
from jax.extend import core as jcore

from rmda_jax._slim_graph import Factor
from rmda_jax._slim_graph import Special
from rmda_jax._slim_graph import Val
from rmda_jax._slim_graph import place
from rmda_jax._slim_graph import shape_of

__all__ = ["Rule", "RULES", "rule", "sub_jaxpr", "evaluate"]


@dataclasses.dataclass(frozen=True)
class Rule:
  """How the interpreter follows one primitive.

  Attributes:
    fn: ``fn(it, eqn, ins)``.
    call: whether ``fn`` interprets a sub-jaxpr and returns the output values
      itself (``jit``, ``custom_jvp_call``, ...), instead of factor lists.
  """
  fn: Callable
  call: bool = False


RULES: dict[str, Rule] = {}


def rule(*names: str, call: bool = False):
  """Registers the decorated function as the rule of the primitives ``names``."""
  def register(fn):
    for name in names:
      if name in RULES:
        raise ValueError(f"slim: two rules for primitive '{name}'")
      RULES[name] = Rule(fn, call)
    return fn
  return register


ELEMENTWISE = (
    "add", "add_any", "sub", "mul", "div", "rem", "pow", "max", "min", "neg", "sign",
    "floor", "ceil", "round", "is_finite", "exp", "exp2", "log", "log1p", "expm1", "tanh",
    "logistic", "sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh", "asinh",
    "acosh", "atanh", "atan2", "sqrt", "rsqrt", "cbrt", "abs", "square", "integer_pow",
    "erf", "erfc", "erf_inv", "lgamma", "digamma", "nextafter", "select_n", "clamp",
    "eq", "ne", "ge", "gt", "le", "lt", "and", "or", "not", "xor", "shift_left",
    "shift_right_logical", "shift_right_arithmetic", "population_count", "convert_element_type",
    "copy", "copy_p", "reduce_precision", "real", "imag", "conj", "complex",
    "sharding_constraint", "mesh_cast", "reshard", "pvary", "stop_gradient",
)


def sub_jaxpr(eqn):
  for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
    sub = eqn.params.get(key)
    if isinstance(sub, jcore.ClosedJaxpr):
      return sub.jaxpr, sub.consts
    if isinstance(sub, jcore.Jaxpr):
      return sub, ()
  return None


@rule("jit", "pjit", "closed_call", "core_call", "custom_jvp_call", "custom_vjp_call",
      "custom_vjp_call_jaxpr", "checkpoint", "remat", "remat2", call=True)
def call(it, eqn, ins):
  sub = sub_jaxpr(eqn)
  if sub is None:
    if all(a.kind == "const" for a in ins):
      return [Val("const", value=o) for o in evaluate(eqn, [a.value for a in ins])]
    raise it.refuse(eqn, ins, "a call whose body slim cannot read")
  return it.call(eqn, sub[0], sub[1], ins)


@rule("cond", "while", "scan")
def control_flow(it, eqn, ins):
  raise it.refuse(eqn, ins, "control flow is not followed (unroll the loop or compute both "
                  "branches with jnp.where)")


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


@rule(*ELEMENTWISE)
def elementwise(it, eqn, ins):
  out_shape = shape_of(eqn.outvars[0])
  nd = len(out_shape)
  # The k-th factor varying along axes S of each operand merge (elementwise, the same
  # element of every operand feeds the result's element); factors of one operand stay apart.
  merged: dict[tuple, np.ndarray] = {}
  varying_const: set[int] = set()
  for var, a in zip(eqn.invars, ins):
    count: collections.Counter = collections.Counter()
    shape = shape_of(var)
    if len(shape) not in (0, nd):
      raise it.refuse(eqn, ins, f"operand of rank {len(shape)} for a result of rank {nd}")
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
        it.uf.union_arrays(merged[key], labels)
      else:
        merged[key] = labels
  for (axes, _), labels in merged.items():
    if varying_const & set(axes):
      it.pin(labels, f"'{eqn.primitive.name}' with a constant that varies along the channel "
               f"axis (at {it.where(eqn)})")
  factors = [Factor(lab, axes) for (axes, _), lab in merged.items()]
  if eqn.primitive.name == "mul" and {a.kind for a in ins} >= {"act", "par"}:
    par = next(a for a in ins if a.kind == "par")
    it.mac(par.layer, out_shape, factors)
  return [factors for _ in eqn.outvars]

@rule("broadcast_in_dim")
def broadcast_in_dim(it, eqn, ins):
  in_shape = shape_of(eqn.invars[0])
  out_shape = tuple(eqn.params["shape"])
  dims = tuple(eqn.params["broadcast_dimensions"])
  factors = []
  for f in ins[0].factors:
    shape = [1] * len(out_shape)
    for i, d in enumerate(dims):
      shape[d] = f.labels.shape[i]
    axes = tuple(sorted(dims[a] for a in f.axes if in_shape[a] == out_shape[dims[a]]))
    factors.append(Factor(f.labels.reshape(shape), axes))
  return [factors]

@rule("reshape")
def reshape(it, eqn, ins):
  in_shape = shape_of(eqn.invars[0])
  out_shape = shape_of(eqn.outvars[0])
  if eqn.params.get("dimensions") is not None:
    raise it.refuse(eqn, ins, "reshape with a dimension permutation")
  if 0 in in_shape:
    it.pin_val(ins[0], f"reshape of an empty array (at {it.where(eqn)})")
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
    factors.append(Factor(labels, tuple(sorted(axes))))
  return [factors]

@rule("transpose")
def transpose(it, eqn, ins):
  perm = tuple(eqn.params["permutation"])
  factors = [Factor(np.transpose(f.labels, perm), tuple(sorted(perm.index(a) for a in f.axes)))
             for f in ins[0].factors]
  return [factors]

@rule("squeeze")
def squeeze(it, eqn, ins):
  nd = len(shape_of(eqn.invars[0]))
  dims = sorted(d % nd for d in eqn.params["dimensions"])
  keep = [d for d in range(nd) if d not in dims]
  factors = [Factor(np.squeeze(f.labels, axis=tuple(dims)),
                     tuple(keep.index(a) for a in f.axes if a in keep))
             for f in ins[0].factors]
  return [factors]

def _drop_moving(it, eqn, v: Val, moving: set[int], what: str) -> list[Factor]:
  kept = []
  for f in v.factors:
    if moving & set(f.axes):
      it.pin(f.labels, f"{what} along the channel axis (at {it.where(eqn)})")
    else:
      kept.append(f)
  return kept

@rule("reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "reduce_and", "reduce_or",
      "reduce_xor", "argmax", "argmin")
def reduction(it, eqn, ins):
  axes = set(eqn.params["axes"])
  factors = []
  for f in _drop_moving(it, eqn, ins[0], axes, f"'{eqn.primitive.name}'"):
    keep = [d for d in range(f.labels.ndim) if d not in axes]
    factors.append(Factor(np.squeeze(f.labels, axis=tuple(sorted(axes))),
                           tuple(keep.index(a) for a in f.axes)))
  return [factors for _ in eqn.outvars]

@rule("reduce_window_sum", "reduce_window_max", "reduce_window_min", "reduce_window")
def windowed(it, eqn, ins):
  p = eqn.params
  nd = len(shape_of(eqn.invars[0]))
  ones = (1,) * nd
  moving = {d for d in range(nd)
            if p["window_dimensions"][d] != 1 or p["window_strides"][d] != 1
            or tuple(p["padding"][d]) != (0, 0) or (p.get("base_dilation") or ones)[d] != 1
            or (p.get("window_dilation") or ones)[d] != 1}
  n = len(eqn.outvars)
  for a in ins[n:]:
    it.pin_val(a, f"'{eqn.primitive.name}' initial value (at {it.where(eqn)})")
  return [_drop_moving(it, eqn, a, moving, f"'{eqn.primitive.name}'") for a in ins[:n]]

@rule("cumsum", "cumprod", "cummax", "cummin", "cumlogsumexp")
def cumulative(it, eqn, ins):
  for f in ins[0].factors:
    if eqn.params["axis"] in f.axes:
      it.pin(f.labels, f"'{eqn.primitive.name}' along the channel axis (at {it.where(eqn)})")
  return [list(ins[0].factors)]

@rule("gather", "scatter", "scatter_add", "scatter_mul", "scatter_min", "scatter_max",
      "scatter-add", "dynamic_update_slice")
def indexed(it, eqn, ins):
  for a in ins:
    it.pin_val(a, f"indexing operation '{eqn.primitive.name}' (at {it.where(eqn)})")
  return [[] for _ in eqn.outvars]

@rule("pad")
def pad(it, eqn, ins):
  moving = {d for d, c in enumerate(eqn.params["padding_config"]) if tuple(c) != (0, 0, 0)}
  it.pin_val(ins[1], f"padding value (at {it.where(eqn)})")
  return [_drop_moving(it, eqn, ins[0], moving, "padding")]

@rule("slice")
def slicing(it, eqn, ins):
  shape = shape_of(eqn.invars[0])
  p = eqn.params
  strides = p.get("strides") or (1,) * len(shape)
  moving = {d for d in range(len(shape))
            if p["start_indices"][d] != 0 or p["limit_indices"][d] != shape[d] or strides[d] != 1}
  return [_drop_moving(it, eqn, ins[0], moving, "slicing")]

@rule("dynamic_slice")
def dynamic_slice(it, eqn, ins):
  shape = shape_of(eqn.invars[0])
  moving = {d for d, s in enumerate(eqn.params["slice_sizes"]) if s != shape[d]}
  for a in ins[1:]:
    it.pin_val(a, f"index of 'dynamic_slice' (at {it.where(eqn)})")
  return [_drop_moving(it, eqn, ins[0], moving, "slicing")]

@rule("rev")
def rev(it, eqn, ins):
  return [_drop_moving(it, eqn, ins[0], set(eqn.params["dimensions"]), "reversal")]

@rule("split")
def splitting(it, eqn, ins):
  kept = _drop_moving(it, eqn, ins[0], {eqn.params["axis"]}, "splitting")
  return [kept for _ in eqn.outvars]

@rule("concatenate")
def concatenate(it, eqn, ins):
  dim = eqn.params["dimension"]
  out_shape = shape_of(eqn.outvars[0])
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
      shape[dim] = shape_of(var)[dim]
      blocks.append(np.full(shape, -1, np.int64) if f is None
                    else np.broadcast_to(f.labels, shape))
    factors.append(Factor(np.concatenate(blocks, axis=dim), tuple(sorted({*key, dim}))))
  return [factors]

@rule("optimization_barrier", "device_put")
def optimization_barrier(it, eqn, ins):
  return [list(a.factors) for a in ins]


@rule("dot_general")
def dot_general(it, eqn, ins):
  (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
  lc, rc, lb, rb = map(tuple, (lc, rc, lb, rb))
  lhs, rhs = ins
  ls, rs = shape_of(eqn.invars[0]), shape_of(eqn.invars[1])
  out_shape = shape_of(eqn.outvars[0])
  out_nd = len(out_shape)
  lfree = [d for d in range(len(ls)) if d not in lc and d not in lb]
  rfree = [d for d in range(len(rs)) if d not in rc and d not in rb]
  pos = [dict(zip(lb, range(len(lb)))), dict(zip(rb, range(len(rb))))]
  pos[0].update({d: len(lb) + k for k, d in enumerate(lfree)})
  pos[1].update({d: len(lb) + len(lfree) + k for k, d in enumerate(rfree)})
  contract = (lc, rc)
  batch = (lb, rb)
  shapes = (ls, rs)
  n_contracted = math.prod(ls[d] for d in lc)

  def carried(side: int, f: Factor) -> Factor:
    dims = [d for d in range(len(shapes[side])) if d not in contract[side]]
    return Factor(place(f.labels, dims, [pos[side][d] for d in dims], out_nd),
                  tuple(sorted(pos[side][a] for a in f.axes)))

  def flat(side: int, labels: np.ndarray) -> np.ndarray:
    full = [shapes[side][d] if d in contract[side] else 1 for d in range(len(shapes[side]))]
    lab = np.broadcast_to(labels, np.maximum(labels.shape, full))
    lab = np.moveaxis(lab, contract[side], range(lab.ndim - len(contract[side]), lab.ndim))
    return lab.reshape(-1)

  out_factors: list[Factor] = []
  kinds = (lhs.kind, rhs.kind)
  if sorted(kinds) == ["act", "par"]:
    a_side, w_side = (0, 1) if lhs.kind == "act" else (1, 0)
    act, w = ins[a_side], ins[w_side]
    wc = set(contract[w_side])
    weights = []
    for k, f in enumerate(w.factors):
      if set(f.axes) <= wc and f.axes:
        weights.append(flat(w_side, f.labels))
      elif set(f.axes) & wc:
        it.pin(f.labels, f"weight of '{w.layer}' mixes input and output axes (at {it.where(eqn)})")
      else:
        out_factors.append(carried(w_side, f))
    wval = np.moveaxis(np.asarray(w.value), contract[w_side],
                       range(len(shapes[w_side]) - len(wc), len(shapes[w_side])))
    wval = wval.reshape(-1, math.prod(shapes[w_side][d] for d in contract[w_side]))
    zero = ~np.any(wval != 0, axis=0)
    ac = set(contract[a_side])
    acts = []
    for f in act.factors:
      if not set(f.axes) & ac:
        out_factors.append(carried(a_side, f))
      elif not set(f.axes) <= ac:
        it.pin(f.labels, f"'{w.layer}' contracts an axis that also varies along others "
               f"(at {it.where(eqn)})")
      else:
        acts.append(flat(a_side, f.labels)[:, None])
    # A dense layer contracting the activation's last axis with its kernel's first
    # (nnx.Linear) can gather the features it reads.
    gather = (len(ac) == 1 and contract[a_side] == (len(shapes[a_side]) - 1,)
              and contract[w_side] == (0,) and len(shapes[w_side]) == 2)
    it.consumer(eqn, w.layer, acts, weights, zero, gather=gather)
    it.mac(w.layer, out_shape, out_factors, 1 if weights else n_contracted, weights[:1])
    return Special([out_factors], w.layer)
  # Activations times activations (attention's q k^T and weights v) or constants, or
  # parameters times parameters: slots on the batch axes travel on and both operands'
  # are coupled (one head of the queries meets the same head of the keys); the
  # contracted and the free ones are kept.
  both_act = kinds == ("act", "act")
  batch_factors: dict[tuple, list] = collections.defaultdict(list)
  for side, v in enumerate(ins):
    for f in v.factors:
      if set(f.axes) & set(contract[side]):
        it.pin(f.labels, f"contraction without a parameter weight (at {it.where(eqn)})")
      elif both_act and not set(f.axes) <= set(batch[side]):
        it.pin(f.labels, f"features of a product of two activations (at {it.where(eqn)})")
      else:
        g = carried(side, f)
        out_factors.append(g)
        if both_act and g.axes:
          batch_factors[g.axes].append(g.labels)
  for labels in batch_factors.values():
    for other in labels[1:]:
      it.uf.union_arrays(labels[0], other)
    if len(labels) > 1:
      it.mark_heads(labels)
  if "act" in kinds:
    it.mac("(no parameters)", out_shape, out_factors, n_contracted)
  return [out_factors]


@rule("conv_general_dilated")
def conv_general_dilated(it, eqn, ins):
  p = eqn.params
  lhs_spec, rhs_spec, out_spec = p["dimension_numbers"]
  lhs, rhs = ins
  rs = shape_of(eqn.invars[1])
  out_shape = shape_of(eqn.outvars[0])
  out_nd = len(out_shape)
  grouped = p["feature_group_count"] != 1 or p["batch_group_count"] != 1
  if lhs.kind != "act" or rhs.kind != "par" or grouped:
    why = ("grouped convolution" if grouped else "convolution without a parameter kernel")
    it.mac(rhs.layer if rhs.kind == "par" else "(no parameters)", out_shape, [],
           math.prod(rs) // rs[rhs_spec[0]])
    for v in ins:
      it.pin_val(v, f"{why} (at {it.where(eqn)})")
    return [[]]
  lb, lf = lhs_spec[0], lhs_spec[1]
  r_out, r_in = rhs_spec[0], rhs_spec[1]
  out_factors, weights = [], []
  for f in rhs.factors:
    if f.axes == (r_in,):
      weights.append(f.labels.reshape(-1))
    elif f.axes == (r_out,):
      out_factors.append(Factor(place(f.labels, [r_out], [out_spec[1]], out_nd),
                                (out_spec[1],)))
    else:  # spatial slots of the kernel feed every output channel: never removed
      it.pin(f.labels, f"kernel of '{rhs.layer}' along axes {f.axes}")
  rval = np.moveaxis(np.asarray(rhs.value), r_in, 0).reshape(rs[r_in], -1)
  zero = ~np.any(rval != 0, axis=1)
  acts = []
  for f in lhs.factors:
    if lf in f.axes:
      if not weights:
        it.pin(f.labels, f"kernel of '{rhs.layer}' has no input-channel axis to follow")
        continue
      shape = list(f.labels.shape)
      shape[lf] = rs[r_in]
      acts.append(np.moveaxis(np.broadcast_to(f.labels, shape), lf, 0).reshape(rs[r_in], -1))
    elif set(f.axes) <= {lb}:
      out_factors.append(Factor(place(f.labels, [lb], [out_spec[0]], out_nd),
                                (out_spec[0],) if f.axes else ()))
    else:
      it.pin(f.labels, f"spatial positions entering '{rhs.layer}'")
  it.consumer(eqn, rhs.layer, acts, weights, zero)
  window = math.prod(rs) // (rs[r_in] * rs[r_out])
  it.mac(rhs.layer, out_shape, out_factors, window * (1 if weights else rs[r_in]), weights[:1])
  return Special([out_factors], rhs.layer)


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


def evaluate(eqn, args) -> list:
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
