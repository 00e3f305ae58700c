"""benchmarks.bench_slim: the zero patterns it draws, and its --quick run's results file."""

import json

import numpy as np
import pytest

pytest.importorskip("flax")
pytest.importorskip("orbax.checkpoint")

from benchmarks import bench_slim  # noqa: E402
from rmda_jax.examples import slimming  # noqa: E402


def get(model, path):
  for part in path.split("/"):
    model = model[int(part)] if part.isdigit() else getattr(model, part)
  return model


def test_zero_input_groups_zeroes_the_stated_fraction_of_every_layer_but_the_first():
  rng = np.random.default_rng(0)
  model = bench_slim.random_model("resnet50", (8, 8, 3), rng, num_blocks=(1, 1))
  zeroed = bench_slim.zero_input_groups(model, 0.5, rng, "conv1")
  layers = slimming.layer_channels(model)
  assert set(zeroed) == set(layers) - {"conv1"}
  assert list(zeroed)[:3] == ["blocks/0/conv1", "blocks/0/conv2", "blocks/0/conv3"]
  for name, (k, n) in zeroed.items():
    kernel = np.asarray(get(model, name).kernel[...])
    rows_zero = ~np.any(kernel.reshape(-1, *kernel.shape[-2:]) != 0, axis=(0, 2))
    assert n == kernel.shape[-2] and k == round(0.5 * n) == int(rows_zero.sum()), name
  assert np.all(np.asarray(model.conv1.kernel[...]) != 0)   # the image channels stay dense
  with pytest.raises(ValueError, match="no layer 'stem'"):
    bench_slim.zero_input_groups(model, 0.5, rng, "stem")


@pytest.mark.slow
def test_quick_run_writes_the_results_file(tmp_path):
  out = bench_slim.main(["--quick", "--out", str(tmp_path)])
  on_disk = json.loads((tmp_path / "slim.json").read_text())
  assert on_disk["quick"] is True and on_disk == json.loads(json.dumps(out))
  assert [r["zero_pattern"] for r in on_disk["results"]] == [
      "trained (Z)", "random per layer", "random heads and units per block"]
  lenet, resnet, vit = on_disk["results"]
  assert lenet["batch"] == 359 and lenet["params_before"] == 61706   # digits' test set
  summary = json.loads((tmp_path / "lenet5" / "summary.json").read_text())
  assert on_disk["lenet5_run"]["group_sparsity"] == summary["group_sparsity"]
  for r in on_disk["results"]:
    assert r["params_after"] < r["params_before"]
    assert r["macs_per_example_after"] < r["macs_per_example_before"]
    assert r["channels_after"] < r["channels_before"]
    assert r["ms_per_batch_before"] > 0 and r["ms_per_batch_after"] > 0
    assert r["params_before"] == sum(l["params_before"] for l in r["report"]["layers"])
  assert len(on_disk["table"]) == 3 and on_disk["machine"]["cpu_count"]
  # The ViT loses exactly the heads and units zeroed (coupled groups, every block).
  zeroed = vit["groups_zeroed"]
  assert vit["heads_before"] == sum(b["heads"][1] for b in zeroed.values()) == 8
  assert vit["heads_after"] == 8 - sum(b["heads"][0] for b in zeroed.values()) == 4
  assert vit["mlp_units_after"] == 128 - sum(b["units"][0] for b in zeroed.values()) == 64

  # --update measures some models again and keeps the other rows.
  again = bench_slim.main(["--quick", "--models", "vit", "--update", "--out", str(tmp_path)])
  assert [r["model"] for r in again["results"]] == [r["model"] for r in on_disk["results"]]
  assert again["results"][:2] == on_disk["results"][:2]
  assert again["lenet5_run"] == on_disk["lenet5_run"]


def test_zero_heads_and_units_zeroes_whole_coupled_groups():
  rng = np.random.default_rng(1)
  model = bench_slim.random_model("vit_tiny", (8, 8, 1), rng)
  zeroed = bench_slim.zero_heads_and_units(model, 0.5, rng)
  assert zeroed == {f"blocks/{i}": {"heads": [2, 4], "units": [32, 64]} for i in range(2)}
  for b in model.blocks:
    out = np.asarray(b.attn.out.kernel[...])
    heads = ~np.any(out != 0, axis=(1, 2))
    assert heads.sum() == 2
    for proj in (b.attn.query, b.attn.key, b.attn.value):
      k, bias = np.asarray(proj.kernel[...]), np.asarray(proj.bias[...])
      np.testing.assert_array_equal(~np.any(k != 0, axis=(0, 2)), heads)
      np.testing.assert_array_equal(~np.any(bias != 0, axis=1), heads)
    units = ~np.any(np.asarray(b.fc2.kernel[...]) != 0, axis=1)
    assert units.sum() == 32
    np.testing.assert_array_equal(~np.any(np.asarray(b.fc1.kernel[...]) != 0, axis=0), units)
    np.testing.assert_array_equal(np.asarray(b.fc1.bias[...]) == 0, units)
