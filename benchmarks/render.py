"""Renders benchmarks/results/*.json into benchmarks/README.md and the main
README's headline table (between the ``<!-- headline:start/end -->`` markers) and the
measured part of its opening paragraph (``<!-- measured:start/end -->``).

Every number printed here is read from a committed results file; a missing
file is reported as "not run".

  python -m benchmarks.render        # from the repository root
"""

from __future__ import annotations

import json
import os
import re

from benchmarks import render_deep
from benchmarks import render_front
from benchmarks import render_sweep
from benchmarks import render_vit
from benchmarks._md import _machine, _table

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
ROOT = os.path.dirname(HERE)


def _load(name):
  path = os.path.join(RESULTS, name)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


# ------------------------------------------------------------ sections
def exact_support(hist):
  """(first epoch whose support match is 1.0, epoch from which it stays 1.0 to the end);
  None where there is none. ``hist``: per-epoch records with ``epoch``, ``support_match``."""
  first = next((h["epoch"] for h in hist if h["support_match"] == 1.0), None)
  from_on = None
  for h in reversed(hist):
    if h["support_match"] != 1.0:
      break
    from_on = h["epoch"]
  return first, from_on


def identification(d):
  if d is None:
    return "## 1. Identification\n\nNot run yet (`python -m benchmarks.bench_identification`).\n", None
  s, opt = d["settings"], d["optimum"]
  lines = [
      "## 1. Identification (convex, exact answer known)",
      "",
      f"{s['model']}, {s['dataset']}, {s['regularizer']}; batch {s['batch']}, "
      f"{s['epochs']} epochs, milestones at epochs {s['milestones_epochs']}; "
      f"{s['dtype']}. Machine: {_machine(d['machine'])}; wall time "
      f"{d['wall_seconds'] / 60:.1f} min{' (quick mode)' if d['quick'] else ''}.",
      "",
      f"Optimum: {opt['method']}; optimality residual {opt['residual']:.1e} "
      f"({opt['residual_definition']}); {opt['nonzero_groups']} of {opt['groups']} "
      f"groups nonzero; the zero group closest to entering has gradient norm "
      f"{opt['max_zero_group_gradient_ratio']:.3f} x its threshold.",
      "",
  ]
  settings = [f"{name}: `{s[name]}`" for name in d["methods"] if name in s]
  if settings:
    lines += ["Methods (the authors' settings for this problem): " + "; ".join(settings) + ".",
              ""]
  def row(label, hist):
    last = hist[-1]
    tail = hist[-max(1, len(hist) // 10):]
    first, from_on = exact_support(hist)
    flips = sum(h["changes"] or 0 for h in tail)
    cells = [label, len(hist), f"{last['support_match']:.4f}",
             f"{last['objective_gap']:.2e}", f"{last['distance']:.3e}",
             f"{flips} (epochs {tail[0]['epoch']}-{last['epoch']})",
             first or "never", from_on or "never"]
    return cells, last, first, from_on

  rows, finals, headline = [], {}, []
  measure = ("identification (logistic regression / MNIST, convex, optimum known), last "
             "epoch: groups matching the optimum's zero/nonzero status; status flips in "
             "the last 10% of epochs; F - F*; ‖W - W*‖")
  for name, res in d["methods"].items():
    for kind, hist in res["history"].items():
      label = name if kind == "W" else f"{name}, structured point Z"
      cells, last, _, _ = row(label, hist)
      rows.append(cells)
      finals[label] = last
      headline.append([measure, label, f"{cells[2]}; {cells[5].split()[0]}; "
                                       f"{cells[3]}; {cells[4]}"])
  long = d.get("rmda_long")
  long_cells = {}
  if long:
    for kind, hist in long["history"].items():
      label = (f"RMDA, {long['epochs']} epochs" if kind == "W"
               else f"RMDA, {long['epochs']} epochs, structured point Z")
      long_cells[kind] = row(label, hist)
      rows.append(long_cells[kind][0])
  lines.append(_table(
      ["method (point)", "epochs", "support match, last epoch", "F(W) - F(W*), last epoch",
       "‖W - W*‖, last epoch", "status changes, last 10% of epochs",
       "exact support first at epoch", "exact support from epoch on (kept to the end)"],
      rows))

  # The same numbers in words: who is best and worst on each measure, RMDA included.
  w_only = {k: v for k, v in finals.items() if "structured point" not in k}
  if w_only:
    def extremes(key, fmt, best_is_max):
      order = sorted(w_only, key=lambda k: w_only[k][key], reverse=best_is_max)

      def tied(end):  # every method sharing the best (or worst) value
        v = w_only[end][key]
        return f"{' and '.join(k for k in order if w_only[k][key] == v)} ({fmt.format(v)})"
      return order, f"best {tied(order[0])}, worst {tied(order[-1])}"
    by_match, match_text = extremes("support_match", "{:.4f}", True)
    by_gap, gap_text = extremes("objective_gap", "{:.2e}", False)
    by_dist, dist_text = extremes("distance", "{:.3e}", False)
    lines += ["", f"At the last epoch ({s['epochs']}), across the iterates W: support match "
              f"{match_text}; F(W) - F(W*) {gap_text}; ‖W - W*‖ {dist_text}."
              + (f" The method whose zero pattern is closest to the optimum's "
                 f"({by_match[0]}) is not the one closest to the optimum in "
                 + " or ".join(m for m, order in (("F - F*", by_gap), ("‖W - W*‖", by_dist))
                               if order[0] != by_match[0]) + "."
                 if by_match[0] != by_gap[0] or by_match[0] != by_dist[0] else "")]
  if long:
    cells, last, first, from_on = long_cells.get("Z", long_cells["W"])
    vs = long.get("vs_RMDA_run") or {}
    # Mismatched groups split into extra nonzeros and missed ones.
    wrong = round((1 - last["support_match"]) * opt["groups"])
    surplus = last["nonzero_groups"] - opt["nonzero_groups"]
    extra, missing = (wrong + surplus) // 2, (wrong - surplus) // 2
    lines += ["", f"RMDA run alone for {long['epochs']} epochs (same seed and "
              f"milestones {long['milestones_epochs']}, so its last stage runs "
              f"{max(0, long['epochs'] - long['milestones_epochs'][-1])} epochs instead of "
              f"{s['epochs'] - s['milestones_epochs'][-1]}; {long['seconds'] / 60:.1f} min): "
              f"at epoch {long['epochs']} its structured point Z matches "
              f"{last['support_match']:.4f} of the groups, F - F* {last['objective_gap']:.2e}, "
              f"‖Z - W*‖ {last['distance']:.3e}; "
              f"{extra} groups nonzero that are zero at W*, {missing} of W*'s nonzero "
              f"groups zero; last support change at epoch "
              f"{long['summary']['Z']['last_epoch_with_support_change']}. "
              + (f"The exact optimal support was first reached at epoch {first}"
                 + (f" and held from epoch {from_on} to the end." if from_on
                    else ", but not held to the end.")
                 if first else
                 f"It never reached the exact optimal support (best match "
                 f"{long['summary']['Z']['best_support_match']:.4f}, first at epoch "
                 f"{long['summary']['Z']['first_epoch_best_support_match']}).")
              + (f" Over the {vs['epochs_compared']} epochs it shares with the "
                 f"{s['epochs']}-epoch RMDA run the support match agrees in "
                 f"{vs['epochs_with_same_support_match']} and F - F* differs by at most "
                 f"{vs['max_relative_objective_gap_difference']:.1e} (relative)."
                 if vs else "")]
    headline.append([
        f"identification, RMDA alone with a longer last stage ({long['epochs']} epochs): "
        f"exact optimal support reached?; then, last epoch, support match; F - F*; "
        f"‖W - W*‖", f"RMDA ({long['epochs']} epochs), structured point Z",
        (f"from epoch {from_on}" if from_on else
         f"first at epoch {first}, not kept" if first else "never")
        + f"; {cells[2]}; {cells[3]}; {cells[4]}"])
  if d.get("merged"):
    lines += ["", "Runs merged into this file (the machine line above is the last "
              "run's): " + "; ".join(d["merged"]) + "."]
  lines += ["", "![identification](results/identification.png)", ""]
  return "\n".join(lines), headline


def cost(d):
  if d is None:
    return "## 4. Cost per step\n\nNot run yet (`python -m benchmarks.bench_cost`).\n", None
  lines = [
      "## 4. Cost per step and its bandwidth bound",
      "",
      "Jitted `update + apply_updates`, params and state donated, all "
      "optimizers interleaved round by round in one run; median of "
      f"{d['repeats']} rounds. Machine: {_machine(d['machine'])}; load average "
      f"{d['machine'].get('load_average_start')} at start, "
      f"{d.get('load_average_end')} at the end. `passes` is the least number of "
      "parameter-sized float32 arrays the step must read or write; the bound is "
      "passes x bytes / the streaming bandwidth measured in the same run.",
      "",
  ]
  headline = {}
  for model, m in d["models"].items():
    lines.append(f"### {model}: {m['num_params'] / 1e6:.2f}M parameters, "
                 f"{m['num_leaves']} leaves, bandwidth {m['memory_bandwidth_GBps']:.1f} GB/s")
    lines.append("")
    rows = []
    for name, r in m["results"].items():
      rows.append([name, f"{r['median_ms']:.2f}", f"{r['ratio_to_sgd']:.2f}",
                   r.get("min_passes", "-"),
                   f"{r['bound_ms']:.2f}" if "bound_ms" in r else "-",
                   f"{r['fraction_of_bound']:.2f}" if "fraction_of_bound" in r else "-"])
      headline[(model, name)] = r["ratio_to_sgd"]
    lines.append(_table(["optimizer", "ms/step", "x optax.sgd", "passes",
                         "bound ms", "fraction of bound"], rows))
    lines.append("")
  return "\n".join(lines), headline


def ynn_cost(runs):
  """Section 4c: the optimizer step under the three XLA:CPU YNNPACK settings."""
  runs = {k: v for k, v in runs.items() if v is not None}
  if not runs:
    return ""
  any_run = next(iter(runs.values()))
  names = list(any_run["results"])
  lines = [
      "## 4c. The optimizer step under XLA:CPU's YNNPACK settings",
      "",
      f"`python -m benchmarks.bench_baselines_cost --only rmda,prox_sgd --repeats 10` on the "
      f"{any_run['model']}-shaped pytree ({any_run['num_params'] / 1e6:.1f}M parameters), "
      "one run per setting (the flag is process-wide), each a ratio to optax.sgd "
      "measured in its own run. `all` is jaxlib's default (what a user of the "
      "library gets), `reduce` what `rmda-train` sets, `none` no YNNPACK fusions. "
      "Machine: " + _machine(any_run["machine"]) + ".",
      "",
      _table(["optimizer"] + [f"x sgd, {k}" for k in runs],
             [[n] + [f"{r['results'][n]['ratio_to_sgd']:.2f}" for r in runs.values()]
              for n in names]),
      "",
      _table(["setting", "XLA_FLAGS", "sgd ms", "load average at start"],
             [[k, f"`{r['machine'].get('xla_flags', '')}`",
               f"{r['results']['optax.sgd(momentum=0.9)']['median_ms']:.1f}",
               f"{r['load_average_start'][0]:.2f}"] for k, r in runs.items()]),
      "",
  ]
  return "\n".join(lines)


def _load_1min(d):
  """[1-minute load average at the start, at the end] of a run."""
  return [d["load_average_start"][0], d["load_average_end"][0]]


def _train_step_tables(d):
  sps = d["samples_per_s_median"]
  return [
      _table(["variant", "samples/s", "epoch s"],
             [[k, f"{v:.0f}", f"{d['epoch_s_median'][k]:.1f}"] for k, v in sps.items()]),
      "",
      _table(["ratio", "value"], [[k, f"{v:.3f}"] for k, v in d["ratios"].items()]),
      "",
  ] + ([
      "Paired within each round (same load on both):",
      "",
      _table(["ratio", "per round", "median"],
             [[k, " ".join(f"{x:.2f}" for x in d["ratios_per_round"][k]), f"{v:.3f}"]
              for k, v in d["ratios_per_round_median"].items()]),
      "",
  ] if "ratios_per_round_median" in d else [])


def train_step(d, d_ynn=None, d_none=None):
  if d is None:
    return "## 4b. Training step\n\nNot run yet (`python -m benchmarks.bench_train_step`).\n", None
  lines = [
      "## 4b. Whole training step: LeNet5 (small), batch 128, MNIST-shaped data",
      "",
      f"Forward, backward and update, one epoch-worth of steps per variant per "
      f"round, {d['rounds']} rounds"
      + (f", the variants interleaved in chunks of {d['chunk']} steps"
         if d.get("chunk") else ", the variants interleaved round by round")
      + f"; median. Versions "
      f"{d.get('versions')}; machine {d.get('machine')}; load average before/after "
      f"{_load_1min(d)}. XLA:CPU YNNPACK fusions: "
      f"{d.get('ynn_fusions', 'jaxlib default')} (`XLA_FLAGS={d.get('xla_flags', '')!r}`), "
      f"as `rmda-train` runs it. Target: PyTorch (2 threads) / jax+rmda at most 1.5.",
      "",
      *_train_step_tables(d),
  ]
  for other, what in ((d_ynn, "all of jaxlib's default YNNPACK fusions (`--ynn all`)"),
                      (d_none, "no YNNPACK fusions at all (`--ynn none`)")):
    if other is not None:
      lines += [
          f"The same benchmark with {what}, a separate run (the flag is process-wide; "
          f"load average before/after {_load_1min(other)}):",
          "",
          *_train_step_tables(other),
      ]
  return "\n".join(lines), d


def generic(title, d, hint, stem, exclude=()):
  """Sections whose scripts render their own summary table into the JSON."""
  if d is None:
    return f"## {title}\n\nNot run yet (`{hint}`).\n"
  wall = d.get("wall_seconds", d.get("wall_s", 0))
  lines = [f"## {title}", "", f"Machine: {_machine(d.get('machine'))}; "
           f"wall time {wall / 60:.1f} min"
           f"{' (quick mode)' if d.get('quick') else ''}.", ""]
  settings = d.get("settings")
  if settings:
    lines.append("Settings: " + "; ".join(f"{k}: {v}" for k, v in settings.items()
                                          if not isinstance(v, (dict, list))) + ".")
    lines.append("")
  if d.get("complete") is False:
    lines += ["**This run did not complete**: the table holds the runs that "
              "finished.", ""]
  for key in ("table", "sweep"):
    rows = d.get(key)
    if isinstance(rows, list) and rows and isinstance(rows[0], dict):
      head = [h for h in rows[0] if h not in ("values", "seeds", "train_wall_s")]
      if key == "sweep":
        lines.append("Sweep:")
        lines.append("")
      lines.append(_table(head, [[_fmt(r.get(h)) for h in head] for r in rows]))
      lines.append("")
  for png in sorted(os.listdir(RESULTS)):
    if png.endswith(".png") and png.startswith(stem) and not png.startswith(tuple(exclude)):
      lines.append(f"![{png}](results/{png})")
  lines.append("")
  return "\n".join(lines)


LOW_RANK_EXTRA = "low_rank_lam"  # results of extra sweep points, one lambda per file


def low_rank(d, extra=()):
  """Section 2c: accuracy against total rank kept with the nuclear norm.

  ``extra``: results of ``bench_low_rank --name low_rank_lam<lam>`` runs (same
  settings, one more lambda): their rows join the sweep table, marked.
  """
  title = "## 2c. Low rank at accuracy: the nuclear norm (issue 14)"
  if d is None:
    return f"{title}\n\nNot run yet (`python -m benchmarks.bench_low_rank`).\n"
  s = d["settings"]
  wall = d.get("wall_s") or 0
  load = ", ".join(f"{x:.1f}" for x in d.get("machine", {}).get("load_average_start", []))
  # Which method kept less rank, lambda by lambda (seed 0), read from the sweep.
  frac = {(r["model"], r["method"], r["lam"]): r["rank_fraction"]["mean"]
          for r in d.get("sweep", [])}
  pairs = [(frac[k], frac[(k[0], "prox_sgd", k[2])]) for k in frac
           if k[1] == "rmda" and (k[0], "prox_sgd", k[2]) in frac]
  verdict = ""
  if pairs and all(a > b or a == b == 1.0 for a, b in pairs):
    verdict = ("; at this budget RMDA kept as much or more rank than ProxSGD at every "
               "lambda and model of the sweep (more wherever either removed any). A possible reason, not tested here: RMDA's prox "
               "threshold grows with the steps of a stage and is applied around W0, the "
               "random initialisation in the first stage, so short stages remove little "
               "rank")
  elif pairs and all(a <= b for a, b in pairs) and any(a < b for a, b in pairs):
    verdict = "; at this budget RMDA kept as little or less rank than ProxSGD at every lambda"
  lines = [
      title, "",
      f"`rj.nuclear_norm(lam)` on every kernel (conv kernels as `(kh*kw*in, out)` "
      f"matrices). {s['epochs']} epochs on {s['data']}, batch {s['batch_size']} "
      f"({s['total_steps']} steps per run), milestones at steps {s['milestones_steps']} "
      f"(lr x {s['gamma']}; RMDA restarts, c 0.1 -> 1); test set: {s['test_set']}. "
      "RMDA is reported at its structured point Z, ProxSGD (the authors' EMA form run "
      "as heavy-ball) and MSGD (dense reference, no regularizer) at the iterate. "
      f"Rank: {s['rank_tolerance']}. `factored` = kernel parameters when each kernel "
      "is stored as rank-r factors, `sum min(mn, r(m+n)) / sum mn`. Machine: "
      f"{_machine(d.get('machine'))}, OPENBLAS_NUM_THREADS="
      f"{d.get('machine', {}).get('openblas_num_threads')}; wall time "
      f"{wall / 60:.1f} min{' (quick mode)' if d.get('quick') else ''}.", "",
      f"**Budget.** Sized to fit about 40 minutes of a shared 2-core CPU: "
      f"{s['epochs']} epochs on a {s['data'].split('subset of ')[-1].split(' ')[0]}-image "
      f"subset, seeds {s['seeds']} for the main lambda ({s['lam_main']:g}) and seed 0 for "
      f"the sweep ({', '.join(f'{x:g}' for x in s['sweep_lams'])}); the run took "
      f"{wall / 60:.1f} min (load average {load} at its start). These are short, "
      f"unconverged runs{verdict}. The numbers say what happens at this budget, not at "
      "the papers' settings.", "",
  ]
  if d.get("complete") is False:
    lines += ["**This run did not complete**: the tables hold the runs that finished.", ""]

  def rows_of(rows):
    out = []
    for r in rows:
      acc, frac = r["test_accuracy"], r["rank_fraction"]
      rank = r["rank"]
      out.append([r["model"], r["method"], "-" if r["method"] == "msgd" else f"{r['lam']:g}",
                  f"{100 * acc['mean']:.2f} ± {100 * acc['std']:.2f}",
                  f"{rank['mean']:.0f}/{r.get('full_rank', '?')}",
                  f"{100 * frac['mean']:.1f} ± {100 * frac['std']:.1f}",
                  f"{100 * r['factored_params_fraction']['mean']:.1f}", acc["n"]])
    return out

  head = ["model", "method", "lambda", "test acc %", "rank kept", "rank kept %",
          "factored %", "seeds"]
  sweep_rows = rows_of(d.get("sweep", []))
  notes = []
  for name, e in extra:
    for row in rows_of(e.get("table", [])):
      row[2] += " *"
      sweep_rows.append(row)
    notes.append(f"`results/{name}` (`--seeds 1 --methods rmda prox_sgd --lam "
                 f"{e['settings']['lam_main']:g} --sweep-lams --name {name[:-5]}`, "
                 f"wall time {(e.get('wall_s') or 0) / 60:.1f} min)")
  order = {m: i for i, m in enumerate(("mlp", "lenet5_large"))}
  sweep_rows.sort(key=lambda r: (order.get(r[0], 9), r[1], float(r[2].rstrip(" *"))))
  lines += [_table(head, rows_of(d.get("table", []))), "", "Sweep (seed 0):", "",
            _table(head, sweep_rows), ""]
  if notes:
    lines += ["\\* one more lambda, run afterwards with the same settings: "
              + "; ".join(notes) + ". The plot shows the main run only.", ""]
  if d.get("plot"):
    lines += [f"![low rank](results/{d['plot']})", ""]
  return "\n".join(lines)


def cost_nuclear(d):
  """Section 4d: the step with the nuclear norm (one SVD per kernel) against optax.sgd."""
  title = "## 4d. Cost per step with the nuclear norm (issue 14)"
  if d is None:
    return (f"{title}\n\nNot run yet (`python -m benchmarks.bench_cost --nuclear "
            "--models mlp lenet5`).\n")
  lines = [
      title, "",
      "`python -m benchmarks.bench_cost --nuclear --models mlp lenet5`: as section 4 "
      "(jitted, donated `update + apply_updates`, interleaved, median of "
      f"{d['repeats']} rounds), with `rj.nuclear_norm({d['settings']['nuclear_strength']:g})`"
      ": one thin SVD (`jnp.linalg.svd`, LAPACK on CPU) per kernel per step, which "
      "dominates the step. Machine: "
      f"{_machine(d['machine'])}, OPENBLAS_NUM_THREADS="
      f"{d['machine'].get('openblas_num_threads')}; load average "
      f"{d['machine'].get('load_average_start')} at start, {d.get('load_average_end')} "
      "at the end.", "",
  ]
  keep = ("optax.sgd(momentum=0.9)", "optax.adam", "rmda (none)", "rmda (group_lasso)",
          "prox_sgd (group_lasso)", "rmda (nuclear_norm)", "prox_sgd (nuclear_norm)")
  for model, m in d["models"].items():
    lines += [f"### {model}: {m['num_params'] / 1e6:.2f}M parameters, "
              f"{m['num_leaves']} leaves", ""]
    rows = [[name, f"{r['median_ms']:.2f}", f"{r['ratio_to_sgd']:.2f}"]
            for name, r in m["results"].items() if name in keep]
    lines += [_table(["optimizer", "ms/step", "x optax.sgd"], rows), ""]
  return "\n".join(lines)


RAMDA_MADGRAD_GOAL = 2.0  # issue 20: RAMDA's warm step at most 2x optax.contrib.madgrad's
RAMDA_BOUND_GOAL = 1.5  # ... and at most 1.5x its own bandwidth bound


RAMDA_GL_KEYS = ("ramda (group_lasso)", "ramda (group_lasso, newton)")


# Section 4 (cost.json) times ProxGen with its default inner solver; section 4f times it
# with RAMDA's: the headline names which row is which.
HEADLINE_COST_LABELS = {
    "prox_adam (group_lasso)": "prox_adam (group_lasso, inner_stop='change', the default)"}


def ramda_headline(d) -> list:
  """Headline rows: RAMDA's step against MADGRAD's (section 4f), per inner solver.

  And ProxGen's step with RAMDA's inner solver (``inner_stop='objective'``) against
  optax.sgd, measured in the same run.
  """
  res = ((d or {}).get("models", {}).get("resnet50") or {}).get("results", {})
  rows = [[f"step time x optax.contrib.madgrad, resnet50-shaped pytree (section 4f; inner "
           f"iterations)", name, f"{res[name]['ratio_to_madgrad']:.2f} "
           f"({res[name].get('inner_iterations_mean', 0):.1f})"]
          for name in ("ramda (none)", *RAMDA_GL_KEYS)
          if "ratio_to_madgrad" in res.get(name, {})]
  pg = res.get("prox_adam (group_lasso)", {})
  if "ratio_to_sgd" in pg:
    rows.append(["step time x optax.sgd(momentum=0.9), resnet50-shaped pytree (section 4f)",
                 "prox_adam (group_lasso, inner_stop='objective')", f"{pg['ratio_to_sgd']:.2f}"])
  return rows


def cost_ramda(d, before=None):
  """Section 4f: RAMDA's step against optax.sgd and MADGRAD, its inner iterations and bound.

  ``before``: ``cost.json`` (ProxGen's step before it could use RAMDA's solver).
  """
  title = "## 4f. Cost per step of RAMDA (issue 20)"
  if d is None:
    return f"{title}\n\nNot run yet (`python -m benchmarks.bench_cost --ramda`).\n"
  s = d["settings"]
  rs = s.get("ramda", {})
  lines = [
      title, "",
      "`python -m benchmarks.bench_cost --ramda`: as section 4 (jitted, donated "
      "`update + apply_updates`, interleaved, median of "
      f"{d['repeats']} rounds), RAMDA (`rj.ramda`, the authors' defaults lr "
      f"{rs.get('learning_rate', '?'):g}, c {rs.get('momentum', '?'):g}, epsilon "
      f"{rs.get('epsilon', '?'):g}) with no regularizer, L1 ({s['l1_strength']:g}) and "
      f"group LASSO ({s['gl_strength']:g}), next to optax.sgd, optax.contrib.madgrad "
      "and ProxGen (`rj.prox_adam`: "
      f"{s.get('prox_adam', '')}). Machine: {_machine(d['machine'])}; load average "
      f"{d['machine'].get('load_average_start')} at start, {d.get('load_average_end')} "
      "at the end.", "",
  ]
  for model, m in d["models"].items():
    res = m["results"]
    lines += [f"### {model}: {m['num_params'] / 1e6:.2f}M parameters, "
              f"{m['num_leaves']} leaves, bandwidth {m['memory_bandwidth_GBps']:.1f} GB/s",
              "",
              f"RAMDA's state was first advanced by {m.get('warm_steps', '?')} updates "
              "(a warm step: the inner solver needs up to 100 iterations in the first "
              "updates); `inner it.` is the mean number of inner iterations per "
              "regularized leaf over the timed steps. The group-LASSO bound counts "
              f"the parameter-sized passes as {s.get('ramda_gl_passes', '?')}; "
              "ProxGen's passes count none of its inner iterations.", ""]
    rows = []
    for name, r in res.items():
      rows.append([name, f"{r['median_ms']:.1f}", f"{r['ratio_to_sgd']:.2f}",
                   f"{r['ratio_to_madgrad']:.2f}" if "ratio_to_madgrad" in r else "-",
                   f"{r['inner_iterations_mean']:.1f}" if "inner_iterations_mean" in r
                   else "-",
                   f"{r['min_passes']:.1f}" if "min_passes" in r else "-",
                   f"{r['bound_ms']:.1f}" if "bound_ms" in r else "-",
                   f"{r['fraction_of_bound']:.2f}" if "fraction_of_bound" in r else "-"])
    lines += [_table(["optimizer", "ms/step", "x optax.sgd", "x madgrad", "inner it.",
                      "passes", "bound ms", "fraction of bound"], rows), ""]
    for solver, key in zip(("the authors' inner solver", "`inner_solver=\"newton\"`"),
                           RAMDA_GL_KEYS):
      gl = res.get(key)
      if gl is None or "ratio_to_madgrad" not in gl or "fraction_of_bound" not in gl:
        continue
      x_bound = 1 / gl["fraction_of_bound"]
      ok_mad = gl["ratio_to_madgrad"] <= RAMDA_MADGRAD_GOAL
      ok_bound = x_bound <= RAMDA_BOUND_GOAL
      verdict = ("Both goals are met" if ok_mad and ok_bound else
                 "Neither goal is met" if not (ok_mad or ok_bound) else
                 "Only the " + ("MADGRAD" if ok_mad else "bound") + " goal is met")
      lines += [
          f"Issue 20's goals for RAMDA with group LASSO and {solver} (the warm step at most "
          f"{RAMDA_MADGRAD_GOAL:g}x MADGRAD's and within {RAMDA_BOUND_GOAL:g}x of its own "
          f"bound): {verdict}. Its step is "
          f"{gl['ratio_to_madgrad']:.2f}x MADGRAD's "
          f"({'within' if ok_mad else 'over'} {RAMDA_MADGRAD_GOAL:g}x) and "
          f"{x_bound:.2f}x its bound of {gl['bound_ms']:.0f} ms "
          f"({gl['min_passes']:.1f} passes at {gl['inner_iterations_mean']:.1f} inner "
          f"iterations; fraction {gl['fraction_of_bound']:.2f}, "
          f"{'within' if ok_bound else 'over'} {RAMDA_BOUND_GOAL:g}x).", ""]
    if lines[-1] == "" and any(k in res for k in RAMDA_GL_KEYS):
      lines.pop()
    free = [n for n in ("ramda (none)", "ramda (l1)") if "ratio_to_madgrad" in res.get(n, {})]
    if free and lines[-1]:
      lines[-1] += (" Without the inner solver (" + ", ".join(
          f"{n[7:-1]}: {res[n]['ratio_to_madgrad']:.2f}x" for n in free)
          + " MADGRAD) RAMDA's step is "
          + ("shorter" if all(res[n]["ratio_to_madgrad"] < 1 for n in free)
             else "not always shorter") + " than MADGRAD's.")
      cr = m.get("cube_root")
      if cr and "ramda (none)" in free:
        saved = res["optax.contrib.madgrad"]["median_ms"] - res["ramda (none)"]["median_ms"]
        lines[-1] += (f" The difference with no regularizer, {saved:.0f} ms, compares "
                      f"with the {cr['cbrt_ms'] - cr['exp_log_ms']:.0f} ms between the "
                      f"two cube roots of {cr['n'] / 1e6:.0f}M values below "
                      f"({m['num_params'] / 1e6:.1f}M here).")
      none = res.get("ramda (none)", {})
      if none.get("fraction_of_bound"):
        lines[-1] += (f" With no regularizer the step is itself {1 / none['fraction_of_bound']:.2f}x "
                      f"its {none['min_passes']:g}-pass bound: the cube root is computed, not "
                      "streamed, and the bound counts passes only.")
    if any(k in res for k in RAMDA_GL_KEYS):
      lines.append("")
    cr = m.get("cube_root")
    if cr:
      lines += [
          f"Cube root of {cr['n'] / 1e6:.0f}M float32 values on {cr['backend']}: a copy "
          f"{cr['copy_ms']:.1f} ms, `jnp.cbrt` {cr['cbrt_ms']:.1f} ms "
          f"({cr['cbrt_over_copy']:.1f}x a copy), `exp(log(x) / 3)` {cr['exp_log_ms']:.1f} ms "
          f"({cr['exp_log_over_copy']:.1f}x); `rj.ramda` uses the second on XLA:CPU and "
          "`cbrt` on other backends (`rmda_jax._ramda.cube_root`), while "
          "optax.contrib.madgrad uses `cbrt`.", ""]
    pg = res.get("prox_adam (group_lasso)")
    old = ((before or {}).get("models", {}).get(model, {}).get("results", {})
           .get("prox_adam (group_lasso)"))
    if pg is not None:
      text = (f"ProxGen (`rj.prox_adam`, group LASSO) with RAMDA's inner solver "
              f"(`inner_stop='objective'`): {pg['median_ms']:.0f} ms/step, "
              f"{pg['ratio_to_sgd']:.1f}x optax.sgd")
      if old is not None:
        text += (f", against {old['ratio_to_sgd']:.0f}x optax.sgd "
                 f"({old['median_ms']:.0f} ms) in section 4 with the former solver "
                 "(ratios each measured within their own run)")
      lines += [text + ". The default `inner_stop='change'` keeps the former solver "
                "(see `rj.prox_adam`).", ""]
  return "\n".join(lines)


def slim_section(d):
  """Section 5: parameters, multiply-adds and inference time before and after rmda_jax.slim."""
  title = "## 5. Slimming: the zeros become a smaller, faster model (issue 11)"
  if d is None:
    return f"{title}\n\nNot run yet (`python -m benchmarks.bench_slim`).\n"
  s, run = d["settings"], d.get("lenet5_run")
  lines = [
      title, "",
      "`rmda_jax.slim.slim(model, batch)` removes every channel that all the layers "
      "reading it have zeroed (their input groups, kernel axis -2, what RMDA's group "
      "LASSO zeroes) and checks that the slim model's outputs equal the model's on the "
      "batch. Times: the jitted forward of each model, warm, on the same batch, the two "
      "models' calls interleaved, median per batch "
      f"({s['lenet_timing_runs']} calls for LeNet5, {s['cifar_timing_runs']} for the CIFAR "
      f"models), BatchNorm in eval mode. Machine: {_machine(d.get('machine'))}; load "
      f"average {d['machine'].get('load_average_start')} at start, "
      f"{d.get('load_average_end')} at the end; wall time "
      f"{d.get('wall_seconds', 0) / 60:.1f} min{' (quick mode)' if d.get('quick') else ''}.",
      "",
  ]
  if run:
    lines += [
        f"**LeNet5 (small)**: {s['lenet5']}; {run['epochs']} epochs on {run['dataset']}, "
        f"test accuracy {100 * run['test_accuracy']:.2f}%, group sparsity "
        f"{100 * run['group_sparsity']:.1f}% (groups kept: "
        + ", ".join(f"{k.split(chr(39))[1]} {v}" for k, v in run["groups_kept"].items())
        + f"); batch: the first {s['lenet_batch']} MNIST test images, as `rmda-train "
        "--slim` slims it.", "",
    ]
  lines += [
      f"**VGG19-BN, ResNet50** (CIFAR shapes, 32x32x3, not trained): {s['cifar_models']}; "
      f"batch {s['cifar_batch']}. A channel goes only when every reader zeroed it: in "
      "VGG19 each channel has one reader, so about the stated fraction of each layer's "
      "outputs goes; ResNet50's residual-stream channels are read by every block of "
      "their stage and by the next shortcut, and at random independent zeros they "
      "mostly stay.", "",
  ]
  if s.get("vit"):
    lines += [
        f"**ViT (tiny)** (MNIST shapes, 28x28x1, not trained): {s['vit']}; batch "
        f"{s['vit_batch']}, {s['vit_timing_runs']} timed calls. Slim removes exactly the "
        "zeroed heads (the module's `num_heads` follows) and MLP units; the LayerNorm'd "
        "residual stream keeps its width.", "",
    ]
  rows = d.get("results") or []
  if not rows:
    return "\n".join(lines + ["No model was measured.", ""])

  def gmacs(r, when):   # multiply-adds per second the jitted forward reached
    return r[f"macs_per_example_{when}"] * r["batch"] / (r[f"ms_per_batch_{when}"] / 1e3) / 1e9

  head = ["model", "batch", "params", "params kept", "MACs/example", "MACs kept",
          "channels", "ms/batch", "speedup", "GMAC/s"]
  table = [[r["model"], r["batch"], f"{r['params_before']:,} -> {r['params_after']:,}",
            f"{100 * r['params_after'] / r['params_before']:.1f}%",
            f"{r['macs_per_example_before']:,} -> {r['macs_per_example_after']:,}",
            f"{100 * r['macs_per_example_after'] / r['macs_per_example_before']:.1f}%",
            f"{r['channels_before']:,} -> {r['channels_after']:,}",
            f"{r['ms_per_batch_before']:.2f} -> {r['ms_per_batch_after']:.2f}",
            f"{r['speedup']:.2f}x", f"{gmacs(r, 'before'):.1f} -> {gmacs(r, 'after'):.1f}"]
           for r in rows]
  lines += [
      _table(head, table), "",
      "Read the times within a row: the two models of a row ran interleaved under the "
      "same load, but the load moved between rows (the same dense model's median can "
      "differ from one row to the next). `GMAC/s` is the multiply-adds per second the "
      "forward reached: where it rises after slimming, the speedup exceeds the multiply-add "
      "ratio (VGG19-BN here: XLA:CPU ran the dense model's 3x3 convolutions at a far lower "
      "rate than the narrower slim ones, or than ResNet50's mostly 1x1 convolutions; why "
      "was not investigated), and on other hardware it may not.", "",
  ]
  return "\n".join(lines)


def scale(d):
  """Section 6: communication per step and step time on 1-8 (virtual) devices."""
  title = "## 6. Scaling out: communication per step and step time on a mesh"
  if d is None:
    return f"{title}\n\nNot run yet (`python -m benchmarks.bench_scale`).\n"
  runs, s = d["runs"], d["settings"]
  m = d["machine"]
  counts = sorted(runs, key=int)
  cols = ["dp/sgd", "dp/rmda", "fsdp/sgd", "fsdp/rmda"]

  def cell(n, col, key):
    r = runs[n]["train_step"].get(col)
    if r is None:
      return "-"
    return f"{r[key]:,}" if key == "bytes_per_step" else f"{r[key]:.1f}"

  def ops(n, col):
    r = runs[n]["train_step"].get(col)
    return "-" if r is None else ", ".join(f"{op} {b:,}" for op, b in sorted(r["by_op"].items()))

  lines = [
      title, "",
      f"`rmda-train`'s own training step (`Trainer` with a `sharding.Layout`: "
      f"`make_train_step` jitted with the mesh's shardings) of {s['model']}, batch "
      f"{s['batch']}, {s['data']} data. `rmda`: {d['optimizers']['rmda']}; `sgd`: "
      f"{d['optimizers']['sgd']}. `dp`: `{d['layouts']['dp']}` (parameters replicated, "
      f"batch split); `fsdp`: `{d['layouts']['fsdp']}` (parameters and optimizer state "
      f"split too, kernels gathered for the forward pass). Machine: {_machine(m)}; "
      f"load average {m.get('load_average_start')} at the start, "
      f"{d.get('load_average_end')} at the end; wall time {d['wall_seconds'] / 60:.1f} min"
      f"{' (quick mode)' if d.get('quick') else ''}.",
      "",
      f"**The devices are virtual**: {s['devices']}. All N of them share the same "
      f"{m.get('cpu_count', '?')} CPU cores, so the step time cannot fall with N; it shows "
      "what the partitioned program costs on one machine, not a speed-up. Each device "
      "count runs in its own process at its own time, under whatever load the shared "
      "machine had then: compare times within a row, not down a column. The bytes are "
      "what N real devices would exchange (they do not depend on the load).",
      "",
      "Bytes communicated per device per step: the sum of the result sizes of the "
      "collectives in the compiled step's HLO (`jit(step).lower(...).compile().as_text()`, "
      "read by `sharding.collectives`). XLA:CPU sums the gradient with an all-reduce "
      "(no reduce-scatter), so FSDP's bytes are the kernels gathered plus the whole "
      "gradient summed: about twice data parallelism's. RMDA's extra bytes over SGD are "
      "its group norms' partial sums where a kernel's groups span shards.",
      "",
      _table(["devices"] + cols, [[n] + [cell(n, c, "bytes_per_step") for c in cols]
                                  for n in counts]),
      "",
      _table(["devices"] + [f"{c}: by collective" for c in ("dp/rmda", "fsdp/rmda")],
             [[n, ops(n, "dp/rmda"), ops(n, "fsdp/rmda")] for n in counts if n != "1"]),
      "",
      f"Step time, ms (median of {s['rounds']} rounds of {s['steps_per_round']} steps, "
      f"the variants interleaved in chunks of {s['chunk']}); on 1 device `single` is "
      "`rmda-train`'s single-device path (what it runs there), `dp` the mesh path on a "
      "1-device mesh:",
      "",
      _table(["devices"] + cols + ["single/sgd", "single/rmda"],
             [[n] + [cell(n, c, "step_ms_median") for c in cols + ["single/sgd", "single/rmda"]]
              for n in counts]),
      "",
  ]
  upd = [(n, runs[n]["update_fsdp"]) for n in counts if "update_fsdp" in runs[n]]
  if upd:
    u0 = upd[0][1]
    lines += [
        f"The optimizer update alone (`tx.update` + `apply_updates`) on the "
        f"{s['update_model']}-shaped pytree ({u0['num_params'] / 1e6:.1f}M parameters, "
        f"{u0['param_bytes']:,} bytes), FSDP over N devices: bytes per device per step.",
        "",
        _table(["devices", "sgd", "rmda (group LASSO)", "rmda's collectives",
                "rmda / parameter bytes"],
               [[n, f"{u['sgd']['bytes_per_step']:,}", f"{u['rmda']['bytes_per_step']:,}",
                 u["rmda"]["collectives"],
                 f"{u['rmda']['bytes_per_step'] / u['param_bytes']:.2e}"] for n, u in upd]),
        "",
    ]
  return "\n".join(lines)


def gpu(d):
  """Section 7: one accelerator (benchmarks/gpu.py)."""
  title = "## 7. One accelerator: the update against the bandwidth, an epoch against PyTorch"
  if d is None or d.get("quick"):
    return (f"{title}\n\nNot run yet: `python -m benchmarks.gpu` on a machine with a GPU "
            "(none was available where these results were made; `--quick` is its smoke "
            "run, on any device).\n")
  dev, bw, upd = d["device"], d["bandwidth"], d["update"]
  lines = [
      title, "",
      f"Device: {dev['kind']} ({dev['platform']}); jax {d['machine'].get('jax')}, "
      f"{d['machine'].get('date', '')[:10]}. Bandwidth measured in the same run: copy "
      f"{bw['copy_GBps']:.0f} GB/s, axpy {bw['axpy_GBps']:.0f} GB/s "
      f"(arrays of {bw['array_bytes'] / 2**20:.0f} MiB); the larger is the reference.",
      "",
      f"Optimizer step on the {upd['model']}-shaped pytree ({upd['num_params'] / 1e6:.1f}M "
      "parameters): `passes` parameter-sized float32 arrays at the least, and the fraction "
      "of the bandwidth that makes.",
      "",
      _table(["optimizer", "ms/step", "x sgd", "passes", "GB/s", "of bandwidth"],
             [[k, f"{r['median_ms']:.3f}", f"{r['ratio_to_sgd']:.2f}", r["min_passes"],
               f"{r['achieved_GBps']:.0f}", f"{r['fraction_of_bandwidth']:.2f}"]
              for k, r in upd["results"].items()]),
      "",
  ]
  ep = d["epochs"]
  rows = []
  for name, row in ep.items():
    if not isinstance(row, dict) or "model" not in row:
      continue
    for v in ("jax+rmda", "jax+sgd", "torch+sgd"):
      if v in row:
        rows.append([name, v, f"{row[v]['step_ms']:.2f}", f"{row[v]['epoch_s']:.1f}"])
  lines += [
      "Training epoch (batch 128, data on the device, no augmentation), from timed steps:",
      "",
      _table(["model", "variant", "ms/step", "epoch s"], rows),
      "",
  ]
  if ep.get("torch_note"):
    lines += [ep["torch_note"] + ".", ""]
  return "\n".join(lines)


def _fmt(v):
  if isinstance(v, dict) and "mean" in v:
    return f"{v['mean']:.4f} ± {v.get('std', 0):.4f} (n={v.get('n', '?')})"
  if isinstance(v, float):
    return f"{v:.4g}"
  return "-" if v is None else str(v)


def headline_table(ident, cost_h, train, full6=None, more=(),
                   deep_status="equal tuning (2d) and RigL at 20 epochs (3b) are not run yet",
                   claims=""):
  rows = []
  if cost_h:
    for model in ("resnet50", "vgg19", "lenet5"):
      for name in ("rmda (none)", "rmda (group_lasso)", "prox_sgd (group_lasso)",
                   "prox_adam (group_lasso)", "prox_ssi (group_lasso)"):
        if (model, name) in cost_h:
          rows.append([f"step time x optax.sgd(momentum=0.9), {model}-shaped pytree",
                       HEADLINE_COST_LABELS.get(name, name), f"{cost_h[(model, name)]:.2f}"])
      if rows:
        break
  if ident:
    rows.extend(ident)  # [measure, method, value] rows from identification()
  if full6:
    for r in full6.get("table", []):
      if r.get("method") in ("rmda", "prox_sgd", "prox_adam", "prox_ssi"):
        rows.append([f"LeNet5 (small), all of MNIST, 6 epochs, group LASSO {r['lam']:g}: "
                     f"test accuracy; weighted group sparsity (mean of "
                     f"{r['test_accuracy'].get('n', '?')} seeds)", r["method"],
                     f"{100 * r['test_accuracy']['mean']:.2f}%; "
                     f"{100 * r['weighted_group_sparsity']['mean']:.1f}%"])
  rows.extend(more)  # [measure, method, value] rows of render_deep's sections
  if train:
    sps = train["samples_per_s_median"]
    if "jax+rmda" in sps and "jax+sgd" in sps:
      rows.append(["LeNet5 training step, samples/s (jax+rmda / jax+sgd / torch+sgd)",
                   "rmda", f"{sps['jax+rmda']:.0f} / {sps['jax+sgd']:.0f} / "
                   f"{sps.get('torch+sgd', float('nan')):.0f}"])
    paired = train.get("ratios_per_round_median", {})
    if "torch+sgd / jax+rmda" in paired:
      rows.append(["LeNet5 epoch time, rmda-train's step / PyTorch loop (2 threads), "
                   "median of per-round ratios (target <= 1.5)", "rmda",
                   f"{paired['torch+sgd / jax+rmda']:.2f}"])
  if not rows:
    return "No benchmark has been run yet."
  return _table(["measure", "method", "value"], rows) + (
      "\n\nFrom `benchmarks/results/*.json`; machines, versions, dates and the "
      "full tables are in [benchmarks/README.md](benchmarks/README.md). How far "
      "each comparison goes: the sparsity-at-accuracy (section 2) and RigL "
      "(section 3) comparisons ran 300 steps on a 12.8k-image MNIST subset, where "
      "RMDA did not come out ahead of ProxSGD. In section 2b (6 epochs, all of "
      "MNIST, the 6-epoch rows above) RMDA's learning rate and strength were tuned "
      "on the reported runs while the other methods ran the learning rates of the "
      "authors' follow-up paper (Huang & Lee 2024), and "
      "2 seeds cannot separate 98.37% from 98.35%. The fair comparisons are "
      "section 2d (the equal-tuning rows: the same number of configurations per "
      "method, chosen on a validation split, then a lambda sweep of all four "
      "methods, 3 seeds) and section 3b (the unstructured-sparsity rows: RMDA + L1 "
      "against RigL at 20 epochs, 3 seeds, the same number of learning rates, run "
      "on an NVIDIA H200). Section 1b (60 epochs with augmentation, every method "
      "at a published learning rate (the baselines' from Huang & Lee 2024, RMDA's "
      "from its CIFAR10 runs) but lam 5e-4, milestones 15/30 and the crop "
      "chosen by this project, not the authors' MNIST schedule of 200 epochs, "
      "milestones 50/100 and lam 1e-3; the deep-identification rows above) is this "
      "project's test of the identification claim. Equal tuning (2d) picks each "
      "method's learning rate at one lambda, yet the learning rate moves sparsity as "
      "much as lambda does (issue 19), so 2d's front counts describe that protocol; "
      "section 2f compares every method over its whole (lr, lambda) plane. Progress: "
      "section 1b: " + deep_status + ". " + claims)


FULL6EP_CMD = ("python -m benchmarks.bench_sparsity_accuracy --models lenet5_small "
               "--train-subset 60000 --epochs 6 --seeds 2 --lam 5e-4 --sweep-lams 1e-3 2e-3 "
               "--milestone-fractions 0.5 0.8333 --rmda-lr 0.3 --rmda-c0 0.1 "
               "--name sparsity_accuracy_lenet5_full6ep")


def _fill(text: str, name: str, body: str) -> str:
  """``text`` with the block between ``<!-- name:start -->`` and ``<!-- name:end -->``
  replaced by ``body`` (unchanged where ``text`` has no such block)."""
  return re.sub(rf"<!-- {name}:start -->.*?<!-- {name}:end -->",
                lambda _: f"<!-- {name}:start -->\n{body}\n<!-- {name}:end -->", text,
                flags=re.S)


def main(argv=None):
  import argparse
  ap = argparse.ArgumentParser(description="benchmarks/results/*.json -> README tables")
  ap.add_argument("--skip-headline", action="store_true",
                  help="write benchmarks/README.md only, not the main README's headline")
  args = ap.parse_args(argv)
  ident_md, ident_h = identification(_load("identification.json"))
  cost_md, cost_h = cost(_load("cost.json"))
  train_md, train_h = train_step(_load("train_step.json"), _load("train_step_ynn.json"),
                                 _load("train_step_ynn_none.json"))
  ident_deep, equal, rigl_conv = (_load(f"{n}.json") for n in
                                  ("identification_deep", "equal_tuning", "rigl_converged"))
  deep_md, deep_h = render_deep.identification_deep(
      ident_deep, _load("identification_deep_rmda90.json"))
  equal_md = render_deep.equal_tuning(equal)
  vit = _load("vit.json")
  budget = [_load(f) for f in sorted(os.listdir(RESULTS))
            if f.startswith("identification_200_") and f.endswith(".json")]
  denormal_md, denormal_h = render_deep.torch_denormal(_load("torch_denormal.json"))
  front, sweeps = render_front.load(RESULTS), render_sweep.load(RESULTS)
  parts = [
      "# Benchmarks",
      "",
      "Generated by `python -m benchmarks.render` from `benchmarks/results/`. "
      "Every benchmark is a module, run from the repository root as "
      "`python -m benchmarks.<module>` (`--help` lists its flags). "
      "Each has a `--quick` mode (< 2 minutes; exercised by the tests, "
      "writing to a temporary directory) and a full mode that writes the "
      "results file rendered here. All were run on CPU unless a table says "
      "otherwise; timings on a shared 2-core machine are noisy, which is why "
      "every cost is a ratio measured within one run.",
      "",
      "| module | section | full run writes |",
      "|---|---|---|",
      "| bench_identification | 1. identification | results/identification.json, .png |",
      "| bench_identification_deep | 1b. identification in a deep net (crop, dropout) | results/identification_deep.json, .png, identification_deep/ (one file per run) |",
      "| bench_identification_deep (200 epochs, flags in 1c) | 1c. identification at the authors' budget, groups on the threshold | results/identification_200_*.json, .png, identification_200_*/ |",
      "| bench_identification_deep (200 epochs, --name ablation_200) | 1d. what the averaging does: ProxSGD's rho, plain RDA, RMDA's c rules | results/ablation_200.json, ablation_200/ |",
      "| bench_sparsity_accuracy | 2. structured sparsity at accuracy | results/sparsity_accuracy.json, .png |",
      "| bench_sparsity_accuracy (flags in 2b) | 2b. the same on all of MNIST, 6 epochs | results/sparsity_accuracy_lenet5_full6ep.json, .png |",
      "| bench_equal_tuning | 2d. equal tuning on a validation split, lambda sweep of all four | results/equal_tuning.json, .png, equal_tuning/ |",
      "| bench_vit | 2e. heads and MLP units of a tiny ViT: RMDA, ProxSGD, RAMDA tuned alike, lambda sweep | results/vit.json |",
      "| bench_front | 2f. the joint front: every method over its (lr, lambda) plane, 3 seeds | results/front/ (one file per method and seed), results/front.json, .png |",
      "| bench_rigl | 3. unstructured sparsity vs RigL | results/rigl.json |",
      "| bench_rigl_converged | 3b. RMDA + L1 vs RigL, 20 epochs, tuned alike | results/rigl_converged.json, rigl_converged/ |",
      "| bench_torch_denormal (needs PyTorch) | 4e. the authors' PyTorch RMDA and denormals | results/torch_denormal.json |",
      "| bench_low_rank | 2c. low rank (nuclear norm) at accuracy | results/low_rank.json, .png |",
      "| bench_cost | 4. cost per step, bandwidth bound | results/cost.json |",
      "| bench_cost --nuclear | 4d. cost per step with the nuclear norm | results/cost_nuclear.json |",
      "| bench_cost --ramda | 4f. RAMDA's step against MADGRAD, its inner iterations and bound | results/cost_ramda.json |",
      "| bench_baselines_cost (XLA_FLAGS per run) | 4c. optimizer step by YNNPACK setting | results/cost_ynn_{all,reduce,none}.json |",
      "| bench_train_step (needs PyTorch) | 4b. whole training step vs PyTorch | results/train_step.json (_ynn.json, _ynn_none.json) |",
      "| bench_slim | 5. slimming: parameters, multiply-adds, inference time | results/slim.json |",
      "| bench_scale | 6. scaling out on a mesh: bytes and step time, 1-8 devices | results/scale.json |",
      "| gpu (an accelerator; PyTorch optional) | 7. one accelerator: update vs bandwidth, epoch vs PyTorch | results/gpu.json |",
      "| bench_sweep (--batching vmap, unroll) | 8. many runs in one program: runs per hour for K = 1, 4, 16 | results/sweep_throughput*.json |",
      "",
      "`benchmarks/common.py` holds what several of them share (machine record, "
      "optimizer tables, model shapes read from `rmda_jax.examples.models`, step "
      "timing, data, the training loop around `rmda-train`'s step); "
      "`benchmarks/sweep.py` the lambda sweep of section 2; "
      "`benchmarks/rigl.py` the RigL optimizer of section 3.",
      "",
      "`nice benchmarks/run_issue19.sh` queues every run that sections 1c, 1d and 2f plan, "
      "in the order the evidence needs them, the front's seeds first (each run is its own "
      "file and a finished run is "
      "skipped, so it can be cut and started again; a run being trained is claimed by a lock "
      "file, so a second copy started beside the first trains the other runs; "
      "`SEEDS=\"0 1\"` for fewer seeds), then "
      "renders. On this 2-core CPU a 200-epoch run took 13 to 50 minutes and a front's "
      "(method, seed) 10 to 125 minutes (the wall times in the results files).",
      "",
      ident_md,
      deep_md,
      render_deep.authors_budget(budget),
      render_deep.ablation([d for d in [_load("ablation_200.json")] if d]),
      generic("2. Structured sparsity at accuracy", _load("sparsity_accuracy.json"),
              "python -m benchmarks.bench_sparsity_accuracy", "sparsity_accuracy",
              exclude=("sparsity_accuracy_lenet5_full6ep",)),
      generic("2b. Structured sparsity at accuracy: LeNet5 (small), all of MNIST, 6 epochs, "
              "rmda-train's schedule", _load("sparsity_accuracy_lenet5_full6ep.json"),
              FULL6EP_CMD, "sparsity_accuracy_lenet5_full6ep"),
      low_rank(_load("low_rank.json"),
               [(f, _load(f)) for f in sorted(os.listdir(RESULTS))
                if f.startswith(LOW_RANK_EXTRA) and f.endswith(".json")]),
      equal_md,
      render_vit.section(vit),
      render_front.section(front),
      generic("3. Unstructured sparsity against RigL", _load("rigl.json"),
              "python -m benchmarks.bench_rigl", "rigl"),
      render_deep.rigl_converged(rigl_conv),
      cost_md,
      train_md,
      ynn_cost({k: _load(f"cost_ynn_{k}.json") for k in ("all", "reduce", "none")}),
      cost_nuclear(_load("cost_nuclear.json")),
      cost_ramda(_load("cost_ramda.json"), _load("cost.json")),
      denormal_md,
      slim_section(_load("slim.json")),
      scale(_load("scale.json")),
      gpu(_load("gpu.json")),
      render_sweep.section(sweeps),
  ]
  with open(os.path.join(HERE, "README.md"), "w") as f:
    f.write("\n".join(parts).rstrip() + "\n")
  if args.skip_headline:
    print("wrote benchmarks/README.md")
    return
  readme = os.path.join(ROOT, "README.md")
  with open(readme) as f:
    text = f.read()
  headline = headline_table(
      ident_h, cost_h, train_h, _load("sparsity_accuracy_lenet5_full6ep.json"),
      deep_h + render_deep.budget_headline(budget) + render_deep.equal_headline(equal)
      + render_front.headline(front) + render_vit.headline(vit)
      + render_deep.rigl_headline(rigl_conv) + denormal_h
      + ramda_headline(_load("cost_ramda.json")),
      claims=render_deep.claims(ident_deep, equal, rigl_conv) + " "
      + render_front.claim(front),
      deep_status=render_deep.status(ident_deep, equal, rigl_conv))
  measured = render_deep.opening(ident_deep, budget,
                                 [d for d in [_load("ablation_200.json")] if d])
  text = _fill(text, "sweep", render_sweep.readme_sentence(sweeps))
  text = _fill(text, "measured", measured)
  if "<!-- headline:start -->" in text:
    with open(readme, "w") as f:
      f.write(_fill(text, "headline", headline))
  print("wrote benchmarks/README.md and the README headline")


if __name__ == "__main__":
  main()
