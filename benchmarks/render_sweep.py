"""Section 8 of benchmarks/README.md and the main README's sentence on sweeps, rendered
from ``results/sweep_throughput*.json`` (``benchmarks/bench_sweep``; issue 19, part 1)."""

from __future__ import annotations

import json
import os

from benchmarks._md import _table

TITLE = "## 8. Many runs in one program: runs per hour (issue 19, part 1)"
CMD = "python -m benchmarks.bench_sweep [--batching unroll]"


def load(results_dir) -> list:
  """Every full (not ``--quick``) ``sweep_throughput*.json`` in ``results_dir``, by name."""
  out = []
  for name in sorted(os.listdir(results_dir)):
    if name.startswith("sweep_throughput") and name.endswith(".json") \
        and not name.endswith("_quick.json"):
      with open(os.path.join(results_dir, name)) as f:
        out.append(dict(json.load(f), file=name))
  return out


def _on_cpu(d) -> bool:
  return d["device"].endswith("(cpu)")


def _runs_table(d) -> str:
  full = d["settings"]["full_epochs"]
  rows = []
  for r in d["rows"]:
    o, s, k1 = r["one_program"], r["separate"], r["k1_program_serial"]
    rows.append([r["K"], f"{o['compile_s']:.1f}", f"{o['step_ms']:.1f}",
                 f"{o['runs_per_hour']:.0f}", f"{o['runs_per_hour_full']:.1f}",
                 f"{s['compile_s']:.1f}", f"{s['step_ms_mean']:.1f}",
                 f"{s['runs_per_hour']:.0f}", f"{s['runs_per_hour_full']:.1f}",
                 f"{r['ratio']:.2f}", f"{r['ratio_full']:.2f}",
                 f"{k1['runs_per_hour_full']:.1f}"])
  steps = d["settings"]["steps_per_run"]
  return _table(["K", "one program: compile s", "ms/step", f"runs/h ({steps} steps)",
                 f"runs/h ({full} epochs)", "K separate runs: compile s (sum)",
                 "ms/step (mean)", f"runs/h ({steps} steps)", f"runs/h ({full} epochs)",
                 f"ratio ({steps} steps)", f"ratio ({full} epochs)",
                 f"K=1 program reused K times: runs/h ({full} epochs)"], rows)


def section(ds: list) -> str:
  """Section 8: one table per results file (device and batching), then what is missing."""
  if not ds:
    return f"{TITLE}\n\nNot run yet: `{CMD}`.\n"
  s = ds[0]["settings"]
  lines = [
      TITLE, "",
      f"`{CMD}`: {s['model'].replace('_', ' ')} with {s['optimizer']} and "
      f"{s['regularizer']}, batch {s['batch_size']}, {s['data']}; K runs that differ in "
      "lr, lambda and seed (`bench_sweep.run_configs`). **One program**: the K runs' step "
      "compiled once (what `rmda-train` trains for comma lists), batched with `jax.vmap` "
      "or unrolled (one copy of the step per run). **K separate runs**: rmda-train's "
      "single-run step, compiled for each run, the runs one after another. Every run "
      f"takes {s['steps_per_run']} steps; runs/h counts compilation plus those steps, and "
      "is also extrapolated to a whole run at the measured step time (compilation "
      "once). Ratio: the one program's runs per hour over the K separate runs' (above 1: "
      "the one program finishes more runs per hour). The last column is the K=1 "
      "program reused for the K runs one after another (its hyperparameters are inputs, "
      "so it compiles once), what `bench_front` does on CPU.", ""]
  for d in ds:
    m = d["machine"]
    lines += [
        f"**{d['device']}, {d['settings']['batching']}** (`results/{d['file']}`; "
        f"commit {m.get('git_commit', '?')}, {m.get('date', '')[:10]}; load average "
        f"{m['load_average_start'][0]:.2f} at the start, {d['load_average_end'][0]:.2f} at "
        f"the end; {d['wall_s']:.0f} s):", "",
        _runs_table(d), ""]
  if all(_on_cpu(d) for d in ds):
    lines += ["No GPU has run this benchmark yet (no accelerator was lent to a session "
              "since it was written). On one, `python -m benchmarks.bench_sweep` writes "
              "`results/sweep_throughput_gpu.json`, rendered here beside the CPU's.", ""]
  return "\n".join(lines)


def _k(d, k):
  return next((r for r in d["rows"] if r["K"] == k), None)


def readme_sentence(ds: list) -> str:
  """The main README's measured sentence on sweeps: the largest K of each file."""
  cpu = {d["settings"]["batching"]: d for d in ds if _on_cpu(d)}
  if not cpu:
    return "Not measured yet (`python -m benchmarks.bench_sweep`)."
  k = min(max(r["K"] for r in d["rows"]) for d in cpu.values())
  full = next(iter(cpu.values()))["settings"]["full_epochs"]
  steps = next(iter(cpu.values()))["settings"]["steps_per_run"]
  order = [b for b in ("vmap", "unroll") if b in cpu]
  name = {"vmap": "vmapped", "unroll": "unrolled"}
  alone = sorted({round(_k(cpu[b], k)["separate"]["step_ms_mean"]) for b in order})
  text = (f"Measured one after the other on this project's 2-core CPU (LeNet5, MNIST, batch "
          f"128, {steps} steps per run; `python -m benchmarks.bench_sweep`, "
          f"`benchmarks/results/sweep_throughput*.json`, benchmarks section 8): {k} runs in "
          "one program took "
          + " and ".join(f"{_k(cpu[b], k)['one_program']['step_ms']:.0f} ms per step "
                         f"{name[b]}" for b in order)
          + f", against {' to '.join(map(str, alone))} ms for one run alone, so over "
          f"{full} epochs (compilation included) "
          + " and ".join(f"one {name[b]} program gave {_k(cpu[b], k)['ratio_full']:.2f}x"
                         for b in order)
          + f" the runs per hour of {k} separate runs.")
  gpu = [d for d in ds if not _on_cpu(d)]
  if not gpu:
    return text + " No GPU has measured it yet."
  for d in gpu:
    r = max(d["rows"], key=lambda r: r["K"])
    text += (f" On {d['device']} ({d['settings']['batching']}), {r['K']} runs in one "
             f"program gave {r['ratio_full']:.2f}x the runs per hour of {r['K']} separate "
             "runs.")
  return text
