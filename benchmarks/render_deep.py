"""README sections of the deep-network benchmarks (issue 10) and the PyTorch denormal check.

Called by ``benchmarks.render``; each function takes a results dict (or None
when the file does not exist yet) and returns markdown, plus headline rows
``[measure, method, value]`` where the results allow one.
"""

from __future__ import annotations

import numpy as np

from benchmarks._md import _machine, _table

LABELS = {"rmda": "RMDA", "prox_sgd": "ProxSGD", "prox_adam": "ProxGen", "prox_ssi": "ProxSSI",
          "ramda": "RAMDA",
          "rmda_l1": "RMDA + L1", "rigl": "RigL",
          "prox_sgd_rho0.01": "ProxSGD rho 0.01", "prox_sgd_rho0.001": "ProxSGD rho 0.001",
          "rda": "RDA (c 1, no restarts)", "rmda_ramp": "RMDA, ramp rule"}


def _pm(ms, scale=100, digits=2):
  if not ms or ms.get("mean") is None:
    return "-"
  return f"{scale * ms['mean']:.{digits}f} ± {scale * ms['std']:.{digits}f}"


def late_flips(table) -> list:
  """Lines on the groups that changed status in the last 20 epochs (runs that record them)."""
  rows = []
  for t in table:
    for seed, f in zip(t["seeds"], t.get("late_flips") or []):
      if f is None:
        continue
      rows.append([t["config"], LABELS[t["method"]], str(seed), str(f["flipped"]),
                   str(f["flipped_within_near_of_1"]),
                   f"{f['stable_zero_within_near_of_1']} of {f['stable_zero_groups']}",
                   "-" if f["max_ratio_of_a_zero_group"] is None
                   else f"{f['max_ratio_of_a_zero_group']:.3f}"])
  if not rows:
    return []
  return ["Groups on the threshold, at the final point: each group's ratio "
          "`||grad_g F|| / (lambda w_g)` (F the training loss over every training image, "
          "no augmentation or dropout; 1 for a nonzero group at a stationary point, at most 1 "
          "for a zero one). Late flips: groups whose status changed in the last 20 epochs.", "",
          _table(["config", "method", "seed", "late flips", "of them within 0.1 of 1",
                  "other zero groups within 0.1 of 1", "largest ratio of a zero group"], rows),
          ""]


def identification_deep(d, longer=None):
  title = "## 1b. Identification in a deep net (LeNet5, augmentation, dropout)"
  cmd = "python -m benchmarks.bench_identification_deep"
  if not d:
    return f"{title}\n\nNot run yet (`{cmd}`).\n", []
  s = d["settings"]
  last = d["claim_last_epochs"]
  done = [r for r in d["runs"] if r["complete"]]
  n_methods = len(s.get("methods") or range(4))
  planned = len(s.get("configs", {})) * n_methods * 3
  lines = [
      title, "",
      f"`{cmd}`: LeNet5 (small), {s['data']}, {s['epochs']} epochs, batch {s['batch_size']}, "
      f"group LASSO lam {s['lam']:g} for every method, every learning rate x{s['gamma']:g} at "
      f"epochs {s['milestones_epochs']} (RMDA restarts there; its c goes 0.1 -> 1). "
      f"Configurations: `crop` = {s['augmentation']}; `crop_dropout` = the same plus dropout "
      f"{s['configs']['crop_dropout']['dropout']:g} {s['dropout']}. "
      "Settings, not tuned here: the baselines' learning rates are those of the authors' "
      "follow-up paper (Huang & Lee 2024: ProxSGD lr 0.1, ProxGen and ProxSSI lr 1e-3; "
      "shared/docs/rmda.md section 5); RMDA's lr 0.1 and c 0.1 are the authors' VGG19 / "
      "ResNet50-CIFAR10 values (Huang & Lee 2022); lam, the milestones, the number of epochs "
      "and the augmentation are this project's (the authors' MNIST setting, published for "
      "logistic regression, is 200 epochs, milestones 50 and 100, lam 1e-3) "
      f"({s['methods']['rmda']}; {s['methods']['prox_sgd']}). Every method gets the same "
      "initialisation, data order and crops per seed. `support_changes` = "
      f"{s['support_changes']}.", "",
      f"The claim tested: RMDA's support changes 0 times over the last {last} epochs in every "
      "seed, each baseline's does not. "
      f"Runs finished: {len(done)} of the {planned} planned (2 configurations x "
      f"{n_methods} methods x 3 seeds); the table has what has finished, the seeds listed per row. "
      f"Machine: {_machine(d.get('machine'))}.", "",
  ]
  rows = []
  for t in d["table"]:
    rows.append([t["config"], LABELS[t["method"]], ", ".join(map(str, t["seeds"])),
                 ", ".join("-" if c is None else str(c) for c in t["changes_last_epochs"]),
                 ", ".join("-" if c is None else str(c) for c in t["last_epoch_with_change"]),
                 _pm(t["test_accuracy"]), _pm(t["weighted_group_sparsity"], digits=1)])
  lines += [_table(["config", "method", "seeds", f"changes, last {last} epochs (per seed)",
                    "last epoch with a change", "test acc % (final)",
                    "weighted group sparsity % (final)"], rows), ""]
  lines += late_flips(d["table"])
  verdicts = []
  headline = []
  for config, c in d.get("claim", {}).items():
    still = [LABELS[m] for m, v in c["baselines_still_changing_every_seed"].items() if v]
    quiet = [LABELS[m] for m, v in c["baselines_still_changing_every_seed"].items() if not v]
    n = len(c["seeds"].get("rmda", []))
    verdicts.append(
        f"- `{config}` ({n} RMDA seed{'s' if n != 1 else ''}): RMDA "
        + ("froze (0 changes over the last epochs) in every seed" if c["rmda_frozen_every_seed"]
           else "did **not** freeze in every seed")
        + (f"; still changing in every seed: {', '.join(still)}" if still else "")
        + (f"; frozen in some seed: {', '.join(quiet)}" if quiet else "") + ".")
    first = True
    for t in sorted((t for t in d["table"] if t["config"] == config),
                    key=lambda t: t["method"] != "rmda"):
      measure = (f"deep identification, LeNet5 / MNIST `{config}`, {s['epochs']} epochs, "
                 f"lam {s['lam']:g}, milestones {s['milestones_epochs']} (this project's "
                 "settings; learning rates from Huang & Lee 2024, RMDA's from their "
                 "CIFAR10 runs): groups changing status over the "
                 f"last {last} epochs "
                 "(per seed); test accuracy; weighted group sparsity (means)") if first else ""
      first = False
      headline.append([measure, t["method"],
                       f"{', '.join(str(x) for x in t['changes_last_epochs'])}; "
                       f"{100 * t['test_accuracy']['mean']:.2f}%; "
                       f"{100 * t['weighted_group_sparsity']['mean']:.1f}%"])
  if longer and longer.get("table"):
    for t in longer["table"]:
      run = next(r for r in longer["runs"] if r["config"] == t["config"]
                 and r["method"] == t["method"])
      ls = longer["settings"]
      lines += [
          f"A longer last stage: {LABELS[t['method']]}, `{t['config']}`, seed "
          f"{', '.join(map(str, t['seeds']))}, {ls['epochs']} epochs (milestones "
          f"{ls['milestones_epochs']}, so the last stage runs {ls['epochs'] - ls['milestones_epochs'][-1]} "
          f"epochs instead of {s['epochs'] - s['milestones_epochs'][-1]}): "
          f"{t['changes_last_epochs'][0]} changes over its last {last} epochs, last change at "
          f"epoch {t['last_epoch_with_change'][0]}, test accuracy "
          f"{100 * t['test_accuracy']['mean']:.2f}%, weighted group sparsity "
          f"{100 * t['weighted_group_sparsity']['mean']:.1f}% "
          f"(`{cmd} --configs {t['config']} --methods {t['method']} --seeds "
          f"{' '.join(map(str, t['seeds']))} --epochs {ls['epochs']} --name "
          "identification_deep_rmda90`). Changes per epoch after epoch "
          f"{s['epochs']}: {run['support_changes'][s['epochs']:]}.", ""]
  lines += ["Verdict:" if d.get("complete") else "Verdict so far:", ""] + verdicts + ["",
            "![identification in a deep net](results/identification_deep.png)", ""]
  return "\n".join(lines), headline


