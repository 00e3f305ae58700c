"""Structured sparsity at accuracy: RMDA and its peers with group LASSO on MNIST.

Issue 5, section 2. Models: LeNet5 small, LeNet5 large and the MLP of the
RMDA paper (``rmda_jax.examples.models``). Regularizer: ``rj.group_lasso(lam)``
with input-unit groups (the authors' grouping), kernels only. Methods, all
minimising ``mean loss + lam * sum_g sqrt(|g|) ||W_g||``:

* ``rmda``      ``rj.rmda_multistep(lr, c0, milestones, gamma=0.1)``; reported
                point: the exactly structured ``Z`` (``rj.structured_params``);
* ``prox_sgd``  ``rj.prox_sgd(0.01, 0.9, rj.group_lasso(10 * lam))``: the
                authors' ProxSGD (lr 0.1, rho 0.1, lam) in heavy-ball form,
                whose fixed points are those of ``f + lam * psi`` (see the
                ``prox_sgd`` docstring);
* ``prox_adam`` (ProxGen) and ``prox_ssi``: lr 1e-3, strength ``lam``;
* ``msgd``      ``optax.sgd(0.01, momentum=0.9)``, no regulariser: the dense
                reference (= the authors' SGD-EMA form at lr 0.1, rho 0.1).

Every learning rate is multiplied by ``gamma = 0.1`` at the same milestones
(fractions of the run); RMDA's ``c`` follows the ICLR 2022 "divide" rule
(c0 = 0.1 -> 1 at the first milestone), so its last stages run with c = 1.

Reported per run: test accuracy, group sparsity and weighted group sparsity
(``rj.group_sparsity(..., weighted=True)``) of the reported point, plus the
unstructured sparsity of the kernels; mean and spread (sample std) over the
seeds. A lambda sweep for RMDA and ProxSGD gives the accuracy / weighted group
sparsity trade-off (PNG).

The CPU budget: the settings of shared/docs/rmda.md are scaled down (a fixed
training subset, a few epochs; see ``settings`` in the JSON). The results are
for this budget, not the papers' converged runs.

Run from the repository root:

    python -m benchmarks.bench_sparsity_accuracy                        # full (~40 min, 2 cores)
    python -m benchmarks.bench_sparsity_accuracy --quick --out /tmp/q   # < 2 min
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from matplotlib.figure import Figure

import rmda_jax as rj
from benchmarks import common

METHODS = common.METHODS
MODELS = ("lenet5_small", "lenet5_large", "mlp")
SWEEP_METHODS = ("rmda", "prox_sgd")
KEYS = ("model", "method", "lam")
METRICS = ("test_accuracy", "group_sparsity", "weighted_group_sparsity", "kernel_sparsity",
           "train_wall_s")


def measure(params, reg_groups) -> dict:
  return {
      "group_sparsity": rj.group_sparsity(params, reg_groups),
      "weighted_group_sparsity": rj.group_sparsity(params, reg_groups, weighted=True),
      "kernel_sparsity": common.kernel_sparsity(params),
      "sparsity_all_params": rj.sparsity(params),
  }


def plot(sweep_rows, table_rows, path: Path, machine: dict, settings: dict) -> None:
  models = sorted({r["model"] for r in sweep_rows}, key=lambda m: MODELS.index(m)
                  if m in MODELS else 99)
  if not models:
    return
  fig = Figure(figsize=(5 * len(models), 4.2))
  axes = fig.subplots(1, len(models), squeeze=False)
  colors = {"rmda": "C0", "prox_sgd": "C1", "prox_adam": "C2", "prox_ssi": "C3", "msgd": "k"}
  for ax, model in zip(axes[0], models):
    for method in SWEEP_METHODS:
      rows = sorted((r for r in sweep_rows if r["model"] == model and r["method"] == method),
                    key=lambda r: r["lam"])
      if not rows:
        continue
      xs = [100 * r["weighted_group_sparsity"]["mean"] for r in rows]
      ys = [100 * r["test_accuracy"]["mean"] for r in rows]
      ax.plot(xs, ys, "o-", color=colors[method], label=f"{method} (lambda sweep)")
      for r, x, y in zip(rows, xs, ys):
        ax.annotate(f"{r['lam']:.0e}", (x, y), fontsize=7, textcoords="offset points",
                    xytext=(3, 3))
    for r in table_rows:
      if r["model"] != model or r["method"] in SWEEP_METHODS:
        continue
      ax.errorbar(100 * r["weighted_group_sparsity"]["mean"], 100 * r["test_accuracy"]["mean"],
                  yerr=100 * r["test_accuracy"]["std"], fmt="s",
                  color=colors.get(r["method"], "gray"),
                  label=f"{r['method']} (lambda {r['lam']:.0e})" if r["method"] != "msgd"
                  else "msgd (dense)")
    ax.set_title(model)
    ax.set_xlabel("weighted group sparsity (%)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  fig.suptitle(
      f"MNIST, group LASSO (input groups), {settings['epochs']} epochs on "
      f"{settings['data']}\n{machine['cpu']} ({machine['cpu_count']} cores), jax "
      f"{machine['jax']}, optax {machine['optax']}, {machine['date'][:10]}", fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  common.add_training_args(p, MODELS)
  p.add_argument("--methods", nargs="+", default=None, choices=METHODS)
  p.add_argument("--lam", type=float, default=None, help="lambda of the main table")
  p.add_argument("--sweep-lams", type=float, nargs="*", default=None,
                 help="extra lambdas for the RMDA / ProxSGD sweep (seed 0)")
  p.add_argument("--prox-sgd-lr", type=float, default=0.1,
                 help="the authors' (EMA-form) ProxSGD lr; run as heavy-ball 0.1x this")
  p.add_argument("--adam-lr", type=float, default=1e-3)
  p.add_argument("--plot-only", type=Path, default=None,
                 help="only redraw the PNG of an existing (possibly partial) results JSON")
  args = p.parse_args(argv)
  common.cpu_speed_flags()  # as rmda-train; before the first JAX computation
  if args.plot_only is not None:
    d = json.loads(args.plot_only.read_text())
    png = args.plot_only.with_suffix(".png")
    plot(d["sweep"], d["table"], png, d["machine"], d["settings"])
    print(f"wrote {png}" + ("" if d.get("complete") else " (from a partial run)"))
    return 0

  q = args.quick
  models = args.models or (("lenet5_small", "mlp") if q else MODELS)
  methods = args.methods or METHODS
  b = common.budget(args)
  seeds, epochs = b.seeds, b.epochs
  lam = args.lam if args.lam is not None else 3e-3
  sweep_lams = args.sweep_lams if args.sweep_lams is not None else (
      [] if q else [1e-3, 6e-3, 1e-2])
  stem = args.name or ("sparsity_accuracy_quick" if q else "sparsity_accuracy")
  args.out.mkdir(parents=True, exist_ok=True)
  json_path, png_path = args.out / f"{stem}.json", args.out / f"{stem}.png"

  t_start = time.perf_counter()
  machine = common.machine_info()
  machine["load_average_at_start"] = os.getloadavg()
  data = common.load_data(args.dataset, b.train_subset, b.test_subset)
  spe = common.steps_per_epoch(data, args.batch_size)
  total_steps = spe * epochs
  rates = common.Rates(common.milestones_of(total_steps, args.milestone_fractions),
                       gamma=args.gamma, rmda_lr=args.rmda_lr, rmda_c0=args.rmda_c0,
                       prox_sgd_lr=args.prox_sgd_lr, adam_lr=args.adam_lr,
                       msgd_lr=args.msgd_lr)
  settings = {
      "data": data.note, "dataset": args.dataset, "epochs": epochs,
      "batch_size": args.batch_size, "steps_per_epoch": spe, "total_steps": total_steps,
      "milestones_fraction_of_steps": list(args.milestone_fractions),
      "milestones_steps": list(rates.milestones),
      "gamma": args.gamma, "seeds": list(range(seeds)), "lam_main": lam,
      "sweep_lams": sweep_lams, "sweep_seeds": [0],
      "regularizer": "rj.group_lasso(lam, groups='input') on kernels (ndim >= 2)",
      "rmda": {"lr": args.rmda_lr, "c0": args.rmda_c0, "momentum_rule": "divide",
               "reported_point": "Z = rj.structured_params(opt_state, reg)"},
      "prox_sgd": {"authors_form": {"lr": args.prox_sgd_lr, "rho": rates.prox_sgd_rho,
                                    "lam": "lam"},
                   "run_as": "rj.prox_sgd(0.1*lr, momentum=0.9, group_lasso(lam/0.1))",
                   "reported_point": "iterate W"},
      "prox_adam": {"lr": args.adam_lr, "b1": 0.9, "b2": 0.999, "max_inner_steps": 100,
                    "reported_point": "iterate W"},
      "prox_ssi": {"lr": args.adam_lr, "reported_point": "iterate W"},
      "msgd": {"lr": args.msgd_lr, "momentum": 0.9, "weight_decay": 0,
               "note": "no regulariser: the dense reference; lr 0.1 (heavy-ball) diverged "
                       "on LeNet5 in a 100-step check"},
      "lr_schedule": "every method's lr x gamma at each milestone; RMDA restarts there",
      "scaled_from": "shared/docs/rmda.md section 5 (e.g. MNIST logistic regression: 200 "
                     "epochs, milestones 50, 100, lr 0.1, c0 0.01, lam 1e-3); "
                     f"here {epochs} epochs on {data.note.split(';')[0]} to fit the 2-core "
                     "CPU budget",
      "test_set": ("MNIST test set" if b.test_subset is None
                   else f"first {b.test_subset} test images"),
      "train_wall_s_note": "per run: training + computing the reported point; the first "
                           "seed of each (model, method, lam) includes jit compilation",
  }
  result = {"benchmark": "bench_sparsity_accuracy", "quick": q, "machine": machine,
            # Every method exists now; the key stays for the results' format.
            "settings": settings, "missing_methods": [], "runs": [], "table": [],
            "sweep": [], "wall_s": None, "complete": False}

  def save():
    result["wall_s"] = time.perf_counter() - t_start
    main_runs = [r for r in result["runs"] if r["lam"] == lam or r["method"] == "msgd"]
    result["table"] = common.aggregate(main_runs, KEYS, METRICS)
    sweep_runs = [r for r in result["runs"] if r["method"] in SWEEP_METHODS]
    # Seed 0 of every lambda (the main lambda's seed 0 included).
    result["sweep"] = common.aggregate([r for r in sweep_runs if r["seed"] == 0], KEYS, METRICS)
    common.write_json(json_path, result)

  log = lambda s: print(s, flush=True)
  log(f"{data.note}; {total_steps} steps per run; methods {list(methods)}")

  # The main table, then the sweep (seed 0 only).
  jobs = [(model, method, lam, list(range(seeds))) for model in models for method in methods]
  jobs += [(model, method, sl, [0]) for model in models for method in SWEEP_METHODS
           if method in methods for sl in sweep_lams if sl != lam]
  for model, method, lam_j, job_seeds in jobs:
    reg = rj.group_lasso(lam_j, groups="input")  # msgd: only its groups, for the metrics
    tx, reported = common.build_method(method, reg, rates)
    run = common.make_run(model, tx, data, batch_size=args.batch_size)
    for seed in job_seeds:
      r = run(epochs=epochs, seed=seed, reported=reported)
      # msgd has no regulariser; it is filed under the main lambda (its table row).
      row = {"model": model, "method": method, "lam": lam_j,
             "seed": seed, "test_accuracy": r.test_accuracy, "test_loss": r.test_loss,
             "train_loss_last_epoch": r.train_loss_last_epoch, "train_wall_s": r.wall_s,
             "steps": r.steps, **measure(r.reported, reg)}
      if method == "rmda":
        row["iterate_weighted_group_sparsity"] = rj.group_sparsity(
            r.params, reg, weighted=True)
      result["runs"].append(row)
      log(f"  {model:13s} {method:9s} lam {lam_j:.0e} seed {seed}: acc "
          f"{100 * r.test_accuracy:.2f}%  group sp {100 * row['group_sparsity']:.1f}%  "
          f"weighted {100 * row['weighted_group_sparsity']:.1f}%  ({r.wall_s:.1f}s)")
      save()

  result["complete"] = True
  save()
  plot(result["sweep"], result["table"], png_path, machine, settings)
  result["plot"] = png_path.name
  save()
  log("")
  log(f"{'model':13s} {'method':9s} {'lambda':>7s} {'test acc %':>14s} "
      f"{'group sp %':>12s} {'weighted %':>12s}")
  for r in result["table"]:
    a, g, w = r["test_accuracy"], r["group_sparsity"], r["weighted_group_sparsity"]
    log(f"{r['model']:13s} {r['method']:9s} {r['lam']:7.0e} "
        f"{100 * a['mean']:7.2f}+-{100 * a['std']:5.2f} {100 * g['mean']:6.1f}+-{100 * g['std']:4.1f} "
        f"{100 * w['mean']:6.1f}+-{100 * w['std']:4.1f}")
  log(f"wrote {json_path} and {png_path} ({result['wall_s']:.0f}s)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
