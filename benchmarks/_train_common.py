"""A small MNIST training loop shared by the accuracy benchmarks.

Used by ``bench_sparsity_accuracy.py`` and ``bench_rigl.py``. It reuses the
library's examples (``rmda_jax.examples.models`` for the models,
``rmda_jax.examples.data`` for MNIST / digits) and writes its own step so that
any optax transformation (RMDA, the proximal baselines, SGD) and RigL's masks
fit the same loop:

* the whole (normalised) training set lives on the device; each epoch draws a
  host permutation, sends it once, and every step slices its batch inside the
  jitted step (one jit call per step, params and optimizer state donated: a
  ``lax.scan`` over an epoch was measured 3-4x slower for convnets on this CPU);
* the last partial batch of an epoch is dropped (as ``rmda-train`` does);
* evaluation runs in batches of 2000 on the test set.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
  sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

EVAL_BATCH = 2000


# ---------------------------------------------------------------- machine
def machine_info() -> dict:
  """What to record next to every number: machine, versions, date, commit."""
  import flax
  import rmda_jax
  sys.path.insert(0, str(Path(__file__).resolve().parent))
  import step_harness
  try:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True, timeout=10).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    commit = ""
  info = step_harness.machine_info()
  info.update({
      "load_average_at_start": os.getloadavg(),
      "flax": flax.__version__,
      "rmda_jax": getattr(rmda_jax, "__version__", "?"),
      "git_commit": commit,
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
  })
  return info


def cpu_speed_flags() -> str:
  """rmda-train's XLA:CPU setting (YNNPACK for reductions only); call before any JAX work."""
  from rmda_jax.examples import xla_flags
  return xla_flags.limit_ynn_fusions()


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
  from rmda_jax.examples import data as data_lib
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


# ------------------------------------------------------------------ model
def make_model(name: str, data: Data, seed: int):
  """(graphdef, params as a pure dict) of a model of ``rmda_jax.examples.models``."""
  from flax import nnx
  from rmda_jax.examples.models import get_model
  model = get_model(name, data.num_classes, nnx.Rngs(seed), data.input_shape)
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  if jax.tree.leaves(rest):
    raise ValueError(f"{name}: models with BatchNorm statistics are not supported here")
  return (graphdef, rest), nnx.to_pure_dict(params)


def _apply(gd, params, x):
  from flax import nnx
  graphdef, rest = gd
  return nnx.merge(graphdef, params, rest)(x)


def kernel_mask(params) -> Any:
  """True for the leaves every regularizer acts on by default (ndim >= 2)."""
  return jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)


def kernel_sparsity(params) -> float:
  """Exact zeros over the entries of the kernels (ndim >= 2 leaves)."""
  leaves = [p for p in jax.tree.leaves(params) if jnp.ndim(p) >= 2]
  total = sum(int(p.size) for p in leaves)
  return sum(int(jnp.sum(p == 0)) for p in leaves) / total


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
  extra: Any = None


def make_evaluator(gd):
  def eval_step(params, x, y):
    logits = _apply(gd, params, x)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    return jnp.sum(loss), jnp.sum(jnp.argmax(logits, -1) == y)
  eval_step = jax.jit(eval_step)

  def evaluate(params, x, y):
    n = len(y)
    loss = correct = 0.0
    outs = [eval_step(params, x[i:i + EVAL_BATCH], y[i:i + EVAL_BATCH])
            for i in range(0, n, EVAL_BATCH)]
    for l, c in outs:
      loss += float(l)
      correct += float(c)
    return loss / n, correct / n
  return evaluate