def equal_tuning(d):
  title = "## 2d. Equal tuning, then accuracy against group sparsity for every method"
  cmd = "python -m benchmarks.bench_equal_tuning"
  if not d:
    return (f"{title}\n\nNot run yet (`{cmd}`: every method gets the same number of "
            "learning-rate configurations, chosen on a validation split, then a lambda sweep "
            "of all four methods over 3 seeds).\n")
  s = d["settings"]
  lines = [title, "", f"`{cmd}`: LeNet5 (small), {s['data']}, {s['epochs']} epochs, batch "
           f"{s['batch_size']}, every lr x{s['gamma']:g} at epochs {s['milestones_epochs']}, "
           f"{s['augmentation']}, {s['regularizer']}. Selection: {s['selection']} "
           f"(lam {s['tune_lam']:g}). "
           f"Merged on: {_machine(d.get('machine'))}; where each run ran is in the tables"
           + (" (on the GPU, float32 matmuls at precision 'highest')"
              if any("(gpu)" in (t.get("device") or "") for t in d["tuning"])
              or any("(gpu)" in x for r in d["sweep"] for x in r.get("devices", [])) else "")
           + ".", "",
           "Tuning grid (validation accuracy after the last epoch, seed 0):", ""]
  rows = [[LABELS[t["method"]], ", ".join(f"{k}={v:g}" for k, v in t["config"].items()),
           "-" if t["validation_accuracy"] is None else f"{100 * t['validation_accuracy']:.2f}",
           "-" if t["weighted_group_sparsity"] is None
           else f"{100 * t['weighted_group_sparsity']:.1f}", t.get("device") or "-",
           "**chosen**" if d["chosen"].get(t["method"]) == t["config"] else ""]
          for t in d["tuning"]]
  lines += [_table(["method", "configuration", "validation acc %", "weighted group sp %",
                    "ran on", ""], rows), ""]
  if d["sweep"]:
    front = pareto(d["sweep"])
    lines += ["Lambda sweep at the chosen settings (test set; mean ± sample std over seeds; "
              "**bold**: on the Pareto front of the means, i.e. no other row has both higher "
              "accuracy and higher weighted group sparsity):", "",
              _table(["method", "lam", "seeds", "test acc %", "weighted group sparsity %",
                      "ran on"],
                     [[(f"**{LABELS[r['method']]}**" if i in front else LABELS[r["method"]]),
                       f"{r['lam']:g}", ", ".join(map(str, r["seeds"])),
                       _pm(r["test_accuracy"]), _pm(r["weighted_group_sparsity"], digits=1),
                       ", ".join(r.get("devices") or ["?"])]
                      for i, r in enumerate(d["sweep"])]), "",
              equal_reading(d), "",
              "![equal tuning](results/equal_tuning.png)", ""]
  else:
    lines += ["The lambda sweep has not run yet.", ""]
  return "\n".join(lines)


def pareto(rows) -> set:
  """Indices of the rows no other row beats in both mean accuracy and mean weighted sparsity."""
  pts = [(r["test_accuracy"]["mean"], r["weighted_group_sparsity"]["mean"]) for r in rows]
  return {i for i, (a, w) in enumerate(pts)
          if not any(a2 >= a and w2 >= w and (a2, w2) != (a, w) for a2, w2 in pts)}


def _pareto_counts(rows) -> dict:
  """method -> how many of its rows are on the Pareto front (methods with rows only)."""
  front = pareto(rows)
  return {m: sum(1 for i in front if rows[i]["method"] == m) for m in LABELS
          if any(r["method"] == m for r in rows)}


def equal_reading(d) -> str:
  """How many Pareto points each method has, and who is most accurate at each lambda."""
  rows, count = d["sweep"], _pareto_counts(d["sweep"])
  out = ["Points on the Pareto front: " + ", ".join(f"{LABELS[m]} {n}" for m, n in count.items())
         + f" (of {len(rows)} rows)."]
  for lam in sorted({r["lam"] for r in rows}):
    rs = [r for r in rows if r["lam"] == lam]
    best = max(rs, key=lambda r: r["test_accuracy"]["mean"])
    most = max(rs, key=lambda r: r["weighted_group_sparsity"]["mean"])
    out.append(f"At lam {lam:g}: most accurate {LABELS[best['method']]} "
               f"({100 * best['test_accuracy']['mean']:.2f}%), sparsest "
               f"{LABELS[most['method']]} ({100 * most['weighted_group_sparsity']['mean']:.1f}%).")
  return " ".join(out)


