"""Unstructured sparsity: RMDA with L1 against RigL at matched sparsity.

Issue 5, section 3. Models: LeNet5 large and the MLP on MNIST
(``rmda_jax.examples.models``). Sparsity is measured over the kernels
(``ndim >= 2`` leaves, the leaves ``rj.l1`` regularises; biases are dense in
both methods).

* **RMDA + L1**: ``rj.rmda_multistep(lr, c0, milestones, regularizer=rj.l1(lam))``
  (same schedule as bench_sparsity_accuracy), reported at its exactly sparse
  point ``Z`` (``rj.structured_params``). ``lam`` is tuned on seed 0 so that
  the kernel sparsity of ``Z`` lands near each target (90% and 95%): a coarse
  log-spaced grid, then secant steps on (log lam, logit sparsity) until within
  ``--tol``; the chosen ``lam`` is then run on every seed.
* **RigL** (Evci et al. 2020, "Rigging the Lottery"; our transcription,
  ``benchmarks.rigl``): sparsity distribution ERK, random initial masks, SGD
  with momentum 0.9 (the MSGD of bench_sparsity_accuracy: lr 0.01, x0.1 at the
  milestones) on masked gradients; every ``delta_t`` steps until ``t_end``,
  drop the smallest active weights and grow those of largest dense gradient.
  The paper's ``delta_t = 100`` is scaled to the short runs here (see
  ``settings``).

Run from the repository root:

    python -m benchmarks.bench_rigl                       # full
    python -m benchmarks.bench_rigl --quick --out /tmp/q  # < 2 min
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import rmda_jax as rj
from benchmarks import common, rigl

MODELS = ("lenet5_large", "mlp")


def _logit(s):
  s = min(max(s, 1e-4), 1 - 1e-4)
  return math.log(s / (1 - s))


def next_lam(tried: dict, target: float) -> float:
  """Secant / interpolation step in (log lam, logit sparsity) toward ``target``."""
  pts = sorted(tried.items())
  below = [(l, s) for l, s in pts if s < target]
  above = [(l, s) for l, s in pts if s >= target]
  if below and above:
    (l0, s0), (l1, s1) = below[-1], above[0]
  elif above:  # every point too sparse: extrapolate down from the two smallest lam
    if len(pts) == 1 or pts[1][1] <= pts[0][1]:
      return pts[0][0] / 4
    (l0, s0), (l1, s1) = pts[0], pts[1]
  else:  # never sparse enough: extrapolate up from the two largest
    if len(pts) == 1 or pts[-1][1] <= pts[-2][1]:
      return pts[-1][0] * 4
    (l0, s0), (l1, s1) = pts[-2], pts[-1]
  x0, x1, y0, y1 = math.log(l0), math.log(l1), _logit(s0), _logit(s1)
  if y1 == y0:
    return math.exp((x0 + x1) / 2)
  x = x0 + (_logit(target) - y0) * (x1 - x0) / (y1 - y0)
  lo, hi = math.log(pts[0][0]) - math.log(16), math.log(pts[-1][0]) + math.log(16)
  return math.exp(min(max(x, lo), hi))


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  common.add_training_args(p, MODELS)
  p.add_argument("--targets", type=float, nargs="+", default=(0.90, 0.95))
  p.add_argument("--lam-grid", type=float, nargs="+", default=None,
                 help="initial lambdas of RMDA's L1 tuning (seed 0)")
  p.add_argument("--tune-steps", type=int, default=None,
                 help="secant steps per target after the grid")
  p.add_argument("--tol", type=float, default=0.01, help="|sparsity - target| accepted")
  p.add_argument("--delta-t", type=int, default=None, help="RigL mask update period (steps)")
  p.add_argument("--alpha", type=float, default=0.3, help="RigL initial update fraction")
  p.add_argument("--t-end", type=float, default=0.75, help="RigL: last update, fraction of steps")
  p.add_argument("--distribution", default="erk", choices=("erk", "uniform"))
  args = p.parse_args(argv)
  common.cpu_speed_flags()  # as rmda-train; before the first JAX computation

  q = args.quick
  models = args.models or (("mlp",) if q else MODELS)
  b = common.budget(args)
  seeds, epochs = b.seeds, b.epochs
  lam_grid = args.lam_grid or ([1e-2, 1e-1] if q else [1e-3, 3e-3, 1e-2, 3e-2])
  tune_steps = args.tune_steps if args.tune_steps is not None else (0 if q else 3)
  stem = args.name or ("rigl_quick" if q else "rigl")
  args.out.mkdir(parents=True, exist_ok=True)
  json_path = args.out / f"{stem}.json"

  t_start = time.perf_counter()
  machine = common.machine_info()
  machine["load_average_start"] = common.load_average()
  data = common.load_data(args.dataset, b.train_subset, b.test_subset)
  total = common.steps_per_epoch(data, args.batch_size) * epochs
  rates = common.Rates(common.milestones_of(total, args.milestone_fractions), gamma=args.gamma,
                       rmda_lr=args.rmda_lr, rmda_c0=args.rmda_c0, msgd_lr=args.msgd_lr)
  delta_t = args.delta_t or max(4, total // 12)
  settings = {
      "data": data.note, "epochs": epochs, "batch_size": args.batch_size,
      "total_steps": total, "milestones_steps": list(rates.milestones),
      "gamma": args.gamma, "seeds": list(range(seeds)), "targets": list(args.targets),
      "sparsity_measured_over": "kernels (ndim >= 2 leaves); biases dense in both methods",
      "rmda": {"regularizer": "rj.l1(lam) on kernels", "lr": args.rmda_lr, "c0": args.rmda_c0,
               "momentum_rule": "divide", "reported_point": "Z = rj.structured_params",
               "tuning": f"seed 0: grid {lam_grid}, then up to {tune_steps} secant steps "
                         f"per target in (log lam, logit sparsity), tol {args.tol}"},
      "rigl": {"implementation": "own (benchmarks/rigl.py); jaxpruner not installable "
                                 "here (no distribution found on the reachable package index)",
               "optimizer": f"optax.sgd({args.msgd_lr}, momentum=0.9), lr x{args.gamma} at the "
                            "milestones, masked gradients",
               "distribution": args.distribution, "delta_t": delta_t, "alpha": args.alpha,
               "t_end_steps": int(args.t_end * total), "drop": "magnitude",
               "grow": "dense-gradient magnitude (current batch), new weights 0",
               "init_mask": "random, exact count per layer"},
      "train_wall_s_note": "per run, the first run of each jitted configuration includes "
                           "compilation",
  }
  result = {"benchmark": "bench_rigl", "quick": q, "machine": machine, "settings": settings,
            "tuning": [], "runs": [], "table": [], "wall_s": None, "complete": False}

  def save():
    result["wall_s"] = time.perf_counter() - t_start
    result["table"] = common.aggregate(
        result["runs"], ("model", "target", "method"),
        ("test_accuracy", "kernel_sparsity", "sparsity_all_params"), carry=("lam",))
    common.write_json(json_path, result)

  log = lambda s: print(s, flush=True)
  log(f"{data.note}; {total} steps per run; RigL delta_t {delta_t}")

  def record(model, method, target, seed, r, lam=None, extra=None):
    row = {"model": model, "method": method, "target": target, "seed": seed, "lam": lam,
           "test_accuracy": r.test_accuracy, "test_loss": r.test_loss,
           "kernel_sparsity": common.kernel_sparsity(r.reported),
           "sparsity_all_params": rj.sparsity(r.reported), "train_wall_s": r.wall_s,
           **(extra or {})}
    result["runs"].append(row)
    log(f"  {model:12s} {method:9s} target {target:.2f} seed {seed}"
        + (f" lam {lam:.3g}" if lam is not None else "")
        + f": acc {100 * r.test_accuracy:.2f}%  kernel sparsity "
        f"{100 * row['kernel_sparsity']:.2f}%  ({r.wall_s:.1f}s)")
    save()

  for model in models:
    # RMDA + L1: tune lam on seed 0. One compiled run per lam (lam is baked into the step).
    tried, runs0 = {}, {}

    def rmda_run(lam, seed):
      tx, reported = common.build_method("rmda", rj.l1(lam), rates)
      return common.make_run(model, tx, data, batch_size=args.batch_size)(
          epochs=epochs, seed=seed, reported=reported)

    def tune_point(lam):
      r = rmda_run(lam, 0)
      s = common.kernel_sparsity(r.reported)
      tried[lam], runs0[lam] = s, r
      result["tuning"].append({"model": model, "lam": lam, "seed": 0, "kernel_sparsity": s,
                               "test_accuracy": r.test_accuracy, "train_wall_s": r.wall_s})
      log(f"  {model:12s} rmda-l1 tuning lam {lam:.3g}: kernel sparsity {100 * s:.2f}% "
          f"acc {100 * r.test_accuracy:.2f}% ({r.wall_s:.1f}s)")
      save()

    for lam in lam_grid:
      tune_point(lam)
    for target in args.targets:
      for _ in range(tune_steps):
        if min(abs(s - target) for s in tried.values()) <= args.tol:
          break
        tune_point(next_lam(tried, target))
      lam = min(tried, key=lambda l: abs(tried[l] - target))
      record(model, "rmda_l1", target, 0, runs0[lam], lam)
      for seed in range(1, seeds):
        record(model, "rmda_l1", target, seed, rmda_run(lam, seed), lam)
    # RigL at each target, compiled once; each seed draws its own masks.
    msgd, _ = common.build_method("msgd", None, rates)
    for target in args.targets:
      tx = rigl.rigl(msgd, target, total, delta_t=delta_t, alpha=args.alpha,
                     t_end_fraction=args.t_end, distribution=args.distribution)
      run = common.make_run(model, tx, data, batch_size=args.batch_size)
      for seed in range(seeds):
        r = run(epochs=epochs, seed=seed, start=rigl.reseed)
        record(model, "rigl", target, seed, r, extra={
            "mask_updates": int(r.opt_state.mask_updates),
            "layer_densities": rigl.layer_densities(r.params, target, args.distribution)})

  result["complete"] = True
  save()
  log("")
  log(f"{'model':12s} {'method':8s} {'target':>6s} {'lambda':>8s} {'test acc %':>14s} "
      f"{'kernel sparsity %':>18s}")
  for r in result["table"]:
    a, s = r["test_accuracy"], r["kernel_sparsity"]
    lam = f"{r['lam']:.3g}" if r["lam"] is not None else "-"
    log(f"{r['model']:12s} {r['method']:8s} {r['target']:6.2f} {lam:>8s} "
        f"{100 * a['mean']:7.2f}+-{100 * a['std']:5.2f} {100 * s['mean']:10.2f}+-{100 * s['std']:5.2f}")
  log(f"wrote {json_path} ({result['wall_s']:.0f}s)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
