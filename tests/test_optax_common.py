"""optax's own test suite for contributed optimizers, run on this library's.

optax ships the tests every optimizer in ``optax.contrib`` must pass
(``optax/contrib/_common_test.py``: convergence on a parabola and Rosenbrock,
extra arguments and no recompilation, ``optax.inject_hyperparams`` (without
``static_args``), dtype preservation, ``optax.MultiSteps``, state stability,
learning-rate schedules). This module reads that file from the *installed*
optax, replaces its optimizer lists by ours (each with a regularizer and
learning rates that converge), and lets pytest collect its test class.
"""

import importlib.util
import pathlib
import re

import jax.numpy as jnp
import pytest

import rmda_jax as rj

_SPEC = importlib.util.find_spec("optax")
_SOURCE = (pathlib.Path(_SPEC.origin).parent / "contrib" / "_common_test.py"
           if _SPEC and _SPEC.origin else None)
if _SOURCE is None or not _SOURCE.exists():
  pytest.skip("the installed optax ships no contrib/_common_test.py",
              allow_module_level=True)

# A small strength: the targets' minimizers are not sparse, and the common
# tests compare with them at 3e-2. Only kernels (ndim >= 2) are regularized,
# so the matrix targets exercise the prox.
_REG = rj.group_lasso(1e-4)

# name -> (factory, kwargs). The learning rates converge on every target
# within the 30,000 steps the convergence test runs.
OPTIMIZERS = {
    "rmda": (rj.rmda, {"learning_rate": 1e-2, "momentum": 0.1,
                       "regularizer": _REG}),
    "rmda_l1": (rj.rmda, {"learning_rate": 1e-2, "momentum": 0.1,
                          "regularizer": rj.l1(1e-4)}),
    "prox_sgd": (rj.prox_sgd, {"learning_rate": 1e-3, "momentum": 0.9,
                               "regularizer": _REG}),
    "prox_adam": (rj.prox_adam, {"learning_rate": 1e-2, "regularizer": _REG}),
    # Decays exact in binary: the update is new_params - params, so when an
    # injected float32 b1 makes 1 - b1 round otherwise than the Python float
    # does (as in optax.adam), a 1-ulp change of the new params is 1.2e-5 of
    # this update, over the inject test's rtol of 1e-5.
    "prox_ssi": (rj.prox_ssi, {"learning_rate": 1e-2, "b1": 0.875,
                               "b2": 0.998046875, "regularizer": _REG}),
}
if hasattr(rj, "ramda"):
  OPTIMIZERS["ramda"] = (rj.ramda, {"learning_rate": 1e-2, "momentum": 0.1,
                                    "regularizer": _REG})

_LISTS = """
_MAIN_OPTIMIZERS_UNDER_TEST = tuple(
    {'opt_name': name, 'opt_kwargs': dict(kwargs), 'wrapper_name': None,
     'wrapper_kwargs': None}
    for name, (_, kwargs) in _RMDA_JAX_OPTIMIZERS.items())
_ALL_OPTIMIZERS_UNDER_TEST = _MAIN_OPTIMIZERS_UNDER_TEST


def _get_opt_factory(opt_name):
  return _RMDA_JAX_OPTIMIZERS[opt_name][0]

"""


def _load_common_tests():
  """optax's common-test module with our optimizers in place of its own."""
  text = _SOURCE.read_text()
  start = text.find("# pylint: disable=invalid-name")
  if start < 0:
    start = text.find("_MAIN_OPTIMIZERS_UNDER_TEST = [")
  factory = re.search(r"^def _get_opt_factory\(opt_name\):\n(?:(?:  .*)?\n)+",
                      text, flags=re.M)
  if start < 0 or factory is None or "class ContribTest" not in text:
    pytest.fail(f"{_SOURCE} does not have the layout this module reads "
                "(optimizer lists, then _get_opt_factory): update "
                "tests/test_optax_common.py for this optax.")
  # Everything before the lists (imports), our lists and factory, then the
  # rest of the file with optax's lists and factory removed.
  rest = text[factory.end():]
  source = text[:start] + _LISTS + rest
  namespace = {"__name__": "optax_common_tests_for_rmda_jax",
               "_RMDA_JAX_OPTIMIZERS": OPTIMIZERS}
  exec(compile(source, str(_SOURCE), "exec"), namespace)  # noqa: S102
  return namespace


_NAMESPACE = _load_common_tests()
ContribTest = _NAMESPACE["ContribTest"]


def test_every_optimizer_of_the_library_is_under_test():
  public = {rj.rmda, rj.prox_sgd, rj.prox_adam, rj.prox_ssi}
  if hasattr(rj, "ramda"):
    public.add(rj.ramda)
  tested = {factory for factory, _ in OPTIMIZERS.values()}
  assert public <= tested
  names = [p["opt_name"] for p in _NAMESPACE["_ALL_OPTIMIZERS_UNDER_TEST"]]
  assert names == list(OPTIMIZERS)


def test_regularizer_is_not_taken_for_a_schedule():
  # inject_hyperparams sorts callables into schedules: a regularizer must not
  # be one, so that no static_args are needed.
  assert not callable(_REG)
  assert jnp.ndim(jnp.asarray(_REG.strength)) == 0


def test_learning_rate_annotations_let_the_schedule_test_run():
  # optax's schedule test is skipped for a factory whose learning_rate is not
  # annotated optax.ScalarOrSchedule (a string annotation does not count).
  import inspect  # noqa: PLC0415

  import optax  # noqa: PLC0415
  for name, (factory, _) in OPTIMIZERS.items():
    annotation = inspect.signature(factory).parameters["learning_rate"].annotation
    assert annotation is optax.ScalarOrSchedule, name
