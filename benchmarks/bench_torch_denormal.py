"""Denormal floats in the authors' PyTorch RMDA on CPU: epoch time against SGD, flushed or not.

RMDA's last line is ``W = (1 - c) W + c Z``. Once the prox zeroes a group of
``Z``, that group of ``W`` only shrinks by ``1 - c`` per step, so in float32
it passes through the denormal range (|w| < 1.18e-38) and, rounding to
nearest, stays there: ``0.9 * 4 * 2**-149`` rounds back to ``4 * 2**-149``,
so without flush-to-zero the weights of a zeroed group end as a few units of
the smallest denormal, for good, and every later multiply by them may take
the CPU's slow path for denormal operands (on some CPUs many times slower).
``torch.set_flush_denormal(True)`` (FTZ/DAZ on x86) turns them into zeros.
XLA flushes denormals on CPU, so ``rmda_jax`` under JAX never holds them;
this benchmark measures what they cost a PyTorch user of the authors' code.

Four PyTorch variants of one loop, LeNet5 (small: ``benchmarks.common.torch_model``)
on MNIST, batch 128, the same initial weights and the same batches:

  * sgd          ``torch.optim.SGD(lr 0.01, momentum 0.9)``, denormals not flushed;
  * rmda         the authors' RMDA (a transcription of ``RMDA/Optimizer/rmda.py``
                 and ``prox_glasso`` of ``RMDA/ProxFn/prox_fns.py``,
                 github.com/zihsyuan1214/rmda at 7b88105: their arithmetic, in
                 their order), group LASSO on input units (conv weight
                 ``W[:, i]``, linear weight ``W[:, i]``, each weighted by
                 sqrt(group size); biases not regularized), lr 0.3, c 0.1,
                 lambda 5e-4 (``rmda-train``'s defaults for this model), no
                 restart; denormals not flushed;
  * sgd+flush, rmda+flush   the same with ``torch.set_flush_denormal(True)``.

One intra-op thread (``torch.set_num_threads(1)``, fixed): the flush
setting is a per-thread CPU flag (MXCSR) that ``set_flush_denormal`` sets on
the calling thread only (threads created later inherit it; PyTorch's worker
threads, once started, keep theirs), so switching it per variant is exact
only when every kernel, the backward pass included, runs on the calling
thread. It also leaves the other core to a background job. Each variant
sets its flag before each of its chunks.

Each epoch runs every variant interleaved in chunks of 50 steps, the order
rotating from chunk to chunk, so that the machine's load falls on all alike.
After each epoch (not timed): the denormal entries ``(w != 0) & (|w| < tiny)``
of the weights and of RMDA's buffers, the groups whose weights are all
zero or denormal, and the load average. Reported per epoch: each variant's
time over SGD's in the same flush setting, and rmda over rmda+flush.

Writes ``benchmarks/results/torch_denormal.json`` (``--quick``:
``torch_denormal_quick.json``; ``--out``/``--name`` to change). PyTorch is
optional for the package; without it this exits with status 2 and one line.

Run from the repository root:

    python -m benchmarks.bench_torch_denormal [--epochs 5]
    python -m benchmarks.bench_torch_denormal --quick --out /tmp/q   # < 2 min
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import numpy as np

from benchmarks import common
from rmda_jax.examples import data as data_lib

VARIANTS = ("sgd", "rmda", "sgd+flush", "rmda+flush")
AUTHORS_CODE = "github.com/zihsyuan1214/rmda@7b88105 RMDA/Optimizer/rmda.py, RMDA/ProxFn/prox_fns.py"


# ------------------------------------------------ the authors' optimizer
def authors_rmda(torch):
  """The authors' RMDA and group-LASSO prox, as torch classes (torch is optional here)."""

  def prox_glasso(p, lambda_: float, alpha: float):
    """In place: input-unit groups (dim 1 of conv (out, in, kh, kw) and linear (out, in)).

    The authors call ``torch.linalg.norm(p, dim=(0, 2, 3))``, which current
    PyTorch refuses (more than 2 dims); ``vector_norm`` is the same 2-norm."""
    if p.ndim not in (2, 4):
      return  # biases: not regularized
    t = lambda_ * alpha * (p.numel() / p.shape[1]) ** 0.5
    dims = (0, 2, 3) if p.ndim == 4 else (0,)
    shrink = torch.nn.functional.relu(torch.linalg.vector_norm(p, dim=dims, keepdim=True).sub(t))
    p.mul_(shrink.div(shrink.add(t)))

  class RMDA(torch.optim.Optimizer):
    """Per group: beta = sqrt(k + 1), s = lr beta, alpha = (sum of s) / beta; per
    parameter: V += s g, Z = prox_{alpha psi}(W0 - V / beta), W = (1 - c) W + c Z."""

    def __init__(self, params, lr=0.1, momentum=0.01, lambda_=0.0, prox_fn=None):
      super().__init__(params, dict(lr=lr, momentum=momentum, lambda_=lambda_,
                                    prox_fn=prox_fn, iteration=0.0, accum=0.0))

    @torch.no_grad()
    def step(self):
      for group in self.param_groups:
        c, lam, prox = group["momentum"], group["lambda_"], group["prox_fn"]
        beta = (group["iteration"] + 1) ** 0.5
        s = group["lr"] * beta
        accum = group["accum"] + s
        alpha = accum / beta
        for p in group["params"]:
          if p.grad is None:
            continue
          st = self.state[p]
          if "initial_point" not in st:
            st["initial_point"] = p.clone().detach()
          if "gradient_buffer" not in st:
            st["gradient_buffer"] = torch.zeros_like(p.grad)
          v = st["gradient_buffer"]
          v.add_(p.grad, alpha=s)
          z = st["initial_point"].sub(v, alpha=1 / beta)
          if lam != 0 and prox is not None:
            prox(p=z, lambda_=lam, alpha=alpha)
          if c != 1.0:
            p.mul_(1 - c).add_(z, alpha=c)
          else:
            p.copy_(z)
        group["accum"] = accum
        group["iteration"] += 1

  return RMDA, prox_glasso


