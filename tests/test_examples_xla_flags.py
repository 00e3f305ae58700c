"""rmda-train's XLA:CPU setting: YNNPACK for reductions only, set only when it can take effect."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rmda_jax.examples import config, train, xla_flags

REPO = Path(__file__).resolve().parents[1]

KNOWN = xla_flags.known_jaxlib()   # whether the installed jaxlib gets the flag at all
needs_known_jaxlib = pytest.mark.skipif(
    not KNOWN, reason="the installed jaxlib may not know the YNNPACK flag (XLA would abort)")

PROBE = """
import json, os, sys
{prelude}
import jax, jax.numpy as jnp
out = {{"status": status, "xla_flags": os.environ.get("XLA_FLAGS", "")}}
if {compile}:
  a = jnp.ones((512, 512), jnp.float32)
  dot = jax.jit(lambda a, b: a @ b).lower(a, a).compile().as_text()
  red = jax.jit(lambda a: jnp.sum(a * a, axis=0)).lower(a).compile().as_text()
  out.update(ynn_dot="__ynn_fusion" in dot, ynn_reduce="__ynn_fusion" in red)
print(json.dumps(out))
"""

LIMIT = "from rmda_jax.examples import xla_flags\nstatus = xla_flags.limit_ynn_fusions()"


def probe(prelude, compile=True, **env):
  """Runs PROBE in a fresh process (no backend yet); compile=False never starts XLA."""
  e = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  e.update(env, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
  p = subprocess.run([sys.executable, "-c", PROBE.format(prelude=prelude, compile=compile)],
                     env=e, cwd=REPO, capture_output=True, text=True, timeout=120)
  assert p.returncode == 0, p.stderr
  return json.loads(p.stdout.strip().splitlines()[-1])


@needs_known_jaxlib
def test_flag_added_in_a_fresh_process_and_takes_effect():
  default = probe("status = None")
  if not (default["ynn_dot"] and default["ynn_reduce"]):
    pytest.skip("this jaxlib does not hand dots and reductions to YNNPACK by default")
  after = probe(LIMIT)
  assert after["status"] == "reductions only"
  assert xla_flags.YNN_FLAG in after["xla_flags"].split()
  assert not after["ynn_dot"]      # the compiled matmul is XLA's own, not YNNPACK's
  assert after["ynn_reduce"]       # group norms keep YNNPACK's reductions
  none = probe("from rmda_jax.examples import xla_flags\n"
               "status = xla_flags.limit_ynn_fusions(fusion_types='')")
  assert none["status"] == "ynn fusions: none"
  assert not none["ynn_dot"] and not none["ynn_reduce"]


def test_importing_the_examples_does_not_start_jax():
  # So main() can set XLA_FLAGS after the imports: XLA reads them when a backend starts.
  r = probe("import rmda_jax.examples.train, rmda_jax.examples.report\n"
            "from jax._src import xla_bridge\n"
            "status = xla_bridge.backends_are_initialized()", compile=False)
  assert r["status"] is False


def test_user_setting_is_left_alone():
  r = probe(LIMIT, compile=False, XLA_FLAGS="--xla_cpu_experimental_ynn_fusion_type=dot")
  assert r["status"] == "as set in XLA_FLAGS"
  assert r["xla_flags"] == "--xla_cpu_experimental_ynn_fusion_type=dot"


def test_other_user_flags_are_kept():
  r = probe(LIMIT, compile=False, XLA_FLAGS="--xla_cpu_enable_fast_math=false")
  if KNOWN:
    assert r["status"] == "reductions only"
    assert r["xla_flags"].split() == ["--xla_cpu_enable_fast_math=false", xla_flags.YNN_FLAG]
  else:
    assert r["status"].startswith("unchanged: jaxlib")
    assert r["xla_flags"] == "--xla_cpu_enable_fast_math=false"


@pytest.mark.parametrize("version", ["0.10.0", "0.10.2", "0.11.1"])
def test_known_jaxlib_gets_the_flag(version, monkeypatch):
  monkeypatch.setattr(xla_flags, "_backends_are_initialized", lambda: False)
  env = {"XLA_FLAGS": "--xla_cpu_enable_fast_math=false"}
  assert xla_flags.known_jaxlib(version)
  assert xla_flags.limit_ynn_fusions(env, jaxlib_version=version) == "reductions only"
  assert env == {"XLA_FLAGS": "--xla_cpu_enable_fast_math=false " + xla_flags.YNN_FLAG}


@pytest.mark.parametrize("version", ["0.4.30", "0.9.0", "0.12.0", "1.10.0", "dev"])
def test_unknown_jaxlib_gets_no_flag(version, monkeypatch):
  # XLA aborts on flags it does not know: outside the known versions, leave XLA_FLAGS alone.
  monkeypatch.setattr(xla_flags, "_backends_are_initialized", lambda: False)
  env = {"XLA_FLAGS": "--xla_cpu_enable_fast_math=false"}
  assert not xla_flags.known_jaxlib(version)
  status = xla_flags.limit_ynn_fusions(env, jaxlib_version=version)
  assert status == f"unchanged: jaxlib {version} may not know the flag"
  assert env == {"XLA_FLAGS": "--xla_cpu_enable_fast_math=false"}


def test_too_late_is_reported_not_pretended(monkeypatch):
  # The test process has a running backend (conftest), so an edit could not take effect.
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  assert xla_flags.limit_ynn_fusions(jaxlib_version="0.10.0") == \
      "unchanged: JAX had already started its backend"
  assert "XLA_FLAGS" not in os.environ


def test_cli_flag_and_summary(tmp_path):
  assert config.parse_args([]).ynn_fusions is False
  assert config.parse_args(["--ynn-fusions"]).ynn_fusions is True
  # The same run keeps one fingerprint (and checkpoints) with or without the flag.
  assert (config.parse_args([]).fingerprint()
          == config.parse_args(["--ynn-fusions"]).fingerprint())
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env["PYTHONPATH"] = str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")
  args = ["--dataset", "digits", "--model", "logreg", "--epochs", "1", "--milestones", "none",
          "--no-progress"]
  for extra, expect in (([], KNOWN), (["--ynn-fusions"], False)):
    out = tmp_path / str(len(extra))
    p = subprocess.run([sys.executable, "-m", "rmda_jax.examples.train", *args, *extra,
                        "--output-dir", str(out)], env=env, cwd=REPO, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert (xla_flags.YNN_FLAG in summary["xla_flags"].split()) is expect


@pytest.mark.parametrize("platforms,expected", [("cuda", "cuda"), ("tpu,cpu", "tpu"),
                                                ("cpu", None), (" CPU ", None)])
def test_accelerator_expected_reads_jax_platforms(platforms, expected):
  assert xla_flags.accelerator_expected({"JAX_PLATFORMS": platforms}) == expected


def test_the_cpu_flag_is_not_set_for_an_accelerator():
  env = {"JAX_PLATFORMS": "cuda", "XLA_FLAGS": "--xla_dump_to=/tmp/x"}
  status = xla_flags.limit_ynn_fusions(environ=env, jaxlib_version="0.10.2")
  assert status == "unchanged: JAX will run on cuda"
  assert env["XLA_FLAGS"] == "--xla_dump_to=/tmp/x"


def test_a_jax_that_cannot_tell_gets_the_flag_and_says_it_is_not_verified(monkeypatch):
  # JAX's private backends_are_initialized gone: the module imports, and does not
  # claim the flag took effect.
  import importlib

  from jax._src import xla_bridge
  monkeypatch.delattr(xla_bridge, "backends_are_initialized")
  try:
    mod = importlib.reload(xla_flags)
    assert mod._backends_are_initialized is None
    env = {}
    status = mod.limit_ynn_fusions(env, jaxlib_version="0.10.2")
    assert status.startswith("reductions only (not verified: ")
    assert env == {"XLA_FLAGS": mod.YNN_FLAG}
  finally:
    monkeypatch.undo()
    importlib.reload(xla_flags)
  assert xla_flags._backends_are_initialized is xla_bridge.backends_are_initialized


def test_openblas_threads_set_when_scipy_linalg_is_not_loaded():
  env = {"PATH": "/bin"}
  assert xla_flags.limit_openblas_threads(env, modules={}) == "1 thread"
  assert env == {"PATH": "/bin", "OPENBLAS_NUM_THREADS": "1"}
  env = {}
  assert xla_flags.limit_openblas_threads(env, threads=2, modules={}) == "2 threads"
  assert env == {"OPENBLAS_NUM_THREADS": "2"}


def test_openblas_threads_of_the_user_are_left_alone():
  env = {"OPENBLAS_NUM_THREADS": "4"}
  assert xla_flags.limit_openblas_threads(env, modules={}) == \
      "as set in OPENBLAS_NUM_THREADS (4)"
  assert env == {"OPENBLAS_NUM_THREADS": "4"}


def test_openblas_threads_too_late_is_reported_not_pretended():
  env = {}
  status = xla_flags.limit_openblas_threads(env, modules={"scipy.linalg": object()})
  assert status == "unchanged: SciPy's OpenBLAS is already loaded" and env == {}


def test_openblas_threads_take_effect_on_jaxs_svd_in_a_fresh_process():
  pytest.importorskip("threadpoolctl")
  code = """
