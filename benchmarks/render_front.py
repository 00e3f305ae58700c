"""Renders the joint front (``benchmarks.bench_front``, issue 19 part 2): section 2f
of benchmarks/README.md, computed from the chunk files in ``results/front/``.
Called by ``benchmarks.render``."""

from __future__ import annotations

from pathlib import Path

from benchmarks import bench_front
from benchmarks._md import _table

TITLE = ("## 2f. The joint front: every method over its whole (learning rate, lambda) "
         "plane (issue 19)")
COMMAND = ("nice python -m benchmarks.bench_front --methods rmda prox_sgd prox_adam prox_ssi "
           "msgd --seeds 0 1 2   # then --render")


def _pct(ms, seeds, digits=2):
  """``mean +- std`` in percent of a ``{"mean", "std"}`` pair; the mean alone for one seed."""
  if len(seeds) < 2:
    return f"{100 * ms['mean']:.{digits}f}"
  return f"{100 * ms['mean']:.{digits}f} ± {100 * ms['std']:.{digits}f}"


def _seeds(seeds) -> str:
  """'seed 0' or 'seeds 0, 1'."""
  return ("seed " if len(seeds) == 1 else "seeds ") + ", ".join(map(str, seeds))


def _point_row(label, p):
  return [label, f"{p['lr']:g}", f"{p['lam']:g}", f"{100 * p['validation_accuracy']['mean']:.2f}",
          _pct(p["test_accuracy"], p["seeds"]), _pct(p["weighted_group_sparsity"], p["seeds"], 1),
          ",".join(str(s) for s in p["seeds"])]


def section(result: dict | None, png: str = "results/front.png") -> str:
  """Markdown of :func:`benchmarks.bench_front.render`'s result (None: not run yet)."""
  lines = [TITLE, ""]
  if result is None or not result["methods"]:
    lines += ["Not run yet: `" + COMMAND + "`.", ""]
    return "\n".join(lines)
  s = result["settings"] or {}
  labels = bench_front.LABELS
  done = "; ".join(f"{labels[m]}: seeds {', '.join(map(str, v)) or 'none'}"
                   for m, v in result["done"].items())
  lines += [
      f"`{COMMAND}`. LeNet5 (small), {s.get('data', s.get('dataset'))}; "
      f"{s.get('augmentation', '')}; {s.get('epochs')} epochs, lr x {s.get('gamma')} at "
      f"epochs {s.get('milestones_epochs')} (RMDA and RAMDA also restart there), batch "
      f"{s.get('batch_size')}; {s.get('regularizer')}; reported point: "
      f"{s.get('reported_point')}. Each (method, seed) is one compiled program over its lr x "
      "lambda grid (`rmda_jax.examples.sweep`). Every choice (each method's front, the "
      "joint front, the dense reference, the points near it) is made on the validation "
      "accuracy, as a mean over the finished seeds; test accuracy is read once per run, "
      "after its last epoch, and shown for the chosen points. Ran on: "
      f"{', '.join(result['devices'])}.",
      "",
  ]
  if result["partial"]:
    missing = "; ".join(f"{labels[m]} {v}" for m, v in result["missing_seeds"].items())
    lines += [f"**Partial: not every (method, seed) has run.** Done: {done}. Missing: "
              f"{missing}. The statements below hold for the runs done only.", ""]
  else:
    lines += [f"Done: {done}.", ""]
  if not_run := [labels[m] for m in bench_front.METHODS if m not in result["done"]]:
    lines += [f"Not run on this front (optional; `--methods {' '.join(not_run).lower()}`): "
              f"{', '.join(not_run)}.", ""]
  common = result.get("common_seeds")
  if common:
    text = (f"Every number below is a mean over {_seeds(common)}, the seeds that every "
            "point of every method has finished, so that the methods are compared on the "
            "same seeds.")
    unused = result.get("unused_seeds") or {}
    if unused:
      text += (" Finished but not used until every method has them: "
               + "; ".join(f"{labels[m]} {_seeds(v)}" for m, v in unused.items()) + ".")
    lines += [text, ""]
  elif result["methods"]:
    lines += ["No seed has finished for every point: each point is the mean over its own "
              "seeds, and the methods are not compared on the same seeds.", ""]
  dense = result["dense"]
  if dense is not None:
    lines += [f"Dense reference (MSGD, `optax.sgd` momentum 0.9, no regularizer; its lr of "
              f"best mean validation accuracy, {dense['lr']:g}): validation "
              f"{100 * dense['validation_accuracy']['mean']:.2f}%, test "
              f"{_pct(dense['test_accuracy'], dense['seeds'])}% (seeds {dense['seeds']}).", ""]
  rows = []
  for m, r in result["methods"].items():
    for p in r["front"]:
      rows.append(_point_row(labels[m], p))
  lines += ["Each method's front over its plane (points no other point of the same method "
            "beats in both mean validation accuracy and mean weighted group sparsity), "
            "sparsest last; mean ± std over the seeds where more than one has run:", "",
            _table(["method", "lr", "lambda", "val acc %", "test acc %", "weighted group sp %",
                    "seeds"], rows), ""]
  rows = []
  for m, r in result["methods"].items():
    near = r["sparsity_near_dense"]
    cells = []
    for d in bench_front.DELTAS:
      p = near.get(f"{d:g}")
      cells.append("none" if p is None else
                   f"{100 * p['weighted_group_sparsity']['mean']:.1f}% "
                   f"(lr {p['lr']:g}, λ {p['lam']:g})")
    rows.append([labels[m], f"{len(r['points'])}", f"{len(r['front'])}",
                 f"{r['on_joint_front']}", *cells])
  lines += ["Points on the joint front (the same rule over every regularized method's "
            "points) and the sparsest point within 0.1, 0.3 and 0.5 points of the dense "
            "model's validation accuracy:", "",
            _table(["method", "points", "on its front", "on the joint front",
                    *(f"sparsity within {d:g}" for d in bench_front.DELTAS)], rows), ""]
  gone = [f"{labels[m]} at " + ", ".join(
      f"(lr {c['lr']:g}, λ {c['lam']:g}" + (f": {_seeds(c['seeds'])}" if c.get("seeds") else "")
      + ")" for c in cs) for m, r in result["methods"].items() if (cs := r.get("collapsed"))]
  if gone:
    lines += ["Points with every group zero in at least one seed (the empty network: a "
              "constant output at chance accuracy; averaged with a seed that kept groups it "
              "would be a point no run reached), counted in `points` but left out of every "
              "front, with the seeds that collapsed: " + "; ".join(gone) + ".", ""]
  edges = [f"{labels[m]} at λ {e['lam']:g} (best lr {e['best_lr']:g}, {e['edge']} end of "
           f"{r['lrs']})" for m, r in result["methods"].items()
           for e in r["best_lr_on_grid_edge"]]
  if edges:
    lines += ["Best learning rate on the edge of its grid (the grid should be extended "
              "there before the front is final): " + "; ".join(edges) + ".", ""]
  lines += [f"![joint front]({png})", ""]
  return "\n".join(lines)


