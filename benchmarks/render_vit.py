"""Renders results/vit.json (``benchmarks.bench_vit``): section 2e of benchmarks/README.md
and its headline rows. Called by ``benchmarks.render``."""

from __future__ import annotations

from benchmarks._md import _machine, _table

TITLE = "## 2e. Heads and neurons: a tiny ViT on MNIST, RMDA vs ProxSGD vs RAMDA (issue 21)"
LABELS = {"rmda": "RMDA", "prox_sgd": "ProxSGD", "ramda": "RAMDA"}


def _label(m):
  return LABELS.get(m, m)


def _pct(x):
  return f"{100 * x:.2f}%"


def _kept(pair):
  return f"{pair[0]}/{pair[1]}"


def _methods(rows):
  """The methods of ``rows`` in the order of :data:`LABELS`, then any other, first seen first."""
  seen = list(dict.fromkeys(r["method"] for r in rows))
  return [m for m in LABELS if m in seen] + [m for m in seen if m not in LABELS]


def _names(ms):
  ms = [_label(m) for m in ms]
  return ms[0] if len(ms) == 1 else ", ".join(ms[:-1]) + " and " + ms[-1]


def pareto(rows) -> list:
  """The runs no other run beats on both test accuracy and weighted group sparsity.

  A run is beaten when another has at least its accuracy and at least its
  weighted group sparsity, and more of one of them.
  """
  def beats(a, b):
    ge = (a["test_accuracy"] >= b["test_accuracy"]
          and a["weighted_group_sparsity"] >= b["weighted_group_sparsity"])
    gt = (a["test_accuracy"] > b["test_accuracy"]
          or a["weighted_group_sparsity"] > b["weighted_group_sparsity"])
    return ge and gt
  return [r for r in rows if not any(beats(o, r) for o in rows if o is not r)]


def ahead(rows) -> str:
  """Who is ahead where, computed from the sweep's runs (``rows``).

  Per lambda: the most accurate method(s) and the one(s) with the highest
  weighted group sparsity (or that no method removed a group); then how many
  runs of each method are on the Pareto front of (test accuracy, weighted
  group sparsity) over all lambdas.
  """
  if not rows:
    return "No run."
  clauses = []
  for lam in sorted({r["lam"] for r in rows}):
    at = [r for r in rows if r["lam"] == lam]
    acc = max(r["test_accuracy"] for r in at)
    best = [r for r in at if r["test_accuracy"] == acc]
    text = (f"at lambda {lam:g} {_names([r['method'] for r in best])} "
            f"{'is' if len(best) == 1 else 'are'} the most accurate ({_pct(acc)}, "
            f"heads {_kept(best[0]['heads_kept'])}, MLP units {_kept(best[0]['neurons_kept'])})")
    wgs = max(r["weighted_group_sparsity"] for r in at)
    if wgs == 0:
      text += " and no method removes a group"
    else:
      most = [r for r in at if r["weighted_group_sparsity"] == wgs]
      if [r["method"] for r in most] == [r["method"] for r in best]:
        text += f" and {'it removes' if len(best) == 1 else 'they remove'} the most"
      else:
        r = most[0]
        text += (f", {_names([r['method'] for r in most])} "
                 f"{'removes' if len(most) == 1 else 'remove'} the most (heads "
                 f"{_kept(r['heads_kept'])}, MLP units {_kept(r['neurons_kept'])}, "
                 f"{_pct(r['test_accuracy'])})")
    clauses.append(text)
  front = pareto(rows)
  counts = ", ".join(
      f"{_label(m)} {sum(1 for r in front if r['method'] == m)} of "
      f"{sum(1 for r in rows if r['method'] == m)}" for m in _methods(rows))
  out = "; ".join(clauses)
  return (out[0].upper() + out[1:] + ". On the Pareto front of test accuracy against "
          f"weighted group sparsity over all lambdas: {counts} runs.")


def edges(d) -> str:
  """A sentence naming the methods whose chosen learning rate is the smallest or largest tried."""
  low, high = [], []
  for m in _methods(d["sweep"]):
    tried = [r["lr"] for r in d["tuning"] if r["method"] == m]
    if len(tried) < 2:
      continue
    if d["chosen_lr"][m] == min(tried):
      low.append(m)
    elif d["chosen_lr"][m] == max(tried):
      high.append(m)
  parts = [f"the smallest learning rate tried for {_names(low)}"] if low else []
  parts += [f"the largest for {_names(high)}"] if high else []
  if not parts:
    return ""
  return ("The choice is at an edge of the grid (" + "; ".join(parts) + "): a wider "
          "grid might find a better one.")


