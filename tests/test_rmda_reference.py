"""rj.rmda against the NumPy transcription in reference.py (float64, 1e-10)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized

import rmda_jax as rj
from tests import reference
from tests._compat import enable_x64

NUM_STEPS = 300
SHAPES = {"conv": (3, 3, 4, 6), "dense": (8, 5), "bias": (6,)}


def _problem(seed=0):
  """f(W) = 1/2 ||W - B||^2 with per-step noise; some groups of B are small."""
  rng = np.random.default_rng(seed)
  target = {}
  for name, shape in SHAPES.items():
    b = rng.normal(size=shape)
    if len(shape) >= 2:  # shrink half of the input groups towards 0
      idx = [slice(None)] * len(shape)
      idx[-2] = slice(0, shape[-2] // 2)
      b[tuple(idx)] *= 0.02
    target[name] = b
  noise = {name: 0.3 * rng.normal(size=(NUM_STEPS,) + shape)
           for name, shape in SHAPES.items()}

  def grad_fn(w, t):
    return {n: w[n] - target[n] + noise[n][t] for n in w}

  w_init = {name: rng.normal(size=shape) for name, shape in SHAPES.items()}
  return w_init, grad_fn


def _run_jax(tx, w_init, grad_fn, num_steps):
  params = {k: jnp.asarray(v) for k, v in w_init.items()}
  state = tx.init(params)

  @jax.jit
  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  ws, states = [], []
  for t in range(num_steps):
    grads = {k: jnp.asarray(v) for k, v in
             grad_fn({k: np.asarray(v) for k, v in params.items()}, t).items()}
    params, state = step(params, state, grads)
    ws.append({k: np.asarray(v) for k, v in params.items()})
    states.append(state)
  return ws, states


def _assert_trees_match(a, b, what):
  for name in a:
    np.testing.assert_allclose(a[name], b[name], rtol=0, atol=1e-10,
                               err_msg=f"{what}[{name}]")
    np.testing.assert_array_equal(a[name] == 0, b[name] == 0,
                                  err_msg=f"zero pattern of {what}[{name}]")


REGULARIZERS = {
    "none": (None, None, 0.0),
    "l1": (rj.l1, "l1", 0.05),
    "group_lasso": (rj.group_lasso, "group_lasso", 0.05),
}


@pytest.mark.parametrize("reg_name", list(REGULARIZERS))
def test_rmda_matches_reference_with_schedules_and_restarts(reg_name):
  make, kind, lam = REGULARIZERS[reg_name]
  restarts = (100, 200)
  # A schedule computed in the default float dtype (optax's own schedules
  # compute in float32 even under x64, which would cost the 1e-10 match).
  lr_sched = lambda count: 0.5 * 0.7 ** (count / 50.0)
  lr_fn = lambda t: 0.5 * 0.7 ** (t / 50)

  def c_fn(t):  # 0.1, then 0.5, then 1 (exact structure in W at the end)
    return 0.1 if t < 100 else (0.5 if t < 200 else 1.0)
  c_sched = lambda t: jnp.where(t < 100, 0.1, jnp.where(t < 200, 0.5, 1.0))

  with enable_x64(True):
    w_init, grad_fn = _problem()
    reg = make(lam) if make else None
    tx = rj.rmda(lr_sched, c_sched, reg, restart_at=restarts)
    ws, states = _run_jax(tx, w_init, grad_fn, NUM_STEPS)
    ref_ws, ref_zs = reference.rmda_reference(
        w_init, grad_fn, lr_fn, c_fn, reference.make_prox(kind, lam),
        NUM_STEPS, restart_at=restarts)
    for t in (0, 1, 99, 100, 101, 199, 200, 250, NUM_STEPS - 1):
      _assert_trees_match(ws[t], ref_ws[t], f"W after update {t}")
      z = {k: np.asarray(v) for k, v in rj.structured_params(states[t], reg).items()}
      _assert_trees_match(z, ref_zs[t], f"Z after update {t}")
    assert all(v.dtype == jnp.float64 for v in jax.tree.leaves(states[-1]
                                                               .dual_point))
  if reg_name == "group_lasso":
    # The problem is built so that the small groups are cut: the test of
    # zero patterns above compares non-trivial structure.
    final = ws[-1]
    assert np.all(final["dense"][: SHAPES["dense"][0] // 2] == 0)
    assert np.any(final["dense"] != 0)
    assert 0 < rj.group_sparsity(final, reg) < 1


def test_rmda_multistep_matches_reference():
  lam, lr0, c0, gamma = 0.05, 0.3, 0.25, 0.5
  milestones = (80, 160)
  stage = lambda t: sum(t >= m for m in milestones)
  with enable_x64(True):
    w_init, grad_fn = _problem(seed=1)
    reg = rj.group_lasso(lam)
    tx = rj.rmda_multistep(lr0, c0, milestones, gamma, reg)
    ws, _ = _run_jax(tx, w_init, grad_fn, 240)
    ref_ws, _ = reference.rmda_reference(
        w_init, grad_fn, lambda t: lr0 * gamma ** stage(t),
        lambda t: min(c0 / gamma ** stage(t), 1.0),
        reference.make_prox("group_lasso", lam), 240, restart_at=milestones)
    for t in (0, 79, 80, 159, 160, 239):
      _assert_trees_match(ws[t], ref_ws[t], f"W after update {t}")
    # c reaches 1 in the last stage: W itself is exactly group sparse.
    assert rj.group_sparsity(ws[-1], reg) > 0


def test_rmda_multistep_ramp_rule_matches_reference():
  lam, lr0, c0 = 0.05, 0.3, 0.05
  milestones = (60,)
  with enable_x64(True):
    w_init, grad_fn = _problem(seed=2)
    tx = rj.rmda_multistep(lr0, c0, milestones, 0.5, rj.l1(lam),
                           momentum_rule="ramp")
    ws, _ = _run_jax(tx, w_init, grad_fn, 160)
    ref_ws, _ = reference.rmda_reference(
        w_init, grad_fn, lambda t: lr0 * (0.5 if t >= 60 else 1.0),
        lambda t: c0 if t < 60 else min(c0 * np.sqrt(t - 60 + 1.0), 1.0),
        reference.make_prox("l1", lam), 160, restart_at=milestones)
    for t in (0, 59, 60, 61, 159):
      _assert_trees_match(ws[t], ref_ws[t], f"W after update {t}")


class RMDAUpdateVariantsTest(chex.TestCase):
  """The bare update, with and without jit, against the reference (x64)."""

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(*[(n, n) for n in REGULARIZERS])
  def test_update_matches_reference(self, reg_name):
    make, kind, lam = REGULARIZERS[reg_name]
    steps, restarts = 30, (12, 24)
    c_fn = lambda t: 0.3 if t < 24 else 1.0
    with enable_x64(True):
      w_init, grad_fn = _problem(seed=3)
      reg = make(lam) if make else None
      tx = rj.rmda(lambda t: 0.4 * 0.9 ** (t / 10.0),
                   lambda t: jnp.where(t < 24, 0.3, 1.0), reg,
                   restart_at=restarts)
      update = self.variant(tx.update)
      params = {k: jnp.asarray(v) for k, v in w_init.items()}
      state = tx.init(params)
      for t in range(steps):
        grads = grad_fn({k: np.asarray(v) for k, v in params.items()}, t)
        updates, state = update(jax.tree.map(jnp.asarray, grads), state, params)
        params = optax.apply_updates(params, updates)
      ref_ws, ref_zs = reference.rmda_reference(
          w_init, grad_fn, lambda t: 0.4 * 0.9 ** (t / 10), c_fn,
          reference.make_prox(kind, lam), steps, restart_at=restarts)
      got_w = {k: np.asarray(v) for k, v in params.items()}
      got_z = {k: np.asarray(v) for k, v in
               rj.structured_params(state, reg).items()}
      chex.assert_trees_all_close(got_w, ref_ws[-1], rtol=0, atol=1e-10)
      chex.assert_trees_all_close(got_z, ref_zs[-1], rtol=0, atol=1e-10)
      chex.assert_trees_all_equal(jax.tree.map(lambda x: x == 0, got_w),
                                  jax.tree.map(lambda x: x == 0, ref_ws[-1]))
      chex.assert_trees_all_equal_dtypes(params, state.dual_point)
