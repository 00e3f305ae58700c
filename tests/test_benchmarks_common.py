"""benchmarks.common: model shapes, the optimizer tables, tables of results, the loop."""

import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rmda_jax as rj
from benchmarks import common


@pytest.mark.parametrize("name", sorted(common.SHAPED_MODELS))
def test_model_shapes_are_those_the_cost_results_were_measured_on(name):
  recorded = json.loads((common.RESULTS / "cost.json").read_text())["models"][name]
  shapes = common.param_shapes(name)
  assert common.num_params(shapes) == recorded["num_params"]
  assert len(jax.tree.leaves(shapes)) == recorded["num_leaves"]


def test_make_params_follows_the_shapes_and_starts_batchnorm_scales_at_one():
  shapes = {"bn": {"scale": jax.ShapeDtypeStruct((4,), jnp.float32),
                   "bias": jax.ShapeDtypeStruct((4,), jnp.float32)},
            "conv": {"kernel": jax.ShapeDtypeStruct((3, 3, 2, 4), jnp.float32)}}
  params = common.make_params(shapes, seed=0)
  chex.assert_trees_all_equal_shapes_and_dtypes(params, shapes)
  chex.assert_trees_all_equal(params["bn"]["scale"], jnp.ones(4))
  assert float(jnp.std(params["conv"]["kernel"])) > 0


def _steps(tx, n=3):
  params = {"w": jnp.linspace(-1.0, 1.0, 12).reshape(4, 3)}
  grads = {"w": jnp.linspace(0.5, -0.7, 12).reshape(4, 3)}
  state = tx.init(params)
  for _ in range(n):
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
  return params, state


def test_prox_sgd_runs_the_authors_ema_form_as_heavy_ball():
  reg = rj.group_lasso(1e-2)
  rates = common.Rates([2], prox_sgd_lr=0.1, prox_sgd_rho=0.1)
  tx, reported = common.build_method("prox_sgd", reg, rates)
  expected = rj.prox_sgd(optax.piecewise_constant_schedule(0.01, {2: 0.1}), 0.9,
                         rj.group_lasso(1e-2 / 0.1))
  chex.assert_trees_all_close(_steps(tx)[0], _steps(expected)[0])
  assert reported is None


def test_rmda_is_reported_at_its_structured_point():
  reg = rj.group_lasso(1e-2)
  tx, reported = common.build_method("rmda", reg, common.Rates([2]))
  params, state = _steps(tx)
  chex.assert_trees_all_close(reported(params, state), rj.structured_params(state, reg))


def test_ramda_has_the_authors_defaults_and_is_reported_at_its_structured_point():
  # lr 1e-2, c 1e-2, epsilon 1e-6 (shared/docs/ramda.md section 3); lr and
  # epsilon x0.1 and a restart at the milestone (step 2), then c = min(c0 sqrt(j), 1).
  reg = rj.group_lasso(1e-2)
  tx, reported = common.build_method("ramda", reg, common.Rates([2]))
  stage = lambda k: jnp.where(k >= 2, 0.1, 1.0)  # noqa: E731
  expected = rj.ramda(lambda k: 1e-2 * stage(k),
                      lambda k: jnp.where(k >= 2, jnp.minimum(1e-2 * jnp.sqrt(k - 1.0), 1.0),
                                          1e-2),
                      reg, epsilon=lambda k: 1e-6 * stage(k), restart_at=[2])
  params, state = _steps(tx, n=4)
  chex.assert_trees_all_close(params, _steps(expected, n=4)[0], rtol=1e-6, atol=1e-7)
  chex.assert_trees_all_close(reported(params, state), rj.structured_params(state, reg))


def test_an_unknown_method_is_an_error():
  with pytest.raises(ValueError, match="unknown method"):
    common.build_method("adamw", None, common.Rates([1]))


def test_aggregate_groups_runs_and_keeps_the_column_order():
  runs = [{"model": "m", "method": "a", "lam": 1.0, "seed": s, "acc": 0.5 + s / 10}
          for s in range(3)] + [{"model": "m", "method": "b", "lam": None, "seed": 0, "acc": 1.0}]
  rows = common.aggregate(runs, ("model", "method"), ("acc",), carry=("lam",))
  assert [list(r) for r in rows] == [["model", "method", "lam", "seeds", "acc"]] * 2
  assert rows[0]["seeds"] == [0, 1, 2] and rows[0]["lam"] == 1.0
  assert rows[0]["acc"]["mean"] == pytest.approx(0.6) and rows[0]["acc"]["n"] == 3
  assert rows[1]["acc"] == {"mean": 1.0, "std": 0.0, "n": 1, "values": [1.0]}


def test_machine_info_records_versions_and_flags():
  info = common.machine_info()
  for key in ("cpu", "cpu_count", "jax", "optax", "flax", "python", "date", "xla_flags"):
    assert key in info, key


@pytest.fixture(scope="module")
def digits():
  return common.load_data("digits")


def test_run_trains_with_the_examples_step_and_reports_its_point(digits):
  tx, _ = common.build_method("msgd", None, common.Rates([5]))
  run = common.make_run("mlp", tx, digits, batch_size=128)
  r = run(epochs=1, seed=0)
  assert r.steps == len(digits.y_train) // 128
  n_test = len(digits.y_test)  # a fraction of the test images, which is a count over n_test
  assert abs(n_test * r.test_accuracy - round(n_test * r.test_accuracy)) < 1e-6
  assert np.isfinite(r.train_loss_last_epoch)
  r0 = run(epochs=1, seed=0, reported=lambda params, opt_state: params)
  chex.assert_trees_all_close(r0.params, r.params)   # the seed fixes init and data order


def test_run_starts_from_the_start_point(digits):
  run = common.make_run("mlp", optax.set_to_zero(), digits, batch_size=128)
  r = run(epochs=1, seed=0, start=lambda p, s, seed: (jax.tree.map(jnp.zeros_like, p), s))
  chex.assert_trees_all_equal(r.params, jax.tree.map(jnp.zeros_like, r.params))
