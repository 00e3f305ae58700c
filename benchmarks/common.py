"""What several benchmarks share.

* :func:`machine_info`: what to record next to every number; :func:`cpu_speed_flags`:
  ``rmda-train``'s XLA:CPU setting.
* The optimizer tables: :func:`step_optimizers` (fixed settings, the optimizers
  whose step the cost benchmarks time) and :func:`build_method` (the methods the
  training benchmarks compare, with their learning-rate schedules).
* Parameter pytrees shaped like the papers' models, read from the models of
  ``rmda_jax.examples.models`` (:func:`param_shapes`, :func:`make_params`).
* Timing one optimizer step: :func:`time_steps` (every optimizer timed
  *interleaved*, round robin, so that drift hits all of them alike; median over
  the rounds) and :func:`memory_bandwidth` (a streaming kernel measured in the
  same run, to read step times as "passes over the parameters").
* MNIST (or sklearn digits) on the device (:func:`load_data`), the flags and
  tables of the accuracy benchmarks, and their training loop (:func:`make_run`)
  around ``rmda-train``'s step; random MNIST-shaped data for the throughput
  benchmarks (:func:`synthetic_data`).
* PyTorch, optional (:func:`optional_torch`), and the PyTorch originals of
  rmda-train's models (:func:`torch_model`).
* The load average, recorded as ``load_average_start`` / ``load_average_end``
  (:func:`load_average`).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import rmda_jax as rj
from rmda_jax.examples import data as data_lib
from rmda_jax.examples import models as models_lib
from rmda_jax.examples import train as train_lib
from rmda_jax.examples import xla_flags

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


# ---------------------------------------------------------------- machine
def cpu_model() -> str:
  """The CPU's model name (``/proc/cpuinfo``; ``platform.processor()`` elsewhere)."""
  cpu = platform.processor()
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next((line.split(":", 1)[1].strip() for line in f
                  if line.startswith("model name")), cpu)
  except OSError:
    pass
  return cpu


def machine_info() -> Dict[str, Any]:
  """What to record next to every number: machine, versions, date, commit, XLA_FLAGS."""
  cpu = cpu_model()
  try:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True, timeout=10).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    commit = ""
  return {
      "platform": platform.platform(),
      "python": platform.python_version(),
      "cpu": cpu,
      "cpu_count": os.cpu_count(),
      "jax_backend": jax.default_backend(),
      "jax_default_matmul_precision": jax.config.jax_default_matmul_precision,
      "devices": [str(d) for d in jax.devices()],
      "jax": jax.__version__,
      "optax": optax.__version__,
      "flax": flax.__version__,
      "rmda_jax": getattr(rj, "__version__", "?"),
      "git_commit": commit,
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "openblas_num_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
  }


def load_average() -> list:
  """The 1, 5 and 15 minute load averages, rounded: what the results record as
  ``load_average_start`` (in ``machine``) and ``load_average_end``."""
  return [round(x, 2) for x in os.getloadavg()]


def cpu_speed_flags() -> str:
  """rmda-train's XLA:CPU setting (YNNPACK for reductions only); call before any JAX work."""
  return xla_flags.limit_ynn_fusions()


# ------------------------------------------------------------ PyTorch
def optional_torch():
  """PyTorch, or None where it is not installed (the comparisons with it are optional)."""
  try:
    import torch
  except ImportError:
    return None
  return torch


