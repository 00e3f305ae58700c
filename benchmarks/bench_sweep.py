"""Runs per hour: K runs in one compiled program against K separate runs.

Issue 19, part 1. LeNet5 (small) on MNIST, RMDA with group LASSO (rmda-train's
defaults; the runs differ in lr, lambda and seed: :func:`run_configs`), batch
128. For K = 1, 4, 16:

* **one program**: ``rmda_jax.examples.sweep.Program``, the K runs' step
  vmapped and compiled once (what ``rmda-train --lr ... --strength ...
  --seed ...`` trains), ``--steps`` steps;
* **K separate runs**: K single-run programs one after another
  (``rmda_jax.examples.train.Trainer``, rmda-train's single-run step), each
  compiled, each ``--steps`` steps. The 16 separate runs are measured once,
  interleaved with the programs (program K=1, separate run 1, program K=4,
  separate runs 2-4, program K=16, separate runs 5-16); "K separate runs" is
  the sum over the first K.

Every run takes a fixed number of steps (not whole epochs), so the numbers are
quick to measure; compile time is recorded separately, and the runs per hour
are given two ways: measured (compile + ``--steps`` steps per run) and
extrapolated to a full run of ``--full-epochs`` epochs (compile + that many
steps at the measured step time). A third column, derived from the K=1
program, is that program reused for the K runs one after another (one
compilation: the hyperparameters are inputs), what ``bench_front`` does on
CPU. Results: ``results/sweep_throughput.json`` (``_unroll`` for ``--batching
unroll``; on an accelerator ``sweep_throughput_gpu.json`` or ``_tpu``), rendered
as section 8 of ``benchmarks/README.md`` by ``benchmarks/render_sweep.py``,
with the device and the load averages at start and end (the machine is
shared).

    python -m benchmarks.bench_sweep                 # minutes
    python -m benchmarks.bench_sweep --quick --out /tmp/q
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from rmda_jax.examples import config as config_lib
from rmda_jax.examples import sweep as sweep_lib
from rmda_jax.examples import train as train_lib

KS = (1, 4, 16)
LRS = (0.1, 0.3)
LAMS = (2.5e-4, 5e-4, 1e-3, 2e-3)


def run_configs(k: int, dataset: str = "mnist") -> list:
  """``k`` rmda-train configurations: lr x lambda, then the next seed."""
  base = config_lib.Config(dataset=dataset, model="lenet5_small", optimizer="rmda",
                           regularizer="group_lasso", epochs=1, milestones=(),
                           output_dir="/nonexistent", progress=False)
  grid = [(seed, lr, lam) for seed in range(k) for lr in LRS for lam in LAMS][:k]
  return [dataclasses.replace(base, seed=s, lr=lr, strength=lam) for s, lr, lam in grid]


def _perm(cfg, epoch_n: int, steps: int, batch: int) -> np.ndarray:
  """The first epoch's order of ``cfg``'s run (all its rows: the compiled shapes)."""
  data_key = np.asarray(jax.random.key_data(jax.random.key(cfg.seed)))
  perm = train_lib.epoch_permutation(data_key, 0, epoch_n, batch)
  if steps > len(perm):
    raise ValueError(f"--steps {steps} exceeds the {len(perm)} steps of an epoch")
  return perm


def time_program(runs, ds, data, steps: int, batching: str = "vmap") -> dict:
  """One program of ``len(runs)`` runs (``sweep.Program``'s ``batching``):
  compile time and ``steps`` steps."""
  base = runs[0]
  program = sweep_lib.Program(base, ds, len(ds.y_train) // base.batch_size,
                              batching=batching)
  hp = sweep_lib._hyper(runs)  # noqa: SLF001 (the program's per-run values)
  state = program.init_state(runs, hp)
  t0 = time.perf_counter()
  step = program.compile_step(state, len(runs), data)
  compile_s = time.perf_counter() - t0
  perm = jnp.asarray(np.stack([_perm(c, len(ds.y_train), steps, base.batch_size)
                               for c in runs]))
  keys = jnp.stack([jax.random.key(c.seed + 1) for c in runs])
  loss_sum = jnp.zeros((len(runs),), jnp.float32)
  t0 = time.perf_counter()
  for i in range(steps):
    state, loss_sum = step(hp, state, loss_sum, *data, perm, np.int32(i), keys)
  jax.block_until_ready((state, loss_sum))
  steps_s = time.perf_counter() - t0
  return {"runs": len(runs), "compile_s": compile_s, "steps_s": steps_s,
          "step_ms": 1e3 * steps_s / steps,
          "final_train_loss": (np.asarray(loss_sum) / steps).tolist()}


def time_separate(cfg, ds, data, steps: int) -> dict:
  """One run alone, as rmda-train trains it: its own compiled step, ``steps`` steps."""
  trainer = train_lib.Trainer(cfg, ds, len(ds.y_train) // cfg.batch_size)
  state = trainer.init_state()
  perm = jnp.asarray(_perm(cfg, len(ds.y_train), steps, cfg.batch_size))
  key = jax.random.key(cfg.seed + 1)
  loss_sum = jnp.zeros((), jnp.float32)
  t0 = time.perf_counter()
  step = trainer.train_step.lower(state, loss_sum, *data, perm, np.int32(0), key).compile()
  compile_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  for i in range(steps):
    state, loss_sum = step(state, loss_sum, *data, perm, np.int32(i), key)
  jax.block_until_ready((state, loss_sum))
  steps_s = time.perf_counter() - t0
  return {"seed": cfg.seed, "lr": cfg.learning_rate, "strength": cfg.strength,
          "compile_s": compile_s, "steps_s": steps_s, "step_ms": 1e3 * steps_s / steps,
          "final_train_loss": float(loss_sum) / steps}


def runs_per_hour(k: int, compile_s: float, step_s: float, steps: int) -> float:
  """``k`` runs finished in ``compile_s + steps * step_s`` seconds, per hour."""
  return 3600.0 * k / (compile_s + steps * step_s)


def measure(ks, steps: int, full_epochs: int, dataset: str, log=print,
            batching: str = "vmap") -> dict:
  """The comparison for every K of ``ks`` (see the module docstring)."""
  cfgs = run_configs(max(ks), dataset)
  ds = train_lib.prepare_data(cfgs[0])
  full_steps = full_epochs * (len(ds.y_train) // cfgs[0].batch_size)
  data = (jax.device_put(ds.x_train), jax.device_put(ds.y_train))
  programs, separate = [], []
  for k in sorted(set(ks) | {1}):
    programs.append(time_program(cfgs[:k], ds, data, steps, batching))
    p = programs[-1]
    log(f"  one program, K={k:2d}: compile {p['compile_s']:.1f}s, {p['step_ms']:.0f} ms/step")
    while len(separate) < k:
      separate.append(time_separate(cfgs[len(separate)], ds, data, steps))
      s = separate[-1]
      log(f"  separate run {len(separate):2d}: compile {s['compile_s']:.1f}s, "
          f"{s['step_ms']:.0f} ms/step")
  rows = []
  for p in programs:
    k = p["runs"]
    sep = separate[:k]
    sep_compile = sum(s["compile_s"] for s in sep)
    sep_steps = sum(s["steps_s"] for s in sep)
    one = {"compile_s": p["compile_s"], "steps_s": p["steps_s"], "step_ms": p["step_ms"],
           "runs_per_hour": runs_per_hour(k, p["compile_s"], p["steps_s"] / steps, steps),
           "runs_per_hour_full": runs_per_hour(k, p["compile_s"], p["steps_s"] / steps,
                                               full_steps)}
    # K separate runs: total compile + total step time of the first K runs.
    alone = {"compile_s": sep_compile, "steps_s": sep_steps,
             "step_ms_mean": 1e3 * sep_steps / (k * steps),
             "runs_per_hour": 3600.0 * k / (sep_compile + sep_steps),
             "runs_per_hour_full": 3600.0 * k / (sep_compile + sep_steps / steps * full_steps)}
    # The K=1 program reused for the K runs one after another (its hyperparameters
    # are inputs: one compilation), derived from the K=1 measurement.
    p1 = programs[0]
    serial = {"compile_s": p1["compile_s"], "steps_s": k * p1["steps_s"],
              "runs_per_hour": 3600.0 * k / (p1["compile_s"] + k * p1["steps_s"]),
              "runs_per_hour_full": 3600.0 * k / (p1["compile_s"]
                                                  + k * p1["steps_s"] / steps * full_steps)}
    rows.append({"K": k, "one_program": one, "separate": alone, "k1_program_serial": serial,
                 "ratio": one["runs_per_hour"] / alone["runs_per_hour"],
                 "ratio_full": one["runs_per_hour_full"] / alone["runs_per_hour_full"],
                 "step_ratio": alone["steps_s"] / p["steps_s"]})
  return {"rows": rows, "programs": programs, "separate_runs": separate,
          "data": f"{dataset}: {len(ds.y_train)} training images on the device",
          "full_steps": full_steps}


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--ks", type=int, nargs="+", default=KS)
  p.add_argument("--steps", type=int, default=40, help="steps per run (not whole epochs)")
  p.add_argument("--full-epochs", type=int, default=20,
                 help="the run length the extrapolated runs per hour assume")
  p.add_argument("--batching", choices=("vmap", "unroll"), default="vmap",
                 help="how the one program holds its runs (sweep.Program)")
  p.add_argument("--quick", action="store_true", help="digits, K 1 and 2, 3 steps")
  p.add_argument("--out", type=Path, default=common.RESULTS)
  args = p.parse_args(argv)
  if min(args.ks) < 1 or args.steps < 1:
    p.error("argument --ks/--steps: must be >= 1")
  dataset = "mnist"
  if args.quick:
    dataset, args.ks, args.steps = "digits", (1, 2), 3
  common.cpu_speed_flags()
  machine = common.machine_info()
  machine["load_average_start"] = common.load_average()
  machine["nice"] = os.nice(0)
  t0 = time.perf_counter()
  res = measure(args.ks, args.steps, args.full_epochs, dataset, batching=args.batching)
  full_steps = res.pop("full_steps")
  d = jax.devices()[0]
  out = {"benchmark": "bench_sweep", "machine": machine,
         "device": (f"{common.cpu_model()} (cpu)" if d.platform == "cpu"
                    else f"{d.device_kind} ({d.platform})"),
         "load_average_end": common.load_average(), "wall_s": time.perf_counter() - t0,
         "settings": {"model": "lenet5_small", "optimizer": "rmda (c 0.1, no milestones)",
                      "regularizer": "group_lasso (input units)", "batch_size": 128,
                      "steps_per_run": args.steps, "batching": args.batching,
                      "note": f"every run takes {args.steps} steps (not whole epochs); "
                              "runs_per_hour counts compile + those steps per run; "
                              f"runs_per_hour_full extrapolates to {args.full_epochs} "
                              f"epochs ({full_steps} steps) at the measured step time; "
                              "separate runs are rmda-train's single-run step, each "
                              "compiled; the 16 separate runs were measured once, "
                              "interleaved with the programs, K separate = the first K",
                      "data": res.pop("data"), "full_epochs": args.full_epochs,
                      "full_steps": full_steps},
         **res}
  # The CPU's files keep their names; an accelerator's carry its platform (gpu, tpu).
  name = ("sweep_throughput" + ("" if d.platform == "cpu" else f"_{d.platform}")
          + ("" if args.batching == "vmap" else f"_{args.batching}"))
  name += "_quick.json" if args.quick else ".json"
  common.write_json(args.out / name, out)
  print(f"{'K':>3} {'compile 1 prog':>14} {'compile K sep':>13} {'ms/step 1 prog':>14} "
        f"{'ms/step sep':>11} {'runs/h 1 prog':>13} {'runs/h sep':>10} {'ratio':>6} "
        f"{'ratio full':>10} {'runs/h K=1 serial':>17}")
  for r in out["rows"]:
    o, s = r["one_program"], r["separate"]
    print(f"{r['K']:3d} {o['compile_s']:13.1f}s {s['compile_s']:12.1f}s {o['step_ms']:14.0f} "
          f"{s['step_ms_mean']:11.0f} {o['runs_per_hour']:13.0f} {s['runs_per_hour']:10.0f} "
          f"{r['ratio']:6.2f} {r['ratio_full']:10.2f} "
          f"{r['k1_program_serial']['runs_per_hour']:17.0f}")
  print(f"wrote {args.out / name} ({out['device']}; load {machine['load_average_start']} -> "
        f"{out['load_average_end']})")
  return 0


if __name__ == "__main__":
  sys.exit(main())
