"""Runs benchmarks as several processes at once (``--shard K/N``).

The deep benchmarks
(``bench_equal_tuning``, ``bench_rigl_converged``, ``bench_identification_deep``
where it has the flag) number their runs, and ``--shard K/N`` makes a process
run only those whose number is K modulo N; every run writes its own file, so
the shards never write the same run, and the results file is rebuilt from the
per-run files (``--merge-only``) once every shard is done.

Each ``JOB`` is ``N:MODULE ARGS...``; all the shards of all the jobs start at
once and this waits for them. Each shard's output goes to
``<logs>/<module>_<k>of<N>.log``. Children get
``XLA_PYTHON_CLIENT_PREALLOCATE=false`` (unless it is set) so that the shards
can share the device's memory.

What it buys, measured (2026-11-27, one NVIDIA H200, jax 0.11.2): nothing in
throughput on one GPU. A 20-epoch LeNet5 (large) run of
``bench_rigl_converged`` took 6 to 9 s alone and 85 to 96 s as one of 10
shards running at once (``results/logs_h200_2026-11-27/final``): the
processes time-slice the GPU (``nvidia-smi dmon`` read 97-99% SM busy), so
10 shards take as long as 10 runs in a row (MPS was not tried). The shards'
value is splitting one experiment across machines or sessions (shard 0/2
here, 1/2 there), each writing its own runs.

    python -m benchmarks.sharded "6:bench_rigl_converged --stage tune" \\
                                 "12:bench_equal_tuning --stage tune"
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path


def parse_job(text: str) -> tuple:
  """``"N:MODULE ARGS..."`` -> ``(N, MODULE, [ARGS])``."""
  n, sep, command = text.partition(":")
  words = shlex.split(command)
  if not sep or not n.strip().isdigit() or int(n) < 1 or not words:
    raise argparse.ArgumentTypeError(f"expected N:MODULE ARGS... (N >= 1), got {text!r}")
  return int(n), words[0], words[1:]


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("jobs", nargs="+", type=parse_job, metavar="JOB", help="N:MODULE ARGS...")
  p.add_argument("--logs", type=Path, default=Path("benchmarks/results/logs"),
                 help="folder of the shards' logs")
  args = p.parse_args(argv)
  args.logs.mkdir(parents=True, exist_ok=True)
  env = dict(os.environ)
  env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
  env.setdefault("PYTHONUNBUFFERED", "1")
  procs = []
  for n, module, rest in args.jobs:
    name = module.rsplit(".", 1)[-1]
    module = module if "." in module else f"benchmarks.{module}"
    for k in range(n):
      log = args.logs / f"{name}_{k}of{n}.log"
      cmd = [sys.executable, "-m", module, *rest, "--shard", f"{k}/{n}"]
      with open(log, "w") as f:
        procs.append((log, subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)))
  t0 = time.perf_counter()
  rcs = [proc.wait() for _, proc in procs]
  for (log, _), rc in zip(procs, rcs):
    print(f"{log}: exit {rc}")
  print(f"{len(procs)} shards in {time.perf_counter() - t0:.0f}s", flush=True)
  return max(rcs)


if __name__ == "__main__":
  sys.exit(main())
