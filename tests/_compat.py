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

  Eigen's convolutions and matmuls run on the calling thread
  (``--xla_cpu_multi_thread_eigen=false``): with them multi-threaded, a
  process with ``n`` virtual devices on a 2-core machine deadlocked
  (2026-12-05, jaxlib 0.10, three such processes at once; gdb: four device
  programs waiting in an AllReduce rendezvous held the thread pool's workers
  that the other four devices' convolutions had queued their blocks on).
  """
  flags = f"--xla_force_host_platform_device_count={n} --xla_cpu_multi_thread_eigen=false"
  if _jaxlib_version() >= (0, 10):
    flags += (" --xla_cpu_collective_call_terminate_timeout_seconds=600"
              " --xla_cpu_collective_call_warn_stuck_timeout_seconds=300")
  return flags
