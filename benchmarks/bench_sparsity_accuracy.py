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

    python benchmarks/bench_sparsity_accuracy.py                  # full (~40 min, 2 cores)
    python benchmarks/bench_sparsity_accuracy.py --quick --out /tmp/q   # < 2 min
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _train_common as tc  # noqa: E402

import optax  # noqa: E402

METHODS = ("rmda", "prox_sgd", "prox_adam", "prox_ssi", "msgd")
MODELS = ("lenet5_small", "lenet5_large", "mlp")
SWEEP_METHODS = ("rmda", "prox_sgd")


def method_available(method: str) -> bool:
  import rmda_jax as rj
  if method == "msgd":
    return True
  if method == "rmda":
    return hasattr(rj, "rmda_multistep")
  return hasattr(rj, method)


def build(method: str, lam: float, total_steps: int, args):
  """(optax transformation, regularizer or None, reported-point function or None)."""
  import rmda_jax as rj
  milestones = sorted({max(1, int(round(f * total_steps))) for f in args.milestone_fractions})
  sched = lambda lr: optax.piecewise_constant_schedule(lr, {m: args.gamma for m in milestones})
  reg = rj.group_lasso(lam, groups="input")
  if method == "rmda":
    tx = rj.rmda_multistep(args.rmda_lr, args.rmda_c0, milestones, gamma=args.gamma,
                           regularizer=reg)
    return tx, reg, (lambda p, s: rj.structured_params(s, reg))
  if method == "prox_sgd":
    # The authors' EMA form (lr_bar, rho, lam) == heavy-ball (rho*lr_bar, 1-rho, lam/rho).
    rho = 0.1
    reg_run = rj.group_lasso(lam / rho, groups="input")
    return rj.prox_sgd(sched(rho * args.prox_sgd_lr), 1 - rho, reg_run), reg, None
  if method == "prox_adam":
    return rj.prox_adam(sched(args.adam_lr), regularizer=reg), reg, None
  if method == "prox_ssi":
    return rj.prox_ssi(sched(args.adam_lr), regularizer=reg), reg, None
  if method == "msgd":
    return optax.sgd(sched(args.msgd_lr), momentum=0.9), None, None
  raise ValueError(method)


def measure(params, reg_groups) -> dict:
  import rmda_jax as rj
  return {
      "group_sparsity": rj.group_sparsity(params, reg_groups),
      "weighted_group_sparsity": rj.group_sparsity(params, reg_groups, weighted=True),
      "kernel_sparsity": tc.kernel_sparsity(params),
      "sparsity_all_params": rj.sparsity(params),
  }


def aggregate(runs, keys=("model", "method", "lam")) -> list:
  groups = {}
  for r in runs:
    groups.setdefault(tuple(r[k] for k in keys), []).append(r)
  out = []
  for key, rs in groups.items():
    row = dict(zip(keys, key))
    row["seeds"] = [r["seed"] for r in rs]
    for m in ("test_accuracy", "group_sparsity", "weighted_group_sparsity",
              "kernel_sparsity", "train_wall_s"):
      row[m] = tc.mean_std([r[m] for r in rs])
    out.append(row)
  return out


