"""Heads and neurons: a tiny ViT on MNIST, RMDA against ProxSGD and RAMDA (issue 21).

Model: ``vit_tiny`` of ``rmda_jax.examples.models`` (7x7 patches, dim 32,
2 pre-norm blocks of 4-head ``nnx.MultiHeadAttention`` + a 64-unit MLP).
Regularizer: ``rj.head_and_neuron_lasso(lam)``: group LASSO over the
attention heads (a head's slices of the query/key/value kernels and biases
and of the output kernel) and the MLP hidden units (a column of fc1 with its
bias, the row of fc2), ``sqrt(|g|)`` weights; other leaves unregularized.

Methods: RMDA (``rmda_multistep``, reported at its structured point Z) and
ProxSGD (the authors' EMA form, strength ``lam / rho`` so that both minimise
``f + lam psi``), both from ``benchmarks.common.build_method``; RAMDA
(``rj.ramda_multistep``, the authors' defaults: momentum ``c = 1e-2``,
``epsilon = 1e-6``, the same milestones and ``gamma`` as the others, lr and
epsilon times ``gamma`` and a restart at each; reported at its structured
point, the last subproblem's solution, since its iterate has exact zeros only
once ``c`` has ramped to 1, far beyond this budget).

Same tuning for each method: each gets the same number of learning rates
(``--lrs`` for RMDA and ProxSGD, ``--ramda-lrs`` for RAMDA, around the
authors' 1e-2; the two grids must have the same length) at the middle lambda
of the sweep, trained on the training split and scored on a held-out
validation split of the training set; the one with the best validation
accuracy is then used for the whole lambda sweep, scored on the test set. Reported per run: test
accuracy, heads and neurons kept (per block and in total), weighted group
sparsity, wall time. ``--save-params DIR`` also writes each sweep run's
reported point (``DIR/<method>_lam<lam>.npz``, keys the leaves' paths).

The CPU budget: a fixed training subset and a few epochs, one seed (see
``settings`` in the JSON); the results are for this budget.

Run from the repository root:

    python -m benchmarks.bench_vit                         # writes results/vit.json
    python -m benchmarks.bench_vit --quick --out /tmp/q    # < 2 min, digits
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import jax
import numpy as np

import rmda_jax as rj
from benchmarks import common
from rmda_jax.regularizers import path_str

METHODS = ("rmda", "prox_sgd", "ramda")


def kept(point, reg) -> dict:
  """Heads and neurons kept, per family and in total."""
  support = rj.group_support(point, reg)
  out = {"per_family": {k: [int(np.sum(v)), int(np.size(v))] for k, v in support.items()}}
  for kind in ("heads", "neurons"):
    fam = [v for k, v in support.items() if k.endswith(" " + kind)]
    out[kind] = [int(sum(np.sum(v) for v in fam)), int(sum(np.size(v) for v in fam))]
  return out


def split(data: common.Data, n_val: int):
  """(train, validation) splits of ``data``'s training set (validation: the last ``n_val``)."""
  n = int(data.y_train.shape[0])
  train = dataclasses.replace(data, x_train=data.x_train[: n - n_val],
                              y_train=data.y_train[: n - n_val])
  val = dataclasses.replace(train, x_test=data.x_train[n - n_val:],
                            y_test=data.y_train[n - n_val:])
  return train, val


def rates(method: str, lr: float, milestones, args) -> common.Rates:
  kw = {"rmda_lr": lr} if method == "rmda" else {"prox_sgd_lr": lr}
  return common.Rates(milestones=milestones, gamma=args.gamma, rmda_c0=args.rmda_c0, **kw)


def build(method, reg, lr, milestones, args):
  """(optax transformation, reported point) of ``method`` at learning rate ``lr``."""
  if method == "ramda":
    tx = rj.ramda_multistep(lr, args.ramda_c0, milestones, gamma=args.gamma,
                            regularizer=reg, epsilon=args.ramda_epsilon)
    return tx, (lambda params, opt_state: rj.structured_params(opt_state, reg))
  return common.build_method(method, reg, rates(method, lr, milestones, args))