def equal_headline(d) -> list:
  """Headline rows: each method's point at the tuning lambda, and its Pareto count."""
  if not d or not d.get("sweep"):
    return []
  s, rows, count = d["settings"], d["sweep"], _pareto_counts(d["sweep"])
  out, first = [], True
  for m in LABELS:
    r = next((r for r in rows if r["method"] == m and r["lam"] == s["tune_lam"]), None)
    if r is None:
      continue
    n = count[m]
    measure = (f"equal tuning (same grid size, chosen on validation), LeNet5 / MNIST crop, "
               f"{s['epochs']} epochs, group LASSO {s['tune_lam']:g}: test accuracy; weighted "
               f"group sparsity (mean of the seeds); Pareto points over lambdas {s['lams']}"
               ) if first else ""
    first = False
    out.append([measure, m, f"{100 * r['test_accuracy']['mean']:.2f}%; "
                f"{100 * r['weighted_group_sparsity']['mean']:.1f}%; {n} of "
                f"{sum(1 for x in rows if x['method'] == m)}"])
  return out


def rigl_headline(d) -> list:
  """Headline rows: test accuracy and kernel sparsity per target, RMDA + L1 and RigL."""
  if not d or not (d.get("table") or d.get("matched")):
    return []
  s, out = d["settings"], []
  for i, r in enumerate(d.get("table") or []):
    measure = (f"unstructured sparsity, LeNet5 (large) / MNIST, {s['epochs']} epochs, tuned "
               "alike on validation: test accuracy; kernel sparsity (mean ± std, "
               f"{len(s['seeds'])} seeds)") if i == 0 else ""
    out.append([measure, r["method"], f"{_pm(r['test_accuracy'])}%; "
                f"{100 * r['kernel_sparsity']['mean']:.2f}% (target {100 * r['target']:g}%)"])
  matched = d.get("matched") or []
  for t in sorted({m["target"] for m in matched}):
    gaps = [100 * (m["rmda_l1_test_accuracy"] - m["rigl_test_accuracy"])
            for m in sorted(matched, key=lambda m: m["seed"]) if m["target"] == t]
    out.append([("the same, RigL matched per seed to the sparsity RMDA + L1 reached (3b): "
                 "test accuracy gap, RMDA + L1 minus RigL, per seed (points)")
                if t == min(m["target"] for m in matched) else "", "rmda_l1 - rigl",
                ", ".join(f"{g:+.2f}" for g in gaps) + f" (target {100 * t:g}%)"])
  return out


def rigl_converged(d):
  title = "## 3b. RMDA + L1 against RigL at 20 epochs, tuned alike"
  cmd = "python -m benchmarks.bench_rigl_converged"
  if not d:
    return (f"{title}\n\nNot run yet (`{cmd}`: LeNet5 (large), 20 epochs on 50k MNIST images, "
            "90% and 95% kernel sparsity, 3 seeds, the same number of learning rates tried "
            "for each method on a validation split).\n")
  s, tr = d["settings"], d.get("tuning_runs") or {}
  lines = [title, "", f"`{cmd}`: {s['model']}, {s['data']}, {s['epochs']} epochs, batch "
           f"{s['batch_size']}, {s['milestones']}. Tuning, {s['selection']}: RMDA + L1 tried "
           f"lrs {s['lrs_rmda']} (c0 {s['rmda_c0']}), RigL lrs {s['lrs_rigl']}; RMDA's lam was "
           f"calibrated at each lr to reach the target within {s['tol']} (RigL reaches it by "
           f"construction), so tuning took {tr.get('rmda_l1', '?')} RMDA runs against "
           f"{tr.get('rigl', '?')} RigL runs. The other target reuses the chosen lrs (RMDA's lam "
           f"calibrated again). {_ran_on(d)} The stages can run as shards of one "
           "command each (`--stage tune|final --shard K/N`; `benchmarks/run_deep_sharded.sh` "
           "runs parts 2 and 3 that way).", ""]
  lines += [_table(["method", "target", "lr", "lam", "seeds", "test acc %", "kernel sparsity %"],
                   [[LABELS[r["method"]], f"{r['target']:g}", f"{r['lr']:g}",
                     f"{r['lam']:.3g}" if r.get("lam") else "",
                     ", ".join(map(str, r["seeds"])), _pm(r["test_accuracy"]),
                     _pm(r["kernel_sparsity"])] for r in d["table"]]), ""]
  lines += [rigl_reading(d), ""]
  lines += [rigl_matched(d), ""]
  return "\n".join(lines)


def rigl_matched(d) -> str:
  """Issue 19, part 5: RigL at the sparsity each RMDA + L1 run reached, seed by seed,
  and the dense model at the same budget (``--stage matched``)."""
  m, dense = d.get("matched") or [], d.get("dense") or {}
  head = ("**Matched per seed** (issue 19, part 5; `python -m benchmarks.bench_rigl_converged "
          "--stage matched`): RigL (its chosen lr) trained, for every seed and target, to the "
          "kernel sparsity the RMDA + L1 run of that seed reached, so each pair has the same "
          "sparsity; the dense model is SGD with momentum 0.9 on the same schedule and budget, "
          "its lr chosen on validation among RigL's grid.")
  if not m and not dense.get("runs"):
    return head + " Not run yet."
  rows = [[f"{r['target']:g}", str(r["seed"]), f"{100 * r['rmda_l1_kernel_sparsity']:.2f}",
           f"{100 * r['rigl_kernel_sparsity']:.2f}", f"{100 * r['rmda_l1_test_accuracy']:.2f}",
           f"{100 * r['rigl_test_accuracy']:.2f}",
           f"{100 * (r['rmda_l1_test_accuracy'] - r['rigl_test_accuracy']):+.2f}"]
          for r in sorted(m, key=lambda r: (r["target"], r["seed"]))]
  out = [head, "", _table(["target", "seed", "RMDA + L1 kernel sparsity %",
                           "RigL kernel sparsity %", "RMDA + L1 test acc %", "RigL test acc %",
                           "gap (points)"], rows), ""]
  said = []
  for t in sorted({r["target"] for r in m}):
    gaps = [100 * (r["rmda_l1_test_accuracy"] - r["rigl_test_accuracy"])
            for r in m if r["target"] == t]
    wins = sum(g > 0 for g in gaps)
    said.append(f"At target {100 * t:g}%: RMDA + L1 ahead in {wins} of {len(gaps)} seeds, mean "
                f"gap {sum(gaps) / len(gaps):+.2f} points (range {min(gaps):+.2f} to "
                f"{max(gaps):+.2f}).")
  if dense.get("runs"):
    accs = [100 * r["test_accuracy"] for r in dense["runs"]]
    mean = sum(accs) / len(accs)
    said.append(f"The dense model (lr {dense['lr']:g}) reaches {mean:.2f}% test accuracy "
                f"(seeds {', '.join(str(r['seed']) for r in dense['runs'])}: "
                f"{', '.join(f'{a:.2f}' for a in accs)}).")
  else:
    said.append("The dense reference has not run yet.")
  devices = {k: sorted({r[k] for r in m if r.get(k)}) for k in ("rmda_l1_device", "device")}
  devices["dense"] = sorted({r["device"] for r in dense.get("runs", []) if r.get("device")})
  if len({d for v in devices.values() for d in v}) > 1:
    said.append("Devices: RMDA + L1 on " + (", ".join(devices["rmda_l1_device"]) or "?")
                + "; matched RigL on " + (", ".join(devices["device"]) or "?")
                + "; dense on " + (", ".join(devices["dense"]) or "?")
                + " (the same programs; float32 results can differ slightly between devices).")
  return "\n".join(out + [" ".join(said)])


