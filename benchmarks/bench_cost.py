"""Section 4: cost per optimizer step and its memory-bandwidth limit.

For parameter pytrees shaped like LeNet5, VGG19-BN and ResNet50 (CIFAR, Flax
layouts, read from ``rmda_jax.examples.models``), times the jitted, donated
``update + apply_updates`` step of every optimizer of
``common.step_optimizers()`` (RMDA with no regularizer, L1 and group
LASSO, ProxSGD, ProxGen, ProxSSI, optax.sgd(momentum=0.9), optax.adam,
optax.contrib.madgrad), interleaved in one run, as ratios to optax.sgd.

Next to each time: the parameter-sized float32 arrays the step must move at
the least (``MIN_PASSES``, counted for a step fused with ``apply_updates``),
the machine's streaming bandwidth measured in the same run, and so the
bandwidth bound ``passes * 4 * n_params / bandwidth`` and the fraction of it
the step reaches (1.0 = bandwidth-bound).

``--nuclear`` adds the nuclear norm (``rj.nuclear_norm``: one thin SVD per
kernel per step) to RMDA and ProxSGD, and the MLP of the RMDA paper to the
models; its time is the SVDs', with no bandwidth bound. Its runs go to
``--name`` (``cost_nuclear``), so that ``cost.json`` stays as it was.

``--ramda`` times RAMDA (``rj.ramda``, the authors' defaults lr 1e-2,
c 1e-2, epsilon 1e-6) with no regularizer, L1 and group LASSO (with the
authors' inner solver and with ``inner_solver="newton"``) next to
optax.sgd, optax.contrib.madgrad and ProxGen (``rj.prox_adam``, which shares
RAMDA's inner solver) on the ResNet50 pytree, and writes ``cost_ramda.json``.
RAMDA's state is first advanced by ``--ramda-warm-steps`` updates with fresh
random gradients (its inner solver needs up to 100 iterations in the first
updates, when the cube-root metric is ill-conditioned; a warm step is what a
training run pays). The mean number of inner iterations per regularized leaf
is read from the state during the timed steps, and the group-LASSO bound
counts ``RAMDA_GL_PASSES + RAMDA_PASSES_PER_ITER * iterations`` passes
(``RAMDA_NEWTON_PASSES_PER_ITER`` per Newton iteration).

Usage, from the repository root:
  python -m benchmarks.bench_cost --quick --out /tmp/cost   # < 2 minutes
  python -m benchmarks.bench_cost                           # results/cost.json
  python -m benchmarks.bench_cost --nuclear --models mlp lenet5   # results/cost_nuclear.json
  python -m benchmarks.bench_cost --ramda                   # results/cost_ramda.json
"""

from __future__ import annotations

import argparse
import os

# jax's SVD on CPU is LAPACK from scipy's OpenBLAS, whose threads thrash on a
# shared machine (see bench_low_rank); nothing else here calls OpenBLAS.
# Set before numpy / jax load it; machine_info records it.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

import rmda_jax as rj  # noqa: E402
from benchmarks import common  # noqa: E402
from rmda_jax.examples import models as models_lib  # noqa: E402

# Strength of the nuclear norm in the step timings (the time does not depend on
# it: one thin SVD per kernel whatever the threshold).
NUCLEAR_STRENGTH = 1e-3
# Models beyond common.SHAPED_MODELS: (model of rmda_jax.examples.models, input).
EXTRA_MODELS = {"mlp": ("mlp", (28, 28, 1))}   # MNIST, 784-512-...-16-10

