import os
import shutil
import tempfile

# One XLA compilation cache for the whole test run, shared through the
# environment with the processes the tests start (rmda-train on virtual
# meshes, the benchmarks' --quick modes) and with pytest-xdist's workers: they
# compile the same LeNet5 steps many times. A fresh directory per run, removed
# at its end: a run reads only what it compiled itself.
# On by default; RMDA_JAX_TEST_XLA_CACHE=0 turns it off. It saved about 9% of
# the CPU time of the slow tests (2026-12-05: `-m slow` took 5.9 against 6.5
# user CPU minutes, same load), and caching every compilation (threshold 0 s
# instead of 0.5 s) saved 9% more: 5.5 against 6.1 user CPU minutes, two runs
# of each, same load (the many small programs of a model's initialisation and
# metrics, compiled again by every process). A JAX_COMPILATION_CACHE_DIR set
# before the run is used as it is (.ci/run shares one between its test runs).
# The 8-device mesh child that once hung with it on hung without it too: an
# XLA:CPU thread-pool deadlock, fixed in rmda_jax/examples/sharding.py
# (Layout.serial), not a cache problem.
_CACHE_PREFIX = "rmda_jax-tests-xla-"
if (os.environ.get("RMDA_JAX_TEST_XLA_CACHE", "1") == "1"
    and "JAX_COMPILATION_CACHE_DIR" not in os.environ):
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix=_CACHE_PREFIX)
  # Every compilation (JAX's default threshold is 1 s).
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"

# Start JAX's backend now, so that every test runs under the same XLA flags
# whatever the order: rmda-train's main() edits XLA_FLAGS when it is the first
# JAX user of a process (rmda_jax.examples.xla_flags), which must not leak
# into the tests after it.
import jax  # noqa: E402
import pytest  # noqa: E402


if os.environ.get("JAX_COMPILATION_CACHE_DIR", "").startswith(
    os.path.join(tempfile.gettempdir(), _CACHE_PREFIX)):
  # In case a plugin imported jax before this file set the environment.
  jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)

jax.devices()


# The files that take longest (child processes, the benchmarks' quick modes),
# started first so that pytest-xdist's workers finish together; the others
# keep their order.
SLOW_FIRST = ("test_examples_mesh.py", "test_benchmarks_quick.py", "test_bench_deep.py",
              "test_bench_sparsity_quick.py", "test_examples_cpu_conv.py", "test_sharding.py",
              "test_notebooks.py", "test_slim.py", "test_examples_failures.py",
              "test_bench_scale.py")


def pytest_collection_modifyitems(items):
  rank = {name: i for i, name in enumerate(SLOW_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_FIRST)))


def pytest_sessionfinish(session):
  """The run's own cache goes (by the process that made it, not xdist's workers)."""
  cache = os.environ.get("JAX_COMPILATION_CACHE_DIR", "")
  if (os.path.basename(cache).startswith(_CACHE_PREFIX)
      and not hasattr(session.config, "workerinput")):
    shutil.rmtree(cache, ignore_errors=True)


@pytest.fixture(scope="session")
def mnist():
  """MNIST, read once per session; a skip only where it is absent (tests/_data.py)."""
  from tests import _data

  return _data.mnist_or_skip()