def torch_model(torch, name: str, classes: int):
  """The PyTorch original of an rmda-train model (same layers, same parameter count):
  ``lenet5_small`` or ``vgg19_bn``."""
  nn = torch.nn
  if name == "lenet5_small":
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, classes))
  if name != "vgg19_bn":
    raise ValueError(f"no PyTorch original of {name!r}")
  layers, c = [], 3
  for v in models_lib.VGG19_CFG:
    if v == "M":
      layers.append(nn.MaxPool2d(2))
    else:
      layers += [nn.Conv2d(c, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU()]
      c = v
  return nn.Sequential(*layers, nn.Flatten(), nn.Linear(512, classes))


# ------------------------------------------------------------- optimizers
# Strengths of the papers' CIFAR runs (rmda.md sections 4-5), for the cost tables.
L1_STRENGTH = 1e-5
GL_STRENGTH = 5e-5


def step_optimizers() -> Dict[str, optax.GradientTransformation]:
  """The optimizers whose step the cost benchmarks time, by their name in the results."""
  l1, gl = rj.l1(L1_STRENGTH), rj.group_lasso(GL_STRENGTH)
  return {
      "optax.sgd(momentum=0.9)": optax.sgd(0.1, momentum=0.9),
      "optax.adam": optax.adam(1e-3),
      "optax.contrib.madgrad": optax.contrib.madgrad(1e-2),
      "rmda (none)": rj.rmda(0.1, 0.1),
      "rmda (l1)": rj.rmda(0.1, 0.1, l1),
      "rmda (group_lasso)": rj.rmda(0.1, 0.1, gl),
      "prox_sgd (l1)": rj.prox_sgd(0.1, 0.9, l1),
      "prox_sgd (group_lasso)": rj.prox_sgd(0.1, 0.9, gl),
      "prox_adam (l1)": rj.prox_adam(1e-3, regularizer=l1),
      "prox_adam (group_lasso)": rj.prox_adam(1e-3, regularizer=gl),
      "prox_ssi (l1)": rj.prox_ssi(1e-3, regularizer=l1),
      "prox_ssi (group_lasso)": rj.prox_ssi(1e-3, regularizer=gl),
  }


# The methods the training benchmarks compare (msgd: no regularizer, the dense reference).
METHODS = ("rmda", "prox_sgd", "prox_adam", "prox_ssi", "msgd")


@dataclasses.dataclass(frozen=True)
class Rates:
  """Learning rates of :func:`build_method`; every one is multiplied by ``gamma``
  at each of ``milestones`` (in steps), where RMDA also restarts."""
  milestones: Sequence[int]
  gamma: float = 0.1
  rmda_lr: float = 0.1
  rmda_c0: float = 0.1
  prox_sgd_lr: float = 0.1   # the authors' EMA form, run as heavy-ball (see build_method)
  prox_sgd_rho: float = 0.1
  adam_lr: float = 1e-3
  msgd_lr: float = 0.01
  ramda_lr: float = 1e-2   # RAMDA: the authors' defaults (shared/docs/ramda.md section 3)
  ramda_c0: float = 1e-2
  ramda_epsilon: float = 1e-6


def milestones_of(total_steps: int, fractions: Sequence[float]) -> list:
  """Milestones (steps) at ``fractions`` of a run of ``total_steps``."""
  return sorted({max(1, int(round(f * total_steps))) for f in fractions})


ABLATION = ("prox_sgd_rho0.01", "prox_sgd_rho0.001", "rda", "rmda_ramp")


def ablation_rho(method: str) -> float:
  """The averaging weight of ``prox_sgd_rho<r>`` (a number in (0, 1])."""
  try:
    rho = float(method[len("prox_sgd_rho"):])
  except ValueError:
    raise ValueError(f"{method!r}: expected prox_sgd_rho<number>, e.g. prox_sgd_rho0.01") from None
  if not 0 < rho <= 1:
    raise ValueError(f"{method!r}: the averaging weight must be in (0, 1]")
  return rho


def build_method(method: str, reg, rates: Rates):
  """(optax transformation, reported point ``(params, opt_state) -> params`` or None).

  ``rmda``: ``rj.rmda_multistep`` (the ICLR 2022 "divide" rule: ``c`` goes from
  ``rmda_c0`` to 1 at the first milestone), reported at its structured point Z.
  ``prox_sgd``: the authors' EMA form (lr, rho, lam) run as heavy-ball
  (rho * lr, momentum 1 - rho, strength lam / rho), whose fixed points are those
  of ``f + lam * psi``. ``prox_adam`` (ProxGen), ``prox_ssi``: ``adam_lr``.
  ``msgd``: ``optax.sgd(msgd_lr, momentum=0.9)``, ``reg`` unused.
  ``ramda``: ``rj.ramda_multistep`` (lr and epsilon x ``gamma`` and a restart at
  each milestone, ``c`` ramped from ``ramda_c0`` to 1 after the last), reported at
  its structured point.

  The averaging ablation (issue 19, part 4): ``prox_sgd_rho<r>`` is ``prox_sgd``
  with averaging weight ``r`` instead of ``prox_sgd_rho`` (e.g.
  ``prox_sgd_rho0.01``); ``rda`` plain regularized dual averaging,
  ``rj.rmda(rmda_lr, 1.0)`` (``c = 1``: no averaging of the iterates; no
  restarts and no learning-rate steps), reported at Z; ``rmda_ramp``
  ``rmda`` with the NeurIPS 2024 "ramp" rule for ``c`` instead of "divide".
  """
  sched = lambda lr: optax.piecewise_constant_schedule(
      lr, {m: rates.gamma for m in rates.milestones})
  if method == "rmda":
    tx = rj.rmda_multistep(rates.rmda_lr, rates.rmda_c0, rates.milestones,
                           gamma=rates.gamma, regularizer=reg)
    return tx, (lambda params, opt_state: rj.structured_params(opt_state, reg))
  if method == "prox_sgd" or method.startswith("prox_sgd_rho"):
    rho = rates.prox_sgd_rho if method == "prox_sgd" else ablation_rho(method)
    return rj.prox_sgd(sched(rho * rates.prox_sgd_lr), 1 - rho,
                       reg.with_strength(reg.strength / rho)), None
  if method == "rda":
    tx = rj.rmda(rates.rmda_lr, 1.0, regularizer=reg)
    return tx, (lambda params, opt_state: rj.structured_params(opt_state, reg))
  if method == "rmda_ramp":
    tx = rj.rmda_multistep(rates.rmda_lr, rates.rmda_c0, rates.milestones,
                           gamma=rates.gamma, regularizer=reg, momentum_rule="ramp")
    return tx, (lambda params, opt_state: rj.structured_params(opt_state, reg))
  if method == "prox_adam":
    return rj.prox_adam(sched(rates.adam_lr), regularizer=reg), None
  if method == "prox_ssi":
    return rj.prox_ssi(sched(rates.adam_lr), regularizer=reg), None
  if method == "msgd":
    return optax.sgd(sched(rates.msgd_lr), momentum=0.9), None
  if method == "ramda":
    tx = rj.ramda_multistep(rates.ramda_lr, rates.ramda_c0, rates.milestones,
                            gamma=rates.gamma, regularizer=reg, epsilon=rates.ramda_epsilon)
    return tx, (lambda params, opt_state: rj.structured_params(opt_state, reg))
  raise ValueError(f"unknown method {method!r}; choose from "
                   f"{METHODS + ('ramda',) + ABLATION}")


# ------------------------------------------------------------ model shapes
# The cost benchmarks' names: (model of rmda_jax.examples.models, input shape).
SHAPED_MODELS = {
    "lenet5": ("lenet5_small", (28, 28, 1)),    # MNIST
    "vgg19": ("vgg19_bn", (32, 32, 3)),         # CIFAR
    "resnet50": ("resnet50", (32, 32, 3)),      # CIFAR
}


def param_shapes(name: str, num_classes: int = 10):
  """The trainable parameters of a model of :data:`SHAPED_MODELS`, as ShapeDtypeStructs."""
  model, input_shape = SHAPED_MODELS[name]
  return jax.eval_shape(lambda: nnx.to_pure_dict(nnx.state(
      models_lib.get_model(model, num_classes, nnx.Rngs(0), input_shape), nnx.Param)))


def num_params(shapes) -> int:
  return int(sum(np.prod(s.shape) for s in jax.tree.leaves(shapes)))


def make_params(shapes, seed: int = 0, scale: float = 0.05):
  """Random normal leaves like ``shapes`` (BatchNorm scales start at 1)."""
  paths, treedef = jax.tree_util.tree_flatten_with_path(shapes)
  keys = jax.random.split(jax.random.PRNGKey(seed), len(paths))
  out = []
  for key, (path, s) in zip(keys, paths):
    if jax.tree_util.keystr(path).endswith("['scale']"):
      out.append(jnp.ones(s.shape, s.dtype))
    else:
      out.append((scale * jax.random.normal(key, s.shape)).astype(s.dtype))
  return jax.tree.unflatten(treedef, out)


# ----------------------------------------------------------------- timing
def _copy(tree):
  return jax.tree.map(lambda x: jnp.array(x, copy=True), tree)


def make_step(tx: optax.GradientTransformation):
  """``(params, state, grads) -> (params, state)``, jitted, params/state donated."""

  def step(params, opt_state, grads):
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  return jax.jit(step, donate_argnums=(0, 1))


def time_steps(optimizers: Mapping[str, optax.GradientTransformation], params,
               grads, *, repeats: int = 10, warmup: int = 2,
               verbose: bool = True) -> Dict[str, Dict[str, float]]:
  """Median wall time of one jitted, donated step, all optimizers interleaved.

  Each optimizer gets its own copy of ``params`` and its own state (both are
  donated and replaced every step); ``grads`` is fixed and shared.

  Args:
    optimizers: name -> transformation.
    params: the parameter pytree (not consumed).
    grads: a gradient pytree like ``params``.
    repeats: timed rounds; every round runs one step of every optimizer.
    warmup: untimed rounds after compilation.
    verbose: print compile times.

  Returns:
    name -> {"median_ms", "min_ms", "max_ms", "compile_s"}.
  """
  runs = {}
  for name, tx in optimizers.items():
    p = _copy(params)
    s = _copy(tx.init(p))  # some inits alias buffers (e.g. madgrad's x0)
    step = make_step(tx)
    t0 = time.perf_counter()
    p, s = step(p, s, grads)
    jax.block_until_ready((p, s))
    compile_s = time.perf_counter() - t0
    if verbose:
      print(f"  compiled {name:<28s} {compile_s:6.1f} s", flush=True)
    runs[name] = {"step": step, "params": p, "state": s,
                  "compile_s": compile_s, "times": []}
  for r in range(warmup + repeats):
    for name, run in runs.items():
      t0 = time.perf_counter()
      run["params"], run["state"] = run["step"](run["params"], run["state"],
                                                grads)
      jax.block_until_ready((run["params"], run["state"]))
      if r >= warmup:
        run["times"].append(time.perf_counter() - t0)
  out = {}
  for name, run in runs.items():
    ts = run["times"]
    out[name] = {"median_ms": 1e3 * statistics.median(ts),
                 "min_ms": 1e3 * min(ts), "max_ms": 1e3 * max(ts),
                 "compile_s": run["compile_s"]}
  return out


def memory_bandwidth(nbytes: int = 256 * 2**20, repeats: int = 10,
                     donate: bool = True) -> float:
  """Streaming bandwidth in bytes/s: ``x * 1.0001 + y`` over ``nbytes`` arrays.

  Counts three arrays moved (two read, one written); median of ``repeats``.
  With ``donate`` (the default, as in the donated optimizer step) the output
  reuses ``x``'s buffer; without it every call writes a fresh allocation and
  on CPU mostly measures page faults.
  """
  n = nbytes // 4
  x = jnp.ones((n,), jnp.float32)
  y = jnp.ones((n,), jnp.float32)
  f = jax.jit(lambda x, y: x * 1.0001 + y,
              donate_argnums=(0,) if donate else ())
  out = f(x, y)
  jax.block_until_ready(out)
  if donate:
    x = out
  ts = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    out = f(x, y)
    jax.block_until_ready(out)
    ts.append(time.perf_counter() - t0)
    if donate:
      x = out
  return 3 * nbytes / statistics.median(ts)


def timed_model(name: str):
  """(shapes, params, grads) of a model of :data:`SHAPED_MODELS`, as the cost benchmarks time it."""
  shapes = param_shapes(name)
  return shapes, make_params(shapes, seed=0), make_params(shapes, seed=1, scale=1e-2)


# ------------------------------------------------------------------- data
@dataclasses.dataclass
class Data:
  name: str
  x_train: jax.Array   # normalised float32, NHWC, on device
  y_train: jax.Array
  x_test: jax.Array
  y_test: jax.Array
  input_shape: tuple
  num_classes: int
  note: str


def load_data(name: str = "mnist", train_subset: Optional[int] = None,
              test_subset: Optional[int] = None, subset_seed: int = 0) -> Data:
  """MNIST (60k/10k) or sklearn digits padded to 28x28, normalised, on device.

  ``train_subset`` keeps a fixed random subset of the training set (the same
  for every run: ``subset_seed``); ``test_subset`` the first test images.
  """
  if name == "mnist":
    ds = data_lib.load_mnist()
  elif name == "digits":
    ds = data_lib.pad_images(data_lib.load_digits(), 28)
  else:
    raise ValueError(f"unknown dataset {name!r}")
  x_tr, y_tr, x_te, y_te = ds.x_train, ds.y_train, ds.x_test, ds.y_test
  note = f"{name}: {len(y_tr)} train / {len(y_te)} test"
  if train_subset is not None and train_subset < len(y_tr):
    idx = np.sort(np.random.default_rng(subset_seed).permutation(len(y_tr))[:train_subset])
    x_tr, y_tr = x_tr[idx], y_tr[idx]
    note += f"; training on a fixed random subset of {train_subset} (seed {subset_seed})"
  if test_subset is not None and test_subset < len(y_te):
    x_te, y_te = x_te[:test_subset], y_te[:test_subset]
    note += f"; testing on the first {test_subset} test images"
  stats = (ds.scale, ds.mean, ds.std)
  norm = jax.jit(lambda x: data_lib.normalize(x, stats))
  return Data(name, norm(jnp.asarray(x_tr)), jnp.asarray(y_tr, jnp.int32),
              norm(jnp.asarray(x_te)), jnp.asarray(y_te, jnp.int32),
              tuple(ds.input_shape), ds.num_classes, note)


def synthetic_data(n: int, n_test: int, shape=(28, 28, 1), classes: int = 10,
                   seed: int = 0) -> data_lib.Dataset:
  """Random images in [0, 1) and labels shaped like MNIST (or ``shape``): for the
  throughput benchmarks, whose step costs do not depend on the pixels."""
  rng = np.random.default_rng(seed)
  return data_lib.Dataset("synthetic", rng.random((n, *shape), dtype=np.float32),
                          rng.integers(0, classes, n).astype(np.int32),
                          rng.random((n_test, *shape), dtype=np.float32),
                          rng.integers(0, classes, n_test).astype(np.int32),
                          num_classes=classes, mean=(0.5,) * shape[-1],
                          std=(0.25,) * shape[-1])


def steps_per_epoch(data: Data, batch_size: int) -> int:
  return int(data.y_train.shape[0]) // batch_size


# ----------------------------------------------- the accuracy benchmarks
def add_training_args(p: argparse.ArgumentParser, models: Sequence[str]) -> None:
  """The flags every accuracy benchmark takes (data, budget, schedule, output)."""
  p.add_argument("--quick", action="store_true", help="tiny run (< 2 min) to check the pipeline")
  p.add_argument("--out", type=Path, default=RESULTS, help="output folder")
  p.add_argument("--name", default=None, help="results file stem (default by mode)")
  p.add_argument("--dataset", default="mnist", choices=("mnist", "digits"))
  p.add_argument("--models", nargs="+", default=None, choices=models)
  p.add_argument("--seeds", type=int, default=None)
  p.add_argument("--epochs", type=int, default=None)
  p.add_argument("--train-subset", type=int, default=None)
  p.add_argument("--test-subset", type=int, default=None)
  p.add_argument("--batch-size", type=int, default=128)
  p.add_argument("--milestone-fractions", type=float, nargs="*", default=(0.5, 0.75))
  p.add_argument("--gamma", type=float, default=0.1)
  p.add_argument("--rmda-lr", type=float, default=0.1)
  p.add_argument("--rmda-c0", type=float, default=0.1)
  p.add_argument("--msgd-lr", type=float, default=0.01)


@dataclasses.dataclass
class Budget:
  """What ``--quick`` changes: seeds, epochs and the data subsets."""
  seeds: int
  epochs: int
  train_subset: Optional[int]
  test_subset: Optional[int]


def budget(args) -> Budget:
  """The flags of :func:`add_training_args`, or their quick / full defaults."""
  q = args.quick
  return Budget(args.seeds or (2 if q else 3), args.epochs or (2 if q else 3),
                args.train_subset or (1024 if q else 12800),
                args.test_subset or (1000 if q else None))


def aggregate(runs, keys, metrics, carry=()) -> list:
  """One row per value of ``keys``: ``carry`` from its first run, its seeds, and
  :func:`mean_std` of each of ``metrics``."""
  groups = {}
  for r in runs:
    groups.setdefault(tuple(r[k] for k in keys), []).append(r)
  out = []
  for key, rs in groups.items():
    row = dict(zip(keys, key))
    row.update({c: rs[0].get(c) for c in carry})
    row["seeds"] = [r["seed"] for r in rs]
    row.update({m: mean_std([r[m] for r in rs]) for m in metrics})
    out.append(row)
  return out


def _start_time(pid: int) -> str:
  """When process ``pid`` started (clock ticks since boot, from /proc); '' if unknown."""
  try:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
  except (OSError, IndexError):
    return ""


def claim(lock: Path):
  """``lock`` (a file naming this process) if no live process holds it, else False.

  Lets several processes (``nice``-d, one per core) share the runs of one
  results folder: each trains the runs it claims, and the caller removes the
  lock when the run ends. The file holds the process id and its start time,
  so that a lock left by a process that is gone (a session cut off) is taken
  over even when a new process has reused its id.
  """
  lock.parent.mkdir(parents=True, exist_ok=True)
  for _ in range(2):
    try:
      fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
      try:
        pid, *tag = lock.read_text().split()
        pid = int(pid)
        os.kill(pid, 0)
        if tag and _start_time(pid) not in ("", tag[0]):
          raise ProcessLookupError  # the id now names another process
        return False  # alive
      except ProcessLookupError:
        lock.unlink(missing_ok=True)  # its process is gone: take it over
      except (ValueError, OSError):
        return False  # being written, or not ours to check
      continue
    with os.fdopen(fd, "w") as f:
      f.write(f"{os.getpid()} {_start_time(os.getpid())}".strip())
    return lock
  return False


def write_json(path: Path, obj, indent: int = 1) -> None:
  """Writes ``obj`` to ``path`` through a temporary file (a reader never sees half of it)."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  # One temporary name per process: shards of a benchmark rebuild the same file.
  tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
  tmp.write_text(json.dumps(obj, indent=indent) + "\n")
  tmp.replace(path)


# ---------------------------------------------------------------- metrics
def kernel_sparsity(params) -> float:
  """Exact zeros over the entries of the kernels (ndim >= 2 leaves)."""
  leaves = [p for p in jax.tree.leaves(params) if jnp.ndim(p) >= 2]
  total = sum(int(p.size) for p in leaves)
  return sum(int(jnp.sum(p == 0)) for p in leaves) / total


def mean_std(xs) -> dict:
  """Mean, sample std, count and values, as the results tables record them."""
  xs = [float(x) for x in xs]
  if not xs:
    return {"mean": None, "std": None, "n": 0, "values": []}
  return {"mean": float(np.mean(xs)), "std": float(np.std(xs, ddof=1)) if len(xs) > 1 else 0.0,
          "n": len(xs), "values": xs}


# ------------------------------------------------------------------ train
@dataclasses.dataclass
class Result:
  params: Any
  opt_state: Any
  reported: Any           # the point reported (RMDA: Z; others: W)
  test_accuracy: float
  test_loss: float
  train_loss_last_epoch: float
  wall_s: float
  steps: int


def _model_parts(name: str, data: Data, seed: int) -> train_lib.ModelParts:
  return train_lib.split_model(
      models_lib.get_model(name, data.num_classes, nnx.Rngs(seed), data.input_shape))


def make_run(model_name: str, tx: optax.GradientTransformation, data: Data, *,
             batch_size: int = 128) -> Callable[..., Result]:
  """Training of one (model, optimizer) on ``data``, compiled once and run per seed.

  The step is ``rmda-train``'s (``rmda_jax.examples.train.make_train_step``):
  the whole (normalised) training set lives on the device and each step
  gathers its batch inside the jitted step, params and optimizer state
  donated. Each epoch draws a host permutation from the seed; the last partial
  batch is dropped (as ``rmda-train`` does).

  Returns:
    ``run(*, epochs, seed=0, reported=None, start=None, log=None) -> Result``:
    trains from the initialisation of ``seed`` and evaluates on the test set at
    the reported point. ``reported``: ``(params, opt_state) -> params`` (e.g.
    RMDA's ``structured_params``; default the iterate). ``start``:
    ``(params, opt_state, seed) -> (params, opt_state)``, what training starts
    from (``rigl.reseed``: the masks of the seed; default ``tx.init``'s state
    at the initialisation).
  """
  parts = _model_parts(model_name, data, 0)
  step = jax.jit(train_lib.make_train_step(parts.graphdef_train, tx), donate_argnums=(0, 1))
  eval_step = jax.jit(train_lib.make_eval_step(parts.graphdef_eval))
  n = int(data.y_train.shape[0])
  spe = n // batch_size
  if spe < 1:
    raise ValueError(f"batch_size {batch_size} larger than the training set ({n})")

  def run(*, epochs: int, seed: int = 0,
          reported: Optional[Callable[[Any, Any], Any]] = None,
          start: Optional[Callable[[Any, Any, int], tuple]] = None,
          log: Optional[Callable[[str], None]] = None) -> Result:
    state = train_lib.init_train_state(_model_parts(model_name, data, seed), tx)
    if start is not None:
      params, opt_state = start(state.params, state.opt_state, seed)
      state = state._replace(params=params, opt_state=opt_state)
    rng = np.random.default_rng([seed, 12345])
    t0 = time.perf_counter()
    train_loss = float("nan")
    for epoch in range(epochs):
      perm = jnp.asarray(rng.permutation(n)[: spe * batch_size]
                         .reshape(spe, batch_size).astype(np.int32))
      loss_sum = jnp.zeros([], jnp.float32)
      for i in range(spe):
        state, loss_sum = step(state, loss_sum, data.x_train, data.y_train, perm,
                               np.int32(i), None)
      train_loss = float(loss_sum) / spe
      if log is not None:
        log(f"    epoch {epoch + 1}/{epochs} train loss {train_loss:.4f} "
            f"({time.perf_counter() - t0:.1f}s)")
    point = state.params if reported is None else reported(state.params, state.opt_state)
    point = jax.block_until_ready(point)
    wall = time.perf_counter() - t0
    test_loss, test_acc = train_lib.evaluate(eval_step, point, state.batch_stats,
                                             data.x_test, data.y_test)
    return Result(state.params, state.opt_state, point, test_acc, test_loss, train_loss,
                  wall, epochs * spe)

  return run
