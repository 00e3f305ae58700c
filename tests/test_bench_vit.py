"""benchmarks.bench_vit (a tiny --quick run: its results file against the saved points)
and benchmarks.render_vit (its sentences against hand-made results)."""

import json

import numpy as np
import pytest

pytest.importorskip("flax")

from benchmarks import bench_vit  # noqa: E402
from benchmarks import render_vit  # noqa: E402

LAM = 0.1   # in this run some groups go and some stay
ARGS = ["--quick", "--epochs", "1", "--val", "200", "--batch-size", "64", "--lams", str(LAM),
        "--lrs", "0.1", "--ramda-lrs", "0.01", "--milestone-fractions"]


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
  """One quick run (one lambda, one learning rate each, no milestones): its JSON and points."""
  out = tmp_path_factory.mktemp("vit")
  assert bench_vit.main(ARGS + ["--out", str(out), "--save-params", str(out / "points")]) == 0
  return json.loads((out / "vit_quick.json").read_text()), out / "points"


def _kept_from_arrays(p, block):
  """(heads kept, units kept) of one block, read from the arrays: a head or unit is kept
  when any entry of any of its slices is nonzero."""
  a = f"['blocks'][{block}]"
  head_any = np.zeros(4, bool)
  for c in ("query", "key", "value"):
    head_any |= np.any(p[f"{a}['attn']['{c}']['kernel']"] != 0, axis=(0, 2))
    head_any |= np.any(p[f"{a}['attn']['{c}']['bias']"] != 0, axis=1)
  head_any |= np.any(p[f"{a}['attn']['out']['kernel']"] != 0, axis=(1, 2))
  unit_any = (np.any(p[f"{a}['fc1']['kernel']"] != 0, axis=0)
              | (p[f"{a}['fc1']['bias']"] != 0)
              | np.any(p[f"{a}['fc2']['kernel']"] != 0, axis=1))
  return head_any, unit_any


@pytest.mark.slow
def test_quick_run_records_what_the_saved_points_hold(quick):
  d, points = quick
  assert d["benchmark"] == "bench_vit" and d["machine"]["cpu_count"]
  assert [r["method"] for r in d["tuning"]] == list(bench_vit.METHODS) == [
      "rmda", "prox_sgd", "ramda"]
  assert [(r["method"], r["lam"]) for r in d["sweep"]] == [
      (m, LAM) for m in bench_vit.METHODS]
  s = d["settings"]
  assert s["lr_grids"] == {"rmda": [0.1], "prox_sgd": [0.1], "ramda": [0.01]}
  assert s["lam_tune"] == LAM and s["milestones_steps"] == [] and s["epochs"] == 1
  assert s["train"] == 1438 - 200 and s["validation"] == 200
  for r in d["tuning"]:
    assert 0 <= r["validation_accuracy"] <= 1 and "test_accuracy" not in r
  removed = kept = 0
  for r in d["sweep"]:
    m = r["method"]
    assert r["lr"] == d["chosen_lr"][m] == s["lr_grids"][m][0]
    assert r["steps"] == (1438 - 200) // 64 and 0 <= r["test_accuracy"] <= 1
    p = dict(np.load(points / f"{m}_lam{LAM:g}.npz"))
    heads, units, fam = [0, 0], [0, 0], {}
    zero_entries = all_entries = 0
    for b in range(2):
      h, u = _kept_from_arrays(p, b)
      fam[f"blocks/{b}/attn heads"] = [int(h.sum()), 4]
      fam[f"blocks/{b} neurons"] = [int(u.sum()), 64]
      heads = [heads[0] + int(h.sum()), heads[1] + 4]
      units = [units[0] + int(u.sum()), units[1] + 64]
      # entries per head: q/k/v kernels 32 x 8 and biases 8, out 8 x 32; per unit 32 + 1 + 32
      zero_entries += (4 - h.sum()) * (3 * (32 * 8 + 8) + 8 * 32) + (64 - u.sum()) * 65
      all_entries += 4 * (3 * (32 * 8 + 8) + 8 * 32) + 64 * 65
    assert r["heads_kept"] == heads and r["neurons_kept"] == units, m
    assert r["kept_per_family"] == fam, m
    assert r["weighted_group_sparsity"] == pytest.approx(zero_entries / all_entries), m
    assert r["group_sparsity"] == pytest.approx(
        (8 - heads[0] + 128 - units[0]) / (8 + 128)), m
    removed += (8 - heads[0]) + (128 - units[0])
    kept += heads[0] + units[0]
  assert removed > 0 and kept > 0   # the counts above met zero and nonzero groups


def test_ramda_grid_must_match_the_others(capsys):
  with pytest.raises(SystemExit) as e:
    bench_vit.main(["--quick", "--lrs", "0.1", "0.3", "--ramda-lrs", "0.01"])
  assert e.value.code == 2
  err = capsys.readouterr().err.strip().splitlines()[-1]
  assert "--ramda-lrs: 1 learning rates, --lrs has 2" in err


