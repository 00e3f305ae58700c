"""Sharded training: states follow the params, results match one device.

The checks run in a child process (tests/_spmd_child.py) with 8 virtual CPU
devices, set in XLA_FLAGS before JAX starts there. Layouts: kernels split
along their last axis (every input group's norm spans all shards) and along
the group axis on a 2-D (data, fsdp) mesh; automatic and explicit mesh axes.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests._compat import cpu_devices_xla_flags

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def facts():
  env = dict(os.environ,
             XLA_FLAGS=cpu_devices_xla_flags(8),
             JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-m", "tests._spmd_child"], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def test_runs_on_eight_devices(facts):
  assert facts["devices"] == 8
  names = {k.rsplit("/", 1)[1] for k in facts["runs"]}
  assert names == {"rmda", "rmda_multistep", "prox_sgd", "prox_adam",
                   "prox_ssi"}


def test_sharded_results_equal_one_device(facts):
  for run, f in facts["runs"].items():
    assert f["max_abs_diff"] <= 2e-5, run
    assert f["same_zeros"], run
    assert f["zero_groups"] > 0, run  # the zero patterns compared are real


def test_state_keeps_the_params_shardings(facts):
  for run, f in facts["runs"].items():
    assert f["params_keep_sharding"], run
    assert f["init_state_mismatch"] == [], run
    assert f["state_mismatch"] == [], run


def test_step_moves_no_parameter_sized_buffer(facts):
  # Group norms that span shards need one small all-reduce per leaf; an
  # all-gather (or any collective) as large as a kernel would be a reshard.
  for run, f in facts["runs"].items():
    assert f["param_sized_collectives"] == [], run