def plot(sweep_rows, table_rows, path: Path, machine: dict, settings: dict) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  models = sorted({r["model"] for r in sweep_rows}, key=lambda m: MODELS.index(m)
                  if m in MODELS else 99)
  if not models:
    return
  fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 4.2), squeeze=False)
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
  plt.close(fig)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--quick", action="store_true", help="tiny run (< 2 min) to check the pipeline")
  p.add_argument("--out", type=Path, default=HERE / "results", help="output folder")
  p.add_argument("--dataset", default="mnist", choices=("mnist", "digits"))
  p.add_argument("--models", nargs="+", default=None, choices=MODELS)
  p.add_argument("--methods", nargs="+", default=None, choices=METHODS)
  p.add_argument("--seeds", type=int, default=None)
  p.add_argument("--epochs", type=int, default=None)
  p.add_argument("--train-subset", type=int, default=None)
  p.add_argument("--test-subset", type=int, default=None)
  p.add_argument("--batch-size", type=int, default=128)
  p.add_argument("--lam", type=float, default=None, help="lambda of the main table")
  p.add_argument("--sweep-lams", type=float, nargs="*", default=None,
                 help="extra lambdas for the RMDA / ProxSGD sweep (seed 0)")
  p.add_argument("--milestone-fractions", type=float, nargs="*", default=(0.5, 0.75))
  p.add_argument("--gamma", type=float, default=0.1)
  p.add_argument("--rmda-lr", type=float, default=0.1)
  p.add_argument("--rmda-c0", type=float, default=0.1)
  p.add_argument("--prox-sgd-lr", type=float, default=0.1,
                 help="the authors' (EMA-form) ProxSGD lr; run as heavy-ball 0.1x this")
  p.add_argument("--adam-lr", type=float, default=1e-3)
  p.add_argument("--msgd-lr", type=float, default=0.01)
  p.add_argument("--name", default=None, help="results file stem (default by mode)")
  p.add_argument("--plot-only", type=Path, default=None,
                 help="only redraw the PNG of an existing (possibly partial) results JSON")
  args = p.parse_args(argv)
  tc.cpu_speed_flags()  # as rmda-train; before the first JAX computation
  if args.plot_only is not None:
    d = json.loads(args.plot_only.read_text())
    png = args.plot_only.with_suffix(".png")
    plot(d["sweep"], d["table"], png, d["machine"], d["settings"])
    print(f"wrote {png}" + ("" if d.get("complete") else " (from a partial run)"))
    return 0

  q = args.quick
  models = args.models or (("lenet5_small", "mlp") if q else MODELS)
  methods = args.methods or METHODS
  seeds = args.seeds or (2 if q else 3)
  epochs = args.epochs or (2 if q else 3)
  train_subset = args.train_subset or (1024 if q else 12800)
  test_subset = args.test_subset or (1000 if q else None)
  lam = args.lam if args.lam is not None else 3e-3
  sweep_lams = args.sweep_lams if args.sweep_lams is not None else (
      [] if q else [1e-3, 6e-3, 1e-2])
  stem = args.name or ("sparsity_accuracy_quick" if q else "sparsity_accuracy")
  args.out.mkdir(parents=True, exist_ok=True)
  json_path, png_path = args.out / f"{stem}.json", args.out / f"{stem}.png"

  import rmda_jax as rj
  t_start = time.perf_counter()
  machine = tc.machine_info()
  data = tc.load_data(args.dataset, train_subset, test_subset)
  spe = tc.steps_per_epoch(data, args.batch_size)
  total_steps = spe * epochs
  available = [m for m in methods if method_available(m)]
  missing = [m for m in methods if m not in available]
  settings = {
      "data": data.note, "dataset": args.dataset, "epochs": epochs,
      "batch_size": args.batch_size, "steps_per_epoch": spe, "total_steps": total_steps,
      "milestones_fraction_of_steps": list(args.milestone_fractions),
      "milestones_steps": sorted({max(1, int(round(f * total_steps)))
                                  for f in args.milestone_fractions}),
      "gamma": args.gamma, "seeds": list(range(seeds)), "lam_main": lam,
      "sweep_lams": sweep_lams, "sweep_seeds": [0],
      "regularizer": "rj.group_lasso(lam, groups='input') on kernels (ndim >= 2)",
      "rmda": {"lr": args.rmda_lr, "c0": args.rmda_c0, "momentum_rule": "divide",
               "reported_point": "Z = rj.structured_params(opt_state, reg)"},
      "prox_sgd": {"authors_form": {"lr": args.prox_sgd_lr, "rho": 0.1, "lam": "lam"},
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
      "test_set": "MNIST test set" if test_subset is None else f"first {test_subset} test images",
      "train_wall_s_note": "per run: training + computing the reported point; the first "
                           "seed of each (model, method, lam) includes jit compilation",
  }
  result = {"benchmark": "bench_sparsity_accuracy", "quick": q, "machine": machine,
            "settings": settings, "missing_methods": missing, "runs": [], "table": [],
            "sweep": [], "wall_s": None, "complete": False}

  def save():
    result["wall_s"] = time.perf_counter() - t_start
    main_runs = [r for r in result["runs"] if r["lam"] == lam or r["method"] == "msgd"]
    result["table"] = aggregate(main_runs)
    sweep_runs = [r for r in result["runs"] if r["method"] in SWEEP_METHODS]
    # Seed 0 of every lambda (the main lambda's seed 0 included).
    result["sweep"] = aggregate([r for r in sweep_runs if r["seed"] == 0])
    tmp = json_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(json_path)

  log = lambda s: print(s, flush=True)
  log(f"{data.note}; {total_steps} steps per run; methods {available}"
      + (f"; missing {missing}" if missing else ""))

  # The main table, then the sweep (seed 0 only).
  jobs = [(model, method, lam, list(range(seeds))) for model in models for method in available]
  jobs += [(model, method, sl, [0]) for model in models for method in SWEEP_METHODS
           if method in available for sl in sweep_lams if sl != lam]
  for model, method, lam_j, job_seeds in jobs:
    tx, reg, reported = build(method, lam_j, total_steps, args)
    reg_groups = reg if reg is not None else rj.group_lasso(1.0)  # groups for the metrics
    trainer = tc.Trainer(model, tx, data, batch_size=args.batch_size)
    for seed in job_seeds:
      r = trainer.run(epochs=epochs, seed=seed, reported=reported)
      # msgd has no regulariser; it is filed under the main lambda (its table row).
      row = {"model": model, "method": method, "lam": lam_j,
             "seed": seed, "test_accuracy": r.test_accuracy, "test_loss": r.test_loss,
             "train_loss_last_epoch": r.train_loss_last_epoch, "train_wall_s": r.wall_s,
             "steps": r.steps, **measure(r.reported, reg_groups)}
      if method == "rmda":
        row["iterate_weighted_group_sparsity"] = rj.group_sparsity(
            r.params, reg_groups, weighted=True)
      result["runs"].append(row)
      log(f"  {model:13s} {method:9s} lam {lam_j:.0e} seed {seed}: acc "
          f"{100 * r.test_accuracy:.2f}%  group sp {100 * row['group_sparsity']:.1f}%  "
          f"weighted {100 * row['weighted_group_sparsity']:.1f}%  ({r.wall_s:.1f}s)")
      save()
    del trainer

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