class Trainer:
  """The jitted step of one (model, optimizer[, hooks]); reused across seeds.

  ``hooks`` (optional, for RigL's masks) has ``init(params, seed) -> aux``,
  ``grads(aux, grads) -> grads`` and ``params(aux, params) -> params``
  (applied inside the jitted step, before / after the update), ``due(step)``
  and ``update(aux, params, grads, step) -> (aux, params)`` (called by the
  host after step ``step`` with that step's dense gradient when due).
  """

  def __init__(self, model_name: str, tx: optax.GradientTransformation, data: Data,
               *, batch_size: int = 128, hooks: Optional[Any] = None):
    self.model_name, self.tx, self.data = model_name, tx, data
    self.batch_size, self.hooks = batch_size, hooks
    self.gd, _ = make_model(model_name, data, 0)
    gd = self.gd

    def loss_fn(p, x, y):
      logits = _apply(gd, p, x)
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    def step(params, opt_state, loss_sum, aux, x_all, y_all, perm, i):
      idx = jax.lax.dynamic_index_in_dim(perm, i, keepdims=False)
      x, y = x_all[idx], y_all[idx]
      loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
      raw_grads = grads
      if hooks is not None:
        grads = hooks.grads(aux, grads)
      updates, opt_state = tx.update(grads, opt_state, params)
      params = optax.apply_updates(params, updates)
      if hooks is not None:
        params = hooks.params(aux, params)
        return params, opt_state, loss_sum + loss, raw_grads
      return params, opt_state, loss_sum + loss, None

    self.step = jax.jit(step, donate_argnums=(0, 1, 2))
    self.evaluate = make_evaluator(gd)

  def run(self, *, epochs: int, seed: int = 0,
          reported: Optional[Callable[[Any, Any], Any]] = None,
          log: Optional[Callable[[str], None]] = None) -> Result:
    """Trains from the initialisation of ``seed``; metrics at the reported point.

    ``reported``: ``(params, opt_state) -> params``, the point to report (e.g.
    RMDA's ``structured_params``); default: the iterate.
    """
    data, hooks, bs = self.data, self.hooks, self.batch_size
    _, params = make_model(self.model_name, data, seed)
    params = jax.tree.map(jnp.asarray, params)
    aux = hooks.init(params, seed) if hooks is not None else None
    if hooks is not None:
      params = hooks.params(aux, params)
    opt_state = jax.tree.map(lambda x: jnp.array(x, copy=True), self.tx.init(params))
    n = int(data.y_train.shape[0])
    steps_per_epoch = n // bs
    if steps_per_epoch < 1:
      raise ValueError(f"batch_size {bs} larger than the training set ({n})")
    rng = np.random.default_rng([seed, 12345])
    t0 = time.perf_counter()
    count = 0
    train_loss = float("nan")
    for epoch in range(epochs):
      perm = jnp.asarray(rng.permutation(n)[: steps_per_epoch * bs]
                         .reshape(steps_per_epoch, bs).astype(np.int32))
      loss_sum = jnp.zeros([], jnp.float32)
      for i in range(steps_per_epoch):
        params, opt_state, loss_sum, grads = self.step(
            params, opt_state, loss_sum, aux, data.x_train, data.y_train, perm,
            jnp.asarray(i, jnp.int32))
        count += 1
        if hooks is not None and hooks.due(count):
          aux, params = hooks.update(aux, params, grads, count)
      train_loss = float(loss_sum) / steps_per_epoch
      if log is not None:
        log(f"    epoch {epoch + 1}/{epochs} train loss {train_loss:.4f} "
            f"({time.perf_counter() - t0:.1f}s)")
    point = reported(params, opt_state) if reported is not None else params
    point = jax.block_until_ready(point)
    wall = time.perf_counter() - t0
    test_loss, test_acc = self.evaluate(point, data.x_test, data.y_test)
    return Result(params, opt_state, point, test_acc, test_loss, train_loss, wall,
                  count, aux)


def steps_per_epoch(data: Data, batch_size: int) -> int:
  return int(data.y_train.shape[0]) // batch_size


def mean_std(xs):
  xs = [float(x) for x in xs]
  if not xs:
    return {"mean": None, "std": None, "n": 0, "values": []}
  return {"mean": float(np.mean(xs)), "std": float(np.std(xs, ddof=1)) if len(xs) > 1 else 0.0,
          "n": len(xs), "values": xs}
