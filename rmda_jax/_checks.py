"""Argument and pytree checks shared by the optimizers (raise early, name the culprit)."""

from __future__ import annotations

import math
import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rmda_jax.regularizers import Regularizer, path_str


NO_PARAMS_MSG = (
    "You are using a transformation that requires the current value of "
    "parameters, but you are not passing `params` when calling `update`.")


def is_static_number(x) -> bool:
  """True for a Python/NumPy real or a concrete (non-traced) scalar array."""
  if isinstance(x, bool):
    return False
  if isinstance(x, numbers.Real):
    return True
  if isinstance(x, (np.ndarray, np.generic)) and np.ndim(x) == 0:
    return True
  if isinstance(x, jax.Array) and not isinstance(x, jax.core.Tracer):
    return jnp.ndim(x) == 0
  return False


def check_nonnegative(name: str, value) -> None:
  """Raises ValueError if a constant ``value`` is negative or not finite."""
  if callable(value):
    return
  if is_static_number(value):
    v = float(value)
    if not math.isfinite(v) or v < 0:
      raise ValueError(f"{name} must be finite and >= 0, got {v}.")


def check_unit_interval(name: str, value) -> None:
  """Raises ValueError if a constant ``value`` lies outside (0, 1]."""
  if callable(value):
    return
  if is_static_number(value):
    v = float(value)
    if not (0 < v <= 1):
      raise ValueError(f"{name} must lie in (0, 1], got {v}.")


def check_fraction(name: str, value) -> None:
  """ValueError if a constant ``value`` lies outside [0, 1)."""
  if callable(value) or not is_static_number(value):
    return
  v = float(value)
  if not 0 <= v < 1:
    hint = ""
    dtype = getattr(value, "dtype", None)
    if (dtype is not None and jnp.issubdtype(dtype, jnp.floating)
        and jnp.finfo(dtype).bits < 32):
      hint = (f" ({name} is a {dtype} array: 0.999 rounds to 1 in 16 bits; "
              "with optax.inject_hyperparams pass "
              "hyperparam_dtype=jnp.float32)")
    raise ValueError(f"{name} must lie in [0, 1), got {v}{hint}.")


def check_positive(name: str, value) -> None:
  """ValueError if a constant ``value`` is not a finite number > 0."""
  if callable(value) or not is_static_number(value):
    return
  v = float(value)
  if not (math.isfinite(v) and v > 0):
    raise ValueError(f"{name} must be finite and > 0, got {v}.")


def check_max_steps(name: str, value) -> None:
  """ValueError unless a constant ``value`` is an integer >= 1."""
  if not is_static_number(value):
    if isinstance(value, jax.core.Tracer):
      return  # injected hyperparameter under jit: checked at init
    raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")
  v = float(value)
  if not (math.isfinite(v) and v == int(v) and v >= 1):
    raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")


def check_regularizer(regularizer) -> None:
  if regularizer is not None and not isinstance(regularizer, Regularizer):
    raise TypeError(
        "regularizer must be an rmda_jax regularizer (e.g. rj.group_lasso(...)) "
        f"or None, got {type(regularizer).__name__}.")


def check_float_leaves(tree, what: str = "params") -> None:
  """Raises TypeError naming the first non-floating leaf of ``tree``."""
  for path, x in jax.tree_util.tree_leaves_with_path(tree):
    dtype = jnp.result_type(x)
    if not jnp.issubdtype(dtype, jnp.floating):
      raise TypeError(
          f"{what} leaf {path_str(path)} has dtype {dtype}; this optimizer "
          "needs floating-point leaves (keep integer state out of the "
          "optimized pytree, e.g. with optax.partition).")


def check_update_args(updates, params) -> None:
  """params given, same structure and shapes as updates."""
  if params is None:
    raise ValueError(NO_PARAMS_MSG)
  su, sp = jax.tree.structure(updates), jax.tree.structure(params)
  if su != sp:
    raise ValueError(
        "updates (gradients) and params must have the same pytree structure; "
        f"got updates {su} and params {sp}.")
  for (path, u), p in zip(jax.tree_util.tree_leaves_with_path(updates),
                          jax.tree.leaves(params)):
    if jnp.shape(u) != jnp.shape(p):
      raise ValueError(
          f"gradient leaf {path_str(path)} has shape {jnp.shape(u)} but the "
          f"parameter has shape {jnp.shape(p)}.")


def value_at(schedule_or_value: Any, count):
  """A hyperparameter's value at ``count`` (schedules are called)."""
  if callable(schedule_or_value):
    return schedule_or_value(count)
  return schedule_or_value


def check_no_schedule(name: str, value, schedulable: str = "learning_rate") -> None:
  """TypeError if ``value`` is callable: the argument ``name`` takes no schedule.

  Without this, a callable (an optax schedule, a regularizer...) passed where
  only a constant works builds the transformation and fails at its first
  update, far from the mistake.
  """
  if callable(value):
    raise TypeError(
        f"{name} takes no schedule or other callable, got {value!r}; pass a "
        f"number (only {schedulable} accepts a schedule).")


def check_dtype(name: str, value):
  """``jnp.dtype(value)``, or None for None; TypeError naming ``name`` otherwise."""
  if value is None:
    return None
  try:
    return jnp.dtype(value)
  except TypeError as e:
    raise TypeError(f"{name} must be a dtype (e.g. jnp.float32) or None, "
                    f"got {value!r}.") from e
