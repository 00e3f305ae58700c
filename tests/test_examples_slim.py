"""rmda-train --slim on sklearn digits: the slim model written equals the structured model.

The structured model is rebuilt here from the run's last checkpoint (its
structured point Z, ``rmda_jax.structured_params``, and BatchNorm statistics),
not from what --slim computed; the channels that must go are counted here from
Z's zero kernel rows and LeNet5's architecture (who reads which channel).
"""

import json
import re
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("flax")
pytest.importorskip("orbax.checkpoint")

from flax import nnx  # noqa: E402

import rmda_jax as rj  # noqa: E402
from rmda_jax import slim as slim_lib  # noqa: E402
from rmda_jax.examples import config  # noqa: E402
from rmda_jax.examples import data as data_lib  # noqa: E402
from rmda_jax.examples import models  # noqa: E402
from rmda_jax.examples import slimming  # noqa: E402
from rmda_jax.examples import train  # noqa: E402

TOL = dict(rtol=2e-5, atol=2e-5)   # float32 rounding: the slim sums skip zero terms


def run_args(strength, out):
  # One epoch on digits (1438 train images, padded to 28x28) at a constant lr: with
  # strength 3e-3 RMDA's Z has zeroed input groups whose channels can go.
  return ["--dataset", "digits", "--model", "lenet5_small", "--batch-size", "32",
          "--epochs", "1", "--milestones", "none", "--lr", "1.0", "--strength", str(strength),
          "--no-progress", "--output-dir", str(out)]