def save_point(directory: Path, method: str, lam: float, point) -> Path:
  """Writes ``point`` as ``directory/<method>_lam<lam>.npz``, keyed by the leaves' paths."""
  directory.mkdir(parents=True, exist_ok=True)
  path = directory / f"{method}_lam{lam:g}.npz"
  np.savez(path, **{path_str(p): np.asarray(x)
                    for p, x in jax.tree_util.tree_leaves_with_path(point)})
  return path


def one_run(method, lam, lr, data, args, milestones, seed=0, save=None):
  reg = rj.head_and_neuron_lasso(lam)
  tx, reported = build(method, reg, lr, milestones, args)
  run = common.make_run("vit_tiny", tx, data, batch_size=args.batch_size)
  res = run(epochs=args.epochs, seed=seed, reported=reported)
  k = kept(res.reported, reg)
  if save is not None:
    save_point(save, method, lam, res.reported)
  return {
      "method": method, "lam": lam, "lr": lr, "seed": seed,
      "test_accuracy": res.test_accuracy,
      "heads_kept": k["heads"], "neurons_kept": k["neurons"],
      "kept_per_family": k["per_family"],
      "weighted_group_sparsity": rj.group_sparsity(res.reported, reg, weighted=True),
      "group_sparsity": rj.group_sparsity(res.reported, reg),
      "wall_s": res.wall_s, "steps": res.steps,
  }


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--quick", action="store_true", help="digits, tiny budget (< 2 min)")
  p.add_argument("--out", type=Path, default=common.RESULTS)
  p.add_argument("--name", default=None)
  p.add_argument("--dataset", default=None, choices=("mnist", "digits"))
  p.add_argument("--train-subset", type=int, default=None)
  p.add_argument("--val", type=int, default=None, help="validation images held out")
  p.add_argument("--epochs", type=int, default=None)
  p.add_argument("--batch-size", type=int, default=128)
  p.add_argument("--lams", type=float, nargs="+", default=None)
  p.add_argument("--lrs", type=float, nargs="+", default=None,
                 help="the learning rates tried for RMDA and ProxSGD (the same grid)")
  p.add_argument("--ramda-lrs", type=float, nargs="+", default=None,
                 help="the learning rates tried for RAMDA (as many as --lrs)")
  p.add_argument("--ramda-c0", type=float, default=1e-2, help="RAMDA's momentum c")
  p.add_argument("--ramda-epsilon", type=float, default=1e-6)
  p.add_argument("--save-params", type=Path, default=None, metavar="DIR",
                 help="write each sweep run's reported point to DIR/<method>_lam<lam>.npz")
  p.add_argument("--rmda-c0", type=float, default=0.1)
  p.add_argument("--gamma", type=float, default=0.1)
  p.add_argument("--milestone-fractions", type=float, nargs="*", default=(0.5, 0.75))
  args = p.parse_args(argv)
  q = args.quick
  args.dataset = args.dataset or ("digits" if q else "mnist")
  args.epochs = args.epochs or (2 if q else 5)
  args.train_subset = args.train_subset or (None if q else 12800 + 2000)
  args.val = args.val or (300 if q else 2000)
  args.lams = args.lams or ([1e-3, 1e-2] if q else [1e-3, 3e-3, 6e-3, 1e-2])
  args.lrs = args.lrs or ([0.1] if q else [0.1, 0.3])
  args.ramda_lrs = args.ramda_lrs or ([1e-2] if q else [3e-3, 1e-2])
  if len(args.ramda_lrs) != len(args.lrs):
    p.error(f"--ramda-lrs: {len(args.ramda_lrs)} learning rates, --lrs has "
            f"{len(args.lrs)}; every method gets as many")
  grids = {"rmda": args.lrs, "prox_sgd": args.lrs, "ramda": args.ramda_lrs}
  name = args.name or ("vit_quick" if q else "vit")

  t0 = time.perf_counter()
  data = common.load_data(args.dataset, train_subset=args.train_subset)
  train, val = split(data, args.val)
  spe = common.steps_per_epoch(train, args.batch_size)
  milestones = common.milestones_of(args.epochs * spe, args.milestone_fractions)
  log = lambda s: print(s, flush=True)
  log(f"vit_tiny on {data.note}; {int(train.y_train.shape[0])} train / {args.val} "
      f"validation / {int(data.y_test.shape[0])} test; {args.epochs} epochs x {spe} steps")

  lam_tune = args.lams[len(args.lams) // 2]
  tuning, chosen = [], {}
  for method in METHODS:
    for lr in grids[method]:
      r = one_run(method, lam_tune, lr, val, args, milestones)
      r["validation_accuracy"] = r.pop("test_accuracy")
      tuning.append(r)
      log(f"tune {method:8s} lam {lam_tune:g} lr {lr:g}: val acc "
          f"{100 * r['validation_accuracy']:.2f}%  heads {r['heads_kept']}  "
          f"neurons {r['neurons_kept']}  ({r['wall_s']:.0f}s)")
    best = max((r for r in tuning if r["method"] == method),
               key=lambda r: r["validation_accuracy"])
    chosen[method] = best["lr"]

  sweep = []
  for method in METHODS:
    for lam in args.lams:
      r = one_run(method, lam, chosen[method], train, args, milestones,
                  save=args.save_params)
      sweep.append(r)
      log(f"sweep {method:8s} lam {lam:g} lr {chosen[method]:g}: test acc "
          f"{100 * r['test_accuracy']:.2f}%  heads {r['heads_kept'][0]}/{r['heads_kept'][1]}"
          f"  neurons {r['neurons_kept'][0]}/{r['neurons_kept'][1]}  ({r['wall_s']:.0f}s)")

  result = {
      "benchmark": "bench_vit",
      "machine": common.machine_info(),
      "settings": {
          "model": "vit_tiny (dim 32, 2 blocks, 4 heads of 8, MLP 64, 7x7 patches, "
                   "class token)",
          "regularizer": "rj.head_and_neuron_lasso(lam): heads (q/k/v kernels and biases, "
                         "out kernel) and MLP units (fc1 column + bias, fc2 row), "
                         "sqrt(|g|) weights; other leaves unregularized",
          "data": data.note, "train": int(train.y_train.shape[0]), "validation": args.val,
          "test": int(data.y_test.shape[0]), "epochs": args.epochs,
          "batch_size": args.batch_size, "milestones_steps": milestones,
          "gamma": args.gamma, "rmda_c0": args.rmda_c0, "seeds": [0],
          "tuning": f"each method: {len(args.lrs)} learning rates at lam "
                    f"{lam_tune:g}, best validation accuracy",
          "lr_grids": grids, "lam_tune": lam_tune,
          "prox_sgd": "EMA form lr, rho 0.1 run as heavy ball (lr * rho, momentum 0.9, "
                      "strength lam / rho)",
          "ramda": f"rj.ramda_multistep(lr, {args.ramda_c0:g}, milestones, gamma "
                   f"{args.gamma:g}, epsilon {args.ramda_epsilon:g}): lr and epsilon "
                   "x gamma and a restart at each milestone, c ramped after the last",
          "reported_point": "RMDA: Z (rj.structured_params); RAMDA: the last "
                            "subproblem's solution (rj.structured_params); "
                            "ProxSGD: the iterate",
      },
      "chosen_lr": chosen,
      "tuning": tuning,
      "sweep": sweep,
      "wall_time_s": time.perf_counter() - t0,
  }
  path = args.out / f"{name}.json"
  common.write_json(path, result)
  log(f"wrote {path} ({result['wall_time_s']:.0f}s)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
