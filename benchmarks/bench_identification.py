"""Section 1: structure identification on a convex problem with a known answer.

The authors' experiment (Huang & Lee 2022, section 5.1): multinomial logistic
regression on MNIST, zero initialisation, group LASSO over the input pixels
(the rows of the (784, 10) kernel, weights sqrt(10); the bias is free), batch
128, 200 epochs, lambda 1e-3, milestones at epochs 50 and 100 (gamma 0.1).

1. The optimum W* is computed by a full-batch solver in float64 (FISTA with
   adaptive restart, then proximal Newton with the exact Hessian), and
   its optimality residual ||W - prox(W - grad F(W))||_inf is recorded.
2. RMDA (lr 0.1, c 0.01, the authors' divide rule), ProxSGD, ProxGen,
   ProxSSI and RAMDA (the authors' lr 1e-2, c 1e-2, epsilon 1e-6; lr and
   epsilon x0.1 and a restart at the milestones, c ramped to 1 after the last)
   run on minibatches; every epoch records, for the iterate W (and RMDA's and
   RAMDA's structured points Z): the fraction of groups whose zero/nonzero
   status matches W*'s, the number of status changes since the previous
   epoch, the objective gap F(W) - F(W*) and ||W - W*||.
3. RMDA runs once more alone for --rmda-long-epochs epochs (same seed and
   milestones, so only its last stage is longer): does its support ever
   become exactly W*'s, and from which epoch on? Recorded under "rmda_long",
   with the first epoch of an exact support and the epoch from which it stays
   exact to the end (None if never).

Usage, from the repository root:
  python -m benchmarks.bench_identification            # full (see --help)
  python -m benchmarks.bench_identification --quick --out /tmp/ident
  # only the long RMDA run, kept next to the saved method runs and optimum:
  python -m benchmarks.bench_identification --merge --methods
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from matplotlib.figure import Figure

import rmda_jax as rj
from benchmarks import common, render
from rmda_jax.examples import data as data_lib

NUM_CLASSES = 10
# The names this benchmark reports -> the methods of common.build_method.
METHODS = {"RMDA": "rmda", "ProxSGD": "prox_sgd", "ProxGen": "prox_adam", "ProxSSI": "prox_ssi",
           "RAMDA": "ramda"}
# The methods with an exactly structured point Z besides their iterate W.
WITH_Z = ("RMDA", "RAMDA")


def load(n_train: int | None):
  ds = data_lib.load_mnist()
  x = np.asarray(ds.x_train, np.float64).reshape(len(ds.x_train), -1)
  y = np.asarray(ds.y_train, np.int32)
  if n_train:
    x, y = x[:n_train], y[:n_train]
  return x, y


# ---------------------------------------------------------------- objective
def loss(params, x, y):
  logits = x @ params["w"] + params["b"]
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def objective(params, x, y, reg):
  return loss(params, x, y) + reg.value(params)


def _prox_rows(w, t):
  """Group soft-thresholding of rows, weight sqrt(NUM_CLASSES) (own code)."""
  norm = jnp.linalg.norm(w, axis=1, keepdims=True)
  thr = t * np.sqrt(NUM_CLASSES)
  return w * jnp.where(norm > thr, 1 - thr / jnp.where(norm > 0, norm, 1), 0)


def optimality_residual(params, x, y, lam):
  g = jax.grad(loss)(params, x, y)
  rw = jnp.abs(params["w"] - _prox_rows(params["w"] - g["w"], lam)).max()
  return float(jnp.maximum(rw, jnp.abs(g["b"]).max()))


def _softmax_hessian(xs, probs):
  """Hessian of the mean cross-entropy w.r.t. (rows S of W, b), explicitly.

  H[(j, c), (k, d)] = 1/n sum_i x_ij x_ik p_ic (delta_cd - p_id), with the
  bias as a last feature of ones.
  """
  n = xs.shape[0]
  xs = jnp.concatenate([xs, jnp.ones((n, 1), xs.dtype)], axis=1)
  s1 = xs.shape[1]
  blocks = [[None] * NUM_CLASSES for _ in range(NUM_CLASSES)]
  for c in range(NUM_CLASSES):
    for d in range(c, NUM_CLASSES):
      wt = probs[:, c] * ((c == d) - probs[:, d]) / n
      blocks[c][d] = xs.T @ (xs * wt[:, None])
      blocks[d][c] = blocks[c][d]
  h = jnp.stack([jnp.stack(row, axis=0) for row in blocks], axis=0)  # c d j k
  return h.transpose(2, 0, 3, 1).reshape(s1 * NUM_CLASSES, s1 * NUM_CLASSES)


def _newton_direction(h, g, w_s, lam, tol, max_iters=5000):
  """argmin_d g.d + 1/2 d'Hd + lam sqrt(C) sum_rows ||w_s + d_row|| (bias row free).

  FISTA on the quadratic model, step 1 / lambda_max(H) (power iteration),
  until an iterate moves less than ``tol`` (inf-norm).
  """
  s1 = g.shape[0] // NUM_CLASSES
  v = jax.lax.fori_loop(0, 100, lambda _, v: (h @ v) / jnp.linalg.norm(h @ v),
                        jnp.ones(g.shape[0]) / np.sqrt(g.shape[0]))
  lip = 1.05 * jnp.vdot(v, h @ v)
  base = jnp.concatenate([w_s, jnp.zeros((1, NUM_CLASSES), w_s.dtype)], 0)

  def body(c):
    d, d_mom, t, _, i = c
    grad_q = (g + h @ d_mom.ravel()).reshape(s1, NUM_CLASSES)
    u = base + d_mom - grad_q / lip
    u = jnp.concatenate([_prox_rows(u[:-1], lam / lip), u[-1:]], 0)
    d_new = u - base
    t_new = (1 + jnp.sqrt(1 + 4 * t * t)) / 2
    moved = jnp.abs(d_new - d).max()
    return d_new, d_new + (t - 1) / t_new * (d_new - d), t_new, moved, i + 1

  d0 = jnp.zeros_like(base)
  out = jax.lax.while_loop(lambda c: (c[3] > tol) & (c[4] < max_iters), body,
                           (d0, d0, jnp.asarray(1.0), jnp.asarray(jnp.inf), 0))
  return out[0], out[4]


def solve_full_batch(x, y, lam, fista_iters, newton_iters, newton_inner=5000):
  """float64 optimum: FISTA warm start, then proximal Newton.

  FISTA (backtracking, adaptive restart) gets near the optimum; proximal
  Newton (Lee, Sun & Saunders 2014) with the exact Hessian restricted to the
  working set (nonzero groups and groups whose gradient is within 10% of the
  threshold), a FISTA-solved quadratic model and an Armijo line search then
  converges quadratically. ``newton_inner`` bounds the FISTA iterations of
  each quadratic model. The optimality residual of the full problem (zero
  groups included) is recorded.
  """
  xj, yj = jnp.asarray(x), jnp.asarray(y)
  lip0 = 0.5 * float(np.linalg.norm(x, 2)) ** 2 / len(x)  # global bound
  f_smooth = jax.jit(lambda p: loss(p, xj, yj))
  grad = jax.jit(jax.grad(lambda p: loss(p, xj, yj)))
  weight = lam * np.sqrt(NUM_CLASSES)

  def big_f(p):
    return float(f_smooth(p)) + weight * float(jnp.sum(jnp.linalg.norm(p["w"], axis=1)))

  @jax.jit
  def fista_chunk(carry):
    """100 FISTA steps with backtracking on L (Beck & Teboulle 2009), L
    allowed to shrink by 0.9 per step, and adaptive restart."""
    def prox_step(p_mom, g, lip):
      return {"w": _prox_rows(p_mom["w"] - g["w"] / lip, lam / lip),
              "b": p_mom["b"] - g["b"] / lip}

    def body(_, c):
      p, p_mom, t, lip = c
      f_mom, g = jax.value_and_grad(f_smooth)(p_mom)

      def upper_bound_fails(lip):
        p_new = prox_step(p_mom, g, lip)
        d = jax.tree.map(jnp.subtract, p_new, p_mom)
        quad = f_mom + sum(jnp.vdot(g[k], d[k]) for k in d) + lip / 2 * sum(
            jnp.vdot(d[k], d[k]) for k in d)
        return f_smooth(p_new) > quad + 1e-15 * jnp.abs(f_mom)

      lip = jax.lax.while_loop(upper_bound_fails, lambda l: 2 * l, lip)
      p_new = prox_step(p_mom, g, lip)
      t_new = (1 + jnp.sqrt(1 + 4 * t * t)) / 2
      # Adaptive restart (O'Donoghue & Candes) when momentum points uphill.
      uphill = sum(jnp.vdot(p_mom[k] - p_new[k], p_new[k] - p[k]) for k in p) > 0
      t_new = jnp.where(uphill, 1.0, t_new)
      coef = jnp.where(uphill, 0.0, (t - 1) / t_new)
      p_mom = jax.tree.map(lambda a, b: a + coef * (a - b), p_new, p)
      return p_new, p_mom, t_new, 0.9 * lip
    return jax.lax.fori_loop(0, 100, body, carry)

  t0 = time.time()
  p = {"w": jnp.zeros((x.shape[1], NUM_CLASSES)), "b": jnp.zeros(NUM_CLASSES)}
  carry = (p, p, jnp.asarray(1.0), jnp.asarray(lip0 / 64))
  n_chunks = max(1, fista_iters // 100)
  for _ in range(n_chunks):
    carry = fista_chunk(carry)
  p = carry[0]
  fista_residual = optimality_residual(p, xj, yj, lam)
  print(f"  solver: FISTA x{100 * n_chunks}: residual {fista_residual:.2e} "
        f"({time.time() - t0:.0f}s)", flush=True)

  hessian = jax.jit(_softmax_hessian)
  direction = jax.jit(_newton_direction, static_argnames="max_iters")
  rounds = []
  residual = fista_residual
  for it in range(newton_iters):
    if residual < 1e-12:
      break
    g = grad(p)
    gw, gb = np.asarray(g["w"]), np.asarray(g["b"])
    w = np.asarray(p["w"])
    work = np.where((np.linalg.norm(w, axis=1) > 0)
                    | (np.linalg.norm(gw, axis=1) > 0.9 * weight))[0]
    probs = jax.nn.softmax(xj @ p["w"] + p["b"], axis=1)
    h = hessian(xj[:, work], probs)
    gv = jnp.asarray(np.concatenate([gw[work], gb[None]], 0).ravel())
    d, inner = direction(h, gv, jnp.asarray(w[work]), lam,
                         max(1e-15, 1e-3 * residual), max_iters=newton_inner)
    d = np.asarray(d)
    f0 = big_f(p)
    decrease = float(gv @ d.ravel()) + weight * (
        np.linalg.norm(w[work] + d[:-1], axis=1).sum()
        - np.linalg.norm(w[work], axis=1).sum())
    step = 1.0
    while True:
      w_new = w.copy()
      w_new[work] = w[work] + step * d[:-1]
      cand = {"w": jnp.asarray(w_new), "b": p["b"] + step * d[-1]}
      if big_f(cand) <= f0 + 1e-4 * step * decrease or step < 1e-10:
        break
      step *= 0.5
    p = cand
    residual = optimality_residual(p, xj, yj, lam)
    support = int(np.sum(np.linalg.norm(np.asarray(p["w"]), axis=1) > 0))
    rounds.append({"working_set": int(len(work)), "step": step,
                   "inner_iterations": int(inner),
                   "residual": residual, "nonzero_groups": support})
    print(f"  solver: prox-Newton {it}: working set {len(work)}, inner {int(inner)}, step {step}, "
          f"residual {residual:.2e}, support {support} ({time.time() - t0:.0f}s)",
          flush=True)

  g = grad(p)
  support = np.asarray(jnp.linalg.norm(p["w"], axis=1) > 0)
  ratio = np.asarray(jnp.linalg.norm(g["w"], axis=1)) / weight
  info = {
      "method": "FISTA (backtracking, adaptive restart) then proximal Newton "
                "(exact restricted Hessian, Armijo line search), float64",
      "fista_iterations": 100 * n_chunks,
      "fista_residual": fista_residual,
      "newton_rounds": rounds,
      "residual": residual,
      "residual_definition": "max(|W - prox_lam(W - grad_W f)|_inf, |grad_b f|_inf)",
      "objective": big_f(p),
      "nonzero_groups": int(support.sum()),
      "groups": int(support.size),
      # How close the nearest zero group is to entering the support (1 = tie).
      "max_zero_group_gradient_ratio":
          float(ratio[~support].max()) if (~support).any() else None,
      "min_nonzero_group_norm":
          float(np.linalg.norm(np.asarray(p["w"]), axis=1)[support].min())
          if support.any() else None,
      "seconds": time.time() - t0,
  }
  return p, info


# ------------------------------------------------------------- stochastic
def make_optimizers(lam, steps_per_epoch, milestones_epochs, which):
  """The authors' settings for this experiment (RMDA: lr 0.1, c 0.01; ProxSGD in
  its EMA form lr 0.1, rho 0.1; ProxGen, ProxSSI lr 1e-3; RAMDA lr 1e-2, c 1e-2,
  epsilon 1e-6), every lr x0.1 at the milestones."""
  reg = rj.group_lasso(lam, mask={"w": True, "b": False})
  rates = common.Rates([m * steps_per_epoch for m in milestones_epochs], rmda_c0=0.01)
  return reg, {k: common.build_method(METHODS[k], reg, rates)[0] for k in METHODS if k in which}


def run_method(name, tx, reg, x, y, opt, epochs, batch, seed, eval_fn):
  n = len(x)
  spe = n // batch
  xj, yj = jnp.asarray(x, jnp.float32), jnp.asarray(y)

  @jax.jit
  def epoch(params, state, key):
    order = jax.random.permutation(key, n)[: spe * batch].reshape(spe, batch)

    def step(carry, idx):
      params, state = carry
      g = jax.grad(loss)(params, xj[idx], yj[idx])
      updates, state = tx.update(g, state, params)
      return (optax.apply_updates(params, updates), state), None

    return jax.lax.scan(step, (params, state), order)[0]

  params = {"w": jnp.zeros((x.shape[1], NUM_CLASSES), jnp.float32),
            "b": jnp.zeros(NUM_CLASSES, jnp.float32)}
  state = tx.init(params)
  opt_support = np.asarray(jnp.linalg.norm(opt["w"], axis=1) > 0)
  history = {"W": [], "Z": []} if name in WITH_Z else {"W": []}
  prev = {k: None for k in history}
  t0 = time.time()
  for e in range(epochs):
    params, state = epoch(params, state, jax.random.fold_in(jax.random.key(seed), e))
    points = {"W": params}
    if "Z" in history:
      points["Z"] = rj.structured_params(state, reg)
    for kind, p in points.items():
      support = np.asarray(jnp.any(p["w"] != 0, axis=1))
      rec = {
          "epoch": e + 1,
          "support_match": float(np.mean(support == opt_support)),
          "changes": None if prev[kind] is None else int(np.sum(support != prev[kind])),
          "nonzero_groups": int(support.sum()),
          **eval_fn(p),
      }
      prev[kind] = support
      history[kind].append(rec)
  return history, time.time() - t0


def exact_support_summary(hist):
  """When a history's support is exactly the optimum's (support match 1.0)."""
  first, from_on = render.exact_support(hist)
  best = max(hist, key=lambda h: h["support_match"])
  changed = [h["epoch"] for h in hist if h["changes"]]
  return {"first_epoch_exact_support": first,
          "exact_support_from_epoch_on": from_on,
          "best_support_match": best["support_match"],
          "first_epoch_best_support_match": best["epoch"],
          "last_epoch_with_support_change": changed[-1] if changed else None}


def _compare_histories(a, b):
  """A run against another of the same seed and schedule, over their common epochs:
  how many epochs have the same support match, and the largest relative
  difference of F - F* (float32 rounding differs between library versions and
  XLA flags, so the records need not be bit-identical)."""
  pairs = list(zip(a, b))
  return {
      "epochs_compared": len(pairs),
      "epochs_with_same_support_match":
          sum(x["support_match"] == y["support_match"] for x, y in pairs),
      "max_relative_objective_gap_difference": max(
          (abs(x["objective_gap"] - y["objective_gap"]) / abs(y["objective_gap"])
           for x, y in pairs if y["objective_gap"]), default=None),
  }


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--quick", action="store_true",
                  help="2k samples, 8 epochs, short solver: a smoke run (< 1 min)")
  ap.add_argument("--epochs", type=int, default=200)
  ap.add_argument("--milestones", type=int, nargs="*", default=[50, 100])
  ap.add_argument("--lam", type=float, default=1e-3)
  ap.add_argument("--batch", type=int, default=128)
  ap.add_argument("--methods", nargs="*", default=list(METHODS), choices=list(METHODS))
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--out", default=str(common.RESULTS), help="output directory")
  ap.add_argument("--merge", action="store_true",
                  help="reuse the saved optimum and the methods of the existing "
                       "results file; rerun only --methods")
  ap.add_argument("--rmda-long-epochs", type=int, default=400,
                  help="also run RMDA alone for this many epochs (same seed and "
                       "milestones: a longer last stage) to see whether and when its "
                       "support becomes exactly the optimum's; 0 skips it (with "
                       "--merge the saved long run is kept)")
  args = ap.parse_args(argv)
  n_train, fista_iters, newton_iters, newton_inner = None, 1000, 15, 5000
  if args.quick:
    args.epochs, args.milestones = 8, [3, 5]
    args.rmda_long_epochs = 12 if args.rmda_long_epochs else 0
    n_train, fista_iters, newton_iters, newton_inner = 2000, 200, 1, 100
  os.makedirs(args.out, exist_ok=True)
  wall0 = time.time()

  x, y = load(n_train)
  cache = os.path.join(args.out, "identification_optimum.npz")
  key = f"n={len(x)} lam={args.lam!r} fista={fista_iters} newton={newton_iters}"
  if newton_inner != 5000:
    key += f" inner={newton_inner}"
  previous = opt = None
  results_path = os.path.join(args.out, "identification.json")
  if args.merge and os.path.exists(results_path):
    with open(results_path) as f:
      previous = json.load(f)
    if os.path.exists(cache):
      with np.load(cache) as z:
        if str(z["key"]) == key:
          opt, solver = {"w": z["w"], "b": z["b"]}, previous["optimum"]
  if opt is None:
    with jax.enable_x64(True):
      opt, solver = solve_full_batch(x, y, args.lam, fista_iters, newton_iters, newton_inner)
      opt = jax.tree.map(np.asarray, opt)
    np.savez(cache, w=opt["w"], b=opt["b"], key=key)
    if previous and abs(solver["objective"] - previous["optimum"]["objective"]) > 1e-9:
      raise SystemExit("--merge: this optimum differs from the results file's; "
                       "rerun every method instead")
  print(f"optimum: {solver['nonzero_groups']}/{solver['groups']} groups, "
        f"residual {solver['residual']:.2e}, F* = {solver['objective']:.10f} "
        f"({solver['seconds']:.0f}s)")

  def eval_fn(p):
    with jax.enable_x64(True):
      p64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), p)
      xj, yj = jnp.asarray(x), jnp.asarray(y)
      f = float(objective(p64, xj, yj, reg))
      dist = float(np.sqrt(sum(np.sum((np.asarray(p64[k]) - opt[k]) ** 2) for k in opt)))
    return {"objective_gap": f - solver["objective"], "distance": dist}

  steps_per_epoch = len(x) // args.batch
  reg, optimizers = make_optimizers(args.lam, steps_per_epoch, args.milestones,
                                    args.methods)
  results = dict(previous["methods"]) if previous else {}
  for name, tx in optimizers.items():
    hist, secs = run_method(name, tx, reg, x, y, opt, args.epochs, args.batch,
                            args.seed, eval_fn)
    results[name] = {"history": hist, "seconds": secs}
    last = hist["W"][-1]
    print(f"{name:8s} support match {last['support_match']:.4f}  changes "
          f"{last['changes']}  gap {last['objective_gap']:.2e}  dist "
          f"{last['distance']:.3e}  ({secs:.0f}s)")

  rmda_long = previous.get("rmda_long") if previous else None
  if args.rmda_long_epochs:
    _, long_tx = make_optimizers(args.lam, steps_per_epoch, args.milestones, ["RMDA"])
    load_start = common.load_average()
    hist, secs = run_method("RMDA", long_tx["RMDA"], reg, x, y, opt,
                            args.rmda_long_epochs, args.batch, args.seed, eval_fn)
    rmda_long = {
        "epochs": args.rmda_long_epochs,
        "milestones_epochs": args.milestones,
        "seed": args.seed,
        "summary": {kind: exact_support_summary(h) for kind, h in hist.items()},
        # Same seed and schedule: its first epochs should repeat the RMDA run's.
        "vs_RMDA_run": _compare_histories(hist["W"], results["RMDA"]["history"]["W"])
                       if "RMDA" in results else None,
        "history": hist,
        "seconds": secs,
        "load_average_start": load_start, "load_average_end": common.load_average(),
    }
    last = hist["Z"][-1]
    print(f"RMDA {args.rmda_long_epochs} epochs (Z): support match "
          f"{last['support_match']:.4f}  gap {last['objective_gap']:.2e}  dist "
          f"{last['distance']:.3e}  exact support first at "
          f"{rmda_long['summary']['Z']['first_epoch_exact_support']}, from "
          f"{rmda_long['summary']['Z']['exact_support_from_epoch_on']} on  ({secs:.0f}s)")

  out = {
      "benchmark": "identification",
      "quick": args.quick,
      "settings": {"dataset": "MNIST train (60k)" if n_train is None else f"MNIST train, first {n_train}",
                   "model": "multinomial logistic regression 784->10, zero init",
                   "regularizer": f"group LASSO over input pixels, lam {args.lam}, bias free",
                   "epochs": args.epochs, "milestones_epochs": args.milestones,
                   "batch": args.batch, "seed": args.seed,
                   "RMDA": "rmda_multistep(lr 0.1, c 0.01, gamma 0.1)",
                   "ProxSGD": "prox_sgd(lr 0.01, momentum 0.9, strength 10 lam) = the authors' EMA form with lr 0.1, rho 0.1, lam; lr x0.1 at milestones",
                   "ProxGen": "prox_adam(lr 1e-3), lr x0.1 at milestones",
                   "ProxSSI": "prox_ssi(lr 1e-3), lr x0.1 at milestones",
                   "RAMDA": "ramda_multistep(lr 1e-2, c 1e-2, epsilon 1e-6, gamma 0.1): the "
                            "authors' settings for this problem (their schedule: 500 epochs, "
                            "milestones every 100), on this benchmark's schedule",
                   "dtype": "float32 training, float64 evaluation and optimum"},
      "optimum": solver,
      "methods": results,
      "rmda_long": rmda_long,
      "machine": common.machine_info(),
      "wall_seconds": time.time() - wall0 + (
          previous["wall_seconds"] if previous else 0),
  }
  if previous:
    rerun = list(optimizers) + ([f"RMDA {args.rmda_long_epochs} epochs (rmda_long)"]
                                if args.rmda_long_epochs else [])
    out["merged"] = (previous.get("merged", []) +
                     [f"{', '.join(rerun) or 'nothing'} rerun on {out['machine']['date']}"])
  path = os.path.join(args.out, "identification.json")
  common.write_json(path, out)
  plot(out, os.path.join(args.out, "identification.png"))
  print(f"wrote {path} ({out['wall_seconds']:.0f}s)")
  return out


def plot(out, path):
  fig = Figure(figsize=(18, 4))
  axes = fig.subplots(1, 4)
  keys = [("support_match", "groups matching W*'s status", False),
          ("changes", "status changes since last epoch", False),
          ("objective_gap", "F(W) - F(W*)", True),
          ("distance", "||W - W*||", True)]
  for name, res in out["methods"].items():
    for kind, hist in res["history"].items():
      label = name if kind == "W" else f"{name} (Z)"
      style = "-" if kind == "W" else "--"
      ep = [h["epoch"] for h in hist]
      for ax, (key, title, log) in zip(axes, keys):
        vals = [h[key] for h in hist]
        if key == "changes":
          ep_, vals = ep[1:], vals[1:]
        else:
          ep_ = ep
        if log:
          vals = [max(v, 1e-16) for v in vals]
        ax.plot(ep_, vals, style, label=label)
        ax.set_title(title)
        if log:
          ax.set_yscale("log")
  long = out.get("rmda_long")
  if long:
    hist = long["history"]["Z"]
    ep = [h["epoch"] for h in hist]
    for ax, (key, _, log) in zip(axes, keys):
      vals = [h[key] for h in hist]
      ep_ = ep[1:] if key == "changes" else ep
      vals = vals[1:] if key == "changes" else vals
      if log:
        vals = [max(v, 1e-16) for v in vals]
      ax.plot(ep_, vals, ":", color="black", label=f"RMDA (Z), {long['epochs']} epochs")
  for ax in axes:
    ax.set_xlabel("epoch")
  axes[0].legend()
  m = out["machine"]
  fig.suptitle(f"Logistic regression / MNIST, group LASSO: identification "
               f"({m['cpu']}, jax {m['jax']}, {m['date'][:10]})", fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=90)


if __name__ == "__main__":
  main()