def _ran_on(d) -> str:
  """Where the runs ran: the per-run devices, the merge's machine, the matmul precision."""
  m = d.get("machine") or {}
  devices = d.get("devices") or []
  where = ", ".join(devices) if devices else _machine(m)
  prec = m.get("jax_default_matmul_precision")
  return (f"Runs on: {where} (jax {m.get('jax', '?')}"
          + (f", float32 matmuls at precision '{prec}'" if prec else "") + ").")


def rigl_reading(d) -> str:
  """One sentence per target: the accuracy gap, whether the seeds separate it, the sparsity gap."""
  rows = {(r["method"], r["target"]): r for r in d["table"]}
  out = []
  for t in sorted({r["target"] for r in d["table"]}):
    a, b = rows.get(("rmda_l1", t)), rows.get(("rigl", t))
    if not (a and b):
      continue
    gap = 100 * (a["test_accuracy"]["mean"] - b["test_accuracy"]["mean"])
    spread = 100 * (a["test_accuracy"]["std"] + b["test_accuracy"]["std"])
    verdict = ("within the seeds' spread: a tie" if abs(gap) <= spread else
               ("RMDA + L1 ahead" if gap > 0 else "RigL ahead") + " by more than the seeds' spread")
    ds = 100 * (a["kernel_sparsity"]["mean"] - b["kernel_sparsity"]["mean"])
    out.append(f"At {100 * t:g}% the test accuracy gap (RMDA + L1 minus RigL) is {gap:+.2f} "
               f"points (sum of the two std {spread:.2f}): {verdict}; RMDA's kernel sparsity is "
               f"{ds:+.2f} points from RigL's (its lam was calibrated on seed 0's validation run).")
  for method, grid in (("rmda_l1", "lrs_rmda"), ("rigl", "lrs_rigl")):
    lr, lrs = (d.get("chosen") or {}).get(method, {}).get("lr"), d["settings"][grid]
    if lr is not None and len(lrs) > 1 and lr in (min(lrs), max(lrs)):
      out.append(f"{LABELS[method]}'s chosen lr {lr:g} is at the edge of its grid {lrs}: a wider "
                 "grid might do better.")
  return " ".join(out)


