"""rj.rmda inside optax compositions, flax, dtypes, and bad input."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rmda_jax as rj
from tests._compat import enable_x64


def _params(dtype=jnp.float32):
  k = jax.random.split(jax.random.key(0), 3)
  return {"conv": {"kernel": jax.random.normal(k[0], (3, 3, 4, 6), dtype),
                   "bias": jnp.zeros((6,), dtype)},
          "dense": {"kernel": jax.random.normal(k[1], (6, 5), dtype),
                    "bias": jax.random.normal(k[2], (5,), dtype)}}


def _grads(params, t):
  key = jax.random.fold_in(jax.random.key(1), t)
  return jax.tree.map(
      lambda p: (p + 0.5 * jax.random.normal(key, p.shape)).astype(p.dtype),
      params)


def _run(tx, params, steps, grads_fn=_grads):
  state = tx.init(params)
  step = jax.jit(lambda p, s, g: _apply(tx, p, s, g))
  for t in range(steps):
    params, state = step(params, state, grads_fn(params, t))
  return params, state


def _apply(tx, params, state, grads):
  updates, state = tx.update(grads, state, params)
  return optax.apply_updates(params, updates), state


def _assert_close(a, b, **kw):
  # Compared in float64 so that bfloat16 trees are held to the tolerance, not
  # to their dtype's default.
  f64 = lambda t: jax.tree.map(lambda x: np.asarray(x, np.float64), t)
  chex.assert_trees_all_close(f64(a), f64(b), **kw)


REG = rj.group_lasso(0.3)


def test_exact_zeros_after_apply_updates():
  params, state = _run(rj.rmda(0.5, 1.0, REG), _params(), 30)
  z = rj.structured_params(state, REG)
  for p, zz in zip(jax.tree.leaves(params), jax.tree.leaves(z)):
    np.testing.assert_array_equal(np.asarray(p) == 0, np.asarray(zz) == 0)
  assert rj.group_sparsity(params, REG) > 0
  # Zero groups are whole input units.
  k = np.asarray(params["dense"]["kernel"])
  rows_zero = np.all(k == 0, axis=1)
  assert rows_zero.any() and np.array_equal(rows_zero, np.any(k == 0, axis=1))


def test_structured_point_is_exact_while_iterate_is_averaged():
  params, state = _run(rj.rmda(0.5, 0.05, REG), _params(), 40)
  z = rj.structured_params(state, REG)
  assert rj.group_sparsity(z, REG) > 0
  assert rj.group_sparsity(params, REG) == 0  # W only approaches Z


def test_chain_with_clipping_equals_manual_clipping():
  clip = optax.clip_by_global_norm(1.0)
  chained, chain_state = _run(optax.chain(clip, rj.rmda(0.3, 0.5, REG)),
                              _params(), 20)

  def clipped(p, t):
    g = _grads(p, t)
    return clip.update(g, clip.init(p))[0]
  manual, manual_state = _run(rj.rmda(0.3, 0.5, REG), _params(), 20, clipped)
  _assert_close(chained, manual, rtol=1e-6, atol=1e-6)
  # structured_params finds the RMDA state inside the chain.
  _assert_close(rj.structured_params(chain_state, REG),
                rj.structured_params(manual_state, REG), rtol=1e-6, atol=1e-6)
  with pytest.raises(ValueError, match="no RMDAState"):
    rj.structured_params(optax.sgd(0.1).init(_params()), REG)


def test_inject_hyperparams_equals_plain_and_is_injectable():
  plain, _ = _run(rj.rmda(0.3, 0.5, REG), _params(), 15)
  tx = optax.inject_hyperparams(rj.rmda, static_args="regularizer")(
      learning_rate=0.3, momentum=0.5, regularizer=REG)
  injected, state = _run(tx, _params(), 15)
  _assert_close(plain, injected, rtol=1e-6, atol=1e-6)
  # Changing the injected values changes the update.
  state.hyperparams["learning_rate"] = jnp.asarray(0.0)
  state.hyperparams["momentum"] = jnp.asarray(1.0)
  g = _grads(injected, 99)
  updates, new_state = tx.update(g, state, injected)
  # lr 0 adds nothing to alpha; c 1 makes the new point Z itself.
  assert float(new_state.inner_state.alpha) == float(state.inner_state.alpha)
  z = rj.structured_params(new_state, REG)
  _assert_close(optax.apply_updates(injected, updates), z, rtol=1e-6, atol=1e-6)
  sched_tx = optax.inject_hyperparams(rj.rmda, static_args="regularizer")(
      learning_rate=optax.constant_schedule(0.3), momentum=0.5, regularizer=REG)
  via_schedule, sched_state = _run(sched_tx, _params(), 15)
  _assert_close(plain, via_schedule, rtol=1e-6, atol=1e-6)
  _, plain_state = _run(rj.rmda(0.3, 0.5, REG), _params(), 15)
  _assert_close(rj.structured_params(sched_state, REG),
                rj.structured_params(plain_state, REG), rtol=1e-6, atol=1e-6)


def test_inject_hyperparams_needs_no_static_args():
  # A regularizer is a pytree, not a callable: inject_hyperparams keeps it as
  # a static argument by itself and injects only the numbers.
  plain, _ = _run(rj.rmda(0.3, 0.5, REG), _params(), 15)
  tx = optax.inject_hyperparams(rj.rmda)(
      learning_rate=0.3, momentum=0.5, regularizer=REG)
  injected, state = _run(tx, _params(), 15)
  assert set(state.hyperparams) == {"learning_rate", "momentum"}
  _assert_close(plain, injected, rtol=1e-6, atol=1e-6)


def test_structured_params_refuses_another_regularizer():
  _, state = _run(rj.rmda(0.3, 0.5, REG), _params(), 3)
  own = rj.structured_params(state)
  _assert_close(rj.structured_params(state, REG), own, rtol=0, atol=0)
  for other in (None, REG.with_strength(2 * REG.strength), rj.l1(REG.strength),
                rj.group_lasso(REG.strength, groups="output")):
    with pytest.raises(ValueError, match="not the one the optimizer was built"):
      rj.structured_params(state, other)
  _, bare = _run(rj.rmda(0.3, 0.5), _params(), 3)
  with pytest.raises(ValueError, match="not the one the optimizer was built"):
    rj.structured_params(bare, REG)
  _assert_close(rj.structured_params(bare, None), rj.structured_params(bare),
                rtol=0, atol=0)


def test_partition_and_structured_params_merge():
  labels = {"conv": {"kernel": "rmda", "bias": "sgd"},
            "dense": {"kernel": "rmda", "bias": "sgd"}}
  tx = optax.partition({"rmda": rj.rmda(0.5, 1.0, REG),
                        "sgd": optax.sgd(0.1)}, labels)
  params, state = _run(tx, _params(), 25)
  alone, alone_state = _run(rj.rmda(0.5, 1.0, REG), _params(), 25)
  # Kernels follow RMDA exactly as if it ran alone (dual averaging is per leaf).
  _assert_close(params["dense"]["kernel"], alone["dense"]["kernel"], rtol=1e-6,
                atol=1e-7)
  z = rj.structured_params(state, REG, params=params)
  np.testing.assert_array_equal(z["dense"]["bias"], params["dense"]["bias"])
  np.testing.assert_array_equal(
      z["conv"]["kernel"], rj.structured_params(alone_state, REG)["conv"]["kernel"])
  assert rj.group_sparsity(z, REG) > 0


def test_multisteps_equals_rmda_on_averaged_gradients():
  k = 3
  tx = optax.MultiSteps(rj.rmda(0.3, 0.5, REG), every_k_schedule=k)
  params, state = _params(), None
  state = tx.init(params)
  ref_tx = rj.rmda(0.3, 0.5, REG)
  ref_params, ref_state = _params(), ref_tx.init(_params())
  step = jax.jit(lambda p, s, g: _apply(tx, p, s, g))
  for outer in range(6):
    grads = [_grads(params, 10 * outer + i) for i in range(k)]
    for g in grads:
      params, state = step(params, state, g)
    mean = jax.tree.map(lambda *g: sum(g) / k, *grads)
    ref_params, ref_state = _apply(ref_tx, ref_params, ref_state, mean)
    _assert_close(params, ref_params, rtol=1e-5, atol=1e-6)
  _assert_close(rj.structured_params(state, REG),
                rj.structured_params(ref_state, REG), rtol=1e-5, atol=1e-6)


def test_apply_if_finite_leaves_state_untouched_on_nan():
  tx = optax.apply_if_finite(rj.rmda(0.3, 0.5, REG), max_consecutive_errors=5)
  params, state = _run(tx, _params(), 5)
  bad = jax.tree.map(lambda p: jnp.full_like(p, jnp.nan), params)
  new_params, new_state = jax.jit(lambda p, s, g: _apply(tx, p, s, g))(
      params, state, bad)
  _assert_close(new_params, params, rtol=0, atol=0)
  _assert_close(new_state.inner_state, state.inner_state, rtol=0, atol=0)
  assert int(new_state.notfinite_count) == 1


def test_jit_compiles_once_across_restarts():
  tx = rj.rmda(0.3, 0.5, REG, restart_at=(3, 5))
  chex.clear_trace_counter()

  @jax.jit
  @chex.assert_max_traces(n=1)
  def step(params, state, grads):
    return _apply(tx, params, state, grads)

  params = _params()
  state = tx.init(params)
  for t in range(8):  # a ninth trace would raise in chex
    params, state = step(params, state, _grads(params, t))
  assert int(state.stage_count) == 3 and int(state.count) == 8  # restarted at 5


def test_restart_resets_the_stage():
  tx = rj.rmda(0.3, 0.5, REG, restart_at=(4,))
  before_restart, state = _run(tx, _params(), 4)
  assert int(state.count) == 4 and int(state.stage_count) == 4
  # The update with count 4 restarts, then runs as a fresh start would.
  g = _grads(before_restart, 0)
  upd_restart, s_restart = tx.update(g, state, before_restart)
  fresh = rj.rmda(0.3, 0.5, REG)
  upd_fresh, s_fresh = fresh.update(g, fresh.init(before_restart), before_restart)
  _assert_close(upd_restart, upd_fresh, rtol=1e-6, atol=1e-7)
  _assert_close(s_restart.initial_params, before_restart, rtol=0, atol=0)
  _assert_close(s_restart.dual_point, s_fresh.dual_point, rtol=1e-6, atol=1e-7)
  assert int(s_restart.stage_count) == 1 and int(s_restart.count) == 5


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_dtypes_are_kept(dtype):
  params, state = _run(rj.rmda(0.3, 0.5, REG), _params(dtype), 5)
  assert all(p.dtype == dtype for p in jax.tree.leaves(params))
  assert all(v.dtype == dtype for v in jax.tree.leaves(state.dual_point))


def test_float64_is_kept():
  with enable_x64(True):
    params, state = _run(rj.rmda(0.3, 0.5, REG), _params(jnp.float64), 5)
    assert all(p.dtype == jnp.float64 for p in jax.tree.leaves(params))
    assert state.alpha.dtype == jnp.float64


def test_bfloat16_params_with_float32_accumulators():
  tx = rj.rmda(0.5, 1.0, REG, accumulator_dtype=jnp.float32)
  start = jax.tree.map(lambda p: p.astype(jnp.bfloat16), _params())
  params, state = _run(tx, start, 20)
  assert all(p.dtype == jnp.bfloat16 for p in jax.tree.leaves(params))
  assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(state.dual_point))
  assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(state.initial_params))
  z = rj.structured_params(state, REG)
  for p, zz in zip(jax.tree.leaves(params), jax.tree.leaves(z)):
    np.testing.assert_array_equal(np.asarray(p) == 0, np.asarray(zz) == 0)
  assert rj.group_sparsity(params, REG) > 0
  # Same trajectory as a float32 run, to bfloat16 precision.
  ref, _ = _run(rj.rmda(0.5, 1.0, REG),
                jax.tree.map(lambda p: p.astype(jnp.float32), start), 20)
  _assert_close(params, ref, rtol=0.05, atol=0.05)


def test_flax_nnx_optimizer():
  nnx = pytest.importorskip("flax.nnx")

  class MLP(nnx.Module):
    def __init__(self, rngs):
      self.l1 = nnx.Linear(6, 16, rngs=rngs)
      self.l2 = nnx.Linear(16, 3, rngs=rngs)

    def __call__(self, x):
      return self.l2(jax.nn.relu(self.l1(x)))

  model = MLP(nnx.Rngs(0))
  reg = rj.group_lasso(0.02)
  optimizer = nnx.Optimizer(model, rj.rmda(0.5, 1.0, reg), wrt=nnx.Param)
  x = jax.random.normal(jax.random.key(1), (64, 6))
  y = x[:, :3] * 2.0  # only 3 of the 6 inputs matter

  @nnx.jit
  def step(model, optimizer):
    loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
    optimizer.update(model, grads)
    return loss

  first = step(model, optimizer)
  for _ in range(100):
    last = step(model, optimizer)
  assert last < first
  params = nnx.state(model, nnx.Param)
  assert rj.group_sparsity(params, reg) > 0
  z = rj.structured_params(optimizer.opt_state, reg, params=params)
  for p, zz in zip(jax.tree.leaves(params), jax.tree.leaves(z)):
    np.testing.assert_array_equal(np.asarray(p) == 0, np.asarray(zz) == 0)


def test_linen_train_state_small_cnn():
  nn = pytest.importorskip("flax.linen")
  from flax.training import train_state

  class CNN(nn.Module):
    @nn.compact
    def __call__(self, x):
      x = nn.relu(nn.Conv(8, (3, 3))(x))
      x = nn.relu(nn.Conv(8, (3, 3))(x))
      return nn.Dense(2)(x.mean(axis=(1, 2)))

  x = jax.random.normal(jax.random.key(0), (16, 8, 8, 3))
  y = (x[..., 0].mean(axis=(1, 2)) > 0).astype(jnp.int32)
  model = CNN()
  reg = rj.group_lasso(0.01)
  state = train_state.TrainState.create(
      apply_fn=model.apply, params=model.init(jax.random.key(1), x)["params"],
      tx=rj.rmda(0.5, 1.0, reg))

  @jax.jit
  def step(state):
    def loss_fn(p):
      logits = state.apply_fn({"params": p}, x)
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    return state.apply_gradients(grads=grads), loss

  state, first = step(state)
  for _ in range(60):
    state, last = step(state)
  assert last < first
  assert rj.group_sparsity(state.params, reg) > 0
  # Conv kernels are HWIO: zero groups are whole input channels.
  k = np.asarray(state.params["Conv_1"]["kernel"])
  assert k.ndim == 4
  zero_channels = np.all(k == 0, axis=(0, 1, 3))
  assert np.array_equal(zero_channels, np.any(k == 0, axis=(0, 1, 3)))


# ----------------------------------------------------------------- bad input
def test_bad_hyperparameters():
  with pytest.raises(ValueError, match="learning_rate"):
    rj.rmda(-0.1)
  for c in (0.0, -0.5, 1.5, float("nan")):
    with pytest.raises(ValueError, match="momentum"):
      rj.rmda(0.1, c)
  with pytest.raises(TypeError, match="regularizer"):
    rj.rmda(0.1, 0.5, regularizer=lambda p: 0.0)
  with pytest.raises(ValueError, match="restart_at"):
    rj.rmda(0.1, 0.5, restart_at=(-1,))
  with pytest.raises(ValueError, match="milestones"):
    rj.rmda_multistep(0.1, 0.1, (20, 10))
  with pytest.raises(ValueError, match="gamma"):
    rj.rmda_multistep(0.1, 0.1, (10,), gamma=0.0)
  with pytest.raises(ValueError, match="momentum"):
    rj.rmda_multistep(0.1, 2.0, (10,))
  with pytest.raises(ValueError, match="momentum_rule"):
    rj.rmda_multistep(0.1, 0.1, (10,), momentum_rule="linear")


def test_missing_params_uses_optax_wording():
  tx = rj.rmda(0.1, 0.5, REG)
  state = tx.init(_params())
  with pytest.raises(ValueError, match="not passing `params`"):
    tx.update(_grads(_params(), 0), state)


def test_grads_params_mismatch():
  tx = rj.rmda(0.1, 0.5, REG)
  params = _params()
  state = tx.init(params)
  grads = _grads(params, 0)
  del grads["dense"]["bias"]
  with pytest.raises(ValueError, match="same pytree structure"):
    tx.update(grads, state, params)
  wrong_shape = _grads(params, 0)
  wrong_shape["dense"]["bias"] = jnp.zeros(7)
  with pytest.raises(ValueError, match=r"\['dense'\]\['bias'\]"):
    tx.update(wrong_shape, state, params)
  # The state is still usable after the refused calls.
  updates, state2 = tx.update(_grads(params, 0), state, params)
  assert int(state2.count) == 1


def test_non_float_leaf_names_the_path():
  params = dict(_params(), step=jnp.zeros((), jnp.int32))
  with pytest.raises(TypeError, match=r"\['step'\].*int32"):
    rj.rmda(0.1, 0.5).init(params)


def test_missing_group_axis_at_init_names_the_path():
  reg = rj.group_lasso(0.1, groups=2)  # dense kernels have no axis 2
  with pytest.raises(ValueError, match=r"\['dense'\]\['kernel'\]"):
    rj.rmda(0.1, 0.5, reg).init(_params())
