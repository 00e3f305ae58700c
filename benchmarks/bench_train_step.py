"""Side-by-side training throughput: LeNet5 (small) on MNIST-shaped data, batch 128.

Measures, in one process and interleaved in chunks of 50 steps with the
order rotating (so that machine load hits all of them alike):

  * jax+rmda   the exact step ``rmda-train`` runs (Trainer.train_step: gather
               from device-resident data, forward, backward, rmda_multistep
               with group LASSO, donated buffers), one jit call per step;
  * jax+sgd    the same step with ``optax.sgd(lr, momentum=0.9)``;
  * torch+sgd  (and torch+sgd/1t, one intra-op thread) the same model in PyTorch with ``torch.optim.SGD(momentum=0.9)``,
               batches indexed from in-memory tensors (no DataLoader overhead).

PyTorch runs with ``torch.set_flush_denormal(True)`` (set right after the
import, before PyTorch starts its worker threads, which inherit it; recorded
as ``torch_flush_denormal`` in the results): XLA flushes denormal floats on
CPU, and a PyTorch loop that does not can be slowed by them
(``bench_torch_denormal`` measures that for the authors' RMDA); flushed on
both sides, the comparison is like for like. Results files without that key
were measured before it was set, with denormals not flushed.

Each round runs one epoch-worth of steps (60000 // 128 = 468) per variant,
waiting for the device after every chunk (as rmda-train's progress bar does).
Prints samples/s (median over rounds) and the ratios, and writes
benchmarks/results/train_step.json.

Like ``rmda-train``, it keeps XLA:CPU's YNNPACK library fusions for reductions
only (``rmda_jax.examples.xla_flags``); ``--ynn all`` keeps jaxlib's default,
``--ynn none`` turns them all off (the flag is process-wide, so each setting is
a run of its own):

Run from the repository root (PyTorch must be installed):

    python -m benchmarks.bench_train_step [--rounds 7] [--steps 468]
    python -m benchmarks.bench_train_step --ynn all --out benchmarks/results/train_step_ynn.json
    python -m benchmarks.bench_train_step --ynn none --out benchmarks/results/train_step_ynn_none.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from rmda_jax.examples import config, train, xla_flags

N_TRAIN, BATCH = 60000, 128


def synthetic_mnist():
  return common.synthetic_data(N_TRAIN, 1000)


class JaxVariant:

  def __init__(self, optimizer: str):
    argv = ["--optimizer", optimizer, "--batch-size", str(BATCH)]
    if optimizer == "sgd":
      argv += ["--regularizer", "none"]
    cfg = config.parse_args(argv)
    ds = synthetic_mnist()
    self.trainer = train.Trainer(cfg, ds, N_TRAIN // BATCH)
    self.state = self.trainer.init_state()
    self.x = jax.device_put(ds.x_train)
    self.y = jax.device_put(ds.y_train)
    self.key = jax.random.key(0)
    self.epoch = -1
    self.new_epoch()
    self.run(0, 3)  # compile

  def new_epoch(self):
    self.epoch += 1
    self.perm = jnp.asarray(train.epoch_permutation(np.array([0, 0], np.uint32), self.epoch,
                                                    N_TRAIN, BATCH))
    self.loss = jnp.zeros((), jnp.float32)

  def run(self, start, steps):
    """Steps start..start+steps-1 of the epoch, then waits for the device."""
    t = time.perf_counter()
    for i in range(start, start + steps):
      self.state, self.loss = self.trainer.train_step(
          self.state, self.loss, self.x, self.y, self.perm, np.int32(i), self.key)
    float(self.loss)  # wait for the device (rmda-train's progress bar does so every 50)
    return time.perf_counter() - t


class TorchVariant:

  def __init__(self, threads: int | None = None):
    import torch
    import torch.nn.functional as F
    self.threads = threads or torch.get_num_threads()
    self.torch, self.F = torch, F
    torch.manual_seed(0)

    ds = synthetic_mnist()
    self.model = common.torch_model(torch, "lenet5_small", 10)
    self.opt = torch.optim.SGD(self.model.parameters(), lr=0.1, momentum=0.9)
    self.x = torch.from_numpy(ds.x_train).permute(0, 3, 1, 2).contiguous()
    self.y = torch.from_numpy(ds.y_train).long()
    self.epoch = -1
    self.new_epoch()
    self.run(0, 3)

  def new_epoch(self):
    g = self.torch.Generator().manual_seed(self.epoch + 1)
    self.epoch += 1
    self.perm = self.torch.randperm(N_TRAIN, generator=g)

  def run(self, start, steps):
    torch, F = self.torch, self.F
    torch.set_num_threads(self.threads)
    t = time.perf_counter()
    for i in range(start, start + steps):
      idx = self.perm[i * BATCH:(i + 1) * BATCH]
      x, y = self.x[idx], self.y[idx]
      self.opt.zero_grad(set_to_none=True)
      loss = F.cross_entropy(self.model(x), y)
      loss.backward()
      self.opt.step()
    float(loss)
    return time.perf_counter() - t


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--rounds", type=int, default=3)
  p.add_argument("--steps", type=int, default=N_TRAIN // BATCH)
  p.add_argument("--chunk", type=int, default=50,
                 help="steps per variant between switches (and device waits)")
  p.add_argument("--out", default=str(common.RESULTS / "train_step.json"))
  p.add_argument("--ynn", choices=("reduce", "all", "none"), default="reduce",
                 help="XLA:CPU's YNNPACK fusions: for reductions only (rmda-train's setting), "
                      "all (jaxlib's default) or none")
  args = p.parse_args(argv)
  torch = common.optional_torch()
  if torch is None:
    raise SystemExit("bench_train_step: error: PyTorch is not installed (pip install torch); "
                     "this benchmark compares rmda-train's step with a PyTorch loop")
  # Flushed as XLA:CPU does. A per-thread CPU flag: set before PyTorch's first
  # parallel op, so that its worker threads (created then) inherit it. False
  # where the CPU lacks it.
  flushed = torch.set_flush_denormal(True)

  if args.ynn == "all":
    ynn = "all: jaxlib's default (--ynn all)"
  else:
    ynn = xla_flags.limit_ynn_fusions(fusion_types="reduce" if args.ynn == "reduce" else "")
  print(f"XLA:CPU YNNPACK fusions: {ynn}; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
  machine = common.machine_info()  # starts JAX's backend: after the flag

  variants = {
      "jax+rmda": JaxVariant("rmda"),
      "jax+sgd": JaxVariant("sgd"),
      "torch+sgd": TorchVariant(),
      # One thread: immune to OpenMP spin-wait collapse when the machine is busy.
      "torch+sgd/1t": TorchVariant(threads=1),
  }
  times = {k: [] for k in variants}
  names = list(variants)
  load_before = common.load_average()
  for r in range(args.rounds):
    for name in names:
      variants[name].new_epoch()
      times[name].append(0.0)
    # Interleave in chunks, rotating the order, so that the machine's load
    # (a shared 2-core VM) falls on every variant alike within each round.
    for c, start in enumerate(range(0, args.steps, args.chunk)):
      n = min(args.chunk, args.steps - start)
      for name in names[c % len(names):] + names[:c % len(names)]:
        times[name][-1] += variants[name].run(start, n)
    print(f"round {r + 1}: " + "  ".join(
        f"{k} {args.steps * BATCH / t[-1]:.0f}/s" for k, t in times.items()), flush=True)
  load_after = common.load_average()

  sps = {k: args.steps * BATCH / statistics.median(t) for k, t in times.items()}
  epoch_s = {k: N_TRAIN // BATCH * BATCH / s for k, s in sps.items()}
  ratios = {
      "torch+sgd / jax+rmda (epoch-time ratio, JAX slower if > 1)": sps["torch+sgd"] / sps["jax+rmda"],
      "torch+sgd / jax+sgd": sps["torch+sgd"] / sps["jax+sgd"],
      "torch+sgd/1t / jax+rmda": sps["torch+sgd/1t"] / sps["jax+rmda"],
      "jax+sgd / jax+rmda": sps["jax+sgd"] / sps["jax+rmda"],
  }
  # The same ratios paired within each round (both variants under the same load).
  paired = {
      "torch+sgd / jax+rmda": [a / b for a, b in zip(times["jax+rmda"], times["torch+sgd"])],
      "torch+sgd/1t / jax+rmda": [a / b for a, b in zip(times["jax+rmda"], times["torch+sgd/1t"])],
      "jax+sgd / jax+rmda": [a / b for a, b in zip(times["jax+rmda"], times["jax+sgd"])],
  }
  paired_median = {k: statistics.median(v) for k, v in paired.items()}
  print()
  print(f"{'variant':<13} {'samples/s':>10} {'epoch (s)':>10}")
  for k in variants:
    print(f"{k:<13} {sps[k]:>10.0f} {epoch_s[k]:>10.2f}")
  for k, v in ratios.items():
    print(f"{k}: {v:.2f}")
  for k, v in paired.items():
    print(f"{k}, per round: {' '.join(f'{x:.2f}' for x in v)} (median {paired_median[k]:.2f})")
  print(f"load average before/after: {load_before[0]:.2f} / {load_after[0]:.2f} "
        f"on {os.cpu_count()} CPUs")

  result = {
      "model": "lenet5_small", "batch_size": BATCH, "steps_per_round": args.steps,
      "rounds": args.rounds, "chunk": args.chunk, "samples_per_s_median": sps, "epoch_s_median": epoch_s,
      "round_times_s": times, "ratios": ratios,
      "ratios_per_round": paired, "ratios_per_round_median": paired_median,
      "load_average_start": load_before, "load_average_end": load_after,
      "machine": {"cpus": machine["cpu_count"], "platform": machine["platform"],
                  "python": machine["python"]},
      "versions": {"jax": jax.__version__, "torch": torch.__version__},
      "torch_threads": variants["torch+sgd"].threads,
      "torch_flush_denormal": flushed,
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "ynn_fusions": ynn,
  }
  common.write_json(args.out, result, indent=2)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
