"""What the tests need from JAX across the versions pyproject.toml accepts."""

import jax

try:
  # A context manager from jax 0.8; older releases (down to the floor) have
  # it under jax.experimental.
  enable_x64 = jax.enable_x64
except AttributeError:
  from jax.experimental import enable_x64  # noqa: F401


def _jaxlib_version() -> tuple:
  from importlib.metadata import version
  return tuple(int(p) for p in version("jaxlib").split(".")[:2] if p.isdigit())


def cpu_devices_xla_flags(n: int) -> str:
  """XLA_FLAGS for a process with ``n`` virtual CPU devices.

  The devices' collectives rendezvous between ``n`` threads, which XLA gives
  up on after 40 s; on a loaded machine (a shared CI runner, the tests' own
  parallel workers) a thread can wait longer than that, so from jaxlib 0.10
  (where the flag exists) the limit is raised to 10 minutes. A real deadlock
  is still caught by the tests' own subprocess timeouts.
  """
  flags = f"--xla_force_host_platform_device_count={n}"
  if _jaxlib_version() >= (0, 10):
    flags += (" --xla_cpu_collective_call_terminate_timeout_seconds=600"
              " --xla_cpu_collective_call_warn_stuck_timeout_seconds=300")
  return flags
