"""Reusable pieces for timing one optimizer step on realistic pytrees.

* Parameter pytrees shaped like the papers' models, in Flax layouts (conv
  kernels HWIO, Dense kernels ``(in, out)``, 1-D biases and BatchNorm
  scale/bias), written by hand from shared/docs/rmda.md section 6:
  :func:`lenet5_shapes`, :func:`vgg19_shapes`, :func:`resnet50_shapes`.
* :func:`time_steps`: the jitted ``update + apply_updates`` step with donated
  params and optimizer state, every optimizer timed *interleaved* (round
  robin, one step each per round) so that drift (thermal, other processes)
  hits all of them alike; median over the rounds.
* :func:`memory_bandwidth`: a streaming ``x * 1.0001 + y`` kernel, measured
  in the same run, to read step times as "passes over the parameters".
* :func:`machine_info`: what to record next to the numbers.
"""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import time
from typing import Any, Callable, Dict, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

Shapes = Dict[str, Any]  # nested dict of shape tuples


# ------------------------------------------------------------------ models
def _conv(kh, kw, cin, cout, bias=True) -> Shapes:
  s = {"kernel": (kh, kw, cin, cout)}
  if bias:
    s["bias"] = (cout,)
  return s


def _dense(din, dout) -> Shapes:
  return {"kernel": (din, dout), "bias": (dout,)}


def _bn(c) -> Shapes:
  return {"scale": (c,), "bias": (c,)}


def lenet5_shapes(num_classes: int = 10, large: bool = False) -> Shapes:
  """LeNet5 for 28x28 MNIST: small (6-16 / 400-120-84) or large (20-50 / 800-500)."""
  if large:
    return {"conv1": _conv(5, 5, 1, 20), "conv2": _conv(5, 5, 20, 50),
            "fc1": _dense(800, 500), "fc2": _dense(500, num_classes)}
  return {"conv1": _conv(5, 5, 1, 6), "conv2": _conv(5, 5, 6, 16),
          "fc1": _dense(400, 120), "fc2": _dense(120, 84),
          "fc3": _dense(84, num_classes)}


_VGG19 = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
          512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]


def vgg19_shapes(num_classes: int = 10) -> Shapes:
  """VGG19-BN for 32x32 inputs: 16 conv3x3 (+bias) + BN, classifier 512 -> classes."""
  shapes, cin, i = {}, 3, 0
  for v in _VGG19:
    if v == "M":
      continue
    shapes[f"conv{i}"] = _conv(3, 3, cin, v)
    shapes[f"bn{i}"] = _bn(v)
    cin, i = v, i + 1
  shapes["classifier"] = _dense(512, num_classes)
  return shapes


def resnet50_shapes(num_classes: int = 10) -> Shapes:
  """ResNet50 for CIFAR: 3x3 stride-1 stem, no max-pool, bottlenecks [3, 4, 6, 3].

  Convolutions have no bias (BatchNorm follows each); a projection shortcut
  (1x1 conv + BN) where the stride or the width changes.
  """
  shapes = {"stem": {"conv": _conv(3, 3, 3, 64, bias=False), "bn": _bn(64)}}
  cin = 64
  for stage, (planes, blocks) in enumerate(zip([64, 128, 256, 512],
                                               [3, 4, 6, 3])):
    for b in range(blocks):
      stride = 2 if (stage > 0 and b == 0) else 1
      block = {
          "conv1": _conv(1, 1, cin, planes, bias=False), "bn1": _bn(planes),
          "conv2": _conv(3, 3, planes, planes, bias=False), "bn2": _bn(planes),
          "conv3": _conv(1, 1, planes, 4 * planes, bias=False),
          "bn3": _bn(4 * planes),
      }
      if stride != 1 or cin != 4 * planes:
        block["shortcut"] = {"conv": _conv(1, 1, cin, 4 * planes, bias=False),
                             "bn": _bn(4 * planes)}
      shapes[f"layer{stage + 1}_{b}"] = block
      cin = 4 * planes
  shapes["fc"] = _dense(2048, num_classes)
  return shapes


MODELS: Dict[str, Callable[[], Shapes]] = {
    "lenet5": lenet5_shapes,
    "vgg19": vgg19_shapes,
    "resnet50": resnet50_shapes,
}


def _is_shape(x) -> bool:
  return isinstance(x, tuple) and all(isinstance(d, int) for d in x)


def num_params(shapes: Shapes) -> int:
  return int(sum(np.prod(s) for s in jax.tree.leaves(shapes, is_leaf=_is_shape)))


def make_params(shapes: Shapes, seed: int = 0, dtype=jnp.float32,
                scale: float = 0.05):
  """Random normal leaves of the given shapes (BN scales start at 1)."""
  leaves, treedef = jax.tree.flatten(shapes, is_leaf=_is_shape)
  keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
  paths = [jax.tree_util.keystr(p) for p, _ in
           jax.tree_util.tree_flatten_with_path(shapes, is_leaf=_is_shape)[0]]
  out = []
  for key, shape, path in zip(keys, leaves, paths):
    if path.endswith("['scale']"):
      out.append(jnp.ones(shape, dtype))
    else:
      out.append((scale * jax.random.normal(key, shape)).astype(dtype))
  return jax.tree.unflatten(treedef, out)


# ------------------------------------------------------------------ timing
def make_step(tx: optax.GradientTransformation):
  """``(params, state, grads) -> (params, state)``, jitted, params/state donated."""

  def step(params, opt_state, grads):
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  return jax.jit(step, donate_argnums=(0, 1))


def _copy(tree):
  return jax.tree.map(lambda x: jnp.array(x, copy=True), tree)


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
  on CPU mostly measures page faults (about 10x slower on the machine this
  was written on).
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


def machine_info() -> Dict[str, Any]:
  cpu = platform.processor()
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          cpu = line.split(":", 1)[1].strip()
          break
  except OSError:
    pass
  return {
      "platform": platform.platform(),
      "python": platform.python_version(),
      "cpu": cpu,
      "cpu_count": os.cpu_count(),
      "jax_backend": jax.default_backend(),
      "devices": [str(d) for d in jax.devices()],
      "jax": jax.__version__,
      "optax": optax.__version__,
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec="seconds"),
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
  }