# ----------------------------------------------------------------- counts
def counts(torch, model, opt) -> dict:
  """Denormal and zero entries of the weights (and of RMDA's buffers), small groups."""
  tiny = torch.finfo(torch.float32).tiny

  def denormal(t):
    return int(((t != 0) & (t.abs() < tiny)).sum())

  out = {"denormal_weights": 0, "zero_weights": 0, "denormal_state": 0,
         "groups": 0, "groups_zero": 0, "groups_zero_or_denormal": 0}
  for p in model.parameters():
    out["denormal_weights"] += denormal(p)
    out["zero_weights"] += int((p == 0).sum())
    for buf in opt.state.get(p, {}).values():
      if torch.is_tensor(buf) and buf.is_floating_point():
        out["denormal_state"] += denormal(buf)
    if p.ndim in (2, 4):
      m = p.abs().transpose(0, 1).reshape(p.shape[1], -1).amax(dim=1)
      out["groups"] += int(m.numel())
      out["groups_zero"] += int((m == 0).sum())
      out["groups_zero_or_denormal"] += int((m < tiny).sum())
  return out


# ---------------------------------------------------------------- variants
class Variant:
  """One model and optimizer, stepped in chunks under its own flush setting."""

  def __init__(self, torch, name: str, args):
    self.torch, self.name, self.flush = torch, name, name.endswith("+flush")
    torch.manual_seed(0)  # every variant starts from the same weights
    self.model = common.torch_model(torch, "lenet5_small", 10)
    if name.startswith("rmda"):
      RMDA, prox_glasso = authors_rmda(torch)
      self.opt = RMDA(self.model.parameters(), lr=args.rmda_lr, momentum=args.rmda_c,
                      lambda_=args.lam, prox_fn=prox_glasso)
    else:
      self.opt = torch.optim.SGD(self.model.parameters(), lr=args.sgd_lr, momentum=0.9)
    self.loss_sum, self.epoch_s = torch.zeros(()), 0.0

  def run(self, x, y, perm, start: int, steps: int, batch: int) -> None:
    torch, F = self.torch, self.torch.nn.functional
    self.flush_supported = torch.set_flush_denormal(self.flush)
    t = time.perf_counter()
    for i in range(start, start + steps):
      idx = perm[i * batch:(i + 1) * batch]
      self.opt.zero_grad(set_to_none=True)
      loss = F.cross_entropy(self.model(x[idx]), y[idx])
      loss.backward()
      self.opt.step()
      self.loss_sum += loss.detach()
    self.epoch_s += time.perf_counter() - t

  def accuracy(self, x, y) -> float:
    torch = self.torch
    torch.set_flush_denormal(self.flush)
    with torch.no_grad():
      hits = sum(int((self.model(x[i:i + 1000]).argmax(1) == y[i:i + 1000]).sum())
                 for i in range(0, len(y), 1000))
    return hits / len(y)


