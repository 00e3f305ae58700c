"""rmda-train end to end on sklearn digits: files, resume equality, refusals, flag checks."""

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import chex
import jax
import numpy as np
import pytest

from rmda_jax.examples import config, train

REPO = Path(__file__).resolve().parents[1]

# A tiny run: digits (1438 train images, padded to 28x28 for LeNet5), 3 epochs,
# RMDA restarting at epoch 2 with c = 1 from then on.
def tiny(epochs=3):
  return ["--dataset", "digits", "--model", "lenet5_small", "--batch-size", "32",
          "--epochs", str(epochs), "--milestones", "2", "--lr", "1.0", "--strength", "1e-3",
          "--no-progress"]


TINY = tiny()


def run_cli(*args, env_extra=None):
  env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
  env.update(env_extra or {})
  return subprocess.run([sys.executable, "-m", "rmda_jax.examples.train", *args],
                        capture_output=True, text=True, cwd=REPO, env=env, timeout=300)


def final_state(out_dir, argv):
  """Restores the last checkpoint of a run as a flat list of numpy arrays."""
  cfg = config.parse_args(argv + ["--output-dir", str(out_dir)])
  ds = train.prepare_data(cfg)
  trainer = train.Trainer(cfg, ds, len(ds.y_train) // cfg.batch_size)
  ckpt = train.Checkpointer(Path(out_dir) / "checkpoints")
  epoch = ckpt.latest_epoch()
  state, key = ckpt.restore(epoch, trainer.init_state(), np.zeros(2, np.uint32))
  ckpt.close()
  return epoch, (jax.tree.map(np.asarray, state), key)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  out = tmp_path_factory.mktemp("tiny")
  rc = train.main(TINY + ["--output-dir", str(out), "--plot"])
  return rc, out


def test_cli_end_to_end_files(tiny_run):
  rc, out = tiny_run
  assert rc == 0
  rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
  assert [r["epoch"] for r in rows] == [1, 2, 3]
  for r in rows:
    for key in ("train_loss", "objective", "psi", "test_accuracy", "group_sparsity",
                "weighted_group_sparsity", "sparsity", "support_changes", "test_accuracy_w"):
      assert key in r
    assert 0.0 <= r["test_accuracy"] <= 1.0
    assert 0.0 <= r["group_sparsity"] <= 1.0
    assert r["objective"] == pytest.approx(r["train_loss"] + r["psi"])
    assert isinstance(r["support_changes"], int) and r["support_changes"] >= 0
  summary = json.loads((out / "summary.json").read_text())
  for key in ("test_accuracy", "objective", "group_sparsity", "weighted_group_sparsity",
              "sparsity", "groups_kept", "reported_point", "wall_time_s", "config"):
    assert key in summary
  assert summary["test_accuracy"] == rows[-1]["test_accuracy"]
  assert summary["group_sparsity"] == rows[-1]["group_sparsity"]
  assert "structured_params" in summary["reported_point"]
  assert set(summary["groups_kept"]) == {"['conv1']['kernel']", "['conv2']['kernel']",
                                         "['fc1']['kernel']", "['fc2']['kernel']",
                                         "['fc3']['kernel']"}
  png = (out / "training_curves.png").read_bytes()
  assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_tiny_run_learns_and_sparsifies(tiny_run):
  _, out = tiny_run
  summary = json.loads((out / "summary.json").read_text())
  assert summary["test_accuracy"] > 0.5          # chance is 0.1
  assert summary["group_sparsity"] > 0.0         # group LASSO zeroed whole input units
  # groups_kept agrees with the reported group sparsity
  kept = [tuple(map(int, v.split("/"))) for v in summary["groups_kept"].values()]
  frac_zero = 1 - sum(k for k, _ in kept) / sum(t for _, t in kept)
  assert frac_zero == pytest.approx(summary["group_sparsity"])


def test_resume_reproduces_uninterrupted_run_bitwise(tiny_run, tmp_path):
  _, full = tiny_run
  part = tmp_path / "part"
  assert train.main(tiny(epochs=1) + ["--output-dir", str(part)]) == 0
  assert train.main(tiny(epochs=2) + ["--output-dir", str(part), "--resume"]) == 0
  assert train.main(TINY + ["--output-dir", str(part), "--resume"]) == 0
  e_full, s_full = final_state(full, TINY)
  e_part, s_part = final_state(part, TINY)
  assert e_full == e_part == 3
  chex.assert_trees_all_equal_dtypes(s_full, s_part)
  chex.assert_trees_all_equal_shapes(s_full, s_part)
  bits = lambda t: jax.tree.map(lambda a: np.frombuffer(np.ascontiguousarray(a).tobytes(),
                                                        np.uint8), t)
  chex.assert_trees_all_equal(bits(s_full), bits(s_part))   # bit for bit (-0.0 != 0.0)
  rows_full = (full / "metrics.jsonl").read_text().splitlines()
  rows_part = (part / "metrics.jsonl").read_text().splitlines()
  strip = lambda r: {k: v for k, v in json.loads(r).items() if not k.endswith("time_s")}
  assert [strip(r) for r in rows_full] == [strip(r) for r in rows_part]


def test_train_is_made_of_steps_each_usable_alone(tiny_run):
  # train() is start, resume, run_epoch per epoch and finish; it holds little else.
  assert len(inspect.getsource(train.train).splitlines()) <= 45
  _, out = tiny_run
  metrics = (out / "metrics.jsonl").read_text()
  run = train.start(config.parse_args(TINY + ["--output-dir", str(out), "--resume"]),
                    log=lambda *_: None)
  assert run.steps == 1438 // 32 and run.metrics_path == out / "metrics.jsonl"
  ckpt = train.Checkpointer(out / "checkpoints")
  try:
    state, key, start_epoch, rows = train.resume(run, ckpt)
  finally:
    ckpt.close()
  assert start_epoch == 3
  assert rows == [json.loads(l) for l in metrics.splitlines()]
  assert (out / "metrics.jsonl").read_text() == metrics   # rewritten unchanged
  _, (want_state, want_key) = final_state(out, TINY)
  chex.assert_trees_all_equal(jax.tree.map(np.asarray, state), want_state)
  np.testing.assert_array_equal(key, want_key)


def test_resume_refuses_other_configuration(tiny_run, capsys):
  _, out = tiny_run
  rc = train.main(TINY[:-1] + ["--optimizer", "prox_sgd", "--output-dir", str(out), "--resume"])
  err = capsys.readouterr().err
  assert rc == 2
  assert "different configuration" in err and "optimizer" in err
  other_model = [("mlp" if a == "lenet5_small" else a) for a in TINY]
  rc = train.main(other_model + ["--output-dir", str(out), "--resume"])
  assert rc == 2 and "model" in capsys.readouterr().err


def test_existing_checkpoints_need_resume(tiny_run, capsys):
  _, out = tiny_run
  assert train.main(TINY + ["--output-dir", str(out)]) == 2
  assert "--resume" in capsys.readouterr().err


@pytest.mark.parametrize("optimizer,regularizer", [("sgd", "none"), ("madgrad", "group_lasso"),
                                                   ("rmda", "l1")])
def test_other_optimizers_run(tmp_path, optimizer, regularizer):
  def run(strength, name):
    argv = ["--dataset", "digits", "--model", "mlp", "--epochs", "1", "--batch-size", "128",
            "--optimizer", optimizer, "--regularizer", regularizer, "--strength", strength,
            "--milestones", "none", "--no-progress", "--output-dir", str(tmp_path / name)]
    return train.train(config.parse_args(argv), log=lambda *_: None), tmp_path / name

  weak, out = run("1e-4", "weak")
  assert 0.0 <= weak["test_accuracy"] <= 1.0
  assert np.isfinite(weak["objective"])
  row = json.loads((out / "metrics.jsonl").read_text())
  if regularizer == "none":
    assert row["psi"] == 0.0
    return
  # The regularizer acts: 100x the strength leaves a point of much smaller
  # phi = psi / strength (madgrad through the loss's subgradient, rmda by its prox).
  strong, out_strong = run("1e-2", "strong")
  phi = lambda o, s: json.loads((o / "metrics.jsonl").read_text())["psi"] / s  # noqa: E731
  assert phi(out_strong, 1e-2) < 0.8 * phi(out, 1e-4)
  if optimizer == "rmda":  # the prox makes exact zeros
    assert strong["sparsity"] > weak["sparsity"] + 0.1


@pytest.mark.parametrize("flags,needle", [
    (["--lr", "-0.1"], "--lr"),
    (["--model", "alexnet"], "--model"),
    (["--momentum", "0"], "--momentum"),
    (["--momentum", "1.5"], "--momentum"),
    (["--optimizer", "sgd", "--momentum", "1"], "--momentum"),
    (["--epochs", "0"], "--epochs"),
    (["--milestones", "5,3"], "--milestones"),
    (["--strength", "-1"], "--strength"),
    (["--groups", "rows"], "--groups"),
    (["--batch-size", "abc"], "--batch-size"),
    (["--dataset", "imagenet"], "--dataset"),
])
def test_bad_flags_exit_2(flags, needle, capsys):
  with pytest.raises(SystemExit) as e:
    config.parse_args(flags)
  assert e.value.code == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert err[-1].startswith("rmda-train: error:") and needle in err[-1]


def test_bad_flag_from_the_command_line():
  p = run_cli("--lr", "-1")
  assert p.returncode == 2
  assert "error: argument --lr" in p.stderr and "Traceback" not in p.stderr


def test_missing_dataset_one_line_no_traceback(tmp_path):
  p = run_cli("--dataset", "cifar10", "--model", "vgg19_bn", "--data-dir", str(tmp_path),
              "--output-dir", str(tmp_path / "out"))
  assert p.returncode == 2
  lines = p.stderr.strip().splitlines()
  assert len(lines) == 1 and "cifar-10-python.tar.gz" in lines[0]
  assert "Traceback" not in p.stderr


def test_milestones_are_converted_to_updates():
  # Momentum-free SGD: each update is -lr * g, so the updates read out the schedule.
  steps_per_epoch = 10
  cfg = config.parse_args(["--optimizer", "sgd", "--lr", "0.5", "--milestones", "2,3",
                           "--gamma", "0.1", "--momentum", "0"])
  tx = train.build_optimizer(cfg, None, steps_per_epoch)
  params = {"w": np.ones(3, np.float32)}
  grads = {"w": np.ones(3, np.float32)}
  state = tx.init(params)
  lrs = []
  for _ in range(35):
    upd, state = tx.update(grads, state, params)
    lrs.append(float(-upd["w"][0]))
  np.testing.assert_allclose(lrs[:20], 0.5, rtol=1e-6)
  np.testing.assert_allclose(lrs[20:30], 0.05, rtol=1e-6)
  np.testing.assert_allclose(lrs[30:], 0.005, rtol=1e-6)


def test_python_dash_m_help():
  p = run_cli("--help")
  assert p.returncode == 0 and "--milestones" in p.stdout and "rmda-train" in p.stdout


class TinyBN:
  """A small BatchNorm model (VGG19/ResNet50 take minutes to compile on CPU)."""

  def __new__(cls, num_classes=10, *, rngs, input_shape=(28, 28, 1)):
    from flax import nnx

    class _TinyBN(nnx.Module):
      def __init__(self):
        self.conv = nnx.Conv(input_shape[-1], 4, (3, 3), use_bias=False, rngs=rngs)
        self.bn = nnx.BatchNorm(4, momentum=0.9, rngs=rngs)
        self.fc = nnx.Linear(4, num_classes, rngs=rngs)

      def __call__(self, x):
        x = jax.nn.relu(self.bn(self.conv(x)))
        return self.fc(x.mean(axis=(1, 2)))

    return _TinyBN()


def test_batchnorm_model_trains_and_checkpoints_running_stats(tmp_path, monkeypatch):
  from rmda_jax.examples import models
  monkeypatch.setitem(models.MODELS, "tiny_bn", TinyBN)
  argv = ["--dataset", "digits", "--model", "tiny_bn", "--epochs", "1", "--batch-size", "64",
          "--milestones", "none", "--no-progress", "--output-dir", str(tmp_path)]
  assert train.main(argv) == 0
  cfg = config.parse_args(argv)
  ds = train.prepare_data(cfg)
  trainer = train.Trainer(cfg, ds, len(ds.y_train) // cfg.batch_size)
  init = trainer.init_state()
  ckpt = train.Checkpointer(tmp_path / "checkpoints")
  state, _ = ckpt.restore(1, init, np.zeros(2, np.uint32))
  ckpt.close()
  mean, var = state.batch_stats["bn"]["mean"], state.batch_stats["bn"]["var"]
  assert np.all(np.asarray(init.batch_stats["bn"]["mean"]) == 0)
  assert not np.allclose(mean, 0) and not np.allclose(var, 1)   # updated in train mode
  assert "mean" not in state.params["bn"]                        # and not trained as params
  rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert 0.0 <= rows[0]["test_accuracy"] <= 1.0
