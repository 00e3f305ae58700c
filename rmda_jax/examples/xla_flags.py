"""Process-level XLA:CPU settings for the training example.

XLA:CPU (jaxlib 0.10) hands dots, convolutions, reductions and some
elementwise work to YNNPACK "library fusions". On the 2-core CPU this project
is developed on (``benchmarks/README.md``, sections 4 and 4b):

* with all of them, ``rmda-train``'s LeNet5 step took 1.59x the time of the
  same PyTorch loop (median of per-round ratios, 7 rounds);
* with none of them it took 1.32x, but the group-LASSO RMDA update of a
  ResNet50-sized pytree went from 1.20x to 3.21x the time of ``optax.sgd``:
  YNNPACK's reductions are what make the group norms cheap;
* with reductions only, the LeNet5 step took 1.24x PyTorch's time, and the
  ResNet50 update 1.08x ``optax.sgd``'s (section 4c).

So ``rmda-train`` keeps YNNPACK for reductions only, unless told not to touch
the flags (``--ynn-fusions``) or unless ``XLA_FLAGS`` already says something
about them. XLA reads ``XLA_FLAGS`` when JAX creates its first backend, so this
must run before the first JAX computation; afterwards it can only report that
it came too late. The flag is an experimental one of XLA:CPU, and XLA aborts
the process on flags it does not know, so it is only set for the jaxlib
versions it is known in (0.10, where this was measured, and 0.11). The library
itself (``rmda_jax``) never touches process flags.
"""

from __future__ import annotations

import os

__all__ = ["YNN_FLAG", "limit_ynn_fusions"]

_YNN_NAME = "xla_cpu_experimental_ynn_fusion_type"
YNN_FLAG = f"--{_YNN_NAME}=reduce"
_KNOWN_JAXLIB = ((0, 10), (0, 11))


def _jaxlib_version() -> str:
  try:
    import jaxlib
    return jaxlib.__version__
  except (ImportError, AttributeError):  # pragma: no cover
    return "unknown"


def _known(version: str) -> bool:
  try:
    major, minor = (int(v) for v in version.split(".")[:2])
  except ValueError:
    return False
  return (major, minor) in _KNOWN_JAXLIB


def _backends_started() -> bool:
  try:
    from jax._src import xla_bridge
    return bool(xla_bridge.backends_are_initialized())
  except (ImportError, AttributeError):  # pragma: no cover - other jax versions
    return False


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
    already started its backend"`` (too late to take effect) or ``"unchanged:
    jaxlib V may not know the flag"``; nothing is edited in the last three.
  """
  environ = os.environ if environ is None else environ
  flags = environ.get("XLA_FLAGS", "")
  if _YNN_NAME in flags:
    return "as set in XLA_FLAGS"
  version = _jaxlib_version() if jaxlib_version is None else jaxlib_version
  if not _known(version):
    return f"unchanged: jaxlib {version} may not know the flag"
  if _backends_started():
    return "unchanged: JAX had already started its backend"
  environ["XLA_FLAGS"] = f"{flags} --{_YNN_NAME}={fusion_types}".strip()
  return "reductions only" if fusion_types == "reduce" else f"ynn fusions: {fusion_types or 'none'}"
