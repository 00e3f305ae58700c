"""rmda-train with comma lists: many runs in one compiled program (examples/sweep.py)."""

import json

import chex
import jax
import numpy as np
import pytest

import rmda_jax as rj
from rmda_jax.examples import cli
from rmda_jax.examples import sweep as sweep_lib
from rmda_jax.examples import train

QUIET = lambda *a, **k: None  # noqa: E731
# digits, 1 epoch of 11 steps, a strength large enough to zero groups in it.
ARGS = ["--dataset", "digits", "--epochs", "1", "--milestones", "none",
        "--no-progress", "--momentum", "1.0"]


def _alone(cfg):
  """The reported point Z of ``cfg`` trained alone by rmda-train's single-run code."""
  run = train.start(cfg, QUIET)
  state = run.trainer.init_state()
  data_key = np.asarray(jax.random.key_data(jax.random.key(cfg.seed)))
  for epoch in range(cfg.epochs):
    state, _, _ = train._train_steps(run, state, data_key, epoch)  # noqa: SLF001
  return jax.device_get(run.trainer.reported(state)), run.trainer.metric_reg


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
  out = tmp_path_factory.mktemp("sweep")
  sweep = sweep_lib.parse_sweep(ARGS + ["--strength", "0.004,0.1", "--lr", "0.3,0.1",
                                        "--seed", "0,1", "--output-dir", str(out)])
  result = sweep_lib.train_sweep(sweep, log=QUIET, runs_per_program=3)
  return sweep, result, out


def test_lists_make_the_cartesian_product(swept):
  sweep, result, out = swept
  assert sweep.swept == ("lr", "strength", "seed") and len(sweep.runs) == 8
  got = {(c.learning_rate, c.strength, c.seed) for c in sweep.runs}
  assert got == {(lr, s, seed) for lr in (0.3, 0.1) for s in (0.004, 0.1) for seed in (0, 1)}
  assert sweep.names[0] == "lr0.3_strength0.004_seed0"
  assert result["programs"] == 3 and result["runs_per_program"] == 3
  for name in sweep.names:
    rows = (out / name / "metrics.jsonl").read_text().splitlines()
    summary = json.loads((out / name / "summary.json").read_text())
    assert len(rows) == 1 and json.loads(rows[0])["epoch"] == 1
    assert summary["config"]["output_dir"] == str(out)


