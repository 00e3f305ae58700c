"""rmda-train with the nuclear norm and the sparse group LASSO (digits, 1 epoch)."""

import json

import numpy as np
import pytest

from rmda_jax.examples import config, train, xla_flags

# The MLP on digits (8x8 inputs): 64-512-256-128-64-32-16-10. Its kernels'
# full ranks min(in, out), from the architecture.
MLP_DIGITS = [64, 512, 256, 128, 64, 32, 16, 10]
FULL_RANK = sum(min(a, b) for a, b in zip(MLP_DIGITS[:-1], MLP_DIGITS[1:]))


def run(tmp_path, *flags):
  argv = ["--dataset", "digits", "--model", "mlp", "--epochs", "1", "--milestones", "none",
          "--batch-size", "64", "--momentum", "1.0", "--lr", "1.0", "--no-progress",
          "--output-dir", str(tmp_path), *flags]
  assert train.main(argv) == 0
  rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  summary = json.loads((tmp_path / "summary.json").read_text())
  return rows, summary


def test_nuclear_reports_total_rank(tmp_path, capsys, monkeypatch):
  calls = []
  monkeypatch.setattr(xla_flags, "limit_openblas_threads",
                      lambda: calls.append("set") or "1 thread")
  monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")   # what it would have set
  rows, summary = run(tmp_path, "--regularizer", "nuclear", "--strength", "0.05")
  out = capsys.readouterr().out
  # OpenBLAS threads: set before JAX starts (xla_flags' tests check the effect), recorded.
  assert calls == ["set"] and summary["openblas_num_threads"] == "1"
  # The final table speaks of rank, not groups.
  final = out[out.index("final (reported point"):]
  assert "group" not in final.split("total rank kept")[0]
  assert "rank dropped (zero singular values / full rank)" in final
  (row,) = rows
  assert row["full_rank"] == FULL_RANK == summary["full_rank"]
  assert 0 < row["rank"] < FULL_RANK  # c = 1: W = Z is exactly low rank
  assert f"rank {row['rank']}/{FULL_RANK} (" in out
  assert f"total rank kept: {row['rank']}/{FULL_RANK}" in out
  # The group metrics count singular values: zero groups = rank dropped.
  assert row["group_sparsity"] == pytest.approx(1 - row["rank"] / FULL_RANK)
  kept = summary["groups_kept"]
  assert sum(int(v.split("/")[0]) for v in kept.values()) == row["rank"]
  assert sorted(int(v.split("/")[1]) for v in kept.values()) == sorted(
      min(a, b) for a, b in zip(MLP_DIGITS[:-1], MLP_DIGITS[1:]))
  assert np.isfinite(row["psi"]) and row["psi"] > 0


def test_sparse_group_lasso_reports_both_sparsities(tmp_path, capsys, monkeypatch):
  calls = []
  monkeypatch.setattr(xla_flags, "limit_openblas_threads", lambda: calls.append("set"))
  rows, summary = run(tmp_path, "--regularizer", "sparse_group_lasso",
                      "--strength", "2e-3", "--l1-strength", "2e-3")
  assert calls == []   # no SVD: OpenBLAS left alone
  out = capsys.readouterr().out
  (row,) = rows
  assert 0 < row["group_sparsity"] < 1
  # Zeros inside the kept groups too: more zero entries than the zero groups hold.
  assert row["regularized_sparsity"] > row["weighted_group_sparsity"]
  assert summary["regularized_sparsity"] == row["regularized_sparsity"]
  assert "0.002 (L1) + 0.002 (groups)" in out
  assert "group sparsity" in out and "kernel sparsity" in out


@pytest.mark.parametrize("flags,needle", [
    (["--regularizer", "sparse_group_lasso"], "--l1-strength > 0"),
    (["--l1-strength", "0.1"], "only for --regularizer sparse_group_lasso"),
    (["--regularizer", "nuclear", "--optimizer", "prox_ssi"], "use prox_adam"),
])
def test_bad_structure_flags_exit_2(flags, needle, capsys):
  with pytest.raises(SystemExit) as e:
    config.parse_args(flags)
  assert e.value.code == 2
  assert needle in capsys.readouterr().err


def test_fingerprint_adds_l1_strength_only_for_sparse_group_lasso():
  plain = config.parse_args([]).fingerprint_fields()
  assert "l1_strength" not in plain  # existing runs keep their fingerprints
  sgl = config.parse_args(["--regularizer", "sparse_group_lasso", "--l1-strength", "1e-4"])
  assert sgl.fingerprint_fields()["l1_strength"] == 1e-4
  other = config.parse_args(["--regularizer", "sparse_group_lasso", "--l1-strength", "2e-4"])
  assert sgl.fingerprint() != other.fingerprint()