def section(d) -> str:
  """Section 2e: test accuracy against heads and MLP units kept, per lambda and method."""
  if d is None:
    return f"{TITLE}\n\nNot run yet (`python -m benchmarks.bench_vit`).\n"
  s = d["settings"]
  methods = _methods(d["sweep"])
  grids = s.get("lr_grids", {})
  lam_tune = s.get("lam_tune", d["tuning"][0]["lam"])
  lines = [
      TITLE, "",
      f"**A short budget**: {s['epochs']} epochs on a {s['train']:,}-image subset of "
      f"MNIST ({s['validation']:,} more held out for validation, the {s['test']:,} test "
      f"images for the table), {len(s.get('seeds', [0]))} seed, batch {s['batch_size']}, "
      f"the learning rates times {s['gamma']:g} at steps {s['milestones_steps']}. The "
      "accuracies are far from a trained ViT's, and the comparison holds for this budget "
      "only.", "",
      f"Model: {s['model']}. Regularizer: {s['regularizer']}. Methods: RMDA: "
      f"`rj.rmda_multistep`, c {s['rmda_c0']:g}; ProxSGD: {s['prox_sgd']}; RAMDA: "
      f"{s.get('ramda', 'not run')}. Reported point: {s['reported_point']}. Machine: "
      f"{_machine(d.get('machine'))}; wall time {d['wall_time_s'] / 60:.1f} min.", "",
      "Tuning, the same for each method: "
      + ", ".join(f"{_label(m)} {sum(1 for r in d['tuning'] if r['method'] == m)}"
                  for m in methods)
      + " learning rates, trained on the training split at lambda "
      f"{lam_tune:g} and scored on the validation split; the best validation accuracy "
      "chose the learning rate of the whole lambda sweep.", "",
  ]
  rows = []
  for m in methods:
    tried = [r for r in d["tuning"] if r["method"] == m]
    rows.append([_label(m), ", ".join(f"{r['lr']:g}" for r in tried) or
                 ", ".join(f"{x:g}" for x in grids.get(m, [])),
                 "; ".join(f"{r['lr']:g}: {_pct(r['validation_accuracy'])} (heads "
                           f"{_kept(r['heads_kept'])}, units {_kept(r['neurons_kept'])})"
                           for r in tried),
                 f"{d['chosen_lr'][m]:g}"])
  lines += [_table(["method", "learning rates", f"validation accuracy at lambda "
                    f"{lam_tune:g}", "chosen"], rows), ""]
  edge = edges(d)
  if edge:
    lines += [edge, ""]

  def per_block(r, kind):
    fam = [v for k, v in r.get("kept_per_family", {}).items() if k.endswith(" " + kind)]
    return f" ({', '.join(str(v[0]) for v in fam)})" if len(fam) > 1 else ""

  rows = [[f"{r['lam']:g}", _label(r["method"]), f"{r['lr']:g}", _pct(r["test_accuracy"]),
           _kept(r["heads_kept"]) + per_block(r, "heads"),
           _kept(r["neurons_kept"]) + per_block(r, "neurons"),
           f"{100 * r['weighted_group_sparsity']:.1f}%", f"{r['wall_s']:.0f}"]
          for r in sorted(d["sweep"], key=lambda r: (r["lam"], methods.index(r["method"])))]
  lines += [
      _table(["lambda", "method", "lr", "test accuracy", "heads kept (per block)",
              "MLP units kept (per block)", "weighted group sparsity",
              "wall s (with compilation)"], rows), "",
      ahead(d["sweep"]), "",
      "Weighted group sparsity: the fraction of the grouped weights that lie in zero "
      "groups. The same lambda need not regularize the methods alike in a short run "
      "(RAMDA's prox acts in its metric `D = U^(1/3) + epsilon`, RMDA reports its "
      "dual-averaged Z, ProxSGD its iterate), so read the comparison along the front "
      "rather than lambda by lambda. One seed: differences of a point or two are within "
      "what another seed could change. Wall times ran on a shared machine: not a cost "
      "comparison (see section 4).", "",
  ]
  return "\n".join(lines)


def headline(d) -> list:
  """Headline rows: each method at the sweep's largest lambda."""
  if not d or not d.get("sweep"):
    return []
  s, rows = d["settings"], d["sweep"]
  lam = max(r["lam"] for r in rows)
  out = []
  for m in _methods(rows):
    r = next((r for r in rows if r["method"] == m and r["lam"] == lam), None)
    if r is None:
      continue
    measure = (f"ViT (tiny) heads and MLP units, short budget ({s['epochs']} epochs on a "
               f"{s['train'] / 1000:.1f}k MNIST subset, 1 seed, tuned alike on validation), "
               f"lambda {lam:g}: test accuracy; heads; MLP units kept") if not out else ""
    out.append([measure, m, f"{_pct(r['test_accuracy'])}; {_kept(r['heads_kept'])}; "
                f"{_kept(r['neurons_kept'])}"])
  return out