def torch_denormal(d):
  title = "## 4e. The authors' PyTorch RMDA and denormal floats (CPU)"
  cmd = "python -m benchmarks.bench_torch_denormal"
  if not d or d.get("quick"):
    return f"{title}\n\nNot run yet (`{cmd}`, needs PyTorch).\n", []
  s, pe = d["settings"], d["per_epoch"]
  last = pe["rmda"][-1]
  lines = [
      title, "",
      f"`{cmd}`: {s['model']}, {s['train_images']} training images, batch {s['batch_size']}, "
      f"{s['epochs']} epochs; {s['variants']['rmda']}; baseline {s['variants']['sgd']}. "
      f"torch {d['torch']}, {d['torch_threads']} intra-op thread; the four variants run "
      f"interleaved ({s['interleaving']}); load average at the start "
      f"{d['load_average_start'][0]:.1f} on {d['machine'].get('cpu_count')} cores. "
      f"Machine: {_machine(d.get('machine'))}.", "",
      _table(["epoch", "rmda / sgd", "rmda+flush / sgd+flush", "rmda / rmda+flush",
              "denormal weights (rmda)", "groups all zero or denormal"],
             [[e + 1, f"{a:.2f}", f"{b:.2f}", f"{c:.2f}", p["denormal_weights"],
               f"{p['groups_zero_or_denormal']} / {p['groups']}"]
              for e, (a, b, c, p) in enumerate(zip(d["ratio_to_sgd"]["rmda"],
                                                    d["ratio_to_sgd"]["rmda+flush"],
                                                    d["rmda_over_rmda_flush"], pe["rmda"]))]),
      "",
      f"The averaging `(1 - c) W` leaves zeroed groups as denormal floats "
      f"({last['denormal_weights']} weights at the last epoch). On this CPU that cost nothing "
      "measurable (ratios within the noise of a loaded machine); the slowdown to 11.7x "
      "reported elsewhere did not reproduce here. XLA:CPU flushes denormals "
      f"(checked in the same run: {d['xla_cpu']['flushes']}), so rmda_jax does not meet this. "
      "The PyTorch loops of `bench_train_step` and `gpu` now call "
      "`torch.set_flush_denormal(True)` and record it (results files without the "
      "`torch_flush_denormal` key were measured unflushed).", "",
  ]
  med = sorted(d["rmda_over_rmda_flush"])[len(d["rmda_over_rmda_flush"]) // 2]
  return "\n".join(lines), [[
      f"authors' PyTorch RMDA on CPU, unflushed / flushed epoch time ({s['epochs']} epochs, "
      f"median; {last['denormal_weights']} denormal weights at the end)", "rmda (torch)",
      f"{med:.2f}"]]


def status(ident, equal, rigl) -> str:
  """One clause on how far the issue-10 runs have got, for the headline's note."""
  done = len([r for r in ident["runs"] if r["complete"]]) if ident else 0
  planned = (len(ident["settings"].get("configs", {})) * len(ident["settings"].get("methods")
                                                            or range(4)) * 3 if ident else 24)
  parts = [f"{done} of its {planned} planned runs have finished (the rows list the seeds)"]
  if equal and equal.get("sweep"):
    s = equal["settings"]
    n = sum(len(r["seeds"]) for r in equal["sweep"])
    parts.append(f"the equal-tuning sweep (2d) has {n} of its "
                 f"{len(s['lams']) * 4 * len(s['seeds'])} runs")
  else:
    parts.append("the equal-tuning sweep (2d) has not run yet")
  if rigl and rigl.get("runs"):
    s = rigl["settings"]
    parts.append(f"RMDA + L1 against RigL at {s['epochs']} epochs (3b) has {len(rigl['runs'])} "
                 f"of its {len(s['targets']) * 2 * len(s['seeds'])} runs")
  else:
    parts.append("RMDA + L1 against RigL at 20 epochs (3b) has not run yet")
  return "; ".join(parts)


def _last_changes(ident):
  """1b's changes over the last epochs per run: RMDA's, and the baselines' (not RAMDA)."""
  rm = [c for t in ident["table"] if t["method"] == "rmda" for c in t["changes_last_epochs"]]
  base = [c for t in ident["table"] if t["method"] not in IDENTIFYING
          for c in t["changes_last_epochs"]]
  return rm, base


def claims(ident, equal, rigl) -> str:
  """The issue-10 claims as the results stand, one sentence each, for the headline's note."""
  out = []
  if ident and ident.get("table"):
    last = ident["claim_last_epochs"]
    rm, base = _last_changes(ident)
    out.append(
        f"Identification (1b, {ident['settings']['epochs']} epochs): RMDA's support did not "
        f"change over the last {last} epochs in {sum(c == 0 for c in rm)} of its {len(rm)} runs "
        f"(changes per run: {', '.join(map(str, rm))}); every one of the {len(base)} baseline "
        f"runs changed ({min(base)} to {max(base)} groups), so the claim as stated (0 in every "
        "RMDA seed) does not hold at this budget, while the contrast with the baselines does."
        if rm and base else "")
    for config in sorted({t["config"] for t in ident["table"]}):
      rows = {t["method"]: t for t in ident["table"] if t["config"] == config}
      if "rmda" not in rows or len(rows) < 2:
        continue
      r, others = rows["rmda"], [t for m, t in rows.items() if m not in ("rmda", "ramda")]
      if not others:
        continue
      acc = lambda t: 100 * t["test_accuracy"]["mean"]
      wgs = lambda t: 100 * t["weighted_group_sparsity"]["mean"]
      best = max(others, key=acc)
      out.append(f"In `{config}` RMDA ends at {acc(r):.2f}% test accuracy against "
                 f"{min(map(acc, others)):.2f}-{acc(best):.2f}% for the baselines "
                 f"({'below' if acc(r) < acc(best) else 'at or above'} the best, "
                 f"{LABELS[best['method']]}, by {abs(acc(r) - acc(best)):.2f} points), with "
                 f"{wgs(r):.1f}% weighted group sparsity against at most "
                 f"{max(map(wgs, others)):.1f}%.")
  if equal and equal.get("sweep"):
    out.append("Equal tuning (2d): " + equal_reading(equal).split(" At lam")[0])
  if rigl and rigl.get("table"):
    out.append("RigL at 20 epochs (3b): " + rigl_reading(rigl))
  return " ".join(x for x in out if x)



# --------------------------------------- identification at the authors' budget
BUDGET_TITLE = ("## 1c. Identification at the authors' budget: 200 epochs, milestones 50 and "
                "100 (issue 19, part 3)")
BUDGET_PLANNED = "4 methods (RMDA, ProxSGD, ProxGen, ProxSSI) x lambda 1e-3 and 5e-4 x 3 seeds"


def _windows(changes, start, stop, width):
  """Sums of ``changes`` (epoch e at index e - 1) over [start, stop) in windows of ``width``."""
  return [int(sum(c or 0 for c in changes[a - 1:min(a - 1 + width, stop - 1)]))
          for a in range(start, stop, width)]


def _sci(x: float) -> str:
  """``1e-3`` for 0.001: a lambda as the results' names spell it."""
  return np.format_float_scientific(x, trim="-", exp_digits=1)


def authors_budget(results) -> str:
  """Section 1c from the ``identification_200_*.json`` files (``bench_identification_deep``
  with ``--epochs 200 --milestones 50 100``), whatever has finished."""
  lines = [BUDGET_TITLE, ""]
  runs = _finished(results)
  if not runs:
    return "\n".join(lines + ["Not run yet: the commands are in "
                              "`benchmarks/bench_identification_deep.py`'s docstring.", ""])
  s = results[0]["settings"]
  lams = sorted({d["settings"]["lam"] for d, _ in runs}, reverse=True)
  lines += [
      "`python -m benchmarks.bench_identification_deep --configs crop --epochs 200 "
      "--milestones 50 100 --lam LAM --methods ... --name identification_200_lamLAM` "
      f"(LAM {', '.join(_sci(x) for x in lams)}): "
      f"the authors' MNIST schedule (200 epochs, lr x {s.get('gamma')} at epochs 50 and 100, "
      "RMDA restarting there) and their MNIST lambda 1e-3 (then 5e-4), both published for "
      "logistic regression on MNIST (Huang & Lee 2022; shared/docs/rmda.md section 5) and "
      "applied here to a LeNet5, with this project's random crop "
      f"({s.get('augmentation')}); LeNet5 (small), {s.get('data')}. Planned: "
      f"{BUDGET_PLANNED}; finished: {len(runs)} run(s), listed below. Machine: "
      f"{_machine(results[0].get('machine'))}.", ""]
  return "\n".join(lines + _last_stage(runs))


def _stage_windows(r) -> list:
  """A run's changes per 20 epochs from epoch 101 (its last stage at the authors' budget)."""
  return _windows(r["support_changes"], 101, len(r["support_changes"]) + 1, 20)


def _last10(r) -> int:
  return sum(c or 0 for c in r["support_changes"][-10:])


def _finished(results) -> list:
  """``(result, run)`` for every finished run of ``results``."""
  return [(d, r) for d in results for r in d.get("runs", []) if r.get("complete")]


def _by_method_and_lambda(runs) -> dict:
  """``(method, lam) -> [run, ...]`` sorted by seed, in the order first seen."""
  groups = {}
  for d, r in runs:
    groups.setdefault((r["method"], d["settings"]["lam"]), []).append(r)
  return {k: sorted(rs, key=lambda r: r["seed"]) for k, rs in groups.items()}


def _fading(w) -> bool:
  """The last stage's changes fade: its last 20 epochs hold at most half its first 20."""
  return len(w) >= 2 and 2 * w[-1] <= w[0]


def _across_seeds(runs) -> list:
  """One sentence per (method, lambda) that finished more than one seed: in how many
  seeds the last stage's changes fade and stop over the last 10 epochs, and (RMDA,
  RAMDA) how many late flips lie within 0.1 of the dual threshold, all seeds pooled."""
  said = []
  for (method, lam), rs in _by_method_and_lambda(runs).items():
    if len(rs) < 2:
      continue
    ws, last10 = [_stage_windows(r) for r in rs], [_last10(r) for r in rs]
    text = (f"{LABELS.get(method, method)} (lambda {lam:g}), seeds "
            f"{', '.join(str(r['seed']) for r in rs)}: the last stage's changes per 20 "
            f"epochs fade in {sum(map(_fading, ws))} of {len(rs)} seeds (epochs 101-120 "
            f"against 181-200: {', '.join(f'{w[0]} -> {w[-1]}' for w in ws)}); the last 10 "
            f"epochs hold {', '.join(map(str, last10))} changes (zero in "
            f"{sum(n == 0 for n in last10)} of {len(rs)} seeds)")
    duals = [r["near_threshold_dual"] for r in rs if r.get("near_threshold_dual")]
    if duals:
      text += (f"; by the dual ratio, {sum(x['flipped_within_near_of_1'] for x in duals)} of "
               f"the {sum(x['flipped'] for x in duals)} late flips of the {len(duals)} seeds "
               f"that record it lie within 0.1 of 1")
    said.append(text + ".")
  return [" ".join(["Across seeds:"] + said), ""] if said else []


def budget_headline(results) -> list:
  """Headline rows of section 1c, one per (method, lambda): per seed, the changes of the
  last stage's first and last 20 epochs and of the last 10; mean accuracy and sparsity."""
  order = lambda kv: (-kv[0][1], list(LABELS).index(kv[0][0]) if kv[0][0] in LABELS else 99)
  out = []
  for i, ((method, lam), rs) in enumerate(sorted(
      _by_method_and_lambda(_finished(results)).items(), key=order)):
    ws, last10 = [_stage_windows(r) for r in rs], [_last10(r) for r in rs]
    measure = ("deep identification at the authors' MNIST schedule and lambda (Huang & Lee "
               "2022, for logistic regression on MNIST: 200 epochs, lr x 0.1 at epochs 50 and "
               "100, lambda 1e-3), here on LeNet5 (small) with this project's random crop "
               "(1c): groups changing status in epochs 101-120 -> "
               "181-200, and in the last 10 epochs (per seed); test accuracy; weighted group "
               "sparsity (means)") if i == 0 else ""
    out.append([measure, f"{LABELS.get(method, method)}, lambda {lam:g}, seeds "
                f"{', '.join(str(r['seed']) for r in rs)}",
                f"{', '.join(f'{w[0]} -> {w[-1]}' for w in ws)}; "
                f"{', '.join(map(str, last10))}; "
                f"{100 * np.mean([r['test_accuracy'][-1] for r in rs]):.2f}%; "
                f"{100 * np.mean([r['weighted_group_sparsity'][-1] for r in rs]):.1f}%"])
  return out


def _last_stage(runs, explain: bool = True) -> list:
  """The table and sentences of sections 1c and 1d: per finished run, its last stage's
  support changes, accuracy, sparsity and threshold ratios (``explain``: and what the
  dual ratio is)."""
  lines, rows = [], []
  for d, r in runs:
    ch = r["support_changes"]
    nt = r.get("near_threshold") or {}
    nc = r.get("near_threshold_crop") or {}
    last_change = max((i + 1 for i, c in enumerate(ch) if c), default=None)
    rows.append([
        LABELS.get(r["method"], r["method"]), f"{d['settings']['lam']:g}", str(r["seed"]),
        " ".join(map(str, _stage_windows(r))), str(_last10(r)),
        "-" if last_change is None else str(last_change),
        f"{100 * r['test_accuracy'][-1]:.2f}", f"{100 * r['weighted_group_sparsity'][-1]:.1f}",
        str(nt.get("flipped", "-")),
        *(cell for x in (nt, nc) for cell in (
            str(x.get("flipped_within_near_of_1", "-")),
            "-" if x.get("max_ratio_of_a_zero_group") is None
            else f"{x['max_ratio_of_a_zero_group']:.3f}",
            "-" if x.get("nonzero_ratio_median") is None
            else f"{x['nonzero_ratio_median']:.3f}"))])
  lines += [
      "Changes: groups whose zero/nonzero status at the reported point (RMDA: Z) differs "
      "from the previous epoch's. Ratio: `||grad_g F|| / (lambda w_g)` at the final point "
      "(1 for a nonzero group at a stationary point of F + lambda psi, at most 1 for a zero "
      "group), with F the training loss over all training images either without "
      "augmentation (F0) or averaged over random-crop draws of them (Fc, the loss the runs "
      "minimize; 8 draws"
      + ("; runs before this column existed show -"
         if any(not r.get("near_threshold_crop") for _, r in runs) else "")
      + "). Late flips: groups that changed status in the last 20 epochs.", "",
      _table(["method", "lambda", "seed", "changes per 20 epochs, epochs 101-200",
              "changes, last 10 epochs", "last epoch with a change", "test acc %",
              "weighted group sp %", "late flips", "F0: late flips within 0.1 of 1",
              "F0: largest zero-group ratio", "F0: median nonzero-group ratio",
              "Fc: late flips within 0.1 of 1", "Fc: largest zero-group ratio",
              "Fc: median nonzero-group ratio"], rows), ""]
  lines += _across_seeds(runs)
  said = []
  for d, r in runs:
    w = _stage_windows(r)
    nt = r.get("near_threshold_crop") or r.get("near_threshold")
    f_name = "Fc" if r.get("near_threshold_crop") else "F0"
    text = (f"{LABELS.get(r['method'], r['method'])} (lambda {d['settings']['lam']:g}, seed "
            f"{r['seed']}): over the last stage the changes per 20 epochs went "
            f"{' -> '.join(map(str, w))}")
    if len(w) >= 2:
      text += (" (none in the last 20 epochs)" if w[-1] == 0 else
               " (fading: the last 20 epochs at most half the first)" if _fading(w)
               else " (not fading: the last 20 epochs more than half the first)")
    if nt is not None:
      text += (f"; {nt['flipped_within_near_of_1']} of the {nt['flipped']} groups that changed "
               f"status in the last 20 epochs end within 0.1 of the threshold ratio 1 "
               f"({f_name}), and the nonzero groups' median ratio is "
               f"{nt['nonzero_ratio_median']} (1 at a stationary point)")
    nd = r.get("near_threshold_dual")
    if nd is not None:
      fr = nd["flipped_ratios"]
      b = _band(r)
      band = "" if b is None else (f"; every late flip lies within {b[0]:.3f} of 1, a band "
                                   f"that holds {b[1]} of the {b[2]} groups")
      text += (f". By the ratio its last prox thresholded (dual, from the optimizer state) "
               f"{nd['flipped_within_near_of_1']} of the {nd['flipped']} late flips lie within "
               f"0.1 of 1" + (f" (their ratios {min(fr):.3f} to {max(fr):.3f})" if fr else "")
               + band
               + f"; of the {nd['stable_zero_groups']} zero groups that did not change, "
               f"{nd['stable_zero_within_near_of_1']} lie within 0.1 of 1, the largest zero "
               f"ratio is {nd['max_ratio_of_a_zero_group']} and the nonzero groups' median "
               f"{nd['nonzero_ratio_median']}")
    said.append(text + ".")
  lines += [" ".join(said), ""]
  if explain and any(r["method"] in ("rmda", "ramda") for _, r in runs):
    recorded = any(r.get("near_threshold_dual") for _, r in runs)
    lines += ["RMDA's (and RAMDA's) prox thresholds its dual average (the weighted mean of "
              "the stage's gradients, plus a vanishing proximal term), not the gradient at Z: "
              "ratios far from 1 at Z say that the final Z is not a stationary point of "
              "F + lambda psi, not that the prox's input is far from its threshold. That "
              "input's own ratio, `||(W0 - V / beta)_g|| / ((alpha / beta) lambda w_g)` "
              "from the optimizer state (RAMDA: `||D_g Y_g|| / (alpha lambda w_g)`), is what "
              "decides the flips: a group is zero in Z exactly when it is at most 1"
              + (" (`deep.dual_ratios`; the dual sentences above). For a nonzero group it "
                 "equals 1 + ||Z_g|| / ((alpha / beta) lambda w_g), and alpha / beta grows "
                 "linearly with the updates of the stage, so every nonzero group's ratio "
                 "drifts toward 1 as the stage lengthens; the number of groups in the late "
                 "flips' band says whether they are special." if recorded else
                 "; it is not recorded yet."), ""]
  return lines


ABLATION_TITLE = "## 1d. What the averaging does: an ablation at the authors' budget (issue 19, part 4)"
ABLATION_PLANNED = ("ProxSGD with rho 0.1, 0.01, 0.001; plain RDA (c = 1, no restarts); RMDA "
                    "with the divide and the ramp rules; 3 seeds")


def ablation(results) -> str:
  """Section 1d from ``ablation_200.json`` (``bench_identification_deep --name
  ablation_200``): the same last-stage table as 1c for each averaging variant."""
  lines = [ABLATION_TITLE, ""]
  runs = _finished(results)
  if not runs:
    return "\n".join(lines + ["Not run yet: the command is in "
                              "`benchmarks/bench_identification_deep.py`'s docstring.", ""])
  s = results[0]["settings"]
  methods = s.get("methods", {})
  lines += [
      "`python -m benchmarks.bench_identification_deep --configs crop --epochs 200 "
      "--milestones 50 100 --lam 1e-3 --methods ... --name ablation_200`: the setting of 1c "
      f"(lambda {s.get('lam'):g}, crop, LeNet5 small, {s.get('data')}) with the averaging "
      "varied: " + "; ".join(f"{LABELS.get(m, m)}: {methods[m]}" for m in dict.fromkeys(
          r["method"] for _, r in runs) if m in methods)
      + f". Planned: {ABLATION_PLANNED}; finished: {len(runs)} run(s). Machine: "
      f"{_machine(results[0].get('machine'))}."]
  copied = [r for _, r in runs if r.get("copied_from")]
  if copied:
    lines[-1] += (" Taken from 1c, as the same command with the same settings ran them: "
                  + "; ".join(f"{LABELS.get(r['method'], r['method'])} seed {r['seed']} "
                              f"({r['copied_from'].split(' ')[0]})" for r in copied) + ".")
  lines.append("")
  return "\n".join(lines + _last_stage(runs, explain=False)
                   + ["The ratios are those of 1c (the dual ratio is explained there).", ""])


# ------------------------------------------ the README's opening paragraph
OPENING_ABLATION = {"rmda": "RMDA (divide rule)", "rmda_ramp": "RMDA (ramp rule)",
                    "rda": "plain RDA (c 1, constant lr, no restarts)",
                    "prox_sgd": "ProxSGD (rho 0.1)", "prox_sgd_rho0.01": "ProxSGD (rho 0.01)",
                    "prox_sgd_rho0.001": "ProxSGD (rho 0.001)"}
IDENTIFYING = ("rmda", "ramda")


def _and(items) -> str:
  """``a``, ``a and b``, ``a, b and c``."""
  items = [str(x) for x in items]
  return " and ".join(items) if len(items) < 3 else ", ".join(items[:-1]) + " and " + items[-1]


def _seeds(rs) -> str:
  return f"seed{'s' if len(rs) > 1 else ''} {_and(r['seed'] for r in rs)}"


def _band(r):
  """``(width, in_band, groups)``: the late flips' largest distance of the dual ratio from 1,
  and how many of the run's groups lie that close to 1; None if not recorded."""
  fr = (r.get("near_threshold_dual") or {}).get("flipped_ratios")
  if not fr or not r.get("final_dual_ratios"):
    return None
  dual = np.asarray(r["final_dual_ratios"], np.float64)
  width = max(abs(x - 1) for x in fr)
  return width, int(np.sum(np.abs(dual - 1) <= width + 5e-5)), dual.size


def _counts(groups) -> str:
  """``3 seeds of RMDA, 2 of ProxSGD and ProxSSI, 1 of ProxGen``."""
  by_n = {}
  for method, rs in groups.items():
    by_n.setdefault(len(rs), []).append(LABELS.get(method, method))
  return ", ".join(f"{n} {('seeds of ' if n > 1 else 'seed of ') if i == 0 else 'of '}"
                   f"{_and(names)}" for i, (n, names) in enumerate(sorted(by_n.items(),
                                                                         reverse=True)))


def _lead(lead, groups) -> str:
  """The paragraph's opening clause, closed with the runs it covers ("" after the first)."""
  return f"{lead}{_counts(groups)}) " if lead else ""


def _budget_paragraph(groups, lead) -> list:
  """Sentences on one lambda of section 1c: the identifying methods' last stage per seed,
  the baselines' range, and where the late flips sit against the dual threshold."""
  out = []
  for method in [m for m in groups if m in IDENTIFYING]:
    rs = groups[method]
    ws, last10 = [_stage_windows(r) for r in rs], [_last10(r) for r in rs]
    name = LABELS.get(method, method)
    out.append(
        f"{_lead(lead, groups)}{name}'s changes per 20 epochs over the last stage went "
        f"from {_and(f'{w[0]} to {w[-1]}' for w in ws)} ({_seeds(rs)}; fading, the last 20 "
        f"epochs at most half the first 20, in {sum(map(_fading, ws))} of {len(rs)}), and "
        f"its last 10 epochs held {_and(last10)} changes: it stopped in "
        f"{sum(n == 0 for n in last10)} of {len(rs)}.")
    lead = ""
    duals = [(r, r["near_threshold_dual"]) for r in rs if r.get("near_threshold_dual")]
    if duals:
      n = sum(x["flipped"] for _, x in duals)
      near = sum(x["flipped_within_near_of_1"] for _, x in duals)
      ratios = [v for _, x in duals for v in x.get("flipped_ratios") or []]
      bands = [_band(r) for r, _ in duals]
      text = (f"{f'All {n} of its' if near == n > 1 else f'{near} of its {n}'} late flips "
              "(groups that changed status in the last 20 "
              f"epochs: {_and(x['flipped'] for _, x in duals)} in "
              f"{_seeds([r for r, _ in duals])}) end with a ratio within 0.1 of 1, the "
              "threshold of its prox's input (the dual average)")
      if ratios:  # "namely" only when the range is that of the flips within 0.1
        text += (f", namely {min(ratios):.3f} to {max(ratios):.3f}" if near == n else
                 f" (all {n}: {min(ratios):.3f} to {max(ratios):.3f})")
      if ratios and all(bands):
        text += (f"; the band around 1 of that width holds {_and(b[1] for b in bands)} of the "
                 f"{bands[0][2]} groups")
        if near == n and all(b[1] <= 0.05 * b[2] for b in bands):
          text += (". These are groups on the threshold, the near-degenerate case that the "
                   "theory's nondegeneracy assumption excludes")
      out.append(text + ".")
  base = {m: rs for m, rs in groups.items() if m not in IDENTIFYING}
  if base:
    rs = [r for m in base for r in base[m]]
    ws, last10 = [_stage_windows(r) for r in rs], [_last10(r) for r in rs]
    names = _and(f"{LABELS.get(m, m)}'s" for m in base)
    out.append(
        f"{_lead(lead, groups)}{names} changes stayed at {min(min(w) for w in ws)} or more "
        "in every 20 epochs of the last stage "
        + (f"in each of their {len(rs)} runs (fading in {sum(map(_fading, ws))} of {len(rs)}), "
           f"with {min(last10)} to {max(last10)} changes in the last 10 epochs."
           if len(rs) > 1 else
           f"in its one run ({'fading' if _fading(ws[0]) else 'not fading'}), with "
           f"{last10[0]} changes in the last 10 epochs."))
  return out


def opening(ident, budget, ablation_results) -> str:
  """The measured part of the README's opening paragraph (between its ``measured``
  markers): 1b's last-10-epoch changes, 1c per lambda, 1d per variant."""
  out = []
  if ident and ident.get("table"):
    last = ident["claim_last_epochs"]
    rm, base = _last_changes(ident)
    configs = {t["config"] for t in ident["table"]}
    s = ident["settings"]
    if rm and base:
      out.append(
          f"What we measured (LeNet5 on MNIST with random crop"
          f"{', with and without dropout' if 'crop_dropout' in configs else ''}, "
          f"{s['epochs']} epochs, this project's lambda {s['lam']:g} and milestones "
          f"{'/'.join(map(str, s['milestones_epochs']))}; benchmarks section 1b): over the last "
          f"{last} epochs RMDA's support changed in {min(rm)} to {max(rm)} groups (0 in "
          f"{sum(c == 0 for c in rm)} of {len(rm)} runs), the proximal baselines' in "
          f"{min(base)} to {max(base)} groups ({len(base)} runs).")
  groups = _by_method_and_lambda(_finished(budget))
  lams = sorted({lam for _, lam in groups}, key=lambda x: (x != 1e-3, -x))
  for i, lam in enumerate(lams):
    g = {m: rs for (m, l), rs in groups.items() if l == lam}
    lead = (f"At the authors' 200-epoch MNIST schedule (milestones 50/100) and lambda "
            f"{_sci(lam)}{' (their MNIST value)' if lam == 1e-3 else ''}, published for "
            "logistic regression and applied here to LeNet5 with the crop (benchmarks "
            "section 1c; " if i == 0 else
            f"At lambda {_sci(lam)} (the same schedule; ")
    out += _budget_paragraph(g, lead)
  runs = _finished(ablation_results)
  if runs:
    ab = {m: rs for (m, _), rs in _by_method_and_lambda(runs).items()}
    ab = {m: ab[m] for m in OPENING_ABLATION if m in ab}
    parts, fade, no_fade = [], [], []
    for m, rs in ab.items():
      ws = [_stage_windows(r) for r in rs]
      parts.append(f"{OPENING_ABLATION[m]} {_and(w[-1] for w in ws)} ({_seeds(rs)}; "
                   f"{100 * np.mean([r['test_accuracy'][-1] for r in rs]):.2f}%, "
                   f"{100 * np.mean([r['weighted_group_sparsity'][-1] for r in rs]):.1f}%)")
      n = sum(map(_fading, ws))
      (fade if n == len(rs) else no_fade if n == 0 else []).append(OPENING_ABLATION[m])
    stopped = [f"{OPENING_ABLATION[m]} seed {r['seed']}" for m, rs in ab.items() for r in rs
               if _last10(r) == 0]
    text = ("In the ablation of the averaging at that budget (lambda "
            f"{_sci(runs[0][0]['settings']['lam'])}, benchmarks section 1d) the last 20 epochs "
            "held these changes per seed (mean test accuracy, weighted group sparsity): "
            + "; ".join(parts) + ".")
    if fade:
      text += f" The changes faded in every seed of {_and(fade)}"
      text += f", in none of {_and(no_fade)}." if no_fade else "."
    elif no_fade:
      text += f" The changes faded in no seed of {_and(no_fade)}."
    text += (f" The support stopped changing over the last 10 epochs in "
             f"{_and(stopped) if stopped else 'no run'}.")
    out.append(text)
  return "\n".join(out)