def structured_model(argv):
  """The model at Z of the run's last checkpoint, in eval mode, and the run's dataset."""
  cfg = config.parse_args(argv)
  ds = train.prepare_data(cfg)
  trainer = train.Trainer(cfg, ds, len(ds.y_train) // cfg.batch_size)
  ckpt = train.Checkpointer(Path(cfg.output_dir) / "checkpoints")
  state, _ = ckpt.restore(ckpt.latest_epoch(), trainer.init_state(), np.zeros(2, np.uint32))
  ckpt.close()
  z = rj.structured_params(state.opt_state, trainer.reg)
  return nnx.merge(trainer.parts.graphdef_eval, z, state.batch_stats), ds


def eval_inputs(ds):
  """All test images, normalised as the evaluation step does."""
  return data_lib.normalize(jnp.asarray(ds.x_test), ds)


def outputs(model, x):
  return np.asarray(nnx.jit(lambda m, x: m(x))(model, x))


def zero_rows(model, layer):
  k = np.asarray(getattr(model, layer).kernel[...])
  return ~np.any(k.reshape(-1, k.shape[-2], k.shape[-1]) != 0, axis=(0, 2))


def expected_channels(model):
  """LeNet5 (small): output channels each layer keeps, from the zero rows of its reader."""
  conv2_rows, fc1_rows = zero_rows(model, "conv2"), zero_rows(model, "fc1")
  fc2_rows, fc3_rows = zero_rows(model, "fc2"), zero_rows(model, "fc3")
  # fc1 reads the flattened 5x5x16 map: conv2's channel c is row p * 16 + c.
  conv2_gone = fc1_rows.reshape(25, 16).all(axis=0)
  return {"conv1": int((~conv2_rows).sum()), "conv2": int((~conv2_gone).sum()),
          "fc1": int((~fc2_rows).sum()), "fc2": int((~fc3_rows).sum()), "fc3": 10}


def test_slim_flag_has_help_and_is_off_by_default():
  assert config.parse_args([]).slim is False
  assert config.parse_args(["--slim"]).slim is True
  text = config.build_parser().format_help()
  start = text.index("\n  --slim") + 1
  slim_help = " ".join(text[start:text.find("\n  -", start + 1)].split())
  assert "OUTPUT_DIR/slim" in slim_help and "rmda_jax.slim.load" in slim_help
  assert "(default:" not in slim_help
  # Not part of the checkpointed state: a run may be slimmed on --resume.
  assert config.parse_args(["--slim"]).fingerprint() == config.parse_args([]).fingerprint()


def test_slim_run_writes_a_model_equal_to_the_structured_one(tmp_path, capsys):
  out = tmp_path / "run"
  argv = run_args(3e-3, out)
  assert train.main(argv + ["--slim"]) == 0
  printed = capsys.readouterr().out

  model, ds = structured_model(argv)
  x = eval_inputs(ds)
  loaded = slim_lib.load(out / "slim")
  want = expected_channels(model)
  assert sum(want.values()) < 236, "the run zeroed no channel: pick a larger --strength"

  chex.assert_trees_all_close(outputs(loaded, x), outputs(model, x), **TOL)
  summary = json.loads((out / "summary.json").read_text())
  accuracy = float(np.mean(np.argmax(outputs(loaded, x), -1) == ds.y_test))
  assert accuracy == pytest.approx(summary["test_accuracy"], abs=1e-9)

  # The channels that went, in the model, the summary and the printed report.
  assert slimming.layer_channels(loaded) == want
  # fc1 reads the flattened conv2 map: its remaining zero rows went too (a gather).
  fc1 = np.asarray(model.fc1.kernel[...])
  assert loaded.fc1.kernel.shape[0] == int(np.sum(np.any(fc1 != 0, axis=1))) < 400
  s = summary["slim"]
  assert s["channels"] == {k: [v, want[k]] for k, v in slimming.layer_channels(model).items()}
  gone = 236 - sum(want.values())
  assert f"({gone} of 236 removed)" in printed
  assert re.search(r"parameters: 61,706 -> [\d,]+ \(\d+\.\d% fewer\)", printed)
  report = s["report"]
  assert report["params_before"] == models.count_params(model) == 61706
  assert report["params_after"] == models.count_params(loaded) < 61706
  assert report["macs_after"] < report["macs_before"]
  assert report["nothing_removed"] is False
  assert report["batch_size"] == s["example_batch"] == len(ds.y_test)  # 359 < EVAL_BATCH
  assert report["seconds_before"] > 0 and report["seconds_after"] > 0
  assert s["constructor_kwargs"] == {"name": "lenet5_small", "num_classes": 10,
                                     "input_shape": [28, 28, 1]}
  for key in ("test_accuracy", "group_sparsity", "groups_kept"):  # the run's own summary
    assert key in summary

  # --resume --slim on the finished run: nothing to train, the slim model is rewritten.
  (out / "slim" / "slim.json").write_text("{}")
  assert train.main(argv + ["--resume", "--slim"]) == 0
  assert "nothing to train" in capsys.readouterr().out
  chex.assert_trees_all_close(outputs(slim_lib.load(out / "slim"), x), outputs(model, x),
                              **TOL)


def test_slim_of_a_run_without_zero_groups_is_an_equal_model(tmp_path, capsys):
  out = tmp_path / "dense"
  argv = run_args(1e-9, out)
  assert train.main(argv + ["--slim"]) == 0
  printed = capsys.readouterr().out
  summary = json.loads((out / "summary.json").read_text())
  assert summary["group_sparsity"] == 0.0
  model, ds = structured_model(argv)
  x = eval_inputs(ds)
  loaded = slim_lib.load(out / "slim")
  chex.assert_trees_all_close(outputs(loaded, x), outputs(model, x), **TOL)
  chex.assert_trees_all_equal(jax.tree.map(np.shape, nnx.state(loaded)),
                              jax.tree.map(np.shape, nnx.state(model)))
  assert summary["slim"]["report"]["nothing_removed"] is True
  assert summary["slim"]["report"]["params_after"] == 61706
  assert "nothing removed" in printed and "(0 of 236 removed)" in printed


def test_a_slim_failure_keeps_the_run_and_exits_1(tmp_path, capfd, monkeypatch):
  def refuse(*args, **kwargs):
    raise slim_lib.SlimError("slim: cannot follow 'frobnicate'\n  at layer conv2")

  monkeypatch.setattr(slimming.slim_lib, "slim", refuse)
  out = tmp_path / "fails"
  # --ynn-fusions: no note on XLA's flags (the backend already runs), stderr is the error alone.
  assert train.main(run_args(3e-3, out) + ["--slim", "--ynn-fusions"]) == 1
  err = capfd.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("rmda-train: error: --slim failed: ")
  assert "frobnicate' at layer conv2" in err[0] and str(out) in err[0]
  summary = json.loads((out / "summary.json").read_text())
  assert summary["slim"] == {"error": "slim: cannot follow 'frobnicate' at layer conv2"}
  assert summary["test_accuracy"] is not None and summary["epochs"] == 1
  assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
  ckpt = train.Checkpointer(out / "checkpoints")
  assert ckpt.latest_epoch() == 1
  ckpt.close()
  assert not (out / "slim").exists()


def test_a_multi_process_run_is_not_slimmed_but_told_how(tmp_path, monkeypatch):
  monkeypatch.setattr(slimming.jax, "process_count", lambda: 2)
  with pytest.raises(slimming.SlimFailed, match=r"one process, this run has 2 .*--resume --slim"):
    slimming.slim_run(None, None, None, None, tmp_path, {})
  assert list(tmp_path.iterdir()) == []
