"""The --quick modes of benchmarks.bench_scale and benchmarks.gpu run and write well-formed results.

Values are what the benchmarks measure, except the bytes of data
parallelism, which are known: one all-reduce of the gradient and the loss.
"""

import json
import math

import pytest

from benchmarks import bench_scale, gpu, render


def _finite(x):
  return isinstance(x, (int, float)) and math.isfinite(x)


@pytest.mark.slow
def test_scale_quick(tmp_path):
  out = bench_scale.main(["--quick", "--out", str(tmp_path)])
  d = json.loads((tmp_path / "scale.json").read_text())
  assert d == json.loads(json.dumps(out))
  assert d["quick"] is True and set(d["runs"]) == {"1", "2"}
  one, two = d["runs"]["1"]["train_step"], d["runs"]["2"]["train_step"]
  assert set(one) == {"dp/rmda", "dp/sgd", "single/rmda", "single/sgd"}
  assert set(two) == {"dp/rmda", "dp/sgd", "fsdp/rmda", "fsdp/sgd"}
  n = d["runs"]["2"]["num_params"]
  for r in one.values():
    assert r["bytes_per_step"] == 0 and _finite(r["step_ms_median"])
  for name in ("dp/rmda", "dp/sgd"):
    assert two[name]["by_op"] == {"all-reduce": 4 * (n + 1)}  # gradient + loss
  for name in ("fsdp/rmda", "fsdp/sgd"):
    assert set(two[name]["by_op"]) == {"all-gather", "all-reduce"}
    assert two[name]["bytes_per_step"] <= 2 * 4 * n + 1024
  assert two["fsdp/rmda"]["bytes_per_step"] >= two["fsdp/sgd"]["bytes_per_step"]
  assert two["dp/rmda"]["mesh"] == {"data": 2, "fsdp": 1, "devices": 2, "processes": 1,
                                    "platform": "cpu"}
  md = render.scale(d)
  assert f"| 2 | {4 * (n + 1):,} | {4 * (n + 1):,} |" in md


def test_gpu_quick_runs_on_cpu(tmp_path):
  out = gpu.main(["--quick", "--out", str(tmp_path)])
  d = json.loads((tmp_path / "gpu.json").read_text())
  assert d["quick"] is True and d["device"]["platform"] == out["device"]["platform"]
  assert d["bandwidth"]["reference_GBps"] > 0
  res = d["update"]["results"]
  assert set(res) == set(gpu.UPDATE_OPTIMIZERS)
  assert d["update"]["num_params"] == 61_706  # quick: LeNet5 (small), PyTorch's count
  ref = d["bandwidth"]["reference_GBps"]
  for name, r in res.items():
    # At least MIN_PASSES float32 passes over the parameters, at the step's speed.
    assert r["bytes_moved_at_least"] == r["min_passes"] * 4 * 61_706, name
    achieved = r["bytes_moved_at_least"] / (r["median_ms"] / 1e3) / 1e9
    assert r["fraction_of_bandwidth"] == pytest.approx(achieved / ref, rel=1e-9), name
  row = d["epochs"]["lenet5"]
  for v in ("jax+rmda", "jax+sgd"):
    assert row[v]["steps"] == 5
    # An epoch is the measured step time times the steps of the (quick) epoch.
    assert row[v]["epoch_s"] == pytest.approx(
        row[v]["step_ms"] / 1e3 * (row["train_images"] // row["batch"]), rel=1e-9)
  if d["epochs"]["torch_note"] is None:  # PyTorch installed: compared on the same device
    assert _finite(row["torch+sgd"]["epoch_s"])
    assert isinstance(d["epochs"]["torch_flush_denormal"], bool)  # set, and recorded
  else:
    assert "torch+sgd" not in row
  # A quick run is not rendered as results; a full record of the same form is.
  assert "Not run yet" in render.gpu(d) and "Not run yet" in render.gpu(None)
  md = render.gpu({**d, "quick": False})
  assert "| rmda (group_lasso) |" in md and "| lenet5 | jax+rmda |" in md
