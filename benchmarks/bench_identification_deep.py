"""Identification in a deep net: does the support stop changing?

Issue 10, part 1. The RMDA paper's central claim (Huang & Lee, ICLR 2022,
section 5): trained *with* data augmentation and dropout, RMDA's iterates
identify their structure after finitely many epochs (the zero/nonzero status
of every group stops changing), while methods without variance reduction keep
changing it.

Setting: LeNet5 (small) on all of MNIST (60k train / 10k test), random-crop
augmentation (2 pixels of zero padding, no flip), and in a second
configuration dropout (``--dropout-rate``) on the input of each dense layer.
Group LASSO ``rj.group_lasso(lam)`` (input-unit groups of every kernel,
weighted by sqrt(group size)), the same lam for every method. The authors'
stage-wise schedule: every learning rate x ``gamma`` at the milestones
(default epochs 15 and 30 of 60: the authors' 200-epoch MNIST schedule,
milestones 50 and 100, scaled), where RMDA also restarts and its ``c`` goes
from ``c0`` to 1 (the ICLR 2022 "divide" rule). Methods and settings are
``common.build_method``'s: RMDA lr 0.1, c0 0.1 (reported point ``Z``);
ProxSGD the authors' lr 0.1, rho 0.1; ProxGen (``prox_adam``) and ProxSSI lr
1e-3 (reported point: the iterate); RAMDA (``rj.ramda_multistep``, the
authors' lr 1e-2, c 1e-2, epsilon 1e-6; lr and epsilon x ``gamma`` and a
restart at the milestones, c ramped to 1 after the last; reported point ``Z``),
which like RMDA claims identification and is not counted as a baseline.

Every method sees the same initialisation, data order and augmentation
(``benchmarks.deep``). After every epoch: the number of groups whose
zero/nonzero status differs from the previous epoch (``support_changes``),
group and weighted group sparsity, test accuracy and training loss.

Each (configuration, method, seed) writes its own file under
``results/identification_deep/`` as it goes (so runs can be spread over
sessions: completed runs are skipped), and ``identification_deep.json`` /
``.png`` are rebuilt from those files after every run (``--merge-only``
rebuilds them without training).

Run from the repository root:

    python -m benchmarks.bench_identification_deep                   # all (hours)
    python -m benchmarks.bench_identification_deep --configs crop --seeds 0
    python -m benchmarks.bench_identification_deep --quick --out /tmp/q   # < 2 min

At the authors' budget (issue 19, part 3: 200 epochs, milestones 50 and 100,
their MNIST lambda 1e-3, then 5e-4; crop; every run records its support each
epoch and, at the end, each group's ratio ``||grad_g F|| / (lam w_g)`` on the
whole training set without augmentation, ``deep.near_threshold``):

    python -m benchmarks.bench_identification_deep --configs crop --epochs 200 \
        --milestones 50 100 --lam 1e-3 --methods rmda prox_sgd prox_adam prox_ssi \
        --name identification_200_lam1e-3

The averaging ablation (part 4: ProxSGD with rho 0.1, 0.01, 0.001; plain RDA,
c = 1 without restarts; RMDA with the divide and the ramp rules):

    python -m benchmarks.bench_identification_deep --configs crop --epochs 200 \
        --milestones 50 100 --lam 1e-3 --methods prox_sgd prox_sgd_rho0.01 \
        prox_sgd_rho0.001 rda rmda rmda_ramp --name ablation_200 \
        --reuse identification_200_lam1e-3

``--reuse`` takes RMDA's and ProxSGD's runs from part 3's results where they
have finished with the same settings (the same command would rerun them).
``benchmarks/run_issue19.sh`` runs everything issue 19 plans (parts 2 to 4)
in order of need, skipping what has finished.
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
from rmda_jax.examples._files import atomic_open

METHODS = ("rmda", "prox_sgd", "prox_adam", "prox_ssi", "ramda")
# The averaging ablation (issue 19, part 4; common.build_method): not run by default.
ABLATION = common.ABLATION
ALL_METHODS = METHODS + ABLATION
LABELS = {"rmda": "RMDA", "prox_sgd": "ProxSGD", "prox_adam": "ProxGen", "prox_ssi": "ProxSSI",
          "ramda": "RAMDA", "prox_sgd_rho0.01": "ProxSGD rho 0.01",
          "prox_sgd_rho0.001": "ProxSGD rho 0.001", "rda": "RDA (c 1, no restarts)",
          "rmda_ramp": "RMDA, ramp rule"}
COLORS = {"rmda": "C0", "prox_sgd": "C1", "prox_adam": "C2", "prox_ssi": "C3", "ramda": "C4",
          "prox_sgd_rho0.01": "C5", "prox_sgd_rho0.001": "C6", "rda": "C7", "rmda_ramp": "C8"}
# Methods with an exactly structured point, which claim identification (not baselines).
IDENTIFYING = ("rmda", "ramda", "rda", "rmda_ramp")
LAST = 10  # the claim: no support change over the last LAST epochs


def config_settings(name: str, args) -> dict:
  if name == "crop":
    return {"crop_padding": args.crop, "dropout": 0.0}
  if name == "crop_dropout":
    return {"crop_padding": args.crop, "dropout": args.dropout_rate}
  raise ValueError(name)


def run_one(config: str, method: str, seed: int, args, split, part: Path) -> dict:
  cs = config_settings(config, args)
  reg = rj.group_lasso(args.lam)
  spe = int(split.y_train.shape[0]) // args.batch_size
  rates = common.Rates([m * spe for m in args.milestones], gamma=args.gamma)
  tx, reported = common.build_method(method, reg, rates)
  train = deep.make_trainer("lenet5_small", tx, split, batch_size=args.batch_size,
                            crop=cs["crop_padding"], dropout=cs["dropout"], reported=reported)

  def log(rec):
    print(f"  {config} {method:9s} seed {seed} epoch {len(rec['wall_s']):3d}: changes "
          f"{rec['support_changes'][-1]}, weighted group sp "
          f"{100 * rec['weighted_group_sparsity'][-1]:.1f}%, test acc "
          f"{100 * rec['test_accuracy'][-1]:.2f}% ({rec['wall_s'][-1]:.0f}s)", flush=True)

  return deep.observed_run(train, seed, args.epochs, reg, part,
                           {"config": config, "method": method}, on_record=log, ratios=True)


def summarize(run: dict, last: int = LAST) -> dict:
  ch = [c for c in run["support_changes"] if c is not None]
  tail = ch[-last:]
  nonzero = [i + 2 for i, c in enumerate(ch) if c]  # epochs (1-based) with a change
  return {
      "changes_last_epochs": int(sum(tail)) if len(tail) == last else None,
      "last_epoch_with_change": nonzero[-1] if nonzero else None,
      "final_test_accuracy": run["test_accuracy"][-1] if run["test_accuracy"] else None,
      "final_weighted_group_sparsity": (run["weighted_group_sparsity"][-1]
                                        if run["weighted_group_sparsity"] else None),
      "final_group_sparsity": run["group_sparsity"][-1] if run["group_sparsity"] else None,
  }


def merge(parts_dir: Path, json_path: Path, settings: dict, machine: dict) -> dict:
  runs = []
  for f in sorted(parts_dir.glob("*/*.json")):
    runs.append(json.loads(f.read_text()))
  order = {m: i for i, m in enumerate(ALL_METHODS)}
  runs.sort(key=lambda r: (r["config"], order.get(r["method"], 9), r["seed"]))
  table = []
  for config in sorted({r["config"] for r in runs}):
    for method in ALL_METHODS:
      rs = [r for r in runs if r["config"] == config and r["method"] == method
            and r["complete"]]
      if not rs:
        continue
      ss = [summarize(r) for r in rs]
      table.append({
          "config": config, "method": method, "seeds": [r["seed"] for r in rs],
          "changes_last_epochs": [s["changes_last_epochs"] for s in ss],
          "last_epoch_with_change": [s["last_epoch_with_change"] for s in ss],
          "frozen_last_epochs_every_seed": all(s["changes_last_epochs"] == 0 for s in ss),
          "test_accuracy": common.mean_std([s["final_test_accuracy"] for s in ss]),
          "weighted_group_sparsity": common.mean_std(
              [s["final_weighted_group_sparsity"] for s in ss]),
          "group_sparsity": common.mean_std([s["final_group_sparsity"] for s in ss]),
          # Per seed (None for runs recorded before it existed): the groups that
          # changed status over the last 20 epochs and how many of them end
          # within 0.1 of the threshold ratio 1 (deep.near_threshold).
          "late_flips": [None if r.get("near_threshold") is None else
                         {k: r["near_threshold"][k] for k in
                          ("flipped", "flipped_within_near_of_1", "stable_zero_groups",
                           "stable_zero_within_near_of_1", "max_ratio_of_a_zero_group")}
                         for r in rs],
      })
  claim = {}
  for config in sorted({t["config"] for t in table}):
    rows = {t["method"]: t for t in table if t["config"] == config}
    if "rmda" in rows:
      claim[config] = {
          "rmda_frozen_every_seed": rows["rmda"]["frozen_last_epochs_every_seed"],
          "baselines_still_changing_every_seed": {
              m: all(c is not None and c > 0 for c in rows[m]["changes_last_epochs"])
              for m in ALL_METHODS if m in rows and m not in IDENTIFYING},
          "seeds": {m: rows[m]["seeds"] for m in rows},
      }
      for m in ("ramda", "rda", "rmda_ramp"):
        if m in rows:
          claim[config][f"{m}_frozen_every_seed"] = rows[m]["frozen_last_epochs_every_seed"]
  out = {"benchmark": "bench_identification_deep", "machine": machine, "settings": settings,
         "claim_last_epochs": LAST, "claim": claim, "table": table, "runs": runs,
         "complete": all(r["complete"] for r in runs) and bool(runs)}
  common.write_json(json_path, out)
  plot(out, json_path.with_suffix(".png"))
  return out


def plot(result: dict, path: Path) -> None:
  runs = result["runs"]
  configs = sorted({r["config"] for r in runs})
  if not configs:
    return
  fig = Figure(figsize=(6 * len(configs), 7.5))
  axes = fig.subplots(2, len(configs), squeeze=False)
  for j, config in enumerate(configs):
    ax, ax2 = axes[0][j], axes[1][j]
    for method in ALL_METHODS:
      rs = [r for r in runs if r["config"] == config and r["method"] == method]
      for k, r in enumerate(rs):
        ch = r["support_changes"][1:]
        ep = np.arange(2, 2 + len(ch))
        # log scale: an epoch without change is drawn at 0.5 (below 1).
        ax.plot(ep, [c if c else 0.5 for c in ch], "-", color=COLORS[method], lw=1,
                alpha=0.8, label=LABELS[method] if k == 0 else None)
        ax2.plot(np.arange(1, 1 + len(r["weighted_group_sparsity"])),
                 100 * np.asarray(r["weighted_group_sparsity"]), "-", color=COLORS[method],
                 lw=1, alpha=0.8, label=LABELS[method] if k == 0 else None)
    for m in result["settings"].get("milestones_epochs", []):
      ax.axvline(m, color="gray", ls=":", lw=0.8)
      ax2.axvline(m, color="gray", ls=":", lw=0.8)
    ax.set_yscale("log")
    ax.set_ylim(0.4, None)
    ax.set_title(f"{config}: groups changing status per epoch (0 drawn at 0.5)", fontsize=9)
    ax.set_xlabel("epoch")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax2.set_title(f"{config}: weighted group sparsity (%)", fontsize=9)
    ax2.set_xlabel("epoch")
    ax2.grid(alpha=0.3)
  m = result["machine"]
  s = result["settings"]
  fig.suptitle(f"LeNet5 small, MNIST, group LASSO lam {s['lam']:g}, one line per seed; "
               f"{m['cpu']}, jax {m['jax']}", fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)


# The settings a reused run must share with this command's (the data note included).
SAME = ("model", "data", "epochs", "milestones_epochs", "gamma", "lam", "regularizer",
        "batch_size", "augmentation", "dropout")


def reuse(out: Path, name: str, part: Path, settings: dict, config: str, method: str) -> bool:
  """Copies the finished run of ``part``'s (config, method, seed) from the results
  ``name`` into ``part`` (with its ``.final.npz``) when ``name``'s settings for it equal
  ``settings``; False (nothing written) otherwise."""
  src = out / name / config / part.name
  rec = deep.load_part(src)
  try:
    theirs = json.loads((out / f"{name}.json").read_text())["settings"]
  except (OSError, ValueError, KeyError):
    return False
  same = (all(theirs.get(k) == settings.get(k) for k in SAME)
          and theirs.get("configs", {}).get(config) == settings["configs"][config]
          and theirs.get("methods", {}).get(method) == settings["methods"][method])
  if rec is None or not same:
    return False
  part.parent.mkdir(parents=True, exist_ok=True)
  final = src.with_suffix(".final.npz")
  if final.exists():
    with atomic_open(part.with_suffix(".final.npz"), "wb") as f:
      f.write(final.read_bytes())
  rec["copied_from"] = (f"{name}/{config}/{part.name} (the same command and settings; "
                        f"--reuse)")
  common.write_json(part, rec)
  return True


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  deep.add_run_args(p, epochs=60, milestones=(15, 30))
  p.add_argument("--configs", nargs="+", default=("crop", "crop_dropout"),
                 choices=("crop", "crop_dropout"))
  p.add_argument("--methods", nargs="+", default=METHODS, choices=ALL_METHODS)
  p.add_argument("--lam", type=float, default=5e-4)
  p.add_argument("--dropout-rate", type=float, default=0.25)
  p.add_argument("--reuse", nargs="+", default=(), metavar="NAME",
                 help="before training a run, take it from results NAME (e.g. "
                      "identification_200_lam1e-3) when that file holds it finished with "
                      "the same settings (recorded as copied_from)")
  args = p.parse_args(argv)
  common.cpu_speed_flags()
  if args.quick:
    args.epochs, args.milestones, args.seeds = 4, (2, 3), (0,)
  stem = args.name or ("identification_deep_quick" if args.quick else "identification_deep")
  json_path = args.out / f"{stem}.json"
  parts_dir = args.out / stem
  settings = {
      "model": "lenet5_small", "data": None, "epochs": args.epochs,
      "milestones_epochs": list(args.milestones), "gamma": args.gamma, "lam": args.lam,
      "regularizer": "rj.group_lasso(lam): input-unit groups of every kernel, sqrt(size) "
                     "weights; biases unregularised",
      "batch_size": args.batch_size,
      "configs": {c: config_settings(c, args) for c in ("crop", "crop_dropout")},
      "augmentation": f"random crop, {args.crop}-pixel zero padding (black), no flip",
      "dropout": "on the input of each dense layer (fc1, fc2, fc3), inverted scaling",
      "methods": {
          "rmda": "rj.rmda_multistep(0.1, 0.1, milestones, gamma) ('divide' rule: c 0.1 "
                  "then 1); reported point Z = rj.structured_params",
          "prox_sgd": "authors' form lr 0.1, rho 0.1: rj.prox_sgd(0.01, 0.9, "
                      "group_lasso(10 lam)); reported point: the iterate",
          "prox_adam": "ProxGen: rj.prox_adam(1e-3); reported point: the iterate",
          "prox_ssi": "rj.prox_ssi(1e-3); reported point: the iterate",
          "ramda": "rj.ramda_multistep(1e-2, 1e-2, milestones, gamma, epsilon=1e-6) (the "
                   "authors' defaults; lr and epsilon x gamma and a restart at each "
                   "milestone, c ramped to 1 after the last); reported point Z = "
                   "rj.structured_params",
          "prox_sgd_rho0.01": "prox_sgd with rho 0.01 (authors' form lr 0.1): "
                              "rj.prox_sgd(0.001, 0.99, group_lasso(100 lam))",
          "prox_sgd_rho0.001": "prox_sgd with rho 0.001: rj.prox_sgd(1e-4, 0.999, "
                               "group_lasso(1000 lam))",
          "rda": "plain regularized dual averaging: rj.rmda(0.1, 1.0), no restarts, no lr "
                 "steps; reported point Z",
          "rmda_ramp": "rj.rmda_multistep(0.1, 0.1, milestones, gamma, momentum_rule='ramp'); "
                       "reported point Z",
      },
      "tuning": "none: the published settings (shared/docs/rmda.md section 5); the same "
                "lam, schedule, seeds, initialisation, data order and augmentation for all",
      "support_changes": "groups whose zero/nonzero status at the reported point differs "
                         "from the previous epoch's (None for epoch 1)",
  }
  if args.merge_only:
    prev = json.loads(json_path.read_text()) if json_path.exists() else {}
    merge(parts_dir, json_path, prev.get("settings", settings),
          prev.get("machine", common.machine_info()))
    print(f"wrote {json_path}")
    return 0

  split = deep.load_split(train_subset=deep.QUICK_TRAIN if args.quick else None,
                          eval_subset=deep.QUICK_EVAL if args.quick else None)
  settings["data"] = split.note
  machine = common.machine_info()
  machine["load_average_start"] = common.load_average()
  # Seed by seed: every configuration and method grows alike as runs finish.
  runs = [(seed, config, method) for seed in args.seeds for config in args.configs
          for method in args.methods]
  def unit(seed, config, method):
    part = parts_dir / config / f"{method}_seed{seed}.json"
    def go():
      if deep.load_part(part) is None:
        for name in args.reuse:
          if reuse(args.out, name, part, settings, config, method):
            print(f"  {config} {method} seed {seed}: taken from {name}", flush=True)
            return
      deep.run_once(part, f"{config} {method} seed {seed}",
                    lambda: run_one(config, method, seed, args, split, part))
    return go

  deep.run_shard([unit(*r) for r in runs], args.shard,
                 lambda: merge(parts_dir, json_path, settings, machine))
  out = merge(parts_dir, json_path, settings, machine)
  for t in out["table"]:
    print(f"{t['config']:13s} {t['method']:9s} seeds {t['seeds']}: changes over the last "
          f"{LAST} epochs {t['changes_last_epochs']}, test acc "
          f"{100 * t['test_accuracy']['mean']:.2f}%, weighted group sp "
          f"{100 * t['weighted_group_sparsity']['mean']:.1f}%")
  print(f"wrote {json_path}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
