"""The --quick modes of the accuracy benchmarks run and write well-formed results.

Checks the form of the results (files, keys, value ranges), not their values.
Both benchmarks train on a small MNIST subset (fetched once into the cache
like rmda-train does) and take about a minute or two each on a 2-core CPU.
Each runs as ``python -m benchmarks.<name>`` in a process of its own: the
XLA:CPU flag it sets (as rmda-train does) only acts before JAX starts.
"""

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[1]


def _run(module, out, *flags):
  proc = subprocess.run([sys.executable, "-m", f"benchmarks.{module}", "--quick",
                         "--out", str(out), *flags], cwd=ROOT, capture_output=True, text=True,
                        timeout=600)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  return proc


def _is_frac(x):
  return isinstance(x, float) and 0.0 <= x <= 1.0


def _check_runs_and_table(d, keys):
  """Each run's accuracy counts the quick mode's 1000 test images; each table row
  is the mean and sample std of its runs."""
  for r in d["runs"]:
    assert abs(1000 * r["test_accuracy"] - round(1000 * r["test_accuracy"])) < 1e-6, r
  assert d["table"]
  for row in d["table"]:
    acc = [r["test_accuracy"] for r in d["runs"] if all(r[k] == row[k] for k in keys)]
    assert row["test_accuracy"]["n"] == len(acc) >= 2
    assert row["test_accuracy"]["mean"] == pytest.approx(statistics.mean(acc), abs=1e-12)
    assert row["test_accuracy"]["std"] == pytest.approx(statistics.stdev(acc), abs=1e-12)


def _check_machine(d):
  for k in ("cpu", "cpu_count", "jax", "optax", "flax", "python", "date",
            "load_average_start"):
    assert k in d["machine"], k
  assert isinstance(d["wall_s"], float) and d["wall_s"] > 0
  assert d["complete"] is True
  assert d["quick"] is True


@pytest.mark.slow
def test_bench_sparsity_accuracy_quick(tmp_path, mnist):
  # One of the quick mode's two models (the conv net; bench_rigl's quick mode
  # below trains the MLP through the same common.make_run): every method.
  _run("bench_sparsity_accuracy", tmp_path, "--models", "lenet5_small")
  d = json.loads((tmp_path / "sparsity_accuracy_quick.json").read_text())
  _check_machine(d)
  assert (tmp_path / "sparsity_accuracy_quick.png").stat().st_size > 0
  assert d["settings"]["total_steps"] > 0
  assert {r["method"] for r in d["runs"]} == {"rmda", "prox_sgd", "prox_adam", "prox_ssi", "msgd"}
  for r in d["runs"]:
    for k in ("test_accuracy", "group_sparsity", "weighted_group_sparsity",
              "kernel_sparsity"):
      assert _is_frac(r[k]), (k, r)
  _check_runs_and_table(d, ("model", "method", "lam"))
  for row in d["table"]:
    assert _is_frac(row["weighted_group_sparsity"]["mean"])
  assert any(r["method"] == "rmda" for r in d["sweep"])


@pytest.mark.slow
def test_bench_rigl_quick(tmp_path, mnist):
  _run("bench_rigl", tmp_path, "--targets", "0.9")  # one target: the pipeline, in less CI time
  d = json.loads((tmp_path / "rigl_quick.json").read_text())
  _check_machine(d)
  assert {r["method"] for r in d["runs"]} == {"rmda_l1", "rigl"}
  assert d["tuning"]
  for r in d["runs"]:
    assert _is_frac(r["test_accuracy"]) and _is_frac(r["kernel_sparsity"])
  _check_runs_and_table(d, ("model", "target", "method"))
  for r in d["runs"]:
    if r["method"] == "rigl":  # RigL holds its sparsity (up to weights that are exactly 0)
      assert abs(r["kernel_sparsity"] - r["target"]) < 0.01
      assert r["mask_updates"] > 0
