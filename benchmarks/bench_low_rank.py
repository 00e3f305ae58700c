"""Low rank at accuracy: RMDA and ProxSGD with the nuclear norm on MNIST.

Issue 14. Models: the MLP of the RMDA paper (784-512-256-128-64-32-16-10) and
LeNet5 large (``rmda_jax.examples.models``). Regularizer:
``rj.nuclear_norm(lam)`` on every kernel (a conv kernel ``(kh, kw, in, out)``
viewed as the matrix ``(kh*kw*in, out)``); biases and BatchNorm parameters
are not regularized. Methods, both minimising
``mean loss + lam * sum_kernels ||W||_*``:

* ``rmda``      ``rj.rmda_multistep(lr, c0, milestones, gamma=0.1)`` ("divide"
                rule: c0 = 0.1 -> 1 at the first milestone); reported point:
                the exactly low-rank ``Z`` (``rj.structured_params``);
* ``prox_sgd``  the authors' ProxSGD (lr 0.1, rho 0.1, lam) in heavy-ball
                form, ``rj.prox_sgd(0.01, 0.9, rj.nuclear_norm(10 * lam))``,
                whose fixed points are those of ``f + lam * psi``; reported
                point: the iterate;
* ``msgd``      ``optax.sgd(0.01, momentum=0.9)``, no regularizer: the dense
                reference (its numerical ranks are reported too).

Every learning rate is multiplied by ``gamma = 0.1`` at the same milestones
(fractions of the run), where RMDA also restarts.

Reported per run (mean and sample std over the seeds): test accuracy at the
reported point, the total rank kept (``rj.rank_report``: singular values
above ``max(m, n) * eps(float32) * sigma_max``, numpy's ``matrix_rank``
tolerance) as a count and as a fraction of the total full rank, each kernel's
rank, and the parameters of the kernels stored as rank-r factors,
``sum min(m n, r (m + n)) / sum m n``. A lambda sweep for both methods (seed
0) gives the accuracy / rank trade-off (PNG).

The CPU budget: a fixed training subset and a few epochs (see ``settings``
in the JSON); the results are for this budget, not converged runs.

Run from the repository root:

    python -m benchmarks.bench_low_rank                        # full (~40 min, 2 cores)
    python -m benchmarks.bench_low_rank --quick --out /tmp/q   # a few minutes
"""

from __future__ import annotations

import os

# jax's SVD on CPU is LAPACK from scipy's OpenBLAS; on a shared 2-core machine its
# threads thrash (one 784x512 SVD: 3 s with the default threads, 0.16 s with one,
# measured under load). Set before numpy / jax load OpenBLAS; recorded in the JSON.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from matplotlib.figure import Figure  # noqa: E402

import rmda_jax as rj  # noqa: E402
from benchmarks import common  # noqa: E402

MODELS = ("mlp", "lenet5_large")
METHODS = ("rmda", "prox_sgd", "msgd")
SWEEP_METHODS = ("rmda", "prox_sgd")
KEYS = ("model", "method", "lam")
METRICS = ("test_accuracy", "rank", "rank_fraction", "factored_params_fraction",
           "train_wall_s")


def measure(params, reg) -> dict:
  """Total rank kept, its fraction, per-kernel ranks, factored size."""
  report = rj.rank_report(params, reg)
  dense = sum(r.matrix_shape[0] * r.matrix_shape[1] for r in report.rows)
  factored = sum(min(r.matrix_shape[0] * r.matrix_shape[1],
                     r.rank * (r.matrix_shape[0] + r.matrix_shape[1]))
                 for r in report.rows)
  return {
      "rank": report.rank,
      "full_rank": report.full_rank,
      "rank_fraction": report.rank_fraction,
      "factored_params_fraction": factored / dense if dense else 0.0,
      "layer_ranks": {r.path: [r.rank, r.full_rank] for r in report.rows},
      "kernel_sparsity": common.kernel_sparsity(params),
  }


