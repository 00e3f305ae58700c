# Start JAX's backend now, so that every test runs under the same XLA flags
# whatever the order: rmda-train's main() edits XLA_FLAGS when it is the first
# JAX user of a process (rmda_jax.examples.xla_flags), which must not leak
# into the tests after it.
import jax
import pytest

# jax.enable_x64 (a context manager) exists from jax 0.8; older releases,
# which the declared floors admit, spell it jax.experimental.enable_x64.
# Tests should use tests._compat.enable_x64; this alias stays until every
# test file does (test_regularizers, test_rmda_integration, test_baselines,
# test_rmda_reference, test_sparse_group_lasso and test_nuclear_norm still
# call jax.enable_x64).
if not hasattr(jax, "enable_x64"):
  import jax.experimental  # noqa: E402

  jax.enable_x64 = jax.experimental.enable_x64

jax.devices()


@pytest.fixture(scope="session")
def mnist():
  """MNIST, read once per session; a skip only where it is absent (tests/_data.py)."""
  from tests import _data

  return _data.mnist_or_skip()
