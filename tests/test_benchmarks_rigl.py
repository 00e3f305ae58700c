"""benchmarks.rigl: ERK densities and the RigL transformation's drop/grow rounds."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from benchmarks import rigl

SHAPES = {"conv1": (5, 5, 1, 20), "conv2": (5, 5, 20, 50), "fc1": (800, 500), "fc2": (500, 10)}


@pytest.mark.parametrize("sparsity", [0.9, 0.95])
def test_erk_densities_meet_the_target(sparsity):
  dens = rigl.erk_densities(SHAPES, sparsity)
  n = {k: np.prod(v) for k, v in SHAPES.items()}
  kept = sum(dens[k] * n[k] for k in SHAPES)
  assert kept == pytest.approx((1 - sparsity) * sum(n.values()), rel=1e-9)
  assert all(0 < d <= 1 for d in dens.values())
  assert dens["conv1"] > dens["fc1"] and dens["fc2"] > dens["fc1"]  # small layers denser


def test_erk_caps_a_layer_at_density_one():
  assert rigl.erk_densities({"a": (3, 2), "b": (1000, 1000)}, 0.9)["a"] == 1.0


def _setup(inner, count=0):
  key = jax.random.PRNGKey(0)
  params = {"k": jax.random.normal(key, (40, 30)), "b": jnp.ones(30)}
  grads = {"k": jax.random.normal(jax.random.fold_in(key, 1), (40, 30)), "b": jnp.ones(30)}
  tx = rigl.rigl(inner, 0.9, 100, delta_t=10)
  state = tx.init(params)
  params = rigl.apply_masks(state.masks, params)
  return tx, state._replace(count=jnp.asarray(count, jnp.int32)), params, grads


def test_initial_masks_hold_the_density_on_kernels_only():
  _, state, params, _ = _setup(optax.sgd(0.1))
  assert int(state.masks["k"].sum()) == 120 and bool(state.masks["b"].all())
  assert int(jnp.sum(params["k"] != 0)) == 120


def test_between_rounds_only_active_weights_move_and_by_the_masked_gradient():
  tx, state, params, grads = _setup(optax.sgd(1.0), count=3)
  updates, new_state = tx.update(grads, state, params)
  new_params = optax.apply_updates(params, updates)
  chex.assert_trees_all_equal(new_state.masks, state.masks)
  expected = {"k": params["k"] - jnp.where(state.masks["k"], grads["k"], 0),
              "b": params["b"] - grads["b"]}
  chex.assert_trees_all_close(new_params, expected)
  assert int(new_state.count) == 4 and int(new_state.mask_updates) == 0


def test_a_round_keeps_the_count_and_moves_the_mask():
  tx, state, params, grads = _setup(optax.set_to_zero(), count=9)  # the 10th update
  masks = state.masks
  updates, new_state = tx.update(grads, state, params)
  new_params = optax.apply_updates(params, updates)
  new_masks = new_state.masks
  assert int(new_state.mask_updates) == 1
  assert int(new_masks["k"].sum()) == 120 and bool(new_masks["b"].all())
  grown = new_masks["k"] & ~masks["k"]
  dropped = masks["k"] & ~new_masks["k"]
  k = int(np.floor(0.3 / 2 * (1 + np.cos(np.pi * 10 / 75)) * 120))
  # k dropped, k grown; a just-dropped weight may be regrown (then it restarts at 0).
  assert 0 < int(grown.sum()) == int(dropped.sum()) <= k
  assert bool(jnp.all(new_params["k"][grown] == 0))       # grown weights start at 0
  assert bool(jnp.all(new_params["k"][~new_masks["k"]] == 0))
  # dropped weights were the smallest active magnitudes
  kept_mag = jnp.abs(params["k"])[masks["k"] & new_masks["k"] & (new_params["k"] != 0)]
  assert float(jnp.abs(params["k"])[dropped].max()) <= float(kept_mag.min())
  # grown weights had the largest gradients outside the kept set
  outside = ~(masks["k"] & new_masks["k"])
  g = jnp.abs(grads["k"])
  assert float(g[new_masks["k"] & outside].min()) >= float(g[outside & ~new_masks["k"]].max())


def test_no_round_after_t_end():
  tx, state, params, grads = _setup(optax.set_to_zero(), count=79)  # 80 % 10 == 0, >= 75
  _, new_state = tx.update(grads, state, params)
  chex.assert_trees_all_equal(new_state.masks, state.masks)
  assert int(new_state.mask_updates) == 0


def test_the_update_compiles_under_jit():
  tx, state, params, grads = _setup(optax.sgd(0.1), count=9)
  eager = tx.update(grads, state, params)
  jitted = jax.jit(tx.update)(grads, state, params)
  chex.assert_trees_all_close(jitted, eager)


def test_reseed_draws_other_masks_with_the_same_counts():
  _, state, params, _ = _setup(optax.sgd(0.1))
  params1, state1 = rigl.reseed(params, state, 1)
  assert int(state1.masks["k"].sum()) == 120 and bool(state1.masks["b"].all())
  assert bool(jnp.any(state1.masks["k"] != state.masks["k"]))
  chex.assert_trees_all_equal(params1, rigl.apply_masks(state1.masks, params))
  params0, state0 = rigl.reseed(params, state, 0)   # seed 0: the masks of tx.init
  chex.assert_trees_all_equal(state0.masks, state.masks)
