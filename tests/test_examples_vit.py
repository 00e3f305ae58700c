"""vit_tiny of rmda_jax.examples.models: shapes, parameter count by hand, pooling."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rmda_jax.examples import models


def vit_params(input_shape, dim=32, depth=2, mlp=64, classes=10, cls=True):
  """Parameter count written from the architecture (not from the code)."""
  h, w, c = input_shape
  p = min(h, w) // 4
  tokens = (h // p) * (w // p) + (1 if cls else 0)
  block = (2 * 2 * dim                    # two LayerNorms (scale, bias)
           + 4 * dim * dim + 4 * dim      # q, k, v, out kernels and biases
           + dim * mlp + mlp + mlp * dim + dim)
  return ((p * p * c) * dim + dim + (dim if cls else 0) + tokens * dim
          + depth * block + 2 * dim + dim * classes + classes)


@pytest.mark.parametrize("shape", [(28, 28, 1), (8, 8, 1), (32, 32, 3)])
def test_vit_tiny_shapes_and_count(shape):
  model = models.get_model("vit_tiny", 10, nnx.Rngs(0), shape)
  assert models.count_params(model) == vit_params(shape)
  out = model(jnp.ones((2, *shape)))
  assert out.shape == (2, 10) and bool(jnp.all(jnp.isfinite(out)))
  assert model.patch == min(shape[:2]) // 4 and model.grid == (4, 4)


def test_vit_tiny_mean_pooling_and_patches():
  model = models.ViTTiny(10, rngs=nnx.Rngs(0), input_shape=(8, 8, 1), pool="mean")
  assert models.count_params(model) == vit_params((8, 8, 1), cls=False)
  x = jnp.arange(2 * 8 * 8, dtype=jnp.float32).reshape(2, 8, 8, 1)
  patches = np.asarray(model.patches(x))
  # Patch (i, j) of image n holds x[n, 2i:2i+2, 2j:2j+2] row-major.
  np.testing.assert_array_equal(patches[1, 4 * 2 + 3],
                                np.asarray(x)[1, 4:6, 6:8, 0].ravel())
  with pytest.raises(ValueError, match="pool"):
    models.ViTTiny(10, rngs=nnx.Rngs(0), pool="max")


def test_units_kept_per_block():
  from rmda_jax.examples import report
  support = {"blocks/0/attn heads": np.array([True, False, True, True]),
             "blocks/1/attn heads": np.array([False] * 4),
             "blocks/0 neurons": np.array([True] * 5 + [False] * 3),
             "blocks/1 neurons": np.array([True] * 8)}
  kept = report.units_kept(support)
  assert kept == {"heads_kept": {"blocks/0/attn": "3/4", "blocks/1/attn": "0/4"},
                  "neurons_kept": {"blocks/0": "5/8", "blocks/1": "8/8"}}
  assert report.units_words(kept) == "heads 3/4 0/4  neurons 5/8 8/8"


def test_rmda_train_heads_and_neurons_reports_per_block(tmp_path):
  import json

  from rmda_jax.examples import config, train
  argv = ["--dataset", "digits", "--model", "vit_tiny", "--regularizer", "heads_and_neurons",
          "--strength", "0.05", "--epochs", "2", "--milestones", "none", "--lr", "0.3",
          "--no-progress", "--output-dir", str(tmp_path)]
  lines = []
  summary = train.train(config.parse_args(argv), log=lambda *a, **k: lines.append(" ".join(
      map(str, a))))
  rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  epoch_lines = [l for l in lines if l.startswith("epoch")]
  assert len(rows) == len(epoch_lines) == 2
  for row, line in zip(rows, epoch_lines):
    assert set(row["heads_kept"]) == {"blocks/0/attn", "blocks/1/attn"}
    assert set(row["neurons_kept"]) == {"blocks/0", "blocks/1"}
    heads, neurons = row["heads_kept"].values(), row["neurons_kept"].values()
    assert f"heads {' '.join(heads)}  neurons {' '.join(neurons)}" in line
  # This strength removes heads, in all their slices (groups_kept counts per family).
  kept = summary["groups_kept"]
  assert kept["['blocks/0/attn heads']"] == rows[-1]["heads_kept"]["blocks/0/attn"]
  assert any(not v.startswith("4/") for v in rows[-1]["heads_kept"].values())


def test_heads_and_neurons_needs_a_transformer(capsys):
  from rmda_jax.examples import config
  with pytest.raises(SystemExit) as e:
    config.parse_args(["--model", "mlp", "--regularizer", "heads_and_neurons"])
  assert e.value.code == 2
  err = capsys.readouterr().err.strip().splitlines()[-1]
  assert err.startswith("rmda-train: error:") and "--regularizer" in err and "vit_tiny" in err