def _row(method, lam, acc, heads, units, lr=0.1):
  size = 8 * 1048 + 128 * 65
  return {"method": method, "lam": lam, "lr": lr, "test_accuracy": acc,
          "heads_kept": [heads, 8], "neurons_kept": [units, 128],
          "weighted_group_sparsity": ((8 - heads) * 1048 + (128 - units) * 65) / size,
          "kept_per_family": {}, "wall_s": 1.0}


SWEEP = [
    _row("rmda", 1e-3, 0.80, 8, 128), _row("prox_sgd", 1e-3, 0.81, 8, 128),
    _row("ramda", 1e-3, 0.78, 8, 128),
    _row("rmda", 1e-2, 0.70, 8, 20), _row("prox_sgd", 1e-2, 0.60, 3, 1),
    _row("ramda", 1e-2, 0.70, 6, 40),
]


def test_pareto_front_of_hand_made_runs():
  front = {(r["method"], r["lam"]) for r in render_vit.pareto(SWEEP)}
  # prox_sgd 1e-3 (the most accurate), ramda 1e-2 (rmda's accuracy, more removed: it
  # beats rmda 1e-2), prox_sgd 1e-2 (the sparsest); rmda/ramda 1e-3 are beaten
  assert front == {("prox_sgd", 1e-3), ("ramda", 1e-2), ("prox_sgd", 1e-2)}
  twins = [dict(SWEEP[3]), dict(SWEEP[3])]
  assert render_vit.pareto(twins) == twins                  # equal runs beat neither


def test_ahead_sentence_follows_from_the_numbers():
  text = render_vit.ahead(SWEEP)
  assert text.startswith(
      "At lambda 0.001 ProxSGD is the most accurate (81.00%, heads 8/8, MLP units 128/128) "
      "and no method removes a group; ")
  # a tie in accuracy names both; the sparsest is another method
  assert ("at lambda 0.01 RMDA and RAMDA are the most accurate (70.00%, heads 8/8, MLP "
          "units 20/128), ProxSGD removes the most (heads 3/8, MLP units 1/128, 60.00%).") in text
  assert text.endswith("over all lambdas: RMDA 0 of 2, ProxSGD 2 of 2, RAMDA 1 of 2 runs.")
  # the most accurate also the sparsest
  rows = [_row("rmda", 1e-2, 0.7, 8, 10), _row("ramda", 1e-2, 0.6, 8, 50)]
  assert render_vit.ahead(rows).startswith(
      "At lambda 0.01 RMDA is the most accurate (70.00%, heads 8/8, MLP units 10/128) and "
      "it removes the most. ")


def test_section_and_headline_of_hand_made_results():
  d = {"settings": {"epochs": 5, "train": 12800, "validation": 2000, "test": 10000,
                    "seeds": [0], "batch_size": 128, "gamma": 0.1, "milestones_steps": [250],
                    "model": "vit_tiny", "regularizer": "heads", "rmda_c0": 0.1,
                    "prox_sgd": "EMA", "ramda": "c 0.01", "reported_point": "Z",
                    "lam_tune": 1e-2},
       "machine": None, "wall_time_s": 60.0, "sweep": SWEEP,
       "chosen_lr": {"rmda": 0.1, "prox_sgd": 0.3, "ramda": 0.003},
       "tuning": [dict(_row(m, 1e-2, 0.5, 8, 128, lr), validation_accuracy=acc)
                  for m, lr, acc in [("rmda", 0.1, 0.6), ("rmda", 0.3, 0.5),
                                     ("prox_sgd", 0.1, 0.5), ("prox_sgd", 0.3, 0.6),
                                     ("ramda", 0.003, 0.6), ("ramda", 0.01, 0.5)]]}
  md = render_vit.section(d)
  assert "**A short budget**: 5 epochs on a 12,800-image subset of MNIST" in md
  assert "1 seed" in md
  assert "RMDA 2, ProxSGD 2, RAMDA 2 learning rates" in md
  assert "| RAMDA | 0.003, 0.01 | 0.003: 60.00% (heads 8/8, units 128/128); 0.01: 50.00%" in md
  assert ("(the smallest learning rate tried for RMDA and RAMDA; the largest for ProxSGD)"
          in md)
  assert "| 0.01 | ProxSGD | 0.1 | 60.00% | 3/8 | 1/128 | " in md
  assert render_vit.ahead(SWEEP) in md
  rows = render_vit.headline(d)
  assert [r[1:] for r in rows] == [["rmda", "70.00%; 8/8; 20/128"],
                                   ["prox_sgd", "60.00%; 3/8; 1/128"],
                                   ["ramda", "70.00%; 6/8; 40/128"]]
  assert "5 epochs on a 12.8k MNIST subset, 1 seed" in rows[0][0] and rows[1][0] == ""
  assert render_vit.section(None).endswith("Not run yet (`python -m benchmarks.bench_vit`).\n")
