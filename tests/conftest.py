import os
import sys

# tests/reference.py is imported by name from the tests.
sys.path.insert(0, os.path.dirname(__file__))

# Start JAX's backend now, so that every test runs under the same XLA flags
# whatever the order: rmda-train's main() edits XLA_FLAGS when it is the first
# JAX user of a process (rmda_jax.examples.xla_flags), which must not leak
# into the tests after it.
import jax  # noqa: E402

jax.devices()
