"""What :func:`rmda_jax.slim.slim` returns: the slim model and its report.

Private to :mod:`rmda_jax.slim` (its names are re-exported there).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx

from rmda_jax import _slim_model as mdl

__all__ = ["LayerReport", "SlimReport", "SlimResult", "build_report"]


@dataclasses.dataclass(frozen=True)
class LayerReport:
  """One layer of a :class:`SlimReport`.

  Attributes:
    name: the layer's path in the model (``"blocks/0/conv1"``).
    params_before: trainable parameters (``nnx.Param``) before slimming.
    params_after: the same after slimming.
    macs_before: multiply-adds per example before slimming.
    macs_after: the same after slimming.
    change: the largest variable's shape change (``"kernel 5x5x6x16 -> 5x5x6x9"``),
      empty when the layer is unchanged.
  """
  name: str
  params_before: int
  params_after: int
  macs_before: int
  macs_after: int
  change: str = ""


@dataclasses.dataclass(frozen=True)
class SlimReport:
  """What slimming removed and what it bought; ``str(report)`` is a table.

  Multiply-adds count convolutions and dense layers (output elements times
  the contracted size) and elementwise products with parameters (BatchNorm's
  scale, and convolutions written as shifted products, such as the CPU fast
  path of the examples' LeNet5), per example of the batch; products of two
  activations (attention's scores and weighted values) are listed under
  ``"(no parameters)"``. After slimming they are counted from the plan: a
  removed channel or head removes its positions, and a :class:`GatheredLinear`
  counts the features it gathers.

  Attributes:
    layers: one :class:`LayerReport` per layer, in the order the forward pass
      uses them.
    batch_size: the example batch's size.
    seconds_before: median inference time per batch of the jitted model
      (warm, same batch, runs interleaved with the slim model's), or ``None``
      when not measured.
    seconds_after: the same for the slim model.
    timing_runs: how many runs the medians are over.
    input_features_before: features per example of the model's input.
    input_features_after: features per example the slim model expects.
    notes: why some channels whose readers are all zero were kept, attention
      heads kept and partly zero, gathers, normalized channels.
  """
  layers: tuple[LayerReport, ...]
  batch_size: int
  seconds_before: float | None
  seconds_after: float | None
  timing_runs: int
  input_features_before: int
  input_features_after: int
  notes: tuple[str, ...] = ()

  @property
  def params_before(self) -> int:
    return sum(l.params_before for l in self.layers)

  @property
  def params_after(self) -> int:
    return sum(l.params_after for l in self.layers)

  @property
  def macs_before(self) -> int:
    return sum(l.macs_before for l in self.layers)

  @property
  def macs_after(self) -> int:
    return sum(l.macs_after for l in self.layers)

  @property
  def nothing_removed(self) -> bool:
    """Whether the slim model has the same shapes as the model."""
    return (all(not l.change for l in self.layers)
            and self.input_features_after == self.input_features_before)

  def to_dict(self) -> dict:
    """A JSON-ready dict (layers, totals, times)."""
    d = dataclasses.asdict(self)
    d.update(params_before=self.params_before, params_after=self.params_after,
             macs_before=self.macs_before, macs_after=self.macs_after,
             nothing_removed=self.nothing_removed)
    return d

  def __str__(self) -> str:
    head = ("layer", "params before", "params after", "MACs/example before",
            "MACs/example after", "change")
    rows = [(l.name, f"{l.params_before:,}", f"{l.params_after:,}", f"{l.macs_before:,}",
             f"{l.macs_after:,}", l.change) for l in self.layers]
    rows.append(("total", f"{self.params_before:,}", f"{self.params_after:,}",
                 f"{self.macs_before:,}", f"{self.macs_after:,}", ""))
    widths = [max(len(r[k]) for r in [head, *rows]) for k in range(len(head))]

    def line(r):
      cells = [r[0].ljust(widths[0])] + [r[k].rjust(widths[k]) for k in range(1, 5)] + [r[5]]
      return "  ".join(cells).rstrip()

    out = [line(head), "  ".join("-" * w for w in widths[:5]) + "  " + "-" * widths[5]]
    out += [line(r) for r in rows[:-1]]
    out += ["  ".join("-" * w for w in widths[:5]), line(rows[-1])]

    def pct(a, b):
      return f" ({100 * (1 - b / a):.1f}% fewer)" if a else ""

    out.append(f"parameters: {self.params_before:,} -> {self.params_after:,}"
               f"{pct(self.params_before, self.params_after)}")
    out.append(f"multiply-adds per example: {self.macs_before:,} -> {self.macs_after:,}"
               f"{pct(self.macs_before, self.macs_after)}")
    out.append(f"input features per example: {self.input_features_before:,} -> "
               f"{self.input_features_after:,}")
    if self.seconds_before is not None and self.seconds_after is not None:
      ratio = self.seconds_before / self.seconds_after if self.seconds_after else float("inf")
      out.append(f"inference time per batch of {self.batch_size} (jit, warm, median of "
                 f"{self.timing_runs}): {1e3 * self.seconds_before:.3f} ms -> "
                 f"{1e3 * self.seconds_after:.3f} ms ({ratio:.2f}x)")
    if self.nothing_removed:
      out.append("nothing removed: no channel is zero in every layer that reads it")
    out += [f"note: {n}" for n in self.notes]
    return "\n".join(out)


@dataclasses.dataclass(frozen=True)
class SlimResult:
  """The slim model and its report.

  Attributes:
    model: the slim ``nnx.Module`` (new; the model passed to :func:`slim` is
      untouched). Same class and code, smaller variables.
    report: the :class:`SlimReport`.
    input_axis: with ``prune_inputs=True``, the input axis whose entries were
      removed, or ``None`` when the kept input features are given as indices
      into the flattened example (``x.reshape(n, -1)``).
    input_index: the kept input entries (indices along ``input_axis``, or into
      the flattened example), or ``None`` when the input is unchanged.
  """
  model: Any
  report: SlimReport
  input_axis: int | None = None
  input_index: np.ndarray | None = None

  def select_input(self, x: jax.Array) -> jax.Array:
    """The input the slim model expects, from a batch for the original model."""
    return mdl.select(x, self.input_axis, self.input_index)


def build_report(plan, leaves, new_leaves, variables, parts, *, batch: int, input_shape,
                 seconds: Sequence[float | None], timing_runs: int, notes: Sequence[str]):
  """The :class:`SlimReport` of a plan: parameters from the leaves, MACs from the plan."""
  names = list(dict.fromkeys([*plan.layer_order, *plan.macs,
                              *(mdl.layer_name(p) for p, v in zip(parts, variables)
                                if isinstance(v, nnx.Param))]))
  rows = []
  for name in names:
    idx = [i for i, p in enumerate(parts) if mdl.layer_name(p) == name]
    n_before = sum(int(np.size(leaves[i])) for i in idx if isinstance(variables[i], nnx.Param))
    n_after = sum(int(np.size(new_leaves[i])) for i in idx if isinstance(variables[i], nnx.Param))
    changed = [i for i in idx if np.shape(leaves[i]) != np.shape(new_leaves[i])]
    change = ""
    if changed:
      i = max(changed, key=lambda i: (np.ndim(leaves[i]), np.size(leaves[i])))
      change = f"{parts[i][-1]} {mdl.describe(np.shape(leaves[i]), np.shape(new_leaves[i]))}"
      gathered = [plan.gathers[i] for i in idx if i in plan.gathers]
      if gathered:
        change += f", reads {len(gathered[0])} gathered input features"
    rows.append(LayerReport(name, n_before, n_after, plan.macs.get(name, 0) // batch,
                            plan.macs_after.get(name, 0) // batch, change))
  features = math.prod(input_shape[1:])
  return SlimReport(
      layers=tuple(rows), batch_size=batch, seconds_before=seconds[0],
      seconds_after=seconds[1], timing_runs=timing_runs, input_features_before=features,
      input_features_after=features if plan.input_keep is None else int(plan.input_keep.sum()),
      notes=tuple(notes))
