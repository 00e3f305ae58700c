# Start JAX's backend now, so that every test runs under the same XLA flags
# whatever the order: rmda-train's main() edits XLA_FLAGS when it is the first
# JAX user of a process (rmda_jax.examples.xla_flags), which must not leak
# into the tests after it.
import jax

# jax.enable_x64 (a context manager) exists from jax 0.8; older releases,
# which the declared floors admit, spell it jax.experimental.enable_x64.
if not hasattr(jax, "enable_x64"):
  import jax.experimental  # noqa: E402

  jax.enable_x64 = jax.experimental.enable_x64

jax.devices()
