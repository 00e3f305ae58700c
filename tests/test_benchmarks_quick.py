"""The --quick mode of each benchmark runs and writes well-formed results.

Values are not checked (they are what the benchmarks measure); structure is.
"""

import json
import math

import pytest

from benchmarks import bench_cost, bench_identification
from rmda_jax.examples import data


def _mnist_available():
  try:
    data.load_mnist(download=True, verbose=False)
    return True
  except data.DatasetError:  # no cache and no network: the benchmark cannot run
    return False


def _finite(x):
  return isinstance(x, (int, float)) and math.isfinite(x)


def test_identification_quick(tmp_path):
  if not _mnist_available():
    pytest.skip("MNIST not available (no cache, no network)")
  out = bench_identification.main(["--quick", "--out", str(tmp_path)])
  on_disk = json.loads((tmp_path / "identification.json").read_text())
  assert on_disk["quick"] is True and on_disk["optimum"]["groups"] == 784
  assert (tmp_path / "identification.png").stat().st_size > 1000
  assert _finite(on_disk["optimum"]["residual"])
  assert set(on_disk["methods"]) == {"RMDA", "ProxSGD", "ProxGen", "ProxSSI"}
  assert set(on_disk["methods"]["RMDA"]["history"]) == {"W", "Z"}
  epochs = out["settings"]["epochs"]
  for res in on_disk["methods"].values():
    for hist in res["history"].values():
      assert [h["epoch"] for h in hist] == list(range(1, epochs + 1))
      assert hist[0]["changes"] is None
      for h in hist:
        assert 0 <= h["support_match"] <= 1
        assert _finite(h["objective_gap"]) and _finite(h["distance"])
        assert h["changes"] is None or h["changes"] >= 0


def test_cost_quick(tmp_path):
  bench_cost.main(["--quick", "--out", str(tmp_path)])
  d = json.loads((tmp_path / "cost.json").read_text())
  assert set(d["models"]) == {"lenet5"}
  for m in d["models"].values():
    res = m["results"]
    assert res["optax.sgd(momentum=0.9)"]["ratio_to_sgd"] == 1.0
    assert {"rmda (none)", "rmda (group_lasso)", "prox_sgd (group_lasso)"} <= set(res)
    for r in res.values():
      assert r["median_ms"] > 0 and _finite(r["ratio_to_sgd"])
      assert 0 < r["fraction_of_bound"]
    assert m["memory_bandwidth_GBps"] > 0