# Parameter-sized arrays read + written by one step fused with apply_updates:
#   sgd        g, m, W read; m, W written                              5
#   adam       g, mu, nu, W read; mu, nu, W written                    7
#   madgrad    g, G, s, x0, W read; G, s, W written                    8
#   rmda       g, W0, Y, W read; Y, W written                          6
#   rmda+GL    one more read of Y for the group norms                  7
#   prox_sgd   as sgd; +GL: the group norms re-read W and m            5 / 7
#   prox_adam  as adam; +GL: norms re-read (W, mu, nu), then >= 1
#              inner pass per proximal-gradient step                   7 / >= 10
#   prox_ssi   as adam; +GL: norms and Newton passes                   7 / >= 10
MIN_PASSES = {
    "optax.sgd(momentum=0.9)": 5,
    "optax.adam": 7,
    "optax.contrib.madgrad": 8,
    "rmda (none)": 6,
    "rmda (l1)": 6,
    "rmda (group_lasso)": 7,
    "prox_sgd (l1)": 5,
    "prox_sgd (group_lasso)": 7,
    "prox_adam (l1)": 7,
    "prox_adam (group_lasso)": 10,
    "prox_ssi (l1)": 7,
    "prox_ssi (group_lasso)": 10,
    # ramda: madgrad's 8 (g, W0, V, U, W read; V, U, W written); with L1 the
    # closed-form prox fuses into it; group LASSO below.
    "ramda (none)": 8,
    "ramda (l1)": 8,
}
# ramda + group LASSO: the 8, then the inner solver's inputs D and Y written and
# read by the screening, the warm start read and written, the constant and the
# first objective (D, Y, W0, the start read): 14; then per inner iteration one
# pass reading x, D, Y and writing x.
RAMDA_GL_PASSES = 14
RAMDA_PASSES_PER_ITER = 4
# inner_solver="newton": the same 14 (D and Y written; one pass over D, Y for
# the screening and each group's bracket; the last pass reading D, Y to form
# Z); a Newton iteration reads D and Y once (both of its group sums).
RAMDA_NEWTON_PASSES_PER_ITER = 2
RAMDA_GL = {"ramda (group_lasso)": RAMDA_PASSES_PER_ITER,
            "ramda (group_lasso, newton)": RAMDA_NEWTON_PASSES_PER_ITER}
# The authors' defaults (lr, c, epsilon).
RAMDA_SETTINGS = {"learning_rate": 1e-2, "momentum": 1e-2, "epsilon": 1e-6}


def timed_model(name: str):
  """``common.timed_model``, plus the models of :data:`EXTRA_MODELS`."""
  if name in common.SHAPED_MODELS:
    return common.timed_model(name)
  model, input_shape = EXTRA_MODELS[name]
  shapes = jax.eval_shape(lambda: nnx.to_pure_dict(nnx.state(
      models_lib.get_model(model, 10, nnx.Rngs(0), input_shape), nnx.Param)))
  return (shapes, common.make_params(shapes, seed=0),
          common.make_params(shapes, seed=1, scale=1e-2))


def nuclear_optimizers():
  """The steps with the nuclear norm (next to optax.sgd, the reference)."""
  nuc = rj.nuclear_norm(NUCLEAR_STRENGTH)
  return {"rmda (nuclear_norm)": rj.rmda(0.1, 0.1, nuc),
          "prox_sgd (nuclear_norm)": rj.prox_sgd(0.1, 0.9, nuc)}


def ramda_optimizers():
  """RAMDA with each regularizer, and ProxGen (sharing its inner solver)."""
  s = RAMDA_SETTINGS
  ramda = lambda reg, **kw: rj.ramda(s["learning_rate"], s["momentum"], reg,
                                     epsilon=s["epsilon"], **kw)
  return {"optax.sgd(momentum=0.9)": optax.sgd(0.1, momentum=0.9),
          "optax.contrib.madgrad": optax.contrib.madgrad(1e-2),
          "ramda (none)": ramda(None),
          "ramda (l1)": ramda(rj.l1(common.L1_STRENGTH)),
          "ramda (group_lasso)": ramda(rj.group_lasso(common.GL_STRENGTH)),
          "ramda (group_lasso, newton)": ramda(rj.group_lasso(common.GL_STRENGTH),
                                               inner_solver="newton"),
          "prox_adam (group_lasso)": rj.prox_adam(
              1e-3, regularizer=rj.group_lasso(common.GL_STRENGTH),
              inner_stop="objective")}


def warmed(tx, shapes, steps, seed=100):
  """``tx`` whose ``init`` returns the state after ``steps`` updates.

  The updates use fresh random gradients (scale 1e-2, seeds ``seed``,
  ``seed + 1``, ...); the parameters they produce are discarded (the timed
  steps start from the common parameters, which RAMDA's small ``c`` keeps
  close).
  """
  cache = {}

  def init(params):
    if "state" not in cache:  # computed once, copied for every caller
      step = common.make_step(tx)
      p = jax.tree.map(jnp.copy, params)
      state = jax.tree.map(jnp.copy, tx.init(p))
      for i in range(steps):
        p, state = step(p, state, common.make_params(shapes, seed=seed + i,
                                                     scale=1e-2))
      cache["state"] = state
    return jax.tree.map(jnp.copy, cache["state"])

  return optax.GradientTransformationExtraArgs(init, tx.update)


def inner_iterations(tx, params, grads, n):
  """Mean of ``state.inner_steps`` over ``n`` steps from ``tx.init`` (fixed grads)."""
  step = common.make_step(tx)
  p = jax.tree.map(jnp.copy, params)
  state = jax.tree.map(jnp.copy, tx.init(p))
  counts = []
  for _ in range(n):
    p, state = step(p, state, grads)
    counts.append(float(state.inner_steps))
  return sum(counts) / len(counts), counts


