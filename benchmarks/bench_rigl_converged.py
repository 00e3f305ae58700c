"""RMDA with L1 against RigL at a budget where both converge, tuned alike.

Issue 10, part 3 (``bench_rigl`` is the short-budget version). LeNet5 (large)
on MNIST: trained on the first 50k training images, the last 10k held out for
tuning, the test set read only for the reported numbers; 20 epochs (the
learning-rate milestones at 50% and 75% of them), batch 128, no augmentation.
Sparsity is measured over the kernels (``ndim >= 2`` leaves); biases stay
dense in both methods.

Tuning, the same budget for both (``--lrs-rmda`` and ``--lrs-rigl``: the
same number of learning rates), seed 0, on validation accuracy at the first
target (90%):

* **RigL** (``benchmarks.rigl``: ERK, SGD momentum 0.9 on masked gradients)
  hits the target sparsity by construction; each of its learning rates is one
  run.
* **RMDA + L1** (``rj.rmda_multistep(lr, c0)`` with ``rj.l1(lam)``, reported
  at ``Z``) reaches a sparsity set by ``lam``: for each learning rate, ``lam``
  is *calibrated* on seed 0 (a log grid, then secant steps in (log lam, logit
  sparsity), ``bench_rigl.next_lam``) until the kernel sparsity is within
  ``--tol`` of the target; the accuracy of that run is the configuration's
  score. Calibration runs are counted and reported (``tuning``); RigL needs
  none.

The other targets reuse the chosen learning rates (RMDA's ``lam`` is
calibrated again at the chosen lr). Then every method runs ``--seeds`` seeds
at each target. Every run writes its own file under ``results/rigl_converged/``
(finished runs are skipped when run again); ``rigl_converged.json`` is rebuilt
after each.

    python -m benchmarks.bench_rigl_converged                       # hours
    python -m benchmarks.bench_rigl_converged --quick --out /tmp/q  # < 2 min

Issue 19, part 5, after the final stage (the last stage of ``--stage all``,
or on its own): ``--stage matched`` runs RigL, for every seed and target, at
the kernel sparsity RMDA + L1's final run of that seed reached (RigL hits a
given sparsity exactly, so the two are matched run by run), and the dense
model (``optax.sgd`` with momentum 0.9 and the same schedule, lr chosen on
validation among ``--lrs-rigl``) on every seed:

    python -m benchmarks.bench_rigl_converged --stage matched

With ``--shard``, ``--stage all`` leaves the matched stage to a later
``--stage matched`` when other shards' final runs have not finished.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


import rmda_jax as rj
from benchmarks import common, deep, rigl
from benchmarks.bench_rigl import next_lam


class Unfinished(Exception):
  """A run that another stage or shard has not finished yet (``load_only``)."""


def _run(kind, lr, target_or_lam, seed, args, split, part, total_steps, spe,
         load_only=False):
  """One run (RMDA-L1 at lam, or RigL at a target), recorded per epoch into ``part``.

  ``load_only``: never train; raises ``Unfinished`` if ``part`` is not finished."""
  rec = deep.load_part(part)
  if rec is not None:
    return rec
  if load_only:
    raise Unfinished(str(part))
  rates = common.Rates(common.milestones_of(args.epochs * spe, (0.5, 0.75)), gamma=0.1,
                       rmda_lr=lr, rmda_c0=args.rmda_c0, msgd_lr=lr)
  start = None
  if kind == "rmda_l1":
    tx, reported = common.build_method("rmda", rj.l1(target_or_lam), rates)
  elif kind == "msgd":  # the dense reference: RigL's optimizer without masks
    tx, reported = common.build_method("msgd", None, rates)
  else:
    msgd, _ = common.build_method("msgd", None, rates)
    tx = rigl.rigl(msgd, target_or_lam, total_steps, delta_t=args.delta_t, alpha=0.3,
                   t_end_fraction=0.75, distribution="erk")
    reported, start = None, rigl.reseed
  train = deep.make_trainer(args.model, tx, split, batch_size=args.batch_size,
                            reported=reported)
  acc_key = f"{split.eval_name}_accuracy"
  rec = {"kind": kind, "lr": lr, "seed": seed, "device": deep.device_name(), "complete": False,
         acc_key: [], "kernel_sparsity": [], "train_loss": [], "wall_s": []}
  if kind != "msgd":
    rec["lam" if kind == "rmda_l1" else "target"] = target_or_lam

  def on_epoch(r: deep.EpochRecord):
    rec[acc_key].append(r.eval_accuracy)
    rec["kernel_sparsity"].append(common.kernel_sparsity(r.point))
    rec["train_loss"].append(r.train_loss)
    rec["wall_s"].append(round(r.wall_s, 1))
    common.write_json(part, rec)

  train(seed, args.epochs, on_epoch, start=start)
  rec["complete"] = True
  common.write_json(part, rec)
  print(f"  {part.parent.name}/{part.stem}: {acc_key} {100 * rec[acc_key][-1]:.2f}%, kernel "
        f"sparsity {100 * rec['kernel_sparsity'][-1]:.2f}% ({rec['wall_s'][-1]:.0f}s)",
        flush=True)
  return rec


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--quick", action="store_true", help="tiny run (< 2 min) to check the pipeline")
  p.add_argument("--out", type=Path, default=common.RESULTS, help="output folder")
  p.add_argument("--name", default=None, help="results file stem (default by mode)")
  p.add_argument("--model", default="lenet5_large", choices=("lenet5_large", "mlp"))
  p.add_argument("--targets", type=float, nargs="+", default=(0.90, 0.95))
  p.add_argument("--seeds", type=int, nargs="+", default=(0, 1, 2))
  p.add_argument("--epochs", type=int, default=20)
  p.add_argument("--batch-size", type=int, default=128)
  p.add_argument("--lrs-rmda", type=float, nargs="+", default=(0.03, 0.1, 0.3))
  p.add_argument("--lrs-rigl", type=float, nargs="+", default=(0.01, 0.03, 0.1))
  p.add_argument("--rmda-c0", type=float, default=0.1)
  p.add_argument("--lam-grid", type=float, nargs="+", default=(3e-4, 3e-3),
                 help="first lambdas of each calibration (bench_rigl at 300 steps: ~6e-3 for 90%%)")
  p.add_argument("--calibration-steps", type=int, default=4,
                 help="secant steps per (lr, target) after the grid")
  p.add_argument("--tol", type=float, default=0.005, help="|sparsity - target| accepted")
  p.add_argument("--delta-t", type=int, default=100, help="RigL mask update period (steps)")
  p.add_argument("--stage", choices=("tune", "final", "all", "matched"), default="all",
                 help="matched (issue 19, part 5; after final): per seed, RigL at the kernel "
                      "sparsity RMDA + L1 reached in that seed, and the dense model (SGD "
                      "momentum 0.9, its lr chosen on validation from --lrs-rigl) at the "
                      "same budget")
  p.add_argument("--shard", type=deep.shard_arg, default=None, metavar="K/N",
                 help="run only the units of work whose index is K modulo N")
  p.add_argument("--merge-only", action="store_true",
                 help="only rebuild the JSON from the per-run files")
  args = p.parse_args(argv)
  if len(args.lrs_rmda) != len(args.lrs_rigl):
    p.error("--lrs-rmda and --lrs-rigl must have the same length (the same tuning budget)")
  common.cpu_speed_flags()
  if args.quick:
    args.epochs, args.seeds, args.calibration_steps, args.lam_grid = 2, (0,), 1, (1e-2,)
    args.lrs_rmda, args.lrs_rigl, args.targets, args.delta_t = (0.1,), (0.03,), (0.9, 0.95), 8
  stem = args.name or ("rigl_converged_quick" if args.quick else "rigl_converged")
  json_path, parts_dir = args.out / f"{stem}.json", args.out / stem
  if args.stage in ("final", "matched") and not any((parts_dir / "tune").glob("*.json")):
    # Before the data are read: no tuning run at all has finished.
    print(f"tuning is unfinished (no run in {parts_dir / 'tune'}): run --stage tune first",
          file=sys.stderr)
    return 2
  split = deep.load_split(validation=True, train_subset=deep.QUICK_TRAIN if args.quick else None,
                          eval_subset=deep.QUICK_EVAL if args.quick else None)
  spe = int(split.y_train.shape[0]) // args.batch_size
  total = spe * args.epochs
  machine = common.machine_info()
  machine["load_average_start"] = common.load_average()
  if args.merge_only and json_path.exists():  # the machine that ran the runs, not this one
    machine = json.loads(json_path.read_text()).get("machine", machine)
  settings = {
      "model": args.model, "data": split.note, "epochs": args.epochs,
      "batch_size": args.batch_size, "milestones": "50% and 75% of the epochs, lr x0.1",
      "targets": list(args.targets), "seeds": list(args.seeds),
      "lrs_rmda": list(args.lrs_rmda), "lrs_rigl": list(args.lrs_rigl),
      "rmda_c0": args.rmda_c0, "lam_grid": list(args.lam_grid),
      "calibration_steps": args.calibration_steps, "tol": args.tol,
      "rigl": {"delta_t": args.delta_t, "alpha": 0.3, "t_end_fraction": 0.75,
               "distribution": "erk", "optimizer": "optax.sgd(lr, momentum=0.9)"},
      "selection": f"validation accuracy at target {args.targets[0]}, seed 0",
      "sparsity_measured_over": "kernels (ndim >= 2 leaves); biases dense",
  }
  result = {"benchmark": "bench_rigl_converged", "machine": machine, "settings": settings,
            "tuning": [], "chosen": {}, "runs": [], "table": []}

  def save():
    result["table"] = common.aggregate(
        [r for r in result["runs"]], ("method", "target"),
        ("test_accuracy", "kernel_sparsity"), carry=("lr", "lam"))
    common.write_json(json_path, result)

  val, test = split, split.on_test()

  def calibrate(lr, target, start=(), load_only=False):
    """RMDA's lam for ``target`` at ``lr`` (seed 0): its calibration runs and the closest.

    Starts from ``--lam-grid`` and the lambdas of ``start`` (the first target's
    calibration at this lr, for the later targets), then secant steps."""
    tried, recs, tuning = {}, {}, []
    def point(lam):
      part = parts_dir / "tune" / f"rmda_l1_lr{lr:g}_lam{lam:.4g}.json"
      r = _run("rmda_l1", lr, lam, 0, args, val, part, total, spe, load_only)
      tried[lam], recs[lam] = r["kernel_sparsity"][-1], r
      tuning.append({"method": "rmda_l1", "lr": lr, "lam": lam, "target": target,
                     "kernel_sparsity": tried[lam],
                     "validation_accuracy": r["validation_accuracy"][-1]})
    for lam in (*args.lam_grid, *start):
      if lam not in tried:
        point(lam)
    for _ in range(args.calibration_steps):
      if min(abs(s - target) for s in tried.values()) <= args.tol:
        break
      point(float(f"{next_lam(tried, target):.4g}"))
    lam = min(tried, key=lambda l: abs(tried[l] - target))
    return lam, recs[lam], tuning

  def rigl_tune(lr, load_only=False):
    part = parts_dir / "tune" / f"rigl_lr{lr:g}_t{t0:g}.json"
    r = _run("rigl", lr, t0, 0, args, val, part, total, spe, load_only)
    return r, [{"method": "rigl", "lr": lr, "target": t0,
                "kernel_sparsity": r["kernel_sparsity"][-1],
                "validation_accuracy": r["validation_accuracy"][-1]}]

  def final(kind, lr, arg, t, seed, load_only=False):
    part = parts_dir / "final" / f"{kind}_t{t:g}_seed{seed}.json"
    r = _run(kind, lr, arg, seed, args, test, part, total, spe, load_only)
    return {"method": kind, "target": t, "seed": seed, "lr": lr,
            "lam": arg if kind == "rmda_l1" else None, "test_accuracy": r["test_accuracy"][-1],
            "kernel_sparsity": r["kernel_sparsity"][-1], "device": r.get("device"),
            "test_accuracy_per_epoch": r["test_accuracy"]}

  def dense_tune(lr, load_only=False):
    part = parts_dir / "tune" / f"msgd_lr{lr:g}.json"
    return _run("msgd", lr, None, 0, args, val, part, total, spe, load_only)

  def matched(t, seed, lr_rigl, load_only=False):
    """RigL at the sparsity RMDA + L1's final run (target ``t``, ``seed``) reached."""
    r = deep.load_part(parts_dir / "final" / f"rmda_l1_t{t:g}_seed{seed}.json")
    if r is None:
      raise Unfinished(f"rmda_l1 t{t:g} seed {seed}")
    reached = round(r["kernel_sparsity"][-1], 4)
    part = parts_dir / "matched" / f"rigl_t{t:g}_seed{seed}.json"
    m = _run("rigl", lr_rigl, reached, seed, args, test, part, total, spe, load_only)
    return {"target": t, "seed": seed, "rmda_l1_kernel_sparsity": r["kernel_sparsity"][-1],
            "rmda_l1_test_accuracy": r["test_accuracy"][-1], "rigl_lr": lr_rigl,
            "rigl_kernel_sparsity": m["kernel_sparsity"][-1],
            "rigl_test_accuracy": m["test_accuracy"][-1], "device": m.get("device"),
            "rmda_l1_device": r.get("device")}

  def dense(load_only=False):
    """The dense reference: its lr chosen on validation (seed 0), then every seed."""
    scores = {lr: dense_tune(lr, load_only)["validation_accuracy"][-1] for lr in args.lrs_rigl}
    lr = max(args.lrs_rigl, key=lambda lr: scores[lr])
    runs = []
    for seed in args.seeds:
      part = parts_dir / "matched" / f"msgd_seed{seed}.json"
      try:
        r = _run("msgd", lr, None, seed, args, test, part, total, spe, load_only)
      except Unfinished:
        continue
      runs.append({"seed": seed, "lr": lr, "test_accuracy": r["test_accuracy"][-1],
                   "device": r.get("device")})
    return {"lr": lr, "validation_accuracy": scores, "runs": runs}

  def choice():
    """The chosen learning rates and each target's lam, from the tuning runs on disk
    (``Unfinished`` if one is missing)."""
    scores, tuning, chains = {}, [], {}
    for lr in args.lrs_rmda:
      lam, r, tu = calibrate(lr, t0, load_only=True)
      scores[lr], chains[lr] = (r["validation_accuracy"][-1], lam), tu
      tuning += tu
    rigl_scores = {}
    for lr in args.lrs_rigl:
      r, tu = rigl_tune(lr, load_only=True)
      rigl_scores[lr] = r["validation_accuracy"][-1]
      tuning += tu
    lr_rmda = max(args.lrs_rmda, key=lambda lr: scores[lr][0])
    lr_rigl = max(args.lrs_rigl, key=lambda lr: rigl_scores[lr])
    start = tuple(x["lam"] for x in chains[lr_rmda])
    return lr_rmda, lr_rigl, scores[lr_rmda][1], start, tuning

  def collect():
    """``rigl_converged.json`` from every finished per-run file (partial while shards run)."""
    result["tuning"], result["runs"] = [], []
    try:
      lr_rmda, lr_rigl, lam0, start, tuning = choice()
    except Unfinished:
      common.write_json(json_path, result)
      return
    lams = {t0: lam0}
    for t in args.targets[1:]:
      try:
        lams[t], _, tu = calibrate(lr_rmda, t, start, load_only=True)
        tuning += tu
      except Unfinished:
        pass
    result["tuning"] = tuning
    result["chosen"] = {"rmda_l1": {"lr": lr_rmda, "lam": {str(t): l for t, l in lams.items()}},
                        "rigl": {"lr": lr_rigl}}
    result["tuning_runs"] = {"rmda_l1": len({(x["lr"], x["lam"]) for x in tuning
                                             if x["method"] == "rmda_l1"}),
                             "rigl": len(args.lrs_rigl)}
    for seed in args.seeds:
      for t in args.targets:
        for kind, lr, arg in (("rmda_l1", lr_rmda, lams.get(t)), ("rigl", lr_rigl, t)):
          if arg is not None:
            try:
              result["runs"].append(final(kind, lr, arg, t, seed, load_only=True))
            except Unfinished:
              pass
    # Part 5 of issue 19: matched per seed, and the dense model at the same budget.
    result["matched"] = []
    for seed in args.seeds:
      for t in args.targets:
        try:
          result["matched"].append(matched(t, seed, lr_rigl, load_only=True))
        except Unfinished:
          pass
    try:
      result["dense"] = dense(load_only=True)
    except Unfinished:
      result.pop("dense", None)
    result["devices"] = sorted({r["device"] for r in result["runs"] + result["matched"]
                                + result.get("dense", {}).get("runs", []) if r.get("device")})
    save()

  t0 = args.targets[0]
  if args.merge_only:
    collect()
    print(f"wrote {json_path}")
    return 0
  if args.stage in ("tune", "all"):
    # Units of work, numbered for --shard: one calibration chain per RMDA lr, one RigL run per lr.
    units = ([lambda lr=lr: calibrate(lr, t0) for lr in args.lrs_rmda]
             + [lambda lr=lr: rigl_tune(lr) for lr in args.lrs_rigl])
    deep.run_shard(units, args.shard, collect)
  if args.stage in ("final", "all"):
    try:
      lr_rmda, lr_rigl, lam0, start, _ = choice()
    except Unfinished as e:
      print(f"tuning is unfinished ({e}): run --stage tune first", file=sys.stderr)
      return 2
    def chain(t):  # the later targets: calibrate at the chosen lr, then every seed
      lam = calibrate(lr_rmda, t, start)[0]
      for seed in args.seeds:
        final("rmda_l1", lr_rmda, lam, t, seed)
    units = [lambda t=t: chain(t) for t in args.targets[1:]]
    units += [lambda s=s: final("rmda_l1", lr_rmda, lam0, t0, s) for s in args.seeds]
    units += [lambda s=s, t=t: final("rigl", lr_rigl, t, t, s)
              for s in args.seeds for t in args.targets]
    deep.run_shard(units, args.shard, collect)
  if args.stage in ("matched", "all"):
    try:
      _, lr_rigl, *_ = choice()
    except Unfinished as e:
      print(f"tuning is unfinished ({e}): run --stage tune first", file=sys.stderr)
      return 2
    units = [dense]
    units += [lambda s=s, t=t: matched(t, s, lr_rigl) for s in args.seeds for t in args.targets]
    try:
      deep.run_shard(units, args.shard, collect)
    except Unfinished as e:
      if args.stage == "all":  # other shards' final runs: the matched stage comes later
        print(f"matched stage not run: the final stage is unfinished ({e}); run --stage "
              "matched once every shard is done", file=sys.stderr)
      else:
        print(f"the final stage is unfinished ({e}): run --stage final first", file=sys.stderr)
        return 2
  collect()
  for row in result["table"]:
    a, s = row["test_accuracy"], row["kernel_sparsity"]
    print(f"{row['method']:8s} target {row['target']:.2f}: test acc {100 * a['mean']:.2f}+-"
          f"{100 * a['std']:.2f}%, kernel sparsity {100 * s['mean']:.2f}% (seeds {row['seeds']})")
  print(f"wrote {json_path}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