def claim(result: dict | None) -> str:
  """One sentence for the README's headline paragraph, from the same result."""
  if result is None or not result["methods"]:
    return ("The joint front over the whole (lr, lambda) plane (section 2f) has not run "
            "yet.")
  labels = bench_front.LABELS
  counts = ", ".join(f"{labels[m]} {r['on_joint_front']}" for m, r in result["methods"].items())
  done = "; ".join(f"{labels[m]} seeds {v}" for m, v in result["done"].items() if v)
  edge = [labels[m] for m, r in result["methods"].items() if r["best_lr_on_grid_edge"]]
  text = (f"Joint front over each method's whole (lr, lambda) plane, chosen on validation "
          f"(2f): points on it: {counts}")
  if result["partial"]:
    text += f" (partial: only {done} have run"
    if result.get("common_seeds"):
      text += f"; compared on {_seeds(result['common_seeds'])}"
    text += ")"
  if edge:
    text += f"; best lr on its grid's edge for {', '.join(edge)} (grid to extend)"
  return text + "."


def headline(result: dict | None) -> list:
  """Headline rows, one per method: its points on the joint front, and the sparsest
  point within 0.1, 0.3 and 0.5 points of the dense model's validation accuracy."""
  if result is None or not result["methods"] or not result.get("dense"):
    return []
  labels, s, out = bench_front.LABELS, result["settings"] or {}, []
  dense = result["dense"]
  for i, (m, r) in enumerate(result["methods"].items()):
    near = " / ".join("none" if p is None else
                      f"{100 * p['weighted_group_sparsity']['mean']:.1f}%"
                      for p in r["sparsity_near_dense"].values())
    measure = (f"joint front over each method's whole (lr, lambda) plane (2f), LeNet5 (small) "
               f"/ MNIST crop, {s.get('epochs')} epochs, chosen on validation"
               + (", partial (seeds in the section)" if result["partial"] else "")
               + ": points on the joint front of all points; weighted group sparsity of the "
               "sparsest point within " + " / ".join(r["sparsity_near_dense"])
               + " points of the dense model's validation accuracy "
               f"({100 * dense['validation_accuracy']['mean']:.2f}%)") if i == 0 else ""
    seeds = sorted({x for p in r["points"] for x in p["seeds"]})
    out.append([measure, labels[m], f"{r['on_joint_front']} of {len(r['points'])}; {near} "
                f"(seeds {', '.join(map(str, seeds))})"])
  return out


def load(results: Path) -> dict | None:
  """The fronts from ``results/front/`` (None when no chunk has finished)."""
  parts = Path(results) / "front"
  if not parts.is_dir() or not any(parts.glob("*.json")):
    return None
  return bench_front.render(parts)
