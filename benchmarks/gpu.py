"""Section 6: one accelerator: the RMDA update against the memory bandwidth, and a training
epoch against PyTorch on the same device.

In one run, on JAX's default device (a GPU or TPU; ``--quick`` also runs on
CPU, to check the script):

  1. the device's memory bandwidth, measured: a large copy (2 arrays moved)
     and an axpy ``x * a + y`` (3 arrays), jitted and donated, median of
     repeats; the larger of the two is the reference;
  2. the optimizer step (jitted ``update + apply_updates``, params and
     state donated) on the ResNet50-shaped pytree (23.5M parameters, CIFAR
     layout) for optax.sgd(momentum=0.9), RMDA without regularizer and RMDA
     with group LASSO, interleaved (``common.time_steps``); for each, the
     fraction of the bandwidth it reaches: ``passes * 4 * n_params / time /
     bandwidth`` with ``passes`` the least number of parameter-sized float32
     arrays the step must read or write (``bench_cost.MIN_PASSES``);
  3. a training epoch of LeNet5 (small) on MNIST-shaped data (60000 images,
     batch 128) and of VGG19-BN on CIFAR-shaped data (50000, batch 128):
     ``rmda-train``'s step (``train.Trainer``: rmda_multistep with group
     LASSO, and optax.sgd with momentum 0.9), against a PyTorch loop with
     the same model and ``torch.optim.SGD(momentum=0.9)`` on the same device,
     if PyTorch is installed (and sees the device). Both sides index batches
     from data already on the device, no augmentation (random data: the
     cost does not depend on the pixels). PyTorch runs with
     ``torch.set_flush_denormal(True)``, as XLA:CPU flushes denormals
     (recorded as ``epochs.torch_flush_denormal``; a CPU flag, so it matters
     for the CPU smoke run only and changes nothing on a GPU).

Writes ``gpu.json`` into ``--out`` (default ``benchmarks/results/``; give
the smoke run another folder). Nothing here is specific to a GPU maker, and
nothing CPU-specific is set (rmda-train's XLA:CPU flags and CPU convolution
paths apply on CPU only).

Usage, from the repository root:
  python -m benchmarks.gpu                         # on a machine with a GPU
  python -m benchmarks.gpu --quick --out /tmp/gpu  # smoke run, any device (< 2 min on CPU)
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
from benchmarks.bench_cost import MIN_PASSES
from rmda_jax.examples import config, train

UPDATE_OPTIMIZERS = ("optax.sgd(momentum=0.9)", "rmda (none)", "rmda (group_lasso)")
EPOCHS = {  # name: (rmda-train model, input shape, training images, classes)
    "lenet5": ("lenet5_small", (28, 28, 1), 60000, 10),
    "vgg19": ("vgg19_bn", (32, 32, 3), 50000, 10),
}
BATCH = 128


# ------------------------------------------------------------- bandwidth
def _median_time(f, x, y, repeats):
  out = f(x, y)
  jax.block_until_ready(out)
  ts = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    out = f(out, y)  # donated: the output's buffer is the next input's
    jax.block_until_ready(out)
    ts.append(time.perf_counter() - t0)
  return statistics.median(ts)


def bandwidth(nbytes: int, repeats: int) -> dict:
  """Copy and axpy bandwidths (bytes/s) over float32 arrays of ``nbytes`` each."""
  n = nbytes // 4
  x = jnp.ones((n,), jnp.float32)
  y = jnp.ones((n,), jnp.float32)
  copy = jax.jit(lambda x, y: x + 0.0 * y[0], donate_argnums=(0,))  # reads x, writes out
  axpy = jax.jit(lambda x, y: x * 1.0001 + y, donate_argnums=(0,))
  copy_bps = 2 * nbytes / _median_time(copy, x, y, repeats)
  x = jnp.ones((n,), jnp.float32)
  axpy_bps = 3 * nbytes / _median_time(axpy, x, y, repeats)
  return {"array_bytes": nbytes, "copy_GBps": copy_bps / 1e9, "axpy_GBps": axpy_bps / 1e9,
          "reference_GBps": max(copy_bps, axpy_bps) / 1e9}


# --------------------------------------------------------- optimizer step
def update_fraction(bw_GBps: float, repeats: int, model: str) -> dict:
  """The optimizer steps on a model-shaped pytree, as fractions of the bandwidth."""
  shapes, params, grads = common.timed_model(model)
  n = common.num_params(shapes)
  opts = {k: v for k, v in common.step_optimizers().items() if k in UPDATE_OPTIMIZERS}
  res = common.time_steps(opts, params, grads, repeats=repeats, warmup=2)
  ref = res["optax.sgd(momentum=0.9)"]["median_ms"]
  for name, r in res.items():
    r["min_passes"] = MIN_PASSES[name]
    r["bytes_moved_at_least"] = MIN_PASSES[name] * 4 * n
    r["achieved_GBps"] = r["bytes_moved_at_least"] / (r["median_ms"] / 1e3) / 1e9
    r["fraction_of_bandwidth"] = r["achieved_GBps"] / bw_GBps
    r["ratio_to_sgd"] = r["median_ms"] / ref
  return {"model": model, "num_params": n, "results": res}


# ------------------------------------------------------------ jax epoch
def jax_epoch(model: str, shape, n: int, classes: int, optimizer: str, steps: int) -> dict:
  """Seconds of ``steps`` steps of rmda-train's step (compiled first), scaled to the epoch."""
  argv = ["--model", model, "--optimizer", optimizer, "--batch-size", str(BATCH)]
  if optimizer == "sgd":
    argv += ["--regularizer", "none"]
  cfg = config.parse_args(argv)
  ds = common.synthetic_data(n, BATCH, shape, classes)
  trainer = train.Trainer(cfg, ds, n // BATCH)
  state = trainer.init_state()
  x, y, _, _ = trainer.place_data(ds)
  x, y, perm = trainer.epoch_inputs(x, y, train.epoch_permutation(
      np.zeros(2, np.uint32), 0, n, BATCH))
  key = jax.random.key(0)
  loss = jnp.zeros((), jnp.float32)
  t0 = time.perf_counter()
  state, loss = trainer.train_step(state, loss, x, y, perm, np.int32(0), key)
  jax.block_until_ready(loss)
  compile_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  for i in range(1, steps + 1):
    state, loss = trainer.train_step(state, loss, x, y, perm, np.int32(i % (n // BATCH)), key)
  jax.block_until_ready(loss)
  wall = time.perf_counter() - t0
  return {"steps": steps, "step_ms": 1e3 * wall / steps,
          "epoch_s": wall / steps * (n // BATCH), "compile_s": compile_s}


# ---------------------------------------------------------- torch epoch
def torch_epoch(torch, model: str, shape, n: int, classes: int, steps: int,
                device: str) -> dict:
  """Seconds of ``steps`` steps of a plain PyTorch loop, scaled to the epoch."""
  torch.manual_seed(0)
  torch.backends.cudnn.benchmark = True
  net = common.torch_model(torch, model, classes).to(device)
  opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
  rng = np.random.default_rng(0)
  x = torch.from_numpy(rng.random((n, *shape), dtype=np.float32)).permute(0, 3, 1, 2)
  x = x.contiguous().to(device)
  y = torch.from_numpy(rng.integers(0, classes, n)).long().to(device)
  perm = torch.randperm(n, device=device)
  f = torch.nn.functional

  def step(i):
    idx = perm[i * BATCH:(i + 1) * BATCH]
    opt.zero_grad(set_to_none=True)
    loss = f.cross_entropy(net(x[idx]), y[idx])
    loss.backward()
    opt.step()
    return loss

  sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
  for i in range(3):  # warm up (cudnn autotuning)
    step(i)
  sync()
  t0 = time.perf_counter()
  for i in range(steps):
    loss = step(i % (n // BATCH))
  loss.item()  # waits for the device
  sync()
  wall = time.perf_counter() - t0
  return {"steps": steps, "step_ms": 1e3 * wall / steps, "epoch_s": wall / steps * (n // BATCH),
          "device": device, "torch": torch.__version__,
          "device_name": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"}


def epochs(models, steps_of, quick: bool) -> dict:
  torch = common.optional_torch()
  platform = jax.default_backend()
  torch_device, torch_note = None, None
  if torch is None:
    torch_note = "PyTorch not installed: no comparison"
  elif platform == "gpu" and torch.cuda.is_available():
    torch_device = "cuda"
  elif platform == "cpu":
    torch_device = "cpu"  # the smoke run compares on CPU
  else:
    torch_note = f"PyTorch cannot use JAX's device ({platform}): no comparison"
  out = {"torch_note": torch_note}
  if torch is not None:
    # A per-thread CPU flag: set before PyTorch's first parallel op, so that its
    # worker threads (created then) inherit it. False where the CPU lacks it.
    out["torch_flush_denormal"] = torch.set_flush_denormal(True)
  for name in models:
    model, shape, n, classes = EPOCHS[name]
    if quick:
      n = min(n, 20 * BATCH)
    steps = steps_of(name)
    row = {"model": model, "input_shape": list(shape), "train_images": n, "batch": BATCH}
    for opt in ("rmda", "sgd"):
      row[f"jax+{opt}"] = jax_epoch(model, shape, n, classes, opt, steps)
      print(f"  {name} jax+{opt}: {row[f'jax+{opt}']['step_ms']:.2f} ms/step", flush=True)
    if torch_device is not None:
      row["torch+sgd"] = torch_epoch(torch, model, shape, n, classes, steps, torch_device)
      print(f"  {name} torch+sgd: {row['torch+sgd']['step_ms']:.2f} ms/step", flush=True)
      row["torch+sgd / jax+rmda (epoch-time ratio, JAX slower if > 1)"] = (
          row["jax+rmda"]["epoch_s"] / row["torch+sgd"]["epoch_s"])
    out[name] = row
  return out


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--quick", action="store_true",
                 help="smoke run: small arrays, few steps, LeNet5 only (any device)")
  p.add_argument("--out", default=str(common.RESULTS), help="output folder (writes gpu.json)")
  p.add_argument("--models", nargs="+", choices=sorted(EPOCHS), default=None,
                 help="epoch comparisons (default: lenet5 vgg19; quick: lenet5)")
  p.add_argument("--update-model", default="resnet50", choices=sorted(common.SHAPED_MODELS))
  p.add_argument("--repeats", type=int, default=None, help="timed rounds of the update")
  args = p.parse_args(argv)
  t0 = time.time()
  device = jax.devices()[0]
  print(f"device: {device.device_kind} ({jax.default_backend()}), jax {jax.__version__}",
        flush=True)
  if jax.default_backend() == "cpu" and not args.quick:
    print("gpu: warning: JAX's default device is a CPU; the numbers are not an "
          "accelerator's (use --quick for a smoke run)", flush=True)
  repeats = args.repeats or (3 if args.quick else 50)
  bw = bandwidth((64 if args.quick else 1024) * 2**20, repeats=repeats)
  print(f"bandwidth: copy {bw['copy_GBps']:.1f} GB/s, axpy {bw['axpy_GBps']:.1f} GB/s", flush=True)
  update_model = "lenet5" if args.quick and args.update_model == "resnet50" else args.update_model
  upd = update_fraction(bw["reference_GBps"], repeats, update_model)
  for k, r in upd["results"].items():
    print(f"  {k:<24s} {r['median_ms']:8.3f} ms  {r['fraction_of_bandwidth']:.2f} of bandwidth",
          flush=True)
  models = args.models or (["lenet5"] if args.quick else ["lenet5", "vgg19"])
  ep = epochs(models, lambda name: 5 if args.quick else (200 if name == "lenet5" else 100),
              args.quick)
  result = {
      "quick": args.quick,
      "device": {"kind": device.device_kind, "platform": jax.default_backend(),
                 "count": jax.device_count()},
      "bandwidth": bw,
      "update": upd,
      "epochs": ep,
      "machine": common.machine_info(),
      "wall_seconds": time.time() - t0,
  }
  path = os.path.join(args.out, "gpu.json")
  common.write_json(path, result, indent=1)
  print(f"wrote {path}")
  return result


if __name__ == "__main__":
  main()