def cube_root_times(n=25_000_000, repeats=7):
  """Median ms of a copy, ``jnp.cbrt`` and ``exp(log(x) / 3)`` on ``n`` float32 values.

  What ``rj.ramda`` chooses its cube root by (``rmda_jax._ramda.cube_root``:
  the second form on XLA:CPU, ``cbrt`` elsewhere), measured on this backend.
  """
  x = jax.random.uniform(jax.random.PRNGKey(0), (n,), jnp.float32)
  fns = {"copy": jax.jit(lambda x: x * 1.0 + 0.0), "cbrt": jax.jit(jnp.cbrt),
         "exp_log": jax.jit(lambda x: jnp.exp(jnp.log(x) * jnp.float32(1 / 3)))}
  times = {k: [] for k in fns}
  for f in fns.values():
    jax.block_until_ready(f(x))
  for _ in range(repeats):
    for k, f in fns.items():
      t0 = time.perf_counter()
      jax.block_until_ready(f(x))
      times[k].append(1e3 * (time.perf_counter() - t0))
  out = {f"{k}_ms": sorted(v)[len(v) // 2] for k, v in times.items()}
  out.update(n=n, backend=jax.default_backend(),
             cbrt_over_copy=out["cbrt_ms"] / out["copy_ms"],
             exp_log_over_copy=out["exp_log_ms"] / out["copy_ms"])
  print(f"cube root of {n / 1e6:.0f}M float32: copy {out['copy_ms']:.1f} ms, cbrt "
        f"{out['cbrt_ms']:.1f} ms ({out['cbrt_over_copy']:.1f}x), exp(log/3) "
        f"{out['exp_log_ms']:.1f} ms ({out['exp_log_over_copy']:.1f}x)", flush=True)
  return out


def run_ramda(model, repeats, warmup, warm_steps):
  """RAMDA against optax.sgd and optax.contrib.madgrad, with its inner iterations."""
  shapes, params, grads = timed_model(model)
  opts = ramda_optimizers()
  for name in [k for k in opts if k.startswith("ramda")]:
    opts[name] = warmed(opts[name], shapes, warm_steps)
  out = run_model(model, opts, repeats, warmup, timed=(shapes, params, grads))
  results = out["results"]
  for name in [k for k in results if k.startswith("ramda")]:
    mean, counts = inner_iterations(opts[name], params, grads, warmup + repeats)
    r = results[name]
    r["inner_iterations_mean"], r["inner_iterations_per_step"] = mean, counts
    if name in RAMDA_GL:
      r["min_passes"] = RAMDA_GL_PASSES + RAMDA_GL[name] * mean
      r["bound_ms"] = r["min_passes"] * out["param_pass_ms"]
      r["fraction_of_bound"] = r["bound_ms"] / r["median_ms"]
    r["ratio_to_madgrad"] = (r["median_ms"]
                             / results["optax.contrib.madgrad"]["median_ms"])
    print(f"{name:<26s} inner iterations {mean:6.1f}; x madgrad "
          f"{r['ratio_to_madgrad']:5.2f}; of bound "
          f"{r.get('fraction_of_bound', float('nan')):5.2f}", flush=True)
  out["warm_steps"] = warm_steps
  out["cube_root"] = cube_root_times()
  return out


def run_model(model, opts, repeats, warmup, timed=None):
  shapes, params, grads = timed_model(model) if timed is None else timed
  n = common.num_params(shapes)
  print(f"\n{model}: {n / 1e6:.2f}M parameters, {len(jax.tree.leaves(params))} leaves",
        flush=True)
  bw_before = common.memory_bandwidth()
  results = common.time_steps(opts, params, grads, repeats=repeats, warmup=warmup)
  bw_after = common.memory_bandwidth()
  bandwidth = (bw_before + bw_after) / 2
  pass_ms = 1e3 * 4 * n / bandwidth
  ref = results["optax.sgd(momentum=0.9)"]["median_ms"]
  print(f"bandwidth {bandwidth / 1e9:.1f} GB/s; one parameter pass {pass_ms:.2f} ms")
  print(f"{'optimizer':<26s} {'ms/step':>9s} {'x sgd':>7s} {'passes':>7s} "
        f"{'bound ms':>9s} {'of bound':>9s}")
  for name, r in results.items():
    r["ratio_to_sgd"] = r["median_ms"] / ref
    r["min_passes"] = MIN_PASSES.get(name)
    if r["min_passes"]:
      r["bound_ms"] = r["min_passes"] * pass_ms
      r["fraction_of_bound"] = r["bound_ms"] / r["median_ms"]
    print(f"{name:<26s} {r['median_ms']:9.2f} {r['ratio_to_sgd']:7.2f} "
          f"{r['min_passes'] or '-':>7} {r.get('bound_ms', float('nan')):9.2f} "
          f"{r.get('fraction_of_bound', float('nan')):9.2f}", flush=True)
  return {"num_params": n, "num_leaves": len(jax.tree.leaves(params)),
          "memory_bandwidth_GBps": bandwidth / 1e9,
          "memory_bandwidth_GBps_before_after": [bw_before / 1e9, bw_after / 1e9],
          "param_pass_ms": pass_ms, "results": results}


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--quick", action="store_true",
                  help="LeNet5 shapes only, no ProxGen, 3 repeats (< 2 min)")
  ap.add_argument("--models", nargs="*", default=None,
                  choices=[*common.SHAPED_MODELS, *EXTRA_MODELS],
                  help="default: lenet5 vgg19 resnet50; with --nuclear: mlp lenet5")
  ap.add_argument("--nuclear", action="store_true",
                  help="add RMDA and ProxSGD with the nuclear norm (and the MLP)")
  ap.add_argument("--ramda", action="store_true",
                  help="RAMDA against optax.sgd, optax.contrib.madgrad and ProxGen "
                       "(default model resnet50), written to cost_ramda.json")
  ap.add_argument("--ramda-warm-steps", type=int, default=20,
                  help="with --ramda: updates that advance RAMDA's state before timing")
  ap.add_argument("--repeats", type=int, default=10)
  ap.add_argument("--warmup", type=int, default=2)
  ap.add_argument("--out", default=str(common.RESULTS))
  ap.add_argument("--name", default=None,
                  help="results file stem (default: cost, or cost_nuclear with --nuclear)")
  args = ap.parse_args(argv)
  if args.models is None:
    args.models = (["mlp", "lenet5"] if args.nuclear else ["resnet50"] if args.ramda
                   else ["lenet5", "vgg19", "resnet50"])
  opts = common.step_optimizers()
  if args.nuclear:
    opts.update(nuclear_optimizers())
  if args.quick:
    args.models, args.repeats, args.warmup = ["lenet5"], 3, 1
    opts = {k: v for k, v in opts.items() if not k.startswith("prox_adam")}
  wall0 = time.time()
  info = common.machine_info()
  info["load_average_start"] = list(os.getloadavg())
  print(f"{info['cpu']} x {info['cpu_count']}, jax {info['jax']} "
        f"({info['jax_backend']}), optax {info['optax']}, load "
        f"{info['load_average_start']}")
  if args.ramda:
    models = {m: run_ramda(m, args.repeats, args.warmup, args.ramda_warm_steps)
              for m in args.models}
  else:
    models = {m: run_model(m, opts, args.repeats, args.warmup) for m in args.models}
  out = {"benchmark": "cost", "quick": args.quick, "machine": info,
         "load_average_end": list(os.getloadavg()),
         "dtype": "float32", "repeats": args.repeats, "warmup": args.warmup,
         "settings": {"step": "jit(update + apply_updates), params and state "
                              "donated, optimizers interleaved round by round",
                      "min_passes": MIN_PASSES,
                      "l1_strength": common.L1_STRENGTH,
                      "gl_strength": common.GL_STRENGTH,
                      **({"nuclear_strength": NUCLEAR_STRENGTH,
                          "nuclear_note": "one thin SVD (jnp.linalg.svd) per kernel "
                                          "per step; no bandwidth bound"}
                         if args.nuclear else {}),
                      **({"ramda": RAMDA_SETTINGS,
                          "ramda_gl_passes": f"{RAMDA_GL_PASSES} + "
                                             f"{RAMDA_PASSES_PER_ITER} per inner iteration "
                                             f"({RAMDA_NEWTON_PASSES_PER_ITER} per Newton "
                                             "iteration with inner_solver='newton')",
                          "prox_adam": "lr 1e-3, max_inner_steps 100, inner_tol 1e-8 "
                                       "(inner_stop='objective')"}
                         if args.ramda else {})},
         "models": models, "wall_seconds": time.time() - wall0}
  name = args.name or ("cost_nuclear" if args.nuclear else "cost_ramda" if args.ramda
                       else "cost")
  path = os.path.join(args.out, f"{name}.json")
  common.write_json(path, out)
  print(f"\nwrote {path} ({out['wall_seconds']:.0f}s)")
  return out


if __name__ == "__main__":
  main()
