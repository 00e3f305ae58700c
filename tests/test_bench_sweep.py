"""benchmarks/bench_sweep: K runs in one program against K separate runs (quick mode, digits)."""

import json

import numpy as np
import pytest

from benchmarks import bench_sweep as bs


@pytest.fixture(scope="module")
def result(tmp_path_factory):
  out = tmp_path_factory.mktemp("bench_sweep")
  assert bs.main(["--quick", "--out", str(out)]) == 0
  return json.loads((out / "sweep_throughput_quick.json").read_text())


def test_the_timed_programs_train_the_same_runs_as_the_separate_runs(result):
  # Both sides train the same configurations for the same steps: their mean
  # training losses agree run for run (float32 rounding of the batched kernels).
  sep = [s["final_train_loss"] for s in result["separate_runs"]]
  for p in result["programs"]:
    np.testing.assert_allclose(p["final_train_loss"], sep[:p["runs"]], rtol=1e-4)
  assert len(set(np.round(sep, 7))) == len(sep)  # and the runs differ


def test_runs_per_hour_from_the_recorded_times(result):
  steps = result["settings"]["steps_per_run"]
  full = result["settings"]["full_steps"]
  assert steps == 3 and full == 20 * (1438 // 128)
  programs = {p["runs"]: p for p in result["programs"]}
  assert [r["K"] for r in result["rows"]] == [1, 2]
  for r in result["rows"]:
    k, p, sep = r["K"], programs[r["K"]], result["separate_runs"][:r["K"]]
    one = 3600 * k / (p["compile_s"] + p["steps_s"])
    alone = 3600 * k / sum(s["compile_s"] + s["steps_s"] for s in sep)
    one_full = 3600 * k / (p["compile_s"] + p["steps_s"] * full / steps)
    alone_full = 3600 * k / sum(s["compile_s"] + s["steps_s"] * full / steps for s in sep)
    p1 = programs[1]
    serial = 3600 * k / (p1["compile_s"] + k * p1["steps_s"])
    np.testing.assert_allclose(
        [r["one_program"]["runs_per_hour"], r["separate"]["runs_per_hour"],
         r["one_program"]["runs_per_hour_full"], r["separate"]["runs_per_hour_full"],
         r["ratio"], r["ratio_full"], r["k1_program_serial"]["runs_per_hour"]],
        [one, alone, one_full, alone_full, one / alone, one_full / alone_full, serial],
        rtol=1e-9)


def test_the_machine_and_the_settings_are_recorded(result):
  assert result["device"].endswith("(cpu)")
  assert len(result["machine"]["load_average_start"]) == 3
  assert len(result["load_average_end"]) == 3
  assert "not whole epochs" in result["settings"]["note"]
  assert result["settings"]["batching"] == "vmap"
  assert all(p["compile_s"] > 0 for p in result["programs"] + result["separate_runs"])


def test_run_configs_are_distinct():
  cfgs = bs.run_configs(16)
  keys = {(c.seed, c.learning_rate, c.strength) for c in cfgs}
  assert len(keys) == 16 and {c.seed for c in cfgs} == {0, 1}
  assert [(c.seed, c.learning_rate, c.strength) for c in bs.run_configs(4)] == [
      (0, 0.1, lam) for lam in bs.LAMS]


def test_runs_per_hour_helper():
  assert bs.runs_per_hour(4, 10.0, 0.5, 100) == pytest.approx(240.0)


def test_too_many_steps_are_refused():
  with pytest.raises(ValueError, match="--steps 50 exceeds the 11 steps"):
    bs.measure((1,), 50, 1, "digits", log=lambda *a: None)


def _rendered_file(device, batching, rows):
  """A results file as bench_sweep writes it, with the rows given as
  (K, one-program ms/step, separate ms/step, ratio over 20 epochs)."""
  row = lambda k, ms, sep_ms, ratio: {
      "K": k, "ratio": 1.0, "ratio_full": ratio,
      "one_program": {"compile_s": 1.0, "step_ms": ms, "runs_per_hour": 100.0,
                      "runs_per_hour_full": 10.0},
      "separate": {"compile_s": 2.0, "step_ms_mean": sep_ms, "runs_per_hour": 90.0,
                   "runs_per_hour_full": 9.0},
      "k1_program_serial": {"runs_per_hour_full": 8.0}}
  return {"device": device, "file": f"sweep_throughput_{batching}.json", "wall_s": 5.0,
          "machine": {"git_commit": "abc1234", "date": "2026-12-06T00:00:00",
                      "load_average_start": [1.0, 1.0, 1.0]},
          "load_average_end": [2.0, 2.0, 2.0],
          "settings": {"model": "lenet5_small", "optimizer": "rmda", "regularizer": "gl",
                       "batch_size": 128, "data": "mnist", "steps_per_run": 40,
                       "full_epochs": 20, "batching": batching},
          "rows": [row(*r) for r in rows]}


def test_render_sweep_states_the_largest_k_of_each_cpu_file_and_the_missing_gpu():
  from benchmarks import render_sweep
  cpu = [_rendered_file("Xeon (cpu)", "vmap", [(1, 9.0, 8.0, 0.9), (16, 369.4, 7.6, 0.34)]),
         _rendered_file("Xeon (cpu)", "unroll", [(1, 9.0, 8.0, 0.9), (16, 126.6, 8.2, 1.014)])]
  text = render_sweep.readme_sentence(cpu)
  assert ("16 runs in one program took 369 ms per step vmapped and 127 ms per step "
          "unrolled, against 8 ms for one run alone, so over 20 epochs (compilation "
          "included) one vmapped program gave 0.34x and one unrolled program gave 1.01x "
          "the runs per hour of 16 separate runs. No GPU has measured it yet.") in text
  md = render_sweep.section(cpu)
  assert md.count("| 16 | 1.0 |") == 2 and "No GPU has run this benchmark yet" in md
  assert "load average 1.00 at the start, 2.00 at the end" in md
  gpu = _rendered_file("H200 (gpu)", "vmap", [(1, 2.0, 2.0, 0.9), (16, 3.0, 2.0, 9.5)])
  assert "On H200 (gpu) (vmap), 16 runs in one program gave 9.50x" in (
      render_sweep.readme_sentence(cpu + [gpu]))
  assert "No GPU has run" not in render_sweep.section(cpu + [gpu])
  assert render_sweep.section([]).endswith("Not run yet: `python -m benchmarks.bench_sweep "
                                           "[--batching unroll]`.\n")
