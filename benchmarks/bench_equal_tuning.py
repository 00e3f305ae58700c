"""Equal tuning, then accuracy against structure for every method.

Issue 10, part 2. LeNet5 (small) on MNIST with random-crop augmentation and
group LASSO, trained on the first 50k training images; the last 10k are a
validation set that no run trains on; the test set is only read for the
reported numbers.

1. **Tuning.** Every method gets the same number of configurations (the grid
   below: its learning rate, and ``c0`` for RMDA), one seed, at the fixed
   ``--tune-lam``; the configuration of highest validation accuracy at the
   reported point after the last epoch wins (ties: the first in the grid).
   Milestones, gamma, epochs and batch size are shared by every method.
2. **Lambda sweep.** Every method, at its tuned configuration, at each of
   ``--lams`` (which include the tuning lambda) and ``--seeds``: test accuracy
   and weighted group sparsity of the reported point (RMDA: ``Z``; the others:
   their iterate), mean and sample std over the seeds, drawn as Pareto curves.

Methods are ``common.build_method``'s: ``rmda`` (``rj.rmda_multistep``,
lr and c0), ``prox_sgd`` (the authors' EMA form, lr; rho 0.1), ``prox_adam``
(ProxGen) and ``prox_ssi`` (Adam's lr). Every run writes its own file under
``results/equal_tuning/`` (finished runs are skipped when the command is run
again, so the experiment can be spread over sessions), and
``equal_tuning.json`` / ``.png`` are rebuilt after every run.

Run from the repository root:

    python -m benchmarks.bench_equal_tuning                      # all (hours)
    python -m benchmarks.bench_equal_tuning --stage tune         # tuning only
    python -m benchmarks.bench_equal_tuning --quick --out /tmp/q # < 2 min
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

import rmda_jax as rj
from benchmarks import common, deep

METHODS = ("rmda", "prox_sgd", "prox_adam", "prox_ssi")
LABELS = {"rmda": "RMDA", "prox_sgd": "ProxSGD", "prox_adam": "ProxGen", "prox_ssi": "ProxSSI"}
COLORS = {"rmda": "C0", "prox_sgd": "C1", "prox_adam": "C2", "prox_ssi": "C3"}
# The same number of configurations for every method (common.Rates fields).
GRID = {
    "rmda": [{"rmda_lr": lr, "rmda_c0": c0} for lr in (0.1, 0.3) for c0 in (0.1, 0.01)],
    "prox_sgd": [{"prox_sgd_lr": lr} for lr in (0.03, 0.1, 0.3, 1.0)],
    "prox_adam": [{"adam_lr": lr} for lr in (3e-4, 1e-3, 3e-3, 1e-2)],
    "prox_ssi": [{"adam_lr": lr} for lr in (3e-4, 1e-3, 3e-3, 1e-2)],
}


def _tag(config: dict) -> str:
  return "_".join(f"{k}{v:g}" for k, v in sorted(config.items()))


def _trainer(method, config, lam, args, split):
  reg = rj.group_lasso(lam)
  spe = int(split.y_train.shape[0]) // args.batch_size
  rates = common.Rates([m * spe for m in args.milestones], gamma=args.gamma, **config)
  tx, reported = common.build_method(method, reg, rates)
  return reg, deep.make_trainer("lenet5_small", tx, split, batch_size=args.batch_size,
                                crop=args.crop, reported=reported)


def _log(prefix):
  def log(rec):
    acc = rec.get("validation_accuracy") or rec.get("test_accuracy")
    print(f"  {prefix} epoch {len(rec['wall_s']):3d}: acc {100 * acc[-1]:.2f}%, weighted "
          f"group sp {100 * rec['weighted_group_sparsity'][-1]:.1f}% "
          f"({rec['wall_s'][-1]:.0f}s)", flush=True)
  return log


def chosen(parts_dir: Path, grid=GRID) -> dict:
  """method -> the winning configuration, from the finished tuning runs (None if unfinished)."""
  out = {}
  for method, configs in grid.items():
    recs = [deep.load_part(parts_dir / "tune" / f"{method}_{_tag(c)}.json") for c in configs]
    if any(r is None for r in recs):
      out[method] = None
      continue
    accs = [r["validation_accuracy"][-1] for r in recs]
    out[method] = configs[int(np.argmax(accs))]
  return out


def merge(parts_dir: Path, json_path: Path, settings: dict, machine: dict, grid=GRID) -> dict:
  tuning = []
  for method, configs in grid.items():
    for c in configs:
      r = deep.load_part(parts_dir / "tune" / f"{method}_{_tag(c)}.json")
      tuning.append({"method": method, "config": c, "complete": r is not None,
                     "device": r.get("device") if r else None,
                     "validation_accuracy": r["validation_accuracy"][-1] if r else None,
                     "weighted_group_sparsity": r["weighted_group_sparsity"][-1] if r else None})
  runs = [json.loads(f.read_text()) for f in sorted((parts_dir / "sweep").glob("*.json"))]
  runs = [r for r in runs if r.get("complete")]
  rows = []
  for method in METHODS:
    for lam in sorted({r["lam"] for r in runs if r["method"] == method}):
      rs = [r for r in runs if r["method"] == method and r["lam"] == lam]
      rows.append({"method": method, "lam": lam, "config": rs[0]["config"],
                   "seeds": [r["seed"] for r in rs],
                   "test_accuracy": common.mean_std([r["test_accuracy"][-1] for r in rs]),
                   "weighted_group_sparsity": common.mean_std(
                       [r["weighted_group_sparsity"][-1] for r in rs]),
                   "group_sparsity": common.mean_std([r["group_sparsity"][-1] for r in rs]),
                   "support_changes_last_epoch": [r["support_changes"][-1] for r in rs],
                   "devices": sorted({r.get("device", "?") for r in rs})})
  devices = sorted({r.get("device", machine.get("cpu", "?")) for r in runs})
  out = {"benchmark": "bench_equal_tuning", "machine": machine, "settings": settings,
         "devices": devices,
         "grid": grid, "chosen": chosen(parts_dir, grid), "tuning": tuning,
         "sweep": rows,
         "runs": [{k: r[k] for k in ("method", "lam", "seed", "config", "test_accuracy",
                                     "weighted_group_sparsity", "group_sparsity",
                                     "support_changes", "train_loss")} for r in runs]}
  common.write_json(json_path, out)
  plot(out, json_path.with_suffix(".png"))
  return out


def plot(result: dict, path: Path) -> None:
  rows = result["sweep"]
  if not rows:
    return
  fig = Figure(figsize=(6, 4.5))
  ax = fig.subplots()
  for method in METHODS:
    rs = sorted((r for r in rows if r["method"] == method), key=lambda r: r["lam"])
    if not rs:
      continue
    xs = [100 * r["weighted_group_sparsity"]["mean"] for r in rs]
    ys = [100 * r["test_accuracy"]["mean"] for r in rs]
    ax.errorbar(xs, ys, xerr=[100 * r["weighted_group_sparsity"]["std"] for r in rs],
                yerr=[100 * r["test_accuracy"]["std"] for r in rs], fmt="o-",
                color=COLORS[method], capsize=2, label=f"{LABELS[method]} {rs[0]['config']}")
    for r, x, y in zip(rs, xs, ys):
      ax.annotate(f"{r['lam']:.0e}", (x, y), fontsize=6, textcoords="offset points",
                  xytext=(3, 3))
  ax.set_xlabel("weighted group sparsity (%)")
  ax.set_ylabel("test accuracy (%)")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=6)
  s, m = result["settings"], result["machine"]
  ax.set_title(f"LeNet5 small, MNIST (50k train, crop), {s['epochs']} epochs, tuned on "
               f"validation\nmean +- std over seeds; {', '.join(result.get('devices') or [m['cpu']])}",
               fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  deep.add_run_args(p, epochs=20, milestones=(5, 10))
  p.add_argument("--stage", choices=("tune", "sweep", "all"), default="all")
  p.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
  p.add_argument("--tune-lam", type=float, default=5e-4)
  p.add_argument("--lams", type=float, nargs="+", default=(2.5e-4, 5e-4, 1e-3, 2e-3))
  args = p.parse_args(argv)
  common.cpu_speed_flags()
  grid = {m: GRID[m] for m in args.methods}
  if args.quick:
    args.epochs, args.milestones, args.seeds, args.lams = 2, (1,), (0,), (2e-3,)
    grid = {m: GRID[m][:2] for m in args.methods}
  stem = args.name or ("equal_tuning_quick" if args.quick else "equal_tuning")
  json_path, parts_dir = args.out / f"{stem}.json", args.out / stem
  settings = {
      "model": "lenet5_small", "epochs": args.epochs, "milestones_epochs": list(args.milestones),
      "gamma": args.gamma, "batch_size": args.batch_size, "tune_lam": args.tune_lam,
      "lams": list(args.lams), "seeds": list(args.seeds), "tune_seed": 0,
      "augmentation": f"random crop, {args.crop}-pixel zero padding, no flip",
      "regularizer": "rj.group_lasso(lam): input-unit groups, sqrt(size) weights",
      "selection": "highest validation accuracy of the reported point after the last epoch, "
                   "one seed, at tune_lam; the same number of configurations per method",
      "reported_point": "RMDA: Z = rj.structured_params; the others: the iterate",
      "methods": "common.build_method: rmda = rj.rmda_multistep(lr, c0) ('divide' rule); "
                 "prox_sgd = the authors' EMA form (lr, rho 0.1) as heavy-ball; prox_adam "
                 "(ProxGen) and prox_ssi with Adam's lr; every lr x gamma at the milestones",
      "data": None,
  }
  if args.merge_only:
    prev = json.loads(json_path.read_text()) if json_path.exists() else {}
    merge(parts_dir, json_path, prev.get("settings", settings),
          prev.get("machine", common.machine_info()), grid)
    print(f"wrote {json_path}")
    return 0
  split = deep.load_split(validation=True, train_subset=deep.QUICK_TRAIN if args.quick else None,
                          eval_subset=deep.QUICK_EVAL if args.quick else None)
  settings["data"] = split.note
  machine = common.machine_info()
  machine["load_average_start"] = common.load_average()

  if args.stage in ("tune", "all"):
    def tune(method, c):
      part = parts_dir / "tune" / f"{method}_{_tag(c)}.json"

      def run():
        reg, train = _trainer(method, c, args.tune_lam, args, split)
        deep.observed_run(train, 0, args.epochs, reg, part,
                          {"method": method, "config": c, "lam": args.tune_lam},
                          on_record=_log(f"tune {method} {_tag(c)}"))
      return lambda: deep.run_once(part, f"tune {method} {_tag(c)}", run)

    deep.run_shard([tune(method, c) for method, configs in grid.items() for c in configs],
                   args.shard, lambda: merge(parts_dir, json_path, settings, machine, grid))
    if args.stage == "all" and args.shard is not None:
      print("with --shard, run --stage tune, then --stage sweep once every shard is done")
      return 0
  if args.stage in ("sweep", "all"):
    best = chosen(parts_dir, grid)
    missing = [m for m, c in best.items() if c is None]
    if missing:
      print(f"tuning of {missing} is unfinished: run --stage tune first", file=sys.stderr)
      return 2
    # Sweep seed by seed, so every method's curve grows alike; lambda varies
    # fastest, so that shards (--shard k/2) get every method alike.
    trainers = {}
    sweep_runs = [(seed, lam, method, c) for seed in args.seeds for method, c in best.items()
                  for lam in args.lams]
    def sweep(seed, lam, method, c):
      part = parts_dir / "sweep" / f"{method}_lam{lam:g}_seed{seed}.json"

      def run():
        # The sweep reports test accuracy: its runs evaluate on the test set.
        # One trainer (one compilation) per (method, lam) serves every seed.
        if (method, lam) not in trainers:
          trainers[method, lam] = _trainer(method, c, lam, args, split.on_test())
        reg, train = trainers[method, lam]
        deep.observed_run(train, seed, args.epochs, reg, part,
                          {"method": method, "config": c, "lam": lam},
                          on_record=_log(f"sweep {method} lam {lam:g} seed {seed}"))
      return lambda: deep.run_once(part, f"sweep {method} lam {lam:g} seed {seed}", run)

    deep.run_shard([sweep(*r) for r in sweep_runs], args.shard,
                   lambda: merge(parts_dir, json_path, settings, machine, grid))
  out = merge(parts_dir, json_path, settings, machine, grid)
  print(f"chosen: {out['chosen']}")
  for r in out["sweep"]:
    print(f"{r['method']:9s} lam {r['lam']:.1e} seeds {r['seeds']}: test acc "
          f"{100 * r['test_accuracy']['mean']:.2f}+-{100 * r['test_accuracy']['std']:.2f}%, "
          f"weighted group sp {100 * r['weighted_group_sparsity']['mean']:.1f}%")
  print(f"wrote {json_path}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
