"""rmda-train on a mesh: data parallelism, FSDP, two processes, resume across meshes.

The runs happen in child processes (tests/_mesh_child.py) whose virtual CPU
device count is set in XLA_FLAGS before JAX starts: one process with 8
devices, and two processes with 4 devices each joined by jax.distributed
(gloo collectives on 127.0.0.1). Each run trains LeNet5 (small) on sklearn
digits for 3 epochs with group LASSO strong enough to zero most input groups;
``--mesh data=1`` is the single-device path. This process restores the
checkpoints on its one device and compares: sharded runs and the run resumed
on another mesh give the one-device parameters to float32 rounding and the
same zero groups.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import chex
import jax
import numpy as np
import pytest

import rmda_jax as rj
from rmda_jax.examples import config, sharding, train
from tests._compat import cpu_devices_xla_flags

# Child processes on 8 virtual devices: minutes on 2 cores (CI runs it: -m slow).
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
EPOCHS = 3
TINY = ["--dataset", "digits", "--model", "lenet5_small", "--batch-size", "32",
        "--milestones", "2", "--lr", "0.3", "--momentum", "1.0", "--strength", "4e-3",
        "--no-progress", "--ynn-fusions"]
TIMEOUT_S = 420


def _env(devices: int) -> dict:
  return dict(os.environ, XLA_FLAGS=cpu_devices_xla_flags(devices),
              JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))


def _facts(stdout: str) -> dict:
  # gloo prints its own lines on the same stdout: the facts are the JSON line.
  return json.loads([l for l in stdout.splitlines() if l.startswith("{")][-1])


def run(name, *flags, epochs=EPOCHS):
  """An argument list of the tiny run writing to the output folder ``name``."""
  return TINY + ["--epochs", str(epochs), "--output-dir", name, *flags]


@pytest.fixture(scope="module")
def out(tmp_path_factory):
  return tmp_path_factory.mktemp("mesh")


@pytest.fixture(scope="module")
def eight(out):
  """One process, 8 devices: the reference, DP, FSDP, resumes across meshes, refusals."""
  o = lambda name: str(out / name)
  runs = {
      "ref": run(o("ref"), "--mesh", "data=1"),
      "dp": run(o("dp")),  # no --mesh: the default, data parallelism over all 8 devices
      "fsdp": run(o("fsdp"), "--mesh", "data=2,fsdp=4"),
      # Saved on 8 devices (FSDP), finished on 1; saved on 1, finished on 8.
      "8to1_a": run(o("8to1"), "--mesh", "data=2,fsdp=4", epochs=1),
      "8to1_b": run(o("8to1"), "--mesh", "data=1", "--resume"),
      "1to8_a": run(o("1to8"), "--mesh", "data=1", epochs=2),
      "1to8_b": run(o("1to8"), "--mesh", "data=8", "--resume"),
      "check_dp": ["--check-step"] + run(o("unused"), "--mesh", "data=8"),
      "check_fsdp": ["--check-step"] + run(o("unused"), "--mesh", "data=2,fsdp=4"),
      "bad_batch": run(o("bad1"), "--mesh", "data=8") + ["--batch-size", "30"],
      "too_many": run(o("bad2"), "--mesh", "data=4,fsdp=4"),
      "fsdp_3": run(o("bad3"), "--mesh", "fsdp=3"),
  }
  proc = subprocess.run([sys.executable, "-m", "tests._mesh_child",
                         json.dumps(list(runs.values()))],
                        cwd=ROOT, env=_env(8), capture_output=True, text=True,
                        timeout=TIMEOUT_S)
  assert proc.returncode == 0, proc.stderr[-3000:]
  facts = _facts(proc.stdout)
  assert facts["devices"] == 8 and facts["processes"] == 1
  return dict(zip(runs, facts["runs"]))


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_processes(out):
  """Two processes with 4 CPU devices each, one jax.distributed job, one run: FSDP with
  its kernels split within each process and the batch over both (data=4 spans the two
  processes). The default mesh is the single-process fixture's ``dp`` run: the same code
  picks it, and a second two-process run cost CI half a minute."""
  port = _free_port()
  runs = [run(str(out / "two_fsdp"), "--mesh", "data=4,fsdp=2")]
  procs = [subprocess.Popen(
      [sys.executable, "-m", "tests._mesh_child", json.dumps([argv + [
          "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
          "--process-id", str(i)] for argv in runs])],
      cwd=ROOT, env=_env(4), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for i in range(2)]
  results = []
  try:
    for p in procs:
      stdout, stderr = p.communicate(timeout=TIMEOUT_S)
      results.append((p.returncode, stdout, stderr))
  finally:
    for p in procs:  # a hung peer: stop both (these are this test's own processes)
      if p.poll() is None:
        p.kill()
        p.wait()
  for rc, _, stderr in results:
    assert rc == 0, stderr[-3000:]
  return [_facts(stdout) for _, stdout, _ in results]


def final_state(out_dir, epochs=EPOCHS):
  """(params, opt_state, Z) of a run's last checkpoint, restored here, on one device."""
  cfg = config.parse_args(run(str(out_dir), epochs=epochs))
  ds = train.prepare_data(cfg)
  trainer = train.Trainer(cfg, ds, len(ds.y_train) // cfg.batch_size)
  ckpt = train.Checkpointer(Path(out_dir) / "checkpoints")
  try:
    assert ckpt.latest_epoch() == epochs
    state, _ = ckpt.restore(epochs, trainer.init_state(), np.zeros(2, np.uint32))
  finally:
    ckpt.close()
  z = trainer.reported(state)
  return jax.device_get((state.params, state.opt_state, z)), trainer.metric_reg


def assert_same_training(a_dir, b_dir):
  """The same parameters and optimizer state to float32 rounding, the same zero groups."""
  (pa, sa, za), reg = final_state(a_dir)
  (pb, sb, zb), _ = final_state(b_dir)
  chex.assert_trees_all_close(pb, pa, rtol=1e-4, atol=1e-5)
  chex.assert_trees_all_close(sb, sa, rtol=1e-4, atol=1e-5)
  chex.assert_trees_all_close(zb, za, rtol=1e-4, atol=1e-5)
  chex.assert_trees_all_equal(jax.tree.map(lambda x: x == 0, zb),
                              jax.tree.map(lambda x: x == 0, za))
  chex.assert_trees_all_equal(rj.group_support(zb, reg), rj.group_support(za, reg))
  return rj.group_sparsity(za, reg)


def test_reference_is_sparse_but_not_empty(eight, out):
  assert eight["ref"]["rc"] == 0, eight["ref"]["stderr"]
  (_, _, z), reg = final_state(out / "ref")
  assert 0.2 < rj.group_sparsity(z, reg) < 0.95  # a zero pattern worth comparing
  assert all(bool(np.any(s)) for s in jax.tree.leaves(rj.group_support(z, reg)))


@pytest.mark.parametrize("name", ["dp", "fsdp"])
def test_mesh_equals_one_device(eight, out, name):
  assert eight[name]["rc"] == 0, eight[name]["stderr"]
  assert assert_same_training(out / "ref", out / name) > 0.2
  rows = [json.loads(l) for l in (out / name / "metrics.jsonl").read_text().splitlines()]
  ref = [json.loads(l) for l in (out / "ref" / "metrics.jsonl").read_text().splitlines()]
  assert [r["group_sparsity"] for r in rows] == [r["group_sparsity"] for r in ref]
  summary = json.loads((out / name / "summary.json").read_text())
  assert summary["mesh"] == {"data": 8 if name == "dp" else 2, "fsdp": 1 if name == "dp" else 4,
                             "devices": 8, "processes": 1, "platform": "cpu"}
  assert json.loads((out / "ref" / "summary.json").read_text())["mesh"] is None


@pytest.mark.parametrize("name", ["8to1", "1to8"])
def test_resume_on_another_mesh(eight, out, name):
  for part in ("a", "b"):
    assert eight[f"{name}_{part}"]["rc"] == 0, eight[f"{name}_{part}"]["stderr"]
  assert any("resumed from epoch" in l for l in eight[f"{name}_b"]["stdout"])
  assert assert_same_training(out / "ref", out / name) > 0.2
  rows = (out / name / "metrics.jsonl").read_text().splitlines()
  assert [json.loads(l)["epoch"] for l in rows] == list(range(1, EPOCHS + 1))


@pytest.mark.parametrize("name", ["check_dp", "check_fsdp"])
def test_step_keeps_shardings_and_compiles_once(eight, name):
  f = eight[name]
  assert f["state_keeps_shardings"]
  assert f["compilations"] == 1  # two epochs, as rmda-train's loop calls it


def test_data_parallel_step_sums_the_gradient_once(eight, out):
  # One all-reduce of the gradient (and the loss): nothing else moves, in
  # particular no batch (each device reads only its rows of the epoch).
  (params, _, _), _ = final_state(out / "ref")
  n = sum(int(np.size(p)) for p in jax.tree.leaves(params))
  ops = eight["check_dp"]["collectives"]
  assert {op for op, _ in ops} == {"all-reduce"}
  assert 4 * n <= sum(b for _, b in ops) <= 4 * n + 64


def test_fsdp_shards_the_kernels(eight, out):
  assert eight["check_dp"]["param_specs"] == ["P()"]
  specs = eight["check_fsdp"]["param_specs"]
  assert "P('fsdp',)" in specs  # fc kernels, on their input axis (the largest)
  assert "P(None, None, None, 'fsdp')" in specs  # conv2, on its output axis
  assert "P()" in specs  # biases, and conv1 (5x5x1x6: no axis divisible by 4)
  ops = eight["check_fsdp"]["collectives"]
  assert {"all-gather", "all-reduce"} <= {op for op, _ in ops}
  # The kernels move (gathered whole, gradients summed), not the activations:
  # about twice the parameters' bytes, as FSDP does.
  (params, _, _), _ = final_state(out / "ref")
  n = sum(int(np.size(p)) for p in jax.tree.leaves(params))
  assert sum(b for _, b in ops) <= 2 * 4 * n + 1024


@pytest.mark.parametrize("name,words", [
    ("bad_batch", "--batch-size 30 does not split over the mesh's 8 devices"),
    ("too_many", "needs 16 devices; there are 8"),
    ("fsdp_3", "--mesh fsdp=3: does not divide the 8 devices"),
])
def test_mesh_refusals_are_one_line(eight, name, words):
  f = eight[name]
  assert f["rc"] == 2
  assert len(f["stderr"]) == 1 and f["stderr"][0].startswith("rmda-train: error: ")
  assert words in f["stderr"][0]


@pytest.mark.parametrize("k,name,mesh", [(0, "two_fsdp", {"data": 4, "fsdp": 2})])
def test_two_processes_equal_one(two_processes, out, eight, k, name, mesh):
  first, second = two_processes
  for f in (first, second):
    assert f["devices"] == 8 and f["local_devices"] == 4 and f["processes"] == 2
    assert f["runs"][k]["rc"] == 0, f["runs"][k]["stderr"]
  assert any(l.startswith("epoch") for l in first["runs"][k]["stdout"])
  assert second["runs"][k]["stdout"] == []  # only process 0 logs
  rows = (out / name / "metrics.jsonl").read_text().splitlines()
  assert [json.loads(l)["epoch"] for l in rows] == list(range(1, EPOCHS + 1))  # written once
  summary = json.loads((out / name / "summary.json").read_text())
  assert summary["mesh"] == {**mesh, "devices": 8, "processes": 2, "platform": "cpu"}
  assert assert_same_training(out / "ref", out / name) > 0.2


# ---------------------------------------------------------------- in this process
@pytest.mark.parametrize("text", ["data", "data=0", "data=2,data=2", "model=2", "data=2;fsdp=2",
                                  "data=-1"])
def test_bad_mesh_strings(text, capsys, tmp_path):
  assert train.main(run(str(tmp_path), "--mesh", text)) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("rmda-train: error: --mesh")


@pytest.mark.parametrize("flags,words", [
    (["--mesh", "data=2"], "needs 2 devices; there are 1"),
    (["--coordinator", "nohost"], "--coordinator 'nohost': expected host:port"),
    (["--coordinator", "127.0.0.1:1", "--num-processes", "2", "--process-id", "2"],
     "--process-id 2 must be below --num-processes 2"),
])
def test_refusals_before_any_work(flags, words, capsys, tmp_path):
  assert train.main(run(str(tmp_path), *flags)) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and words in err[0]


def test_parse_mesh_and_fsdp_axis():
  assert sharding.parse_mesh(None) == sharding.MeshSpec(None, 1)
  assert sharding.parse_mesh("data=8") == sharding.MeshSpec(8, 1)
  assert sharding.parse_mesh("data=2, fsdp=4") == sharding.MeshSpec(2, 4)
  assert sharding.parse_mesh("fsdp=4") == sharding.MeshSpec(None, 4)
  assert sharding.fsdp_axis((5, 5, 1, 6), 4) is None       # nothing divisible: replicated
  assert sharding.fsdp_axis((5, 5, 6, 16), 4) == 3
  assert sharding.fsdp_axis((400, 120), 4) == 0            # the largest divisible axis
  assert sharding.fsdp_axis((3, 3, 64, 64), 4) == 3        # ties: the last
  assert sharding.fsdp_axis((120,), 4) is None             # vectors stay replicated
  assert sharding.fsdp_axis((400, 120), 1) is None


def test_one_device_has_no_layout():
  assert sharding.layout_for(config.parse_args([])) is None
