"""The --quick modes of the accuracy benchmarks run and write well-formed results.

Checks the form of the results (files, keys, value ranges), not their values.
Both benchmarks train on a small MNIST subset (fetched once into the cache
like rmda-train does) and take about a minute or two each on a 2-core CPU.
"""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(script, out):
  proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--quick",
                         "--out", str(out)], capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  return proc


def _is_frac(x):
  return isinstance(x, float) and 0.0 <= x <= 1.0


def _check_machine(d):
  for k in ("cpu", "cpu_count", "jax", "optax", "flax", "python", "date"):
    assert k in d["machine"], k
  assert isinstance(d["wall_s"], float) and d["wall_s"] > 0
  assert d["complete"] is True
  assert d["quick"] is True


@pytest.mark.slow
def test_bench_sparsity_accuracy_quick(tmp_path):
  _run("bench_sparsity_accuracy.py", tmp_path)
  d = json.loads((tmp_path / "sparsity_accuracy_quick.json").read_text())
  _check_machine(d)
  assert (tmp_path / "sparsity_accuracy_quick.png").stat().st_size > 0
  assert d["settings"]["total_steps"] > 0
  methods = {r["method"] for r in d["runs"]}
  assert {"rmda", "msgd"} <= methods
  assert methods | set(d["missing_methods"]) == {
      "rmda", "prox_sgd", "prox_adam", "prox_ssi", "msgd"}
  for r in d["runs"]:
    for k in ("test_accuracy", "group_sparsity", "weighted_group_sparsity",
              "kernel_sparsity"):
      assert _is_frac(r[k]), (k, r)
  for row in d["table"]:
    assert row["test_accuracy"]["n"] >= 2
    assert math.isfinite(row["test_accuracy"]["std"])
    assert _is_frac(row["weighted_group_sparsity"]["mean"])
  assert any(r["method"] == "rmda" for r in d["sweep"])


@pytest.mark.slow
def test_bench_rigl_quick(tmp_path):
  _run("bench_rigl.py", tmp_path)
  d = json.loads((tmp_path / "rigl_quick.json").read_text())
  _check_machine(d)
  assert {r["method"] for r in d["runs"]} == {"rmda_l1", "rigl"}
  assert d["tuning"]
  for r in d["runs"]:
    assert _is_frac(r["test_accuracy"]) and _is_frac(r["kernel_sparsity"])
  for row in d["table"]:
    assert row["test_accuracy"]["n"] >= 2
  for r in d["runs"]:
    if r["method"] == "rigl":  # RigL holds its sparsity (up to weights that are exactly 0)
      assert abs(r["kernel_sparsity"] - r["target"]) < 0.01
      assert r["mask_updates"] > 0


def _bench_module(name):
  sys.path.insert(0, str(ROOT / "benchmarks"))
  try:
    return __import__(name)
  finally:
    sys.path.remove(str(ROOT / "benchmarks"))


def test_erk_densities_meet_the_target():
  rigl = _bench_module("bench_rigl")
  shapes = {"conv1": (5, 5, 1, 20), "conv2": (5, 5, 20, 50), "fc1": (800, 500),
            "fc2": (500, 10)}
  for s in (0.9, 0.95):
    dens = rigl.erk_densities(shapes, s)
    n = {k: np.prod(v) for k, v in shapes.items()}
    kept = sum(dens[k] * n[k] for k in shapes)
    assert kept == pytest.approx((1 - s) * sum(n.values()), rel=1e-9)
    assert all(0 < d <= 1 for d in dens.values())
    assert dens["conv1"] > dens["fc1"] and dens["fc2"] > dens["fc1"]  # small layers denser
  assert rigl.erk_densities({"a": (3, 2), "b": (1000, 1000)}, 0.9)["a"] == 1.0  # capped


def test_rigl_update_keeps_the_count_and_moves_the_mask():
  import jax
  import jax.numpy as jnp
  rigl = _bench_module("bench_rigl")
  key = jax.random.PRNGKey(0)
  params = {"k": jax.random.normal(key, (40, 30)), "b": jnp.ones(30)}
  hooks = rigl.RigL(0.9, 100, delta_t=10)
  masks = hooks.init(params, 0)
  params = hooks.params(masks, params)
  assert int(masks["k"].sum()) == 120 and bool(masks["b"].all())
  grads = {"k": jax.random.normal(jax.random.fold_in(key, 1), (40, 30)),
           "b": jnp.ones(30)}
  new_masks, new_params = hooks.update(masks, params, grads, 10)
  assert int(new_masks["k"].sum()) == 120
  grown = new_masks["k"] & ~masks["k"]
  dropped = masks["k"] & ~new_masks["k"]
  frac = 0.3 / 2 * (1 + np.cos(np.pi * 10 / 75))
  k = int(np.floor(frac * 120))
  # k dropped, k grown; a just-dropped weight may be regrown (then it restarts at 0).
  assert 0 < int(grown.sum()) == int(dropped.sum()) <= k
  assert bool(jnp.all(new_params["k"][grown] == 0))       # grown weights start at 0
  assert bool(jnp.all(new_params["k"][~new_masks["k"]] == 0))
  # dropped weights were the smallest active magnitudes
  # (a dropped-then-regrown weight stays in both masks but restarts at 0)
  kept_mag = jnp.abs(params["k"])[masks["k"] & new_masks["k"] & (new_params["k"] != 0)]
  assert float(jnp.abs(params["k"])[dropped].max()) <= float(kept_mag.min())
  # grown weights had the largest gradients outside the kept set
  outside = ~(masks["k"] & new_masks["k"])
  g = jnp.abs(grads["k"])
  assert float(g[new_masks["k"] & outside].min()) >= float(g[outside & ~new_masks["k"]].max())
