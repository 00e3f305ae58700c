"""What the tests need from JAX across the versions pyproject.toml accepts."""

import jax

try:
  # A context manager from jax 0.8; older releases (down to the floor) have
  # it under jax.experimental.
  enable_x64 = jax.enable_x64
except AttributeError:
  from jax.experimental import enable_x64  # noqa: F401
