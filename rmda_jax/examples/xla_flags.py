"""Process-level XLA:CPU settings for the training example.

XLA:CPU (jaxlib 0.10) hands dots, reductions and some elementwise work to
YNNPACK "library fusions". On the 2-core CPU this project is developed on,
they made the LeNet5 training step of ``rmda-train`` about 1.5x slower than
XLA's own kernels (jax+rmda 5935 vs 9061 samples/s in
``benchmarks/bench_train_step.py``, same machine, different runs; see
``benchmarks/README.md``). ``rmda-train`` therefore turns them off unless
told not to (``--ynn-fusions``) or unless ``XLA_FLAGS`` already says
something about them.

XLA reads ``XLA_FLAGS`` when JAX creates its first backend, so this must run
before the first JAX computation; afterwards it can only report that it came
too late. The library itself (``rmda_jax``) never touches process flags.
"""

from __future__ import annotations

import os

__all__ = ["YNN_FLAG", "disable_ynn_fusions"]

YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type="
_YNN_NAME = "xla_cpu_experimental_ynn_fusion_type"


def _backends_started() -> bool:
  try:
    from jax._src import xla_bridge
    return bool(xla_bridge.backends_are_initialized())
  except (ImportError, AttributeError):  # pragma: no cover - other jax versions
    return False


def disable_ynn_fusions(environ=None) -> str:
  """Adds ``--xla_cpu_experimental_ynn_fusion_type=`` to ``XLA_FLAGS``.

  Args:
    environ: the environment to edit (default ``os.environ``).

  Returns:
    What happened, for logs: ``"off"`` (flag added), ``"as set in XLA_FLAGS"``
    (the user already chose; left alone) or ``"unchanged: JAX had already
    started its backend"`` (too late to take effect; nothing edited).
  """
  environ = os.environ if environ is None else environ
  flags = environ.get("XLA_FLAGS", "")
  if _YNN_NAME in flags:
    return "as set in XLA_FLAGS"
  if _backends_started():
    return "unchanged: JAX had already started its backend"
  environ["XLA_FLAGS"] = f"{flags} {YNN_FLAG}".strip()
  return "off"
