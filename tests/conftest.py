# Start JAX's backend now, so that every test runs under the same XLA flags
# whatever the order: rmda-train's main() edits XLA_FLAGS when it is the first
# JAX user of a process (rmda_jax.examples.xla_flags), which must not leak
# into the tests after it.
import jax

jax.devices()
