"""Every optimizer refuses, at construction, a callable where it takes no schedule.

A schedule (or any callable) passed for an argument that only takes a
constant used to build the transformation and fail at its first update; now
the constructor raises a TypeError naming the argument. Where schedules are
supported (every learning_rate, rmda's momentum), one update runs and uses
the schedule's value at count 0.
"""

import chex
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rmda_jax as rj

SCHEDULE = optax.constant_schedule(0.5)

REFUSED = [
    (rj.prox_sgd, dict(momentum=SCHEDULE), "momentum"),
    (rj.prox_sgd, dict(nesterov=SCHEDULE), "nesterov"),
    (rj.prox_adam, dict(b1=SCHEDULE), "b1"),
    (rj.prox_adam, dict(b2=SCHEDULE), "b2"),
    (rj.prox_adam, dict(eps=SCHEDULE), "eps"),
    (rj.prox_adam, dict(inner_tol=SCHEDULE), "inner_tol"),
    (rj.prox_adam, dict(max_inner_steps=lambda c: 10), "max_inner_steps"),
    (rj.prox_ssi, dict(b1=SCHEDULE), "b1"),
    (rj.prox_ssi, dict(b2=SCHEDULE), "b2"),
    (rj.prox_ssi, dict(eps=SCHEDULE), "eps"),
    (rj.rmda, dict(restart_at=lambda c: 3), "restart_at"),
]
MULTISTEP_REFUSED = [
    (dict(momentum=SCHEDULE), "momentum"),
    (dict(gamma=SCHEDULE), "gamma"),
    (dict(milestones=lambda c: 3), "milestones"),
]


@pytest.mark.parametrize("factory,kwargs,name", REFUSED,
                         ids=[f"{f.__name__}-{n}" for f, _, n in REFUSED])
def test_a_callable_where_no_schedule_is_supported_is_refused(factory, kwargs, name):
  with pytest.raises((TypeError, ValueError), match=rf"^{name} "):
    factory(0.1, **kwargs)


@pytest.mark.parametrize("kwargs,name", MULTISTEP_REFUSED, ids=[n for _, n in MULTISTEP_REFUSED])
def test_rmda_multistep_refuses_callables_but_learning_rate(kwargs, name):
  args = dict(momentum=0.1, milestones=[2], gamma=0.1) | kwargs
  with pytest.raises((TypeError, ValueError), match=name):
    rj.rmda_multistep(0.1, **args)


@pytest.mark.parametrize("factory", [rj.prox_sgd, rj.rmda, rj.rmda_multistep])
@pytest.mark.parametrize("dtype", [lambda c: jnp.float32, "not a dtype"])
def test_a_bad_accumulator_dtype_is_refused(factory, dtype):
  args = (0.1, 0.1, [2]) if factory is rj.rmda_multistep else (0.1,)
  with pytest.raises(TypeError, match=r"^accumulator_dtype must be a dtype"):
    factory(*args, accumulator_dtype=dtype)


PARAMS = {"w": jnp.array([[1.0, -2.0], [0.5, 0.25]])}
GRADS = {"w": jnp.array([[0.5, 1.0], [-1.0, 2.0]])}


def first_update(tx):
  updates, _ = tx.update(GRADS, tx.init(PARAMS), PARAMS)
  return updates["w"]


def test_supported_schedules_are_read_at_count_0():
  lr = lambda count: 0.5 - count   # 0.5 at the first update
  g = np.asarray(GRADS["w"])
  # prox_sgd, no regularizer: -lr * g.
  chex.assert_trees_all_close(first_update(rj.prox_sgd(lr, momentum=0.0)), -0.5 * g)
  # prox_adam / prox_ssi, no regularizer, step 1: -lr * m_hat / (sqrt(v_hat) + eps) with
  # m_hat = g, v_hat = g**2 after the bias corrections.
  adam = -0.5 * g / (np.abs(g) + 1e-8)
  chex.assert_trees_all_close(first_update(rj.prox_adam(lr)), adam, rtol=1e-5)
  chex.assert_trees_all_close(first_update(rj.prox_ssi(lr, eps=1e-8)), adam, rtol=1e-5)
  # rmda, no regularizer, step 1: s = lr * sqrt(1), V = s g, Y = W0 - V,
  # W1 = (1 - c) W0 + c Y, so the update is -c lr g with c = momentum(0).
  c = lambda count: 0.25 + count
  chex.assert_trees_all_close(first_update(rj.rmda(lr, c)), -0.25 * 0.5 * g, rtol=1e-6)