import json
from rmda_jax.examples import xla_flags
status = xla_flags.limit_openblas_threads()
import jax.numpy as jnp, threadpoolctl
jnp.linalg.svd(jnp.ones((8, 4))).S.block_until_ready()   # loads SciPy's OpenBLAS
libs = [i for i in threadpoolctl.threadpool_info()
        if i["internal_api"] == "openblas" and "scipy.libs" in i["filepath"]]
print(json.dumps({"status": status, "threads": [i["num_threads"] for i in libs]}))
"""
  e = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
  e["PYTHONPATH"] = str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")
  p = subprocess.run([sys.executable, "-c", code], env=e, cwd=REPO, capture_output=True,
                     text=True, timeout=120)
  assert p.returncode == 0, p.stderr
  out = json.loads(p.stdout.strip().splitlines()[-1])
  assert out["status"] == "1 thread"
  if not out["threads"]:
    pytest.skip("this jaxlib's LAPACK is not SciPy's OpenBLAS")
  assert out["threads"] == [1]


# ------------------------------------------------------- virtual CPU devices
def test_virtual_devices_get_single_threaded_eigen(monkeypatch):
  monkeypatch.setattr(xla_flags, "_backends_are_initialized", lambda: False)
  env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8 --xla_cpu_enable_fast_math=false"}
  status = xla_flags.single_thread_eigen_for_virtual_devices(env)
  assert status == "single-threaded Eigen on 8 virtual devices"
  assert env["XLA_FLAGS"].split() == ["--xla_force_host_platform_device_count=8",
                                      "--xla_cpu_enable_fast_math=false",
                                      "--xla_cpu_multi_thread_eigen=false"]


@pytest.mark.parametrize("flags,status", [
    ("--xla_force_host_platform_device_count=8 --xla_cpu_multi_thread_eigen=true",
     "as set in XLA_FLAGS"),
    ("--xla_force_host_platform_device_count=1", "unchanged: no virtual devices"),
    ("--xla_cpu_enable_fast_math=false", "unchanged: no virtual devices"),
    ("", "unchanged: no virtual devices"),
])
def test_eigen_threads_left_alone_without_virtual_devices_or_when_the_user_chose(
    flags, status, monkeypatch):
  monkeypatch.setattr(xla_flags, "_backends_are_initialized", lambda: False)
  env = {"XLA_FLAGS": flags}
  assert xla_flags.single_thread_eigen_for_virtual_devices(env) == status
  assert env == {"XLA_FLAGS": flags}


def test_eigen_threads_unchanged_on_an_accelerator_or_too_late(monkeypatch):
  flags = "--xla_force_host_platform_device_count=4"
  env = {"XLA_FLAGS": flags, "JAX_PLATFORMS": "cuda"}
  monkeypatch.setattr(xla_flags, "_backends_are_initialized", lambda: False)
  assert xla_flags.single_thread_eigen_for_virtual_devices(env) == \
      "unchanged: JAX will run on cuda"
  monkeypatch.setattr(xla_flags, "_backends_are_initialized", lambda: True)
  env = {"XLA_FLAGS": flags}
  assert xla_flags.single_thread_eigen_for_virtual_devices(env) == \
      "unchanged: JAX had already started its backend"
  assert env == {"XLA_FLAGS": flags}


@pytest.mark.parametrize("mesh,added", [("data=4", True), (None, False)])
def test_rmda_train_sets_eigen_threads_for_a_mesh_only(mesh, added, monkeypatch):
  monkeypatch.setattr(xla_flags, "_backends_are_initialized", lambda: False)
  flags = f"--xla_force_host_platform_device_count=4 {xla_flags.YNN_FLAG}"
  monkeypatch.setenv("XLA_FLAGS", flags)
  train.prepare_process(config.Config(mesh=mesh, dataset="digits"))
  words = os.environ["XLA_FLAGS"].split()
  assert ("--xla_cpu_multi_thread_eigen=false" in words) is added
  assert words[:2] == flags.split()


def test_virtual_device_count_reads_the_last_flag():
  assert xla_flags.virtual_device_count("") == 1
  assert xla_flags.virtual_device_count("--xla_force_host_platform_device_count=8") == 8
  assert xla_flags.virtual_device_count(
      "--xla_force_host_platform_device_count=8 --xla_force_host_platform_device_count=2") == 2
  assert xla_flags.virtual_device_count("--xla_force_host_platform_device_count=x") == 1
