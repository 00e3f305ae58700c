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
* **RigL** (Evci et al. 2020, "Rigging the Lottery"), implemented here:
  jaxpruner is not installable in this environment (no distribution of it
  on the package index this machine reaches), so this is our own
  transcription of the algorithm. Sparsity distribution ERK (Erdos-Renyi-Kernel,
  dense layers capped at density 1), random initial masks, SGD with momentum
  0.9 (the MSGD of bench_sparsity_accuracy: lr 0.01, x0.1 at the milestones)
  on masked gradients, weights masked after every update. Every ``delta_t``
  steps until ``t_end`` (a fraction of training), in each sparse layer drop
  the ``k = f(t) * n_active`` active weights of smallest magnitude and grow
  the ``k`` inactive ones (just-dropped ones included) of largest dense-gradient
  magnitude (the current batch), new weights set to 0;
  ``f(t) = alpha / 2 * (1 + cos(pi t / t_end))``. The paper's ``delta_t = 100``
  is scaled to the short runs here (see ``settings``).

    python benchmarks/bench_rigl.py                      # full
    python benchmarks/bench_rigl.py --quick --out /tmp/q  # < 2 min
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _train_common as tc  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

MODELS = ("lenet5_large", "mlp")


# ------------------------------------------------------------------- RigL
def erk_densities(shapes: dict, sparsity: float, power: float = 1.0) -> dict:
  """ERK densities per layer (Evci et al. 2020, as in the rigl code).

  Each layer's density is ``eps * (sum(shape) / prod(shape)) ** power``, with
  ``eps`` chosen so that the overall density is ``1 - sparsity``; layers whose
  density would exceed 1 are made dense and ``eps`` is recomputed.
  """
  dense = set()
  while True:
    divisor = rhs = 0.0
    raw = {}
    for name, shape in shapes.items():
      n = float(np.prod(shape))
      if name in dense:
        rhs -= n * sparsity
      else:
        rhs += n * (1 - sparsity)
        raw[name] = (sum(shape) / n) ** power
        divisor += raw[name] * n
    eps = rhs / divisor
    max_raw = max(raw.values())
    if max_raw * eps > 1:
      dense |= {k for k, v in raw.items() if v == max_raw}
    else:
      break
  return {name: (1.0 if name in dense else eps * raw[name]) for name in shapes}


def _paths(tree):
  return [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(tree)]


class RigL:
  """RigL's masks as hooks of ``_train_common.Trainer`` (see the module docstring)."""

  def __init__(self, sparsity: float, total_steps: int, *, delta_t: int, alpha: float = 0.3,
               t_end_fraction: float = 0.75, distribution: str = "erk"):
    self.sparsity, self.delta_t, self.alpha = sparsity, delta_t, alpha
    self.t_end = int(t_end_fraction * total_steps)
    self.distribution = distribution
    self.updates_done = 0
    self._update = jax.jit(self._update_fn)

  def densities(self, params) -> dict:
    leaves = jax.tree_util.tree_leaves_with_path(params)
    shapes = {jax.tree_util.keystr(p): tuple(x.shape) for p, x in leaves if x.ndim >= 2}
    if self.distribution == "erk":
      return erk_densities(shapes, self.sparsity)
    return {k: 1 - self.sparsity for k in shapes}

  def init(self, params, seed):
    dens = self.densities(params)
    self.layer_densities = dens
    key = jax.random.PRNGKey(10_000 + seed)
    masks = []
    for i, (path, x) in enumerate(jax.tree_util.tree_leaves_with_path(params)):
      name = jax.tree_util.keystr(path)
      if name not in dens:
        masks.append(jnp.ones(x.shape, bool))
        continue
      n_on = int(round(dens[name] * x.size))
      score = jax.random.uniform(jax.random.fold_in(key, i), (x.size,))
      rank = jnp.zeros(x.size, jnp.int32).at[jnp.argsort(score)].set(
          jnp.arange(x.size, dtype=jnp.int32))
      masks.append((rank < n_on).reshape(x.shape))
    self.sparse_leaf = [jax.tree_util.keystr(p) in dens and dens[jax.tree_util.keystr(p)] < 1
                        for p, _ in jax.tree_util.tree_leaves_with_path(params)]
    return jax.tree.unflatten(jax.tree.structure(params), masks)

  @staticmethod
  def grads(masks, grads):
    return jax.tree.map(lambda g, m: jnp.where(m, g, 0).astype(g.dtype), grads, masks)

  @staticmethod
  def params(masks, params):
    return jax.tree.map(lambda p, m: jnp.where(m, p, 0).astype(p.dtype), params, masks)

  def due(self, step: int) -> bool:
    return step % self.delta_t == 0 and step < self.t_end

  def update(self, masks, params, grads, step):
    frac = self.alpha / 2 * (1 + math.cos(math.pi * step / self.t_end))
    self.updates_done += 1
    return self._update(masks, params, grads, jnp.asarray(frac, jnp.float32))

  def _update_fn(self, masks, params, grads, frac):
    def leaf(sparse, m, w, g):
      if not sparse:
        return m, w
      shape, m, wf, g = m.shape, m.ravel(), w.ravel(), g.ravel()
      n = m.size
      k = jnp.floor(frac * jnp.sum(m)).astype(jnp.int32)
      arange = jnp.arange(n, dtype=jnp.int32)
      # Drop: the k active weights of smallest magnitude.
      score_drop = jnp.where(m, jnp.abs(wf), jnp.inf)
      rank = jnp.zeros(n, jnp.int32).at[jnp.argsort(score_drop)].set(arange)
      kept = m & (rank >= k)
      # Grow: the k weights outside `kept` of largest gradient magnitude.
      score_grow = jnp.where(kept, -jnp.inf, jnp.abs(g))
      rank = jnp.zeros(n, jnp.int32).at[jnp.argsort(-score_grow)].set(arange)
      grow = (~kept) & (rank < k)
      new_m = kept | grow
      new_w = jnp.where(new_m & ~grow, wf, 0).astype(w.dtype)
      return new_m.reshape(shape), new_w.reshape(shape)

    m_l, treedef = jax.tree.flatten(masks)
    out = [leaf(s, m, w, g) for s, m, w, g in zip(
        self.sparse_leaf, m_l, jax.tree.leaves(params), jax.tree.leaves(grads))]
    return (jax.tree.unflatten(treedef, [o[0] for o in out]),
            jax.tree.unflatten(treedef, [o[1] for o in out]))