def xla_cpu_flushes_denormals() -> dict:
  """What XLA does on JAX's default device (here the CPU) with a denormal operand (DAZ)
  and a denormal result (FTZ); arguments, so the products are computed at run time."""
  f = jax.jit(lambda a, b: (a * np.float32(2.0), b * np.float32(0.5)))
  a, b = (float(v) for v in f(np.float32(1e-40), np.float32(2e-38)))
  return {"backend": jax.default_backend(), "1e-40 * 2": a, "2e-38 * 0.5": b,
          "flushes": a == 0.0 and b == 0.0}


def tensors(torch, ds, n_train, n_test):
  """Normalised NCHW float32 tensors (``data.normalize``'s formula, on the host)."""
  def norm(x):
    x = (x.astype(np.float32) * ds.scale - np.float32(ds.mean[0])) / np.float32(ds.std[0])
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
  return (norm(ds.x_train[:n_train]), torch.from_numpy(ds.y_train[:n_train].astype(np.int64)),
          norm(ds.x_test[:n_test]), torch.from_numpy(ds.y_test[:n_test].astype(np.int64)))


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(prog="bench_torch_denormal", description=__doc__.splitlines()[0])
  p.add_argument("--quick", action="store_true",
                 help="2 epochs of 2560 images, 1000 test images (< 2 min): checks the script")
  p.add_argument("--epochs", type=int, default=None, help="default 5 (quick: 2)")
  p.add_argument("--train-subset", type=int, default=None,
                 help="first N training images (default all 60000; quick: 2560)")
  p.add_argument("--test-subset", type=int, default=None, help="default all (quick: 1000)")
  p.add_argument("--batch-size", type=int, default=128)
  p.add_argument("--chunk", type=int, default=50, help="steps per variant between switches")
  p.add_argument("--rmda-lr", type=float, default=0.3)
  p.add_argument("--rmda-c", type=float, default=0.1, help="the authors' 'momentum' c")
  p.add_argument("--lam", type=float, default=5e-4, help="group LASSO lambda")
  p.add_argument("--sgd-lr", type=float, default=0.01)
  p.add_argument("--out", type=Path, default=common.RESULTS, help="output folder")
  p.add_argument("--name", default=None,
                 help="results file stem (default torch_denormal, quick: torch_denormal_quick)")
  args = p.parse_args(argv)
  torch = common.optional_torch()
  if torch is None:
    p.exit(2, "bench_torch_denormal: error: PyTorch is not installed (pip install torch); "
              "this benchmark measures the authors' PyTorch optimizer\n")

  q = args.quick
  epochs = args.epochs or (2 if q else 5)
  n_train = args.train_subset or (2560 if q else 60000)
  n_test = args.test_subset or (1000 if q else 10000)
  torch.set_num_threads(1)  # see the module docstring
  machine = common.machine_info()
  load_start = common.load_average()
  x, y, x_test, y_test = tensors(torch, data_lib.load_mnist(), n_train, n_test)
  n = len(y)
  bs = args.batch_size
  steps = n // bs
  variants = {name: Variant(torch, name, args) for name in VARIANTS}

  per_epoch = {name: [] for name in VARIANTS}
  loads = []
  t_start = time.perf_counter()
  print(f"{n} images, {steps} steps/epoch, {epochs} epochs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s), load {load_start[0]:.2f}", flush=True)
  for epoch in range(epochs):
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(epoch))
    for v in variants.values():
      v.epoch_s, v.loss_sum = 0.0, torch.zeros(())
    for c, start in enumerate(range(0, steps, args.chunk)):
      k = min(args.chunk, steps - start)
      for name in VARIANTS[c % 4:] + VARIANTS[:c % 4]:
        variants[name].run(x, y, perm, start, k, bs)
    torch.set_flush_denormal(False)
    loads.append(common.load_average())
    for name, v in variants.items():
      per_epoch[name].append({"epoch": epoch + 1, "epoch_s": v.epoch_s,
                              "train_loss": float(v.loss_sum) / steps,
                              **counts(torch, v.model, v.opt)})
    ratio = lambda a, b: per_epoch[a][-1]["epoch_s"] / per_epoch[b][-1]["epoch_s"]
    print(f"epoch {epoch + 1}: " + "  ".join(
        f"{k} {r[-1]['epoch_s']:.1f}s" for k, r in per_epoch.items())
        + f" | rmda/sgd {ratio('rmda', 'sgd'):.2f}  rmda+flush/sgd+flush "
          f"{ratio('rmda+flush', 'sgd+flush'):.2f}  rmda/rmda+flush "
          f"{ratio('rmda', 'rmda+flush'):.2f} | denormal weights rmda "
          f"{per_epoch['rmda'][-1]['denormal_weights']}, groups zero-or-denormal "
          f"{per_epoch['rmda'][-1]['groups_zero_or_denormal']} (flush: "
          f"{per_epoch['rmda+flush'][-1]['groups_zero_or_denormal']}) | load {loads[-1][0]:.2f}",
          flush=True)

  def ratios(a, b):
    return [ra["epoch_s"] / rb["epoch_s"] for ra, rb in zip(per_epoch[a], per_epoch[b])]

  flush_supported = {name: v.flush_supported for name, v in variants.items() if v.flush}
  torch.set_flush_denormal(False)
  result = {
      "benchmark": "bench_torch_denormal", "quick": q,
      "machine": machine, "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
      "load_average_start": load_start, "load_average_after_epoch": loads,
      "settings": {
          "model": "lenet5_small (PyTorch, benchmarks.common.torch_model)", "dataset": "mnist",
          "train_images": n, "test_images": len(y_test), "batch_size": bs, "steps_per_epoch": steps,
          "epochs": epochs, "chunk": args.chunk,
          "interleaving": "every epoch: all variants in chunks of `chunk` steps, order rotating "
                          "per chunk; same initial weights and batches for all",
          "variants": {
              "sgd": f"torch.optim.SGD(lr={args.sgd_lr}, momentum=0.9)",
              "rmda": f"the authors' RMDA ({AUTHORS_CODE}), lr {args.rmda_lr}, "
                      f"c (their 'momentum') {args.rmda_c}, group LASSO lambda {args.lam} on "
                      "input units weighted by sqrt(group size), biases not regularized, "
                      "no restart",
          },
          "flush_denormal": {name: name.endswith("+flush") for name in VARIANTS},
          "flush_denormal_supported": flush_supported,
          "flush_note": "torch.set_flush_denormal(flag) before every chunk of each variant "
                        "(a per-thread flag; with one intra-op thread every kernel runs on "
                        "the thread that set it)",
          "denormal": "(w != 0) & (|w| < torch.finfo(float32).tiny); counted after each epoch",
      },
      "xla_cpu": xla_cpu_flushes_denormals(),
      "per_epoch": per_epoch,
      "ratio_to_sgd": {"rmda": ratios("rmda", "sgd"), "rmda+flush": ratios("rmda+flush", "sgd+flush"),
                       "sgd+flush": ratios("sgd+flush", "sgd")},
      "rmda_over_rmda_flush": ratios("rmda", "rmda+flush"),
      "test_accuracy": {name: v.accuracy(x_test, y_test) for name, v in variants.items()},
      "wall_s": time.perf_counter() - t_start,
  }
  torch.set_flush_denormal(False)
  stem = args.name or ("torch_denormal_quick" if q else "torch_denormal")
  path = args.out / f"{stem}.json"
  common.write_json(path, result, indent=1)
  print(f"ratio to SGD (same flush setting), per epoch: rmda "
        f"{' '.join(f'{r:.2f}' for r in result['ratio_to_sgd']['rmda'])}; rmda+flush "
        f"{' '.join(f'{r:.2f}' for r in result['ratio_to_sgd']['rmda+flush'])}")
  print(f"test accuracy: {result['test_accuracy']}; XLA:CPU flushes denormals: "
        f"{result['xla_cpu']['flushes']}")
  print(f"wrote {path}")
  return result


if __name__ == "__main__":
  main()
