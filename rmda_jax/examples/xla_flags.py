"""Process-level XLA:CPU settings for the training example.

XLA:CPU (jaxlib 0.10) hands dots, convolutions, reductions and some
elementwise work to YNNPACK "library fusions". On the 2-core CPU this project
is developed on (``benchmarks/README.md``, sections 4, 4b and 4c), keeping them
for reductions only made ``rmda-train``'s LeNet5 step faster than keeping all
of them, while turning them all off made the group-LASSO RMDA update of a
ResNet50-sized pytree much slower (YNNPACK's reductions are what make the
group norms cheap).

So ``rmda-train`` keeps YNNPACK for reductions only, unless told not to touch
the flags (``--ynn-fusions``) or unless ``XLA_FLAGS`` already says something
about them. XLA reads ``XLA_FLAGS`` when JAX starts its first backend (at the
first computation, not at ``import jax``), so this must run before the first
JAX computation; afterwards it can only report that it came too late. The
flag is an experimental one of XLA:CPU, and XLA aborts the process on flags
it does not know, so it is only set for the jaxlib versions it is known in
(0.10, where this was measured, and 0.11). The library itself (``rmda_jax``)
never touches process flags.

OpenBLAS threads (:func:`limit_openblas_threads`): JAX's CPU SVD, which the
nuclear norm's prox calls once per kernel per step, is LAPACK from SciPy's
OpenBLAS. On the shared 2-core machine its threads thrash: one 784x512 SVD
took 3 s with OpenBLAS's default threads and 0.16 s with one, under load
(``benchmarks/bench_low_rank.py``; it and ``bench_cost.py --nuclear`` set
``OPENBLAS_NUM_THREADS=1``). OpenBLAS reads that variable once, when it
loads: SciPy's loads at JAX's first linear-algebra call, so ``rmda-train
--regularizer nuclear`` sets it before JAX starts, unless the user did.
NumPy's own OpenBLAS (already loaded by then; the per-epoch
``rmda_jax.rank_report`` uses it) keeps its threads.

Virtual CPU devices (:func:`single_thread_eigen_for_virtual_devices`): with
``--xla_force_host_platform_device_count=N`` a mesh's N device programs share
one thread pool with the Eigen convolutions and matmuls they hand out. On the
2-core machine, three such processes at once deadlocked (2026-12-05, jaxlib
0.10; gdb: four device programs waiting in an AllReduce rendezvous held the
pool's workers that the other four devices' convolutions had queued their
blocks on). So ``rmda-train --mesh`` on virtual devices runs Eigen on the
calling thread (``--xla_cpu_multi_thread_eigen=false``), unless ``XLA_FLAGS``
already says something about it.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import sys

import jaxlib

try:  # private, and JAX has no public way to ask this
  from jax._src.xla_bridge import backends_are_initialized as _backends_are_initialized
except ImportError:  # a jax without it: whether the flag took effect cannot be known
  _backends_are_initialized = None

__all__ = ["YNN_FLAG", "accelerator_expected", "known_jaxlib", "limit_ynn_fusions",
           "limit_openblas_threads", "single_thread_eigen_for_virtual_devices",
           "virtual_device_count"]

_YNN_NAME = "xla_cpu_experimental_ynn_fusion_type"
YNN_FLAG = f"--{_YNN_NAME}=reduce"
_KNOWN_JAXLIB = ((0, 10), (0, 11))
_DEVICES_NAME = "xla_force_host_platform_device_count"
_EIGEN_NAME = "xla_cpu_multi_thread_eigen"


def _known(version: str) -> bool:
  try:
    major, minor = (int(v) for v in version.split(".")[:2])
  except ValueError:
    return False
  return (major, minor) in _KNOWN_JAXLIB


def known_jaxlib(version: str | None = None) -> bool:
  """Whether jaxlib ``version`` (default: the installed one) knows the YNNPACK flag."""
  return _known(jaxlib.__version__ if version is None else version)


def accelerator_expected(environ=None) -> str | None:
  """The platform JAX will start instead of the CPU, or ``None`` for the CPU.

  Read before JAX starts: the first entry of ``JAX_PLATFORMS`` when it is
  set, else an installed PJRT plugin (``jax_plugins`` entry points: CUDA,
  ROCm, ...) or ``libtpu``. JAX prefers those to the CPU.
  """
  environ = os.environ if environ is None else environ
  platforms = environ.get("JAX_PLATFORMS", "").strip()
  if platforms:
    first = platforms.split(",")[0].strip().lower()
    return None if first == "cpu" else first
  plugins = sorted(ep.name for ep in
                   importlib.metadata.entry_points(group="jax_plugins"))
  if plugins:
    return plugins[0]
  return "tpu" if importlib.util.find_spec("libtpu") is not None else None


def limit_ynn_fusions(environ=None, jaxlib_version=None, fusion_types="reduce") -> str:
  """Adds ``--xla_cpu_experimental_ynn_fusion_type=reduce`` to ``XLA_FLAGS``.

  Args:
    environ: the environment to edit (default ``os.environ``).
    jaxlib_version: the jaxlib version to decide for (default: the installed one).
    fusion_types: what YNNPACK keeps, comma-separated (``"reduce"``, rmda-train's
      setting; ``""`` for nothing, as ``bench_train_step.py --ynn none``).

  Returns:
    What happened, for logs: ``"reductions only"`` (flag added; ``"ynn fusions:
    <fusion_types or none>"`` for other ``fusion_types``), ``"as set in
    XLA_FLAGS"`` (the user already chose; left alone), ``"unchanged: JAX had
    already started its backend"`` (too late to take effect), ``"unchanged:
    jaxlib V may not know the flag"`` or ``"unchanged: JAX will run on P"``
    (an accelerator: the flag is XLA:CPU's, see :func:`accelerator_expected`);
    nothing is edited in the last four. When this jax cannot tell whether its
    backend already started (its private ``backends_are_initialized`` is
    gone), the flag is added and the status ends in ``" (not verified: ...)"``.
  """
  environ = os.environ if environ is None else environ
  flags = environ.get("XLA_FLAGS", "")
  if _YNN_NAME in flags:
    return "as set in XLA_FLAGS"
  accelerator = accelerator_expected(environ)
  if accelerator is not None:
    return f"unchanged: JAX will run on {accelerator}"
  version = jaxlib.__version__ if jaxlib_version is None else jaxlib_version
  if not _known(version):
    return f"unchanged: jaxlib {version} may not know the flag"
  if _backends_are_initialized is not None and _backends_are_initialized():
    return "unchanged: JAX had already started its backend"
  environ["XLA_FLAGS"] = f"{flags} --{_YNN_NAME}={fusion_types}".strip()
  status = ("reductions only" if fusion_types == "reduce"
            else f"ynn fusions: {fusion_types or 'none'}")
  if _backends_are_initialized is None:
    status += (" (not verified: this jax cannot say whether its backend had already "
               "started, in which case the flag has no effect)")
  return status


def limit_openblas_threads(environ=None, threads: int = 1, modules=None) -> str:
  """Sets ``OPENBLAS_NUM_THREADS`` for JAX's CPU SVD, before SciPy's OpenBLAS loads.

  Args:
    environ: the environment to edit (default ``os.environ``).
    threads: the OpenBLAS threads (rmda-train: 1, as the benchmarks).
    modules: the loaded modules (default ``sys.modules``): SciPy's OpenBLAS
      is loaded once ``scipy.linalg`` is (JAX imports it at its first
      linear-algebra call).

  Returns:
    What happened, for logs: ``"1 thread"`` (``"N threads"``; set),
    ``"as set in OPENBLAS_NUM_THREADS (V)"`` (the user already chose; left
    alone) or ``"unchanged: SciPy's OpenBLAS is already loaded"`` (too late to
    take effect; nothing edited).
  """
  environ = os.environ if environ is None else environ
  modules = sys.modules if modules is None else modules
  if "OPENBLAS_NUM_THREADS" in environ:
    return f"as set in OPENBLAS_NUM_THREADS ({environ['OPENBLAS_NUM_THREADS']})"
  if "scipy.linalg" in modules:
    return "unchanged: SciPy's OpenBLAS is already loaded"
  environ["OPENBLAS_NUM_THREADS"] = str(threads)
  return f"{threads} thread{'' if threads == 1 else 's'}"


def virtual_device_count(flags: str) -> int:
  """The ``--xla_force_host_platform_device_count`` in ``flags`` (the last one), or 1."""
  count = 1
  for word in flags.split():
    name, _, value = word.lstrip("-").partition("=")
    if name == _DEVICES_NAME:
      try:
        count = int(value)
      except ValueError:
        count = 1
  return count


def single_thread_eigen_for_virtual_devices(environ=None) -> str:
  """Adds ``--xla_cpu_multi_thread_eigen=false`` where XLA_FLAGS asks for virtual devices.

  Args:
    environ: the environment to edit (default ``os.environ``).

  Returns:
    What happened, for logs: ``"single-threaded Eigen on N virtual devices"``
    (flag added), ``"as set in XLA_FLAGS"`` (the user already chose; left
    alone), ``"unchanged: no virtual devices"`` (fewer than 2 asked for),
    ``"unchanged: JAX will run on P"`` (an accelerator) or ``"unchanged: JAX
    had already started its backend"`` (too late); nothing is edited in the
    last four.
  """
  environ = os.environ if environ is None else environ
  flags = environ.get("XLA_FLAGS", "")
  if _EIGEN_NAME in flags:
    return "as set in XLA_FLAGS"
  count = virtual_device_count(flags)
  if count < 2:
    return "unchanged: no virtual devices"
  accelerator = accelerator_expected(environ)
  if accelerator is not None:
    return f"unchanged: JAX will run on {accelerator}"
  if _backends_are_initialized is not None and _backends_are_initialized():
    return "unchanged: JAX had already started its backend"
  environ["XLA_FLAGS"] = f"{flags} --{_EIGEN_NAME}=false".strip()
  return f"single-threaded Eigen on {count} virtual devices"
