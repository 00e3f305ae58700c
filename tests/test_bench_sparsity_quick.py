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
