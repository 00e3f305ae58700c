"""Cost of one optimizer step: the proximal baselines and RMDA against optax.

Times the jitted, donated ``update + apply_updates`` step on a parameter
pytree shaped like ResNet50 for CIFAR (23.5M parameters, read from
``rmda_jax.examples.models``) for the optimizers of ``common.step_optimizers()``:

* references: ``optax.sgd(momentum=0.9)``, ``optax.adam``,
  ``optax.contrib.madgrad``;
* ``rj.rmda`` with no regularizer, L1 and group LASSO;
* ``rj.prox_sgd``, ``rj.prox_adam`` (ProxGen) and ``rj.prox_ssi``, with L1
  and group LASSO,

all interleaved in one run (see ``common.time_steps``), and prints
ms/step and the ratio to ``optax.sgd`` measured in the same run. The memory
bandwidth is measured in the same run too (output donated, like the step);
``passes`` is the step time over the time to stream one float32
parameter-sized array at that bandwidth. The load average is recorded: on a
shared machine, other processes inflate every number (the ratios less).

The committed cost table (section 4 of benchmarks/README.md, every model
shape) is ``bench_cost``'s; this module is what section 4c runs once per
XLA_FLAGS setting, writing ``results/cost_ynn_<setting>.json`` with ``--out``.

Usage, from the repository root:
  python -m benchmarks.bench_baselines_cost --quick   # a smoke run, ~1 min
  python -m benchmarks.bench_baselines_cost --out benchmarks/results/cost_ynn_reduce.json
"""

from __future__ import annotations

import argparse

import jax

from benchmarks import common


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true",
                      help="few repeats")
  parser.add_argument("--model", default="resnet50", choices=sorted(common.SHAPED_MODELS))
  parser.add_argument("--repeats", type=int, default=None)
  parser.add_argument("--warmup", type=int, default=None)
  parser.add_argument("--only", default=None,
                      help="comma-separated substrings of optimizer names "
                           "(the optax.sgd reference is always kept)")
  parser.add_argument("--out", default=None, help="write the results to this JSON file")
  args = parser.parse_args(argv)
  repeats = args.repeats or (3 if args.quick else 10)
  warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
  out_path = args.out

  shapes, params, grads = common.timed_model(args.model)
  n = common.num_params(shapes)
  opts = common.step_optimizers()
  if args.only:
    keys = [k.strip() for k in args.only.split(",")]
    opts = {name: tx for name, tx in opts.items()
            if name.startswith("optax.sgd") or any(k in name for k in keys)}

  info = common.machine_info()
  print(f"{args.model}: {n / 1e6:.2f}M parameters, "
        f"{len(jax.tree.leaves(params))} leaves; {info['cpu']} x "
        f"{info['cpu_count']}, jax {info['jax']} ({info['jax_backend']}), "
        f"optax {info['optax']}; load average "
        f"{', '.join(f'{x:.1f}' for x in common.load_average())}")
  bw_before = common.memory_bandwidth()
  results = common.time_steps(opts, params, grads, repeats=repeats, warmup=warmup)
  bw_after = common.memory_bandwidth()
  bw_fresh = common.memory_bandwidth(donate=False)
  bandwidth = (bw_before + bw_after) / 2
  pass_ms = 1e3 * 4 * n / bandwidth  # stream one float32 param-sized array

  ref = results["optax.sgd(momentum=0.9)"]["median_ms"]
  print(f"\nmemory bandwidth {bandwidth / 1e9:.2f} GB/s, output donated "
        f"(before {bw_before / 1e9:.2f}, after {bw_after / 1e9:.2f}; "
        f"{bw_fresh / 1e9:.2f} into a fresh buffer); "
        f"one parameter-sized pass = {pass_ms:.1f} ms")
  print(f"median of {repeats} interleaved rounds after {warmup} warm-up\n")
  print(f"{'optimizer':<28s} {'ms/step':>9s} {'min':>8s} {'max':>8s} "
        f"{'x sgd':>7s} {'passes':>7s}")
  for name, r in results.items():
    r["ratio_to_sgd"] = r["median_ms"] / ref
    r["passes"] = r["median_ms"] / pass_ms
    print(f"{name:<28s} {r['median_ms']:9.1f} {r['min_ms']:8.1f} "
          f"{r['max_ms']:8.1f} {r['ratio_to_sgd']:7.2f} {r['passes']:7.1f}")

  if out_path:
    record = {
        "machine": info,
        "model": args.model,
        "num_params": n,
        "num_leaves": len(jax.tree.leaves(params)),
        "dtype": "float32",
        "repeats": repeats,
        "warmup": warmup,
        "memory_bandwidth_GBps": bandwidth / 1e9,
        "memory_bandwidth_GBps_before_after": [bw_before / 1e9,
                                               bw_after / 1e9],
        "memory_bandwidth_fresh_output_GBps": bw_fresh / 1e9,
        "load_average_start": common.load_average(),
        "param_pass_ms": pass_ms,
        "settings": {"l1_strength": common.L1_STRENGTH, "gl_strength": common.GL_STRENGTH,
                     "prox_adam": "lr 1e-3, max_inner_steps 100, "
                                  "inner_tol 1e-8",
                     "prox_ssi": "lr 1e-3", "prox_sgd": "lr 0.1, momentum 0.9",
                     "rmda": "lr 0.1, momentum 0.1"},
        "results": results,
    }
    common.write_json(out_path, record, indent=2)
    print(f"\nwrote {out_path}")


if __name__ == "__main__":
  main()