@pytest.mark.parametrize("k", [2, 7])  # one run of the first and of the last program
def test_each_run_equals_that_run_trained_alone(swept, k):
  sweep, result, _ = swept
  state = sweep_lib.take(result["_states"][k // 3], k % 3)
  z_sweep = jax.device_get(rj.structured_params(state.opt_state))
  z_alone, metric_reg = _alone(sweep.runs[k])
  chex.assert_trees_all_close(z_sweep, z_alone, rtol=2e-4, atol=2e-5)
  support = rj.group_support(z_alone, metric_reg)
  assert rj.group_sparsity(z_alone, metric_reg) > 0.05  # zero groups to compare
  assert rj.support_changes(support, rj.group_support(z_sweep, metric_reg)) == 0


@pytest.mark.parametrize("batching", ["vmap", "unroll"])
def test_both_batchings_equal_the_run_trained_alone(tmp_path, batching):
  sweep = sweep_lib.parse_sweep(ARGS + ["--strength", "0.004,0.1", "--batching", batching,
                                        "--output-dir", str(tmp_path)])
  result = sweep_lib.train_sweep(sweep, log=QUIET)
  assert result["batching"] == batching and result["programs"] == 1
  state = sweep_lib.take(result["_states"][0], 1)
  z_sweep = jax.device_get(rj.structured_params(state.opt_state))
  z_alone, metric_reg = _alone(sweep.runs[1])
  chex.assert_trees_all_close(z_sweep, z_alone, rtol=2e-4, atol=2e-5)
  assert rj.group_sparsity(z_alone, metric_reg) > 0.05
  assert rj.support_changes(rj.group_support(z_alone, metric_reg),
                            rj.group_support(z_sweep, metric_reg)) == 0


def test_auto_batching_is_unroll_on_cpu_and_vmap_elsewhere(monkeypatch):
  monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
  assert sweep_lib.resolve_batching("auto") == "unroll"
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  assert sweep_lib.resolve_batching("auto") == "vmap"
  assert sweep_lib.resolve_batching("unroll") == "unroll"


def test_the_large_strength_removes_groups(swept):
  # Else "the same zero groups" above would compare empty sets.
  _, result, _ = swept
  by_strength = {}
  for r in result["runs"]:
    by_strength.setdefault(r["strength"], []).append(r["group_sparsity"])
  assert min(by_strength[0.1]) > 0.05
  assert np.mean(by_strength[0.1]) > np.mean(by_strength[0.004])


def test_sweep_json_marks_the_pareto_front(swept):
  _, _, out = swept
  rows = json.loads((out / "sweep.json").read_text())["runs"]
  for r in rows:
    summary = json.loads((out / r["name"] / "summary.json").read_text())
    assert r["test_accuracy"] == summary["test_accuracy"]
    dominated = any(
        q["test_accuracy"] >= r["test_accuracy"]
        and q["weighted_group_sparsity"] >= r["weighted_group_sparsity"]
        and (q["test_accuracy"], q["weighted_group_sparsity"])
        != (r["test_accuracy"], r["weighted_group_sparsity"]) for q in rows)
    assert r["pareto"] == (not dominated)
  assert any(r["pareto"] for r in rows) and not all(r["pareto"] for r in rows)


def _usage(capsys, argv):
  with pytest.raises(SystemExit) as e:
    cli.main(argv)
  err = capsys.readouterr().err.strip().splitlines()
  return e.value.code, err


@pytest.mark.parametrize("extra, words", [
    (["--resume"], "argument --resume: not with a sweep"),
    (["--slim"], "argument --slim: not with a sweep"),
    (["--mesh", "data=1"], "argument --mesh: not with a sweep"),
])
def test_single_run_features_are_refused(capsys, tmp_path, extra, words):
  code, err = _usage(capsys, ARGS + ["--lr", "0.1,0.3", "--output-dir", str(tmp_path)] + extra)
  assert code == 2 and words in err[-1]


@pytest.mark.parametrize("value, words", [
    ("0.1,0.1", "argument --lr: a value is repeated"),
    ("0.1,-1", "argument --lr: must be > 0"),
    ("0.1,x", "argument --lr: value must be a number"),
])
def test_bad_lists_are_usage_errors(capsys, tmp_path, value, words):
  code, err = _usage(capsys, ARGS + ["--lr", value, "--output-dir", str(tmp_path)])
  assert code == 2 and words in err[-1]


def test_model_lists_are_refused(capsys, tmp_path):
  code, err = _usage(capsys, ARGS + ["--model", "lenet5_small,lenet5_large",
                                     "--output-dir", str(tmp_path)])
  assert code == 2 and "--model" in err[-1]


def test_a_run_too_large_for_memory_is_refused(monkeypatch, tmp_path):
  monkeypatch.setattr(sweep_lib, "device_memory_bytes", lambda: 2_000_000)
  sweep = sweep_lib.parse_sweep(ARGS + ["--lr", "0.1,0.3", "--output-dir", str(tmp_path)])
  with pytest.raises(sweep_lib.config_lib.UsageError, match="one run needs about"):
    sweep_lib.train_sweep(sweep, log=QUIET)


def test_single_values_keep_the_single_run_layout(tmp_path):
  assert cli.main(ARGS + ["--strength", "0.004", "--output-dir", str(tmp_path)]) == 0
  assert (tmp_path / "metrics.jsonl").exists() and (tmp_path / "summary.json").exists()
  assert not (tmp_path / "sweep.json").exists()


def test_pareto_front_helper():
  pts = [(0.9, 0.1), (0.8, 0.5), (0.85, 0.5), (0.9, 0.1), (0.5, 0.9)]
  assert sweep_lib.pareto_front(pts) == [True, False, True, True, True]


@pytest.fixture(scope="module")
def swept_ramda(tmp_path_factory):
  out = tmp_path_factory.mktemp("sweep_ramda")
  sweep = sweep_lib.parse_sweep(["--dataset", "digits", "--epochs", "1", "--milestones",
                                 "none", "--no-progress", "--optimizer", "ramda",
                                 "--strength", "1e-4,1e-3", "--output-dir", str(out)])
  return sweep, sweep_lib.train_sweep(sweep, log=QUIET), out


def test_ramda_sweep_reports_the_structured_point(swept_ramda):
  # RAMDA's W only approaches the structure (c < 1 here: the ramp from 1e-2);
  # the sweep must report its point Z, exactly sparse, as rmda-train does.
  sweep, result, out = swept_ramda
  assert sweep.base.optimizer == "ramda" and len(sweep.runs) == 2
  _, metric_reg = train.build_regularizers(sweep.base)
  for k, name in enumerate(sweep.names):
    summary = json.loads((out / name / "summary.json").read_text())
    row = json.loads((out / name / "metrics.jsonl").read_text().splitlines()[-1])
    assert summary["reported_point"].startswith("Z ")
    assert "test_accuracy_w" in row and 0 <= row["test_accuracy_w"] <= 1
    state = sweep_lib.take(result["_states"][0], k)
    w = jax.device_get(state.params)
    z = jax.device_get(rj.structured_params(state.opt_state))
    assert rj.group_sparsity(w, metric_reg) == 0  # W has no exact zero group
    assert summary["group_sparsity"] > 0.05
    assert summary["group_sparsity"] == pytest.approx(rj.group_sparsity(z, metric_reg))
    assert row["sparsity"] == pytest.approx(rj.sparsity(z))