# -------------------------------------------------------------- the bench
def milestones_of(total_steps, fractions):
  return sorted({max(1, int(round(f * total_steps))) for f in fractions})


def rmda_l1(lam, total_steps, args):
  import rmda_jax as rj
  reg = rj.l1(lam)
  tx = rj.rmda_multistep(args.rmda_lr, args.rmda_c0,
                         milestones_of(total_steps, args.milestone_fractions),
                         gamma=args.gamma, regularizer=reg)
  return tx, (lambda p, s: rj.structured_params(s, reg))


def msgd(total_steps, args):
  ms = milestones_of(total_steps, args.milestone_fractions)
  return optax.sgd(optax.piecewise_constant_schedule(args.msgd_lr, {m: args.gamma for m in ms}),
                   momentum=0.9)


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
  p.add_argument("--quick", action="store_true", help="tiny run (< 2 min) to check the pipeline")
  p.add_argument("--out", type=Path, default=HERE / "results")
  p.add_argument("--dataset", default="mnist", choices=("mnist", "digits"))
  p.add_argument("--models", nargs="+", default=None, choices=MODELS)
  p.add_argument("--targets", type=float, nargs="+", default=(0.90, 0.95))
  p.add_argument("--seeds", type=int, default=None)
  p.add_argument("--epochs", type=int, default=None)
  p.add_argument("--train-subset", type=int, default=None)
  p.add_argument("--test-subset", type=int, default=None)
  p.add_argument("--batch-size", type=int, default=128)
  p.add_argument("--lam-grid", type=float, nargs="+", default=None,
                 help="initial lambdas of RMDA's L1 tuning (seed 0)")
  p.add_argument("--tune-steps", type=int, default=None,
                 help="secant steps per target after the grid")
  p.add_argument("--tol", type=float, default=0.01, help="|sparsity - target| accepted")
  p.add_argument("--milestone-fractions", type=float, nargs="*", default=(0.5, 0.75))
  p.add_argument("--gamma", type=float, default=0.1)
  p.add_argument("--rmda-lr", type=float, default=0.1)
  p.add_argument("--rmda-c0", type=float, default=0.1)
  p.add_argument("--msgd-lr", type=float, default=0.01)
  p.add_argument("--delta-t", type=int, default=None, help="RigL mask update period (steps)")
  p.add_argument("--alpha", type=float, default=0.3, help="RigL initial update fraction")
  p.add_argument("--t-end", type=float, default=0.75, help="RigL: last update, fraction of steps")
  p.add_argument("--distribution", default="erk", choices=("erk", "uniform"))
  p.add_argument("--name", default=None)
  args = p.parse_args(argv)
  tc.cpu_speed_flags()  # as rmda-train; before the first JAX computation

  q = args.quick
  models = args.models or (("mlp",) if q else MODELS)
  seeds = args.seeds or (2 if q else 3)
  epochs = args.epochs or (2 if q else 3)
  train_subset = args.train_subset or (1024 if q else 12800)
  test_subset = args.test_subset or (1000 if q else None)
  lam_grid = args.lam_grid or ([1e-2, 1e-1] if q else [1e-3, 3e-3, 1e-2, 3e-2])
  tune_steps = args.tune_steps if args.tune_steps is not None else (0 if q else 3)
  stem = args.name or ("rigl_quick" if q else "rigl")
  args.out.mkdir(parents=True, exist_ok=True)
  json_path = args.out / f"{stem}.json"

  t_start = time.perf_counter()
  machine = tc.machine_info()
  data = tc.load_data(args.dataset, train_subset, test_subset)
  spe = tc.steps_per_epoch(data, args.batch_size)
  total = spe * epochs
  delta_t = args.delta_t or max(4, total // 12)
  settings = {
      "data": data.note, "epochs": epochs, "batch_size": args.batch_size,
      "total_steps": total, "milestones_steps": milestones_of(total, args.milestone_fractions),
      "gamma": args.gamma, "seeds": list(range(seeds)), "targets": list(args.targets),
      "sparsity_measured_over": "kernels (ndim >= 2 leaves); biases dense in both methods",
      "rmda": {"regularizer": "rj.l1(lam) on kernels", "lr": args.rmda_lr, "c0": args.rmda_c0,
               "momentum_rule": "divide", "reported_point": "Z = rj.structured_params",
               "tuning": f"seed 0: grid {lam_grid}, then up to {tune_steps} secant steps "
                         f"per target in (log lam, logit sparsity), tol {args.tol}"},
      "rigl": {"implementation": "own (benchmarks/bench_rigl.py); jaxpruner not installable "
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
    groups = {}
    for r in result["runs"]:
      groups.setdefault((r["model"], r["target"], r["method"]), []).append(r)
    result["table"] = [
        {"model": m, "target": t, "method": meth, "lam": rs[0].get("lam"),
         "seeds": [r["seed"] for r in rs],
         "test_accuracy": tc.mean_std([r["test_accuracy"] for r in rs]),
         "kernel_sparsity": tc.mean_std([r["kernel_sparsity"] for r in rs]),
         "sparsity_all_params": tc.mean_std([r["sparsity_all_params"] for r in rs])}
        for (m, t, meth), rs in groups.items()]
    tmp = json_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(json_path)

  log = lambda s: print(s, flush=True)
  log(f"{data.note}; {total} steps per run; RigL delta_t {delta_t}")
  import rmda_jax as rj

  def record(model, method, target, seed, r, lam=None, extra=None):
    row = {"model": model, "method": method, "target": target, "seed": seed, "lam": lam,
           "test_accuracy": r.test_accuracy, "test_loss": r.test_loss,
           "kernel_sparsity": tc.kernel_sparsity(r.reported),
           "sparsity_all_params": rj.sparsity(r.reported), "train_wall_s": r.wall_s,
           **(extra or {})}
    result["runs"].append(row)
    log(f"  {model:12s} {method:9s} target {target:.2f} seed {seed}"
        + (f" lam {lam:.3g}" if lam is not None else "")
        + f": acc {100 * r.test_accuracy:.2f}%  kernel sparsity "
        f"{100 * row['kernel_sparsity']:.2f}%  ({r.wall_s:.1f}s)")
    save()

  for model in models:
    # RMDA + L1: tune lam on seed 0. One Trainer per lam (lam is baked into the step).
    tried, runs0 = {}, {}

    def rmda_run(lam, seed):
      tx, reported = rmda_l1(lam, total, args)
      return tc.Trainer(model, tx, data, batch_size=args.batch_size).run(
          epochs=epochs, seed=seed, reported=reported)

    def tune_point(lam):
      r = rmda_run(lam, 0)
      s = tc.kernel_sparsity(r.reported)
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
    # RigL at each target.
    for target in args.targets:
      hooks = RigL(target, total, delta_t=delta_t, alpha=args.alpha, t_end_fraction=args.t_end,
                   distribution=args.distribution)
      trainer = tc.Trainer(model, msgd(total, args), data, batch_size=args.batch_size,
                           hooks=hooks)
      for seed in range(seeds):
        hooks.updates_done = 0
        r = trainer.run(epochs=epochs, seed=seed)
        record(model, "rigl", target, seed, r, extra={
            "mask_updates": hooks.updates_done,
            "layer_densities": hooks.layer_densities})

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
