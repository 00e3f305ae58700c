"""What ``rmda-train`` shows at the end of a run: the final table, groups kept, the plot."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

__all__ = ["fmt_pct", "layer_groups", "units_kept", "units_words", "final_table",
           "write_plot"]


def fmt_pct(x: float) -> str:
  """``0.9834`` -> ``"98.34%"``."""
  return f"{100 * x:.2f}%"


def layer_groups(support) -> dict[str, str]:
  """Groups kept per regularized layer.

  Args:
    support: ``rmda_jax.group_support(params, regularizer)`` (None on the
      leaves the regularizer leaves alone).

  Returns:
    ``{leaf path: "kept/total"}``, e.g. ``{"['conv1']['kernel']": "3/6"}``.
  """
  out = {}
  for path, s in jax.tree_util.tree_flatten_with_path(support)[0]:
    if s is None:
      continue
    s = np.asarray(s)
    out[jax.tree_util.keystr(path)] = f"{int(s.sum())}/{s.size}"
  return out


def units_kept(support) -> dict[str, dict[str, str]]:
  """Attention heads and MLP units kept per block (``--regularizer heads_and_neurons``).

  Args:
    support: ``rmda_jax.group_support(params, rj.head_and_neuron_lasso(...))``:
      one bool array per family, keyed ``"<module path> heads"`` or
      ``"<module path> neurons"``.

  Returns:
    ``{"heads_kept": {module path: "kept/total"}, "neurons_kept": {...}}``,
    e.g. ``{"heads_kept": {"blocks/0/attn": "3/4"}, "neurons_kept":
    {"blocks/0": "41/64"}}``, blocks in the model's order.
  """
  out = {"heads_kept": {}, "neurons_kept": {}}
  for key, s in support.items():
    name, _, kind = key.rpartition(" ")
    if kind in ("heads", "neurons"):
      s = np.asarray(s)
      out[f"{kind}_kept"][name] = f"{int(s.sum())}/{s.size}"
  return out


def units_words(row: dict) -> str:
  """``"heads 4/4 3/4  neurons 60/64 41/64"``: the per-epoch line's counts, block by block."""
  return "  ".join(f"{kind} {' '.join(row[kind + '_kept'].values())}"
                   for kind in ("heads", "neurons") if row.get(kind + "_kept"))


def _is_nuclear(summary: dict) -> bool:
  return (summary.get("config") or {}).get("regularizer") == "nuclear" \
      or summary.get("full_rank") is not None


def final_table(summary: dict) -> list[str]:
  """The lines printed at the end of a run, from ``summary.json``'s fields.

  With the nuclear norm the "groups" are each kernel's rank-one components, so
  the group sparsity is the share of the rank dropped and the groups kept are
  the rank kept; the table says so.
  """
  rows = [("test accuracy", fmt_pct(summary["test_accuracy"]))]
  if summary["test_accuracy_w"] is not None:
    rows.append(("test accuracy at W", fmt_pct(summary["test_accuracy_w"])))
  if _is_nuclear(summary):
    labels = ("rank dropped (zero singular values / full rank)",
              "rank dropped, weighted by max(m, n) per kernel", "rank kept per layer")
  else:
    labels = ("group sparsity", "weighted group sparsity", "groups kept per layer")
  rows += [
      ("objective (epoch-mean train loss + psi)", f"{summary['objective']:.4f}"),
      (labels[0], fmt_pct(summary["group_sparsity"])),
      (labels[1], fmt_pct(summary["weighted_group_sparsity"])),
      ("unstructured sparsity", fmt_pct(summary["sparsity"])),
      ("wall time", f"{summary['wall_time_s']:.1f} s"),
  ]
  width = max(len(k) for k, _ in rows)
  lines = [f"final (reported point: {summary['reported_point']})"]
  lines += [f"  {k:<{width}}  {v}" for k, v in rows]
  lines.append(f"  {labels[2]}: "
               + ", ".join(f"{k} {v}" for k, v in summary["groups_kept"].items()))
  return lines


def write_plot(rows: list[dict], path: str | Path) -> None:
  """Accuracy, sparsity and support changes per epoch (``metrics.jsonl`` rows) as a PNG.

  matplotlib is imported here, not with the module: only ``--plot`` needs it,
  and its import would slow down the start of every other run.
  """
  from matplotlib.figure import Figure  # optional: only --plot needs it

  ep = [r["epoch"] for r in rows]
  fig = Figure(figsize=(13, 3.6))
  ax = fig.subplots(1, 3)
  ax[0].plot(ep, [100 * r["test_accuracy"] for r in rows], marker="o")
  ax[0].set(title="test accuracy", xlabel="epoch", ylabel="%")
  ax[1].plot(ep, [100 * r["group_sparsity"] for r in rows], marker="o", label="group")
  ax[1].plot(ep, [100 * r["weighted_group_sparsity"] for r in rows], marker="s",
             label="weighted group")
  ax[1].plot(ep, [100 * r["sparsity"] for r in rows], marker="^", label="unstructured")
  ax[1].set(title="sparsity (reported point)", xlabel="epoch", ylabel="%")
  ax[1].legend()
  ax[2].plot(ep, [r["support_changes"] for r in rows], marker="o")
  ax[2].set(title="groups changing zero/nonzero status", xlabel="epoch")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
