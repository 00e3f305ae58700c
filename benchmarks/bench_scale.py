"""Section 5: scaling out on a mesh: communication per step and step time, RMDA against SGD.

For 1, 2, 4 and 8 devices (one child process per count, its virtual CPU
devices set in XLA_FLAGS before JAX starts), ``rmda-train``'s own training
step (``Trainer`` with a ``sharding.Layout``: ``make_train_step`` jitted with
the mesh's shardings) of LeNet5 (small), batch 128, MNIST-shaped data, for

  * ``rmda``: rmda-train's default (``rmda_multistep``, group LASSO 5e-4 on input groups);
  * ``sgd``: ``optax.sgd(0.1, momentum=0.9)``, no regularizer (``--optimizer sgd
    --regularizer none``);

under two layouts: ``dp`` (``--mesh data=N``: parameters replicated, batch
split) and ``fsdp`` (``--mesh data=1,fsdp=N``: parameters and optimizer state
split too). For each it records

  * the bytes the compiled step communicates: the result sizes of the
    collectives (all-reduce, all-gather, reduce-scatter, ...) in
    ``jit(step).lower(...).compile().as_text()``, per device and step
    (``sharding.collectives``); read from the HLO, not assumed;
  * the step time: all variants interleaved in chunks of steps, the order
    rotating, median over rounds.

It also compiles the optimizer update alone (``tx.update`` +
``apply_updates``) for the ResNet50-shaped pytree (23.5M parameters, no
data: lowered from ShapeDtypeStructs) under FSDP over N devices, to show what
RMDA's group norms add to the communication when kernels are split
(``sgd`` communicates nothing there).

On this project's machine the devices are virtual: N "devices" share the
same 2 CPU cores, so step times cannot fall with N; they show the overhead
of the partitioned program, not a speed-up. The byte counts are what a real
N-device run would move.

Usage, from the repository root:
  python -m benchmarks.bench_scale --quick --out /tmp/scale   # < 2 minutes
  python -m benchmarks.bench_scale                           # results/scale.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import common
from rmda_jax.examples import config, sharding, train

BATCH = 128
OPTIMIZERS = {
    "rmda": ["--optimizer", "rmda"],
    "sgd": ["--optimizer", "sgd", "--regularizer", "none"],
}
UPDATE_MODEL = "resnet50"


def layouts(n: int) -> dict:
  """The meshes measured on ``n`` devices (None: rmda-train's single-device path)."""
  out = {"dp": sharding.MeshSpec(n, 1)}
  if n == 1:
    out["single"] = None
  else:
    out["fsdp"] = sharding.MeshSpec(1, n)
  return out


class Variant:
  """One (layout, optimizer): rmda-train's Trainer on a mesh, its state and one epoch."""

  def __init__(self, spec: sharding.MeshSpec | None, optimizer: str, steps: int):
    cfg = config.parse_args(OPTIMIZERS[optimizer] + ["--batch-size", str(BATCH)])
    ds = common.synthetic_data(steps * BATCH, BATCH)
    self.layout = None if spec is None else sharding.Layout(sharding.make_mesh(spec))
    self.trainer = train.Trainer(cfg, ds, steps, self.layout)
    self.state = self.trainer.init_state()
    x, y, _, _ = self.trainer.place_data(ds)
    self.inputs = self.trainer.epoch_inputs(x, y, train.epoch_permutation(
        np.zeros(2, np.uint32), 0, steps * BATCH, BATCH))
    self.key = jax.random.key(0)
    self.loss = jnp.zeros((), jnp.float32)
    t0 = time.perf_counter()
    self.run(0, 2)  # compiles
    self.compile_s = time.perf_counter() - t0
    step = getattr(self.trainer.train_step, "jitted", self.trainer.train_step)
    hlo = step.lower(self.state, self.loss, *self.inputs, np.int32(0),
                     self.key).compile().as_text()  # found in JAX's cache
    self.collectives = sharding.collectives(hlo)

  def run(self, start: int, steps: int) -> float:
    t = time.perf_counter()
    for i in range(start, start + steps):
      self.state, self.loss = self.trainer.train_step(self.state, self.loss, *self.inputs,
                                                      np.int32(i), self.key)
    jax.block_until_ready(self.loss)
    return time.perf_counter() - t


def _bytes_by_op(colls) -> dict:
  by_op = {}
  for op, b in colls:
    by_op[op] = by_op.get(op, 0) + b
  return by_op


def update_bytes(n: int) -> dict:
  """Collective bytes of the optimizer update alone, ResNet50-shaped pytree, FSDP over n."""
  shapes = common.param_shapes(UPDATE_MODEL)
  layout = sharding.Layout(sharding.make_mesh(sharding.MeshSpec(1, n)))
  params = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                        shapes, layout.shardings(shapes))
  cfg = config.parse_args([])  # rmda-train's default rmda
  txs = {"rmda": train.build_optimizer(cfg, train.build_regularizers(cfg)[0], 100),
         "sgd": optax.sgd(0.1, momentum=0.9)}
  out = {}
  for name, tx in txs.items():
    state = jax.eval_shape(tx.init, params)
    state = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                         state, layout.shardings(state))

    def step(p, s, g):
      u, s = tx.update(g, s, p)
      return optax.apply_updates(p, u), s

    t0 = time.perf_counter()
    hlo = jax.jit(step, donate_argnums=(0, 1)).lower(params, state, params).compile().as_text()
    colls = sharding.collectives(hlo)
    out[name] = {"bytes_per_step": sum(b for _, b in colls), "by_op": _bytes_by_op(colls),
                 "collectives": len(colls), "compile_s": time.perf_counter() - t0}
  out["num_params"] = common.num_params(shapes)
  out["param_bytes"] = 4 * out["num_params"]
  return out