def plot(sweep_rows, table_rows, path: Path, machine: dict, settings: dict) -> None:
  models = sorted({r["model"] for r in sweep_rows + table_rows},
                  key=lambda m: MODELS.index(m) if m in MODELS else 99)
  if not models:
    return
  fig = Figure(figsize=(5 * len(models), 4.2))
  axes = fig.subplots(1, len(models), squeeze=False)
  colors = {"rmda": "C0", "prox_sgd": "C1", "msgd": "k"}
  for ax, model in zip(axes[0], models):
    for method in SWEEP_METHODS:
      rows = sorted((r for r in sweep_rows if r["model"] == model and r["method"] == method),
                    key=lambda r: r["lam"])
      if not rows:
        continue
      xs = [100 * r["rank_fraction"]["mean"] for r in rows]
      ys = [100 * r["test_accuracy"]["mean"] for r in rows]
      ax.plot(xs, ys, "o-", color=colors[method], label=f"{method} (lambda sweep)")
      for r, x, y in zip(rows, xs, ys):
        ax.annotate(f"{r['lam']:.0e}", (x, y), fontsize=7, textcoords="offset points",
                    xytext=(3, 3))
    for r in table_rows:
      if r["model"] != model:
        continue
      ax.errorbar(100 * r["rank_fraction"]["mean"], 100 * r["test_accuracy"]["mean"],
                  yerr=100 * r["test_accuracy"]["std"], fmt="s",
                  color=colors.get(r["method"], "gray"), mfc="none",
                  label=(f"{r['method']} (lambda {r['lam']:.0e}, {r['test_accuracy']['n']} "
                         "seeds)") if r["method"] != "msgd" else "msgd (dense)")
    ax.set_title(model)
    ax.set_xlabel("total rank kept (% of full rank)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  fig.suptitle(
      f"MNIST, nuclear norm on every kernel, {settings['epochs']} epochs on "
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
  models = args.models or (("mlp",) if q else MODELS)
  methods = args.methods or METHODS
  b = common.budget(args)
  seeds, epochs = b.seeds, b.epochs
  lam = args.lam if args.lam is not None else 1e-3
  sweep_lams = args.sweep_lams if args.sweep_lams is not None else (
      [] if q else [3e-4, 3e-3])
  stem = args.name or ("low_rank_quick" if q else "low_rank")
  args.out.mkdir(parents=True, exist_ok=True)
  json_path, png_path = args.out / f"{stem}.json", args.out / f"{stem}.png"

  t_start = time.perf_counter()
  machine = common.machine_info()
  machine["load_average_at_start"] = os.getloadavg()
  machine["openblas_num_threads"] = os.environ.get("OPENBLAS_NUM_THREADS")
  data = common.load_data(args.dataset, b.train_subset, b.test_subset)
  spe = common.steps_per_epoch(data, args.batch_size)
  total_steps = spe * epochs
  rates = common.Rates(common.milestones_of(total_steps, args.milestone_fractions),
                       gamma=args.gamma, rmda_lr=args.rmda_lr, rmda_c0=args.rmda_c0,
                       prox_sgd_lr=args.prox_sgd_lr, msgd_lr=args.msgd_lr)
  settings = {
      "data": data.note, "dataset": args.dataset, "epochs": epochs,
      "batch_size": args.batch_size, "steps_per_epoch": spe, "total_steps": total_steps,
      "milestones_fraction_of_steps": list(args.milestone_fractions),
      "milestones_steps": list(rates.milestones),
      "gamma": args.gamma, "seeds": list(range(seeds)), "lam_main": lam,
      "sweep_lams": sweep_lams, "sweep_seeds": [0],
      "regularizer": "rj.nuclear_norm(lam) on every kernel (ndim >= 2), conv kernels "
                     "as (kh*kw*in, out) matrices",
      "rank_tolerance": "singular values > max(m, n) * eps(float32) * sigma_max "
                        "(numpy.linalg.matrix_rank's default), float64 SVD",
      "rmda": {"lr": args.rmda_lr, "c0": args.rmda_c0, "momentum_rule": "divide",
               "reported_point": "Z = rj.structured_params(opt_state, reg)"},
      "prox_sgd": {"authors_form": {"lr": args.prox_sgd_lr, "rho": rates.prox_sgd_rho,
                                    "lam": "lam"},
                   "run_as": "rj.prox_sgd(0.1*lr, momentum=0.9, nuclear_norm(lam/0.1))",
                   "reported_point": "iterate W"},
      "msgd": {"lr": args.msgd_lr, "momentum": 0.9, "weight_decay": 0,
               "note": "no regularizer: the dense reference"},
      "lr_schedule": "every method's lr x gamma at each milestone; RMDA restarts there",
      "test_set": ("MNIST test set" if b.test_subset is None
                   else f"first {b.test_subset} test images"),
      "train_wall_s_note": "per run: training + computing the reported point; the first "
                           "seed of each (model, method, lam) includes jit compilation",
  }
  result = {"benchmark": "bench_low_rank", "quick": q, "machine": machine,
            "settings": settings, "runs": [], "table": [], "sweep": [],
            "wall_s": None, "complete": False}

  def save():
    result["wall_s"] = time.perf_counter() - t_start
    main_runs = [r for r in result["runs"] if r["lam"] == lam or r["method"] == "msgd"]
    result["table"] = common.aggregate(main_runs, KEYS, METRICS, carry=("full_rank",))
    sweep_runs = [r for r in result["runs"] if r["method"] in SWEEP_METHODS]
    result["sweep"] = common.aggregate([r for r in sweep_runs if r["seed"] == 0], KEYS,
                                       METRICS, carry=("full_rank",))
    common.write_json(json_path, result)

  log = lambda s: print(s, flush=True)
  log(f"{data.note}; {total_steps} steps per run; methods {list(methods)}")

  jobs = [(model, method, lam, list(range(seeds))) for model in models for method in methods]
  jobs += [(model, method, sl, [0]) for model in models for method in SWEEP_METHODS
           if method in methods for sl in sweep_lams if sl != lam]
  for model, method, lam_j, job_seeds in jobs:
    reg = rj.nuclear_norm(lam_j)  # msgd: only its mask, for the ranks
    tx, reported = common.build_method(method, reg, rates)
    run = common.make_run(model, tx, data, batch_size=args.batch_size)
    for seed in job_seeds:
      r = run(epochs=epochs, seed=seed, reported=reported)
      row = {"model": model, "method": method, "lam": lam_j, "seed": seed,
             "test_accuracy": r.test_accuracy, "test_loss": r.test_loss,
             "train_loss_last_epoch": r.train_loss_last_epoch, "train_wall_s": r.wall_s,
             "steps": r.steps, **measure(r.reported, reg)}
      if method == "rmda":
        row["iterate_rank"] = rj.rank_report(r.params, reg).rank
      result["runs"].append(row)
      log(f"  {model:13s} {method:9s} lam {lam_j:.0e} seed {seed}: acc "
          f"{100 * r.test_accuracy:.2f}%  rank {row['rank']}/{row['full_rank']} "
          f"({100 * row['rank_fraction']:.1f}%)  factored "
          f"{100 * row['factored_params_fraction']:.1f}%  ({r.wall_s:.1f}s)")
      save()

  result["complete"] = True
  save()
  plot(result["sweep"], result["table"], png_path, machine, settings)
  result["plot"] = png_path.name
  save()
  log("")
  log(f"{'model':13s} {'method':9s} {'lambda':>7s} {'test acc %':>14s} {'rank kept %':>14s}")
  for r in result["table"]:
    a, k = r["test_accuracy"], r["rank_fraction"]
    log(f"{r['model']:13s} {r['method']:9s} {r['lam']:7.0e} "
        f"{100 * a['mean']:7.2f}+-{100 * a['std']:5.2f} {100 * k['mean']:7.1f}+-{100 * k['std']:4.1f}")
  log(f"wrote {json_path} and {png_path} ({result['wall_s']:.0f}s)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