def child(n: int, args) -> dict:
  """Everything measured on ``n`` devices (this process has exactly ``n``)."""
  assert jax.device_count() == n, (jax.device_count(), n)
  variants = {}
  for lname, spec in layouts(n).items():
    for opt in OPTIMIZERS:
      name = f"{lname}/{opt}"
      variants[name] = Variant(spec, opt, args.steps)
      print(f"  [{n} devices] compiled {name} in {variants[name].compile_s:.1f}s", flush=True,
            file=sys.stderr)
  names = list(variants)
  times = {k: [] for k in names}
  for _ in range(args.rounds):
    for k in names:
      times[k].append(0.0)
    # Interleaved in chunks, the order rotating: the machine's load falls on all alike.
    for c, start in enumerate(range(2, args.steps, args.chunk)):
      m = min(args.chunk, args.steps - start)
      for k in names[c % len(names):] + names[:c % len(names)]:
        times[k][-1] += variants[k].run(start, m)
  out = {"devices": [str(d) for d in jax.devices()], "train_step": {}}
  for k, v in variants.items():
    per_round = [1e3 * t / (args.steps - 2) for t in times[k]]
    out["train_step"][k] = {
        "mesh": None if v.layout is None else v.layout.describe(),
        "bytes_per_step": sum(b for _, b in v.collectives),
        "by_op": _bytes_by_op(v.collectives),
        "collectives": len(v.collectives),
        "step_ms_median": statistics.median(per_round),
        "step_ms_rounds": per_round,
        "compile_s": v.compile_s,
    }
  n_params = sum(int(np.size(p)) for p in jax.tree.leaves(variants[names[0]].state.params))
  out["num_params"] = n_params
  if n > 1 and not args.quick:
    out["update_fsdp"] = update_bytes(n)
  return out


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--quick", action="store_true", help="1 and 2 devices, few steps (< 2 min)")
  p.add_argument("--out", default=str(common.RESULTS), help="output folder")
  p.add_argument("--devices", type=int, nargs="+", default=None,
                 help="device counts (default 1 2 4 8; quick: 1 2)")
  p.add_argument("--steps", type=int, default=None, help="steps per round and variant")
  p.add_argument("--chunk", type=int, default=10, help="steps per variant between switches")
  p.add_argument("--rounds", type=int, default=None)
  p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  args.steps = args.steps or (12 if args.quick else 62)
  args.rounds = args.rounds or (1 if args.quick else 5)
  if args.child is not None:
    common.cpu_speed_flags()  # rmda-train's XLA:CPU setting, before JAX starts
    print(json.dumps(child(args.child, args)))
    return None

  devices = args.devices or ([1, 2] if args.quick else [1, 2, 4, 8])
  t0 = time.time()
  load_before = common.load_average()
  runs = {}
  for n in devices:
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") +
                          f" --xla_force_host_platform_device_count={n}").strip())
    cmd = [sys.executable, "-m", "benchmarks.bench_scale", "--child", str(n),
           "--steps", str(args.steps), "--chunk", str(args.chunk), "--rounds", str(args.rounds)]
    if args.quick:
      cmd.append("--quick")
    print(f"{n} device(s) ...", flush=True)
    proc = subprocess.run(cmd, cwd=common.ROOT, env=env, capture_output=True, text=True,
                          timeout=1800)
    if proc.returncode != 0:
      raise SystemExit(f"bench_scale: the {n}-device child failed:\n{proc.stderr[-3000:]}")
    runs[str(n)] = json.loads(proc.stdout.strip().splitlines()[-1])
    for k, r in runs[str(n)]["train_step"].items():
      print(f"  {k:<10s} {r['bytes_per_step']:>10d} B/step  {r['step_ms_median']:7.2f} ms/step")
    if "update_fsdp" in runs[str(n)]:
      u = runs[str(n)]["update_fsdp"]
      print(f"  update only, {UPDATE_MODEL} pytree, fsdp: rmda {u['rmda']['bytes_per_step']} B, "
            f"sgd {u['sgd']['bytes_per_step']} B")
  machine = common.machine_info()
  machine["load_average_start"] = load_before
  result = {
      "quick": args.quick,
      "settings": {"model": "lenet5_small", "batch": BATCH, "data": "MNIST-shaped, random",
                   "steps_per_round": args.steps - 2, "chunk": args.chunk,
                   "rounds": args.rounds, "update_model": UPDATE_MODEL,
                   "devices": "virtual CPU devices (--xla_force_host_platform_device_count), "
                              "one child process per count"},
      "optimizers": {"rmda": "rmda-train default: rmda_multistep, group LASSO 5e-4 (input)",
                     "sgd": "optax.sgd(0.1, momentum=0.9), no regularizer"},
      "layouts": {"dp": "--mesh data=N", "fsdp": "--mesh data=1,fsdp=N",
                  "single": "rmda-train's single-device path (no mesh), 1 device"},
      "bytes": "sum of the result sizes of the compiled step's collectives, per device per "
               "step (sharding.collectives)",
      "runs": runs,
      "machine": machine,
      "load_average_end": common.load_average(),
      "wall_seconds": time.time() - t0,
  }
  path = os.path.join(args.out, "scale.json")
  common.write_json(path, result, indent=1)
  print(f"wrote {path}")
  return result


if __name__ == "__main__":
  main()
