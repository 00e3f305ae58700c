"""Tests of rj.ramda / rj.ramda_multistep (shared/docs/ramda.md, section 5).

References are written from the equations: a float64 NumPy transcription of
the authors' experiment code (tests/ramda_reference.py), optax's MADGRAD, and
rj.rmda for the metric forced to sqrt(k).
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rmda_jax as rj
from rmda_jax import _prox
from rmda_jax import _ramda
from tests import ramda_reference as ref
from tests._compat import enable_x64


@pytest.fixture
def x64():
  with enable_x64(True):
    yield


SHAPES = {"conv": (2, 2, 3, 4), "dense": (6, 3), "bias": (3,)}


def make_params(rng, scale=1.0):
  return {k: scale * rng.normal(size=s) for k, s in SHAPES.items()}


def to_np(tree):
  return {k: np.asarray(v, np.float64) for k, v in tree.items()}


def run(tx, params, grads_seq):
  """Jitted steps; returns the params after each step and the last state."""
  params = jax.tree.map(jnp.asarray, params)
  state = tx.init(params)
  update = jax.jit(tx.update)
  out = []
  for g in grads_seq:
    updates, state = update(jax.tree.map(jnp.asarray, g), state, params)
    params = optax.apply_updates(params, updates)
    out.append(to_np(params))
  return out, state


def group_axes(x):
  return tuple(a for a in range(x.ndim) if a != x.ndim - 2)


# --------------------------------------------------------------- MADGRAD
@pytest.mark.parametrize("reg", [None, rj.group_lasso(0.0)],
                         ids=["none", "zero_strength"])
def test_no_regularization_is_madgrad(x64, reg):
  # Section 5.1: lambda = 0 gives optax.contrib.madgrad(lr - eps, 1 - c, eps).
  if not hasattr(optax.contrib, "madgrad"):  # optax < 0.2.6 (the floor) has none
    pytest.skip("this optax has no optax.contrib.madgrad")
  rng = np.random.default_rng(0)
  params = make_params(rng)
  grads = [make_params(rng) for _ in range(6)]
  lr, c, eps = 0.05, 0.3, 1e-3
  got, state = run(rj.ramda(lr, c, reg, epsilon=eps), params, grads)
  want, _ = run(optax.contrib.madgrad(lr - eps, momentum=1 - c, eps=eps),
                params, grads)
  # optax computes sqrt(k + 1) from an int32 count in float32: 1e-7 apart.
  for a, b in zip(got, want):
    for k in a:
      np.testing.assert_allclose(a[k], b[k], rtol=0, atol=1e-7, err_msg=k)
  # MADGRAD (Defazio & Jelassi, with torch's lr + eps) in float64.
  w = {k: v.copy() for k, v in params.items()}
  s = {k: 0.0 for k in params}
  big_s = {k: 0.0 for k in params}
  for i, g in enumerate(grads):
    lamb = lr * np.sqrt(i + 1)
    for k in params:
      s[k] = s[k] + lamb * g[k]
      big_s[k] = big_s[k] + lamb * g[k] ** 2
      z = params[k] - s[k] / (np.cbrt(big_s[k]) + eps)
      w[k] = (1 - c) * w[k] + c * z
      np.testing.assert_allclose(got[i][k], w[k], rtol=0, atol=1e-13,
                                 err_msg=k)
  assert float(state.inner_steps) == 0


def test_first_step_by_hand(x64):
  # Section 5.2, with a group of size 1 (L1): closed form at tau / D.
  rng = np.random.default_rng(1)
  w = rng.normal(size=(4, 3))
  g = rng.normal(size=(4, 3))
  lr, c, eps, lam = 0.1, 0.5, 1e-6, 0.05
  got, _ = run(rj.ramda(lr, c, rj.l1(lam), epsilon=eps), {"w": w}, [{"w": g}])
  d = np.cbrt(lr * g * g) + eps
  y = w - lr * g / d
  tilde = np.sign(y) * np.maximum(np.abs(y) - lr * lam / d, 0)
  np.testing.assert_allclose(got[0]["w"], w + c * (tilde - w), rtol=0,
                             atol=1e-13)


# ------------------------------------------------------- metric sqrt(k)
@pytest.mark.parametrize("kind", ["group_lasso", "nuclear_norm"])
def test_metric_sqrt_k_is_rmda(x64, kind):
  # Section 5.3: D = sqrt(k) makes the subproblem RMDA's prox (exact in one
  # proximal-gradient step, as D is constant).
  rng = np.random.default_rng(2)
  params = make_params(rng)
  grads = [make_params(rng) for _ in range(6)]
  reg = (rj.group_lasso(0.3) if kind == "group_lasso"
         else rj.nuclear_norm(0.3))
  lr, c = 0.2, 0.4
  forced = _ramda._ramda(
      lr, c, reg, epsilon=1e-6, max_inner_steps=100, inner_tol=1e-8,
      restart_at=(3,), accumulator_dtype=None,
      metric=lambda u, k, eps: jnp.full_like(u, jnp.sqrt(k)))
  got, state = run(forced, params, grads)
  want, _ = run(rj.rmda(lr, c, reg, restart_at=(3,)), params, grads)
  for a, b in zip(got, want):
    for k in a:
      np.testing.assert_allclose(a[k], b[k], rtol=0, atol=1e-12, err_msg=k)
  assert float(state.inner_steps) == 2  # the torch rule runs 2 steps


# ---------------------------------------------------- the inner solver
def random_subproblem(rng, shape, spread=2.0):
  y = rng.normal(size=shape)
  d = np.exp(rng.uniform(-spread, spread, size=shape))
  axes = group_axes(y)
  w = np.sqrt(np.prod([shape[a] for a in axes]))
  norms = np.sqrt(np.sum((d * y) ** 2, axis=axes))
  mid = np.sort(norms.ravel())[len(norms.ravel()) // 2 - 1:][:2]
  lam = float(np.mean(mid)) / w  # about half the groups screened out
  return y, d, lam, axes


@pytest.mark.parametrize("shape", [(3, 3, 5, 4), (12, 6)])
def test_subproblem_kkt_and_screening_at_tight_tolerance(x64, shape):
  # Sections 5.4 and 5.5: with a tight tolerance the solver's point satisfies
  # the optimality conditions, and its zero groups are exactly the screened
  # ones, which are also the zero groups of an unscreened NumPy solve.
  rng = np.random.default_rng(3)
  y, d, lam, axes = random_subproblem(rng, shape)
  w0 = rng.normal(size=shape)
  init = rng.normal(size=shape)
  reg = rj.group_lasso(lam)
  u, steps = reg.prox({"w": y}, 1.0, metric={"w": d}, init={"w": init},
                      origin={"w": w0}, max_steps=20000, tol=1e-16,
                      return_steps=True)
  u, steps = np.asarray(u["w"]), int(steps["w"])
  assert 2 <= steps < 20000
  tau = lam * np.sqrt(np.prod([shape[a] for a in axes]))
  v = d * (w0 - y)
  norms = np.sqrt(np.sum(u * u, axis=axes, keepdims=True))
  zero = norms == 0
  screened = np.sqrt(np.sum((d * y) ** 2, axis=axes, keepdims=True)) <= tau
  np.testing.assert_array_equal(zero, screened)
  assert 0 < zero.mean() < 1
  resid = v + d * (u - w0) + tau * u / np.where(zero, 1, norms)
  # The stop rule reads the objective, which stalls in float64 when the
  # distance to the solution is about sqrt(eps): residuals of ~1e-8 to 1e-7.
  assert np.max(np.abs(np.where(zero, 0, resid))) <= 1e-6
  np.testing.assert_array_less(
      np.sqrt(np.sum((v - d * w0) ** 2, axis=axes, keepdims=True))[zero],
      tau * (1 + 1e-12))
  # An unscreened proximal gradient from y, run to convergence.
  lip = np.max(d, axis=axes, keepdims=True)
  z = y.copy()
  for _ in range(20000):
    x = z - d * (z - y) / lip
    n = np.sqrt(np.sum(x * x, axis=axes, keepdims=True))
    z = x * np.maximum(0, 1 - tau / lip / np.where(n > 0, n, 1))
  np.testing.assert_array_equal(np.all(z == 0, axis=axes, keepdims=True), zero)
  np.testing.assert_allclose(u, z, rtol=0, atol=1e-6)


def test_newton_inner_solver_solves_each_subproblem_exactly(x64):
  # inner_solver="newton": with c = 1 the parameters are each update's Z.
  # The subproblem (Y = W0 - V / D, D = U^(1/3) + eps, scale alpha) is
  # rebuilt here from the gradients alone, and Z checked by its optimality
  # conditions; the authors' solver run to a tight tolerance on the same
  # gradients gives the same zero groups and the same point.
  rng = np.random.default_rng(11)
  params = make_params(rng)
  grads = [make_params(rng) for _ in range(3)]
  lr, lam, eps = 0.1, 2.0, 1e-6
  reg = rj.group_lasso(lam)
  newton, state = run(rj.ramda(lr, 1.0, reg, epsilon=eps, inner_solver="newton"),
                      params, grads)
  tight, _ = run(rj.ramda(lr, 1.0, reg, epsilon=eps, max_inner_steps=20000,
                          inner_tol=1e-16), params, grads)
  assert float(state.inner_steps) >= 1
  v = {k: 0.0 for k in SHAPES}
  u = {k: 0.0 for k in SHAPES}
  alpha, zeros = 0.0, []
  for k, (g, z, z_pg) in enumerate(zip(grads, newton, tight), start=1):
    s = lr * np.sqrt(k)
    alpha += s
    for name in SHAPES:
      v[name] = v[name] + s * g[name]
      u[name] = u[name] + s * g[name] ** 2
      d = np.cbrt(u[name]) + eps
      y = params[name] - v[name] / d
      if name == "bias":  # not regularized: Z = Y
        np.testing.assert_allclose(z[name], y, rtol=1e-12, atol=1e-12)
        continue
      axes = group_axes(y)
      tau = alpha * lam * np.sqrt(np.prod([y.shape[a] for a in axes]))
      norms = np.sqrt(np.sum(z[name] ** 2, axis=axes, keepdims=True))
      zero = norms == 0
      screened = np.sqrt(np.sum((d * y) ** 2, axis=axes, keepdims=True)) <= tau
      np.testing.assert_array_equal(zero, screened)
      resid = d * (z[name] - y) + tau * z[name] / np.where(zero, 1, norms)
      assert np.max(np.abs(np.where(zero, 0, resid))) <= 1e-9 * tau
      np.testing.assert_array_equal(
          np.all(z_pg[name] == 0, axis=axes, keepdims=True), zero)
      np.testing.assert_allclose(z[name], z_pg[name], rtol=0, atol=1e-6)
      zeros.append(zero.mean())
  assert 0 < np.mean(zeros) < 1


def test_inner_solver_is_checked():
  with pytest.raises(ValueError, match="inner_solver"):
    rj.ramda(1e-2, 0.1, rj.group_lasso(1e-3), inner_solver="bfgs")
  with pytest.raises(ValueError, match="inner_solver 'newton'"):
    rj.ramda_multistep(1e-2, 0.1, [10], regularizer=rj.nuclear_norm(1e-3),
                       inner_solver="newton")
  # the metric prox counts its iterations without a warm start too; the
  # closed form has none to count.
  rng = np.random.default_rng(5)
  y, d, lam, _ = random_subproblem(rng, (8, 5))
  _, steps = rj.group_lasso(lam).prox({"w": y}, 1.0, metric={"w": d},
                                      solver="newton", return_steps=True)
  assert int(steps["w"]) >= 1
  with pytest.raises(ValueError, match="return_steps"):
    rj.group_lasso(lam).prox({"w": y}, 1.0, return_steps=True)


def test_all_groups_screened_and_iteration_bounds(x64):
  # Section 5.13: no active group, no step, exact zeros; with active groups
  # the count lies in [2, max_steps].
  rng = np.random.default_rng(4)
  y, d, lam, axes = random_subproblem(rng, (8, 5))
  reg = rj.group_lasso(1e6)
  u, steps = reg.prox({"w": y}, 1.0, metric={"w": d}, init={"w": y},
                      return_steps=True)
  assert np.all(np.asarray(u["w"]) == 0) and int(steps["w"]) == 0
  for cap in (1, 3):
    _, steps = rj.group_lasso(lam).prox(
        {"w": y}, 1.0, metric={"w": d}, init={"w": y}, max_steps=cap,
        tol=1e-300, return_steps=True)
    assert int(steps["w"]) == cap


def test_prox_adam_runs_the_same_solver(x64):
  # ProxGen with inner_stop="objective" runs the authors' solver: started at
  # the Adam step Y, objective measured from W (its subproblem is
  # <lr m, U - W> + 1/2 ||U - W||_D^2 + lr psi(U)), relative-decrease stop.
  rng = np.random.default_rng(9)
  params = make_params(rng)
  grads = [make_params(rng) for _ in range(4)]
  lr, b1, b2, eps, lam = 0.1, 0.9, 0.99, 1e-3, 3.0
  got, _ = run(rj.prox_adam(lr, b1, b2, eps, rj.group_lasso(lam),
                            inner_stop="objective"), params, grads)
  w = {k: v.copy() for k, v in params.items()}
  mu = {k: 0.0 for k in params}
  nu = {k: 0.0 for k in params}
  iters = []
  for t, g in enumerate(grads, start=1):
    for k in params:
      mu[k] = b1 * mu[k] + (1 - b1) * g[k]
      nu[k] = b2 * nu[k] + (1 - b2) * g[k] ** 2
      d = np.sqrt(nu[k] / (1 - b2 ** t)) + eps
      y = w[k] - lr * (mu[k] / (1 - b1 ** t)) / d
      if w[k].ndim < 2:
        w[k] = y
        continue
      w[k], it = ref.pgd_solver_glasso(y, w[k], d * (w[k] - y), d, lr * lam,
                                       group_axes(y), 100, 1e-8)
      iters.append(it)
      np.testing.assert_allclose(got[t - 1][k], w[k], rtol=0, atol=1e-10,
                                 err_msg=f"{k} step {t}")
  assert max(iters) > 2 and any(np.all(w["dense"] == 0, axis=1))


# ----------------------------------------------- authors' code, 30+ steps
@pytest.mark.parametrize("kind", ["glasso", "nuclear"])
def test_transcription_of_authors_code(x64, kind):
  # Section 5.7: 36 steps (12 epochs of 3), restarts after epochs 4 and 8,
  # then the momentum ramp (c reaches 1 after 11 updates of the last stage).
  rng = np.random.default_rng(5)
  params = make_params(rng)
  target = make_params(rng, 0.5)
  target["dense"][:3] = 0  # input groups that go to zero
  target["conv"][:, :, :1, :] = 0
  spe, epochs, milestones = 3, 12, [4, 8]
  lr, c0, lam = 0.1, 0.3, (0.2 if kind == "glasso" else 0.05)
  if kind == "glasso":
    reg, max_iters, rtol = rj.group_lasso(lam), 100, 1e-8
  else:
    reg = rj.nuclear_norm(lam, mask={"conv": False, "dense": True,
                                     "bias": False})
    max_iters, rtol = 5, 1e-3
  regularized = ["conv", "dense"] if kind == "glasso" else ["dense"]
  opt = ref.NumpyRAMDA(params, lr, c0, lam, max_iters=max_iters, rtol=rtol,
                       kind=kind, regularized=regularized)
  sched = ref.MultistepScheduler(opt, milestones)
  tx = rj.ramda_multistep(lr, c0, [m * spe for m in milestones], 0.1, reg,
                          max_inner_steps=max_iters, inner_tol=rtol)
  jparams = jax.tree.map(jnp.asarray, params)
  state = tx.init(jparams)
  update = jax.jit(tx.update)
  noise = [make_params(rng, 0.3) for _ in range(spe * epochs)]
  t = 0
  for epoch in range(epochs):
    for _ in range(spe):
      grads = {k: opt.params[k] - target[k] + noise[t][k] for k in params}
      updates, state = update(jax.tree.map(jnp.asarray, grads), state,
                              jparams)
      jparams = optax.apply_updates(jparams, updates)
      opt.step(grads)
      sched.after_step(epoch)
      iters = np.mean([opt.last_iters[k] for k in regularized])
      assert float(state.inner_steps) == pytest.approx(iters, abs=1e-6), t
      for k in params:
        np.testing.assert_allclose(np.asarray(jparams[k]), opt.params[k],
                                   rtol=0, atol=1e-10, err_msg=f"{k} step {t}")
      t += 1
    sched.end_of_epoch(epoch)
  assert opt.momentum == 1.0
  if kind == "glasso":
    # c = 1 at the end: the iterate itself has exact zero groups.
    zero = np.all(np.asarray(jparams["dense"]) == 0, axis=1)
    assert 0 < zero.mean() < 1


# ------------------------------------------------------------- restarts
def test_restart_equals_fresh_optimizer(x64):
  # Section 5.8: at the milestone T the state restarts (k, alpha, V, U = 0,
  # W0 = W_T) and lr, epsilon are multiplied by gamma: the following updates
  # equal those of a fresh optimizer started at W_T with lr * gamma,
  # epsilon * gamma and the ramp from its first update.
  rng = np.random.default_rng(6)
  params = make_params(rng)
  grads = [make_params(rng) for _ in range(7)]
  reg = rj.group_lasso(0.05)
  lr, c0, gamma, eps, T = 0.3, 0.2, 0.5, 1e-3, 4
  got, _ = run(rj.ramda_multistep(lr, c0, [T], gamma, reg, epsilon=eps),
               params, grads)
  fresh, _ = run(rj.ramda_multistep(lr * gamma, c0, [], gamma, reg,
                                    epsilon=eps * gamma),
                 got[T - 1], grads[T:])
  for a, b in zip(got[T:], fresh):
    for k in a:
      np.testing.assert_allclose(a[k], b[k], rtol=0, atol=1e-12, err_msg=k)


def test_ramp_values(x64):
  # Section 5.9: c0 at the last milestone T, then min(c0 sqrt(j + 1), 1) at
  # T + j: read c back from W_k - W_{k-1} = c (Y_k - W_{k-1}) with no
  # regularizer (Y is MADGRAD's point, written here from the equations).
  c0, T, lr, eps = 0.25, 3, 0.1, 1e-6
  rng = np.random.default_rng(7)
  w = {"w": rng.normal(size=(5,))}
  grads = [{"w": rng.normal(size=(5,))} for _ in range(T + 18)]
  got, _ = run(rj.ramda_multistep(lr, c0, [T], 1.0, epsilon=eps), w, grads)
  prev, w0 = w["w"], w["w"]
  v = u = 0
  k = 0
  cs = []
  for t, g in enumerate(grads):
    if t == T:
      w0, v, u, k = prev, 0, 0, 0
    k += 1
    s = lr * np.sqrt(k)
    v, u = v + s * g["w"], u + s * g["w"] ** 2
    y = w0 - v / (np.cbrt(u) + eps)
    cs.append(np.mean((got[t]["w"] - prev) / (y - prev)))
    prev = got[t]["w"]
  want = [c0] * T + [min(c0 * np.sqrt(j + 1), 1.0) for j in range(18)]
  np.testing.assert_allclose(cs, want, rtol=1e-9)
  # Exactly 1 from j = 1 / c0^2 - 1 = 15 on, under 1 before.
  assert want[T + 15] == 1.0 > want[T + 14]
  np.testing.assert_allclose(cs[T + 15:], 1.0, rtol=1e-9)


# -------------------------------------------------- integration, errors
def test_jit_chain_and_no_recompilation_at_restart():
  params = {"w": jnp.ones((4, 3)), "b": jnp.zeros(3)}
  reg = rj.group_lasso(1e-2)
  tx = optax.chain(optax.clip_by_global_norm(10.0),
                   rj.ramda_multistep(1e-2, 0.1, [2, 4], regularizer=reg))
  state = tx.init(params)

  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  chex.clear_trace_counter()
  jstep = jax.jit(chex.assert_max_traces(step, n=1))
  for i in range(6):
    grads = jax.tree.map(lambda x: jnp.full_like(x, 0.1 * (i + 1)), params)
    params, state = jstep(params, state, grads)
  chex.assert_tree_all_finite(params)
  assert int(state[1].stage_count) == 2  # restarted at update count 4
  z = rj.structured_params(state)
  chex.assert_trees_all_equal_shapes(z, params)


def test_nnx_optimizer():
  nnx = pytest.importorskip("flax.nnx")
  model = nnx.Linear(4, 3, rngs=nnx.Rngs(0))
  reg = rj.group_lasso(1e-3)
  opt = nnx.Optimizer(model, rj.ramda(1e-2, 0.1, reg), wrt=nnx.Param)
  x = jnp.ones((2, 4))

  @nnx.jit
  def train_step(model, opt):
    grads = nnx.grad(lambda m: jnp.sum(m(x) ** 2))(model)
    opt.update(model, grads)

  for _ in range(3):
    train_step(model, opt)
  chex.assert_tree_all_finite(nnx.state(model, nnx.Param))


def test_structured_params_of_ramda(x64):
  # The zero groups of structured_params are those of the last update's
  # W-tilde (c = 1: the iterate itself), by the exact screening.
  rng = np.random.default_rng(8)
  params = make_params(rng)
  grads = [make_params(rng) for _ in range(4)]
  reg = rj.group_lasso(1.0)
  got, state = run(rj.ramda(0.3, 1.0, reg), params, grads)
  z = rj.structured_params(state)
  for k in ("conv", "dense"):
    zero_z = np.all(np.asarray(z[k]) == 0, axis=group_axes(got[-1][k]))
    zero_w = np.all(got[-1][k] == 0, axis=group_axes(got[-1][k]))
    np.testing.assert_array_equal(zero_z, zero_w)
    assert zero_w.any()
    # The update stopped on the relative-objective rule (inner_tol 1e-8);
    # structured_params solves the same subproblem more tightly.
    np.testing.assert_allclose(np.asarray(z[k]), got[-1][k], atol=1e-4)


def test_state_placed_like_params():
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  params = jax.device_put({"w": jnp.ones((4, 3))}, sharding)
  state = rj.ramda(1e-2, 0.1, rj.group_lasso(1e-3)).init(params)
  for leaf in jax.tree.leaves(state):
    assert isinstance(leaf.sharding, jax.sharding.NamedSharding)


@pytest.mark.parametrize("kwargs, name", [
    ({"epsilon": -1e-6}, "epsilon"),
    ({"epsilon": 0.0}, "epsilon"),
    ({"max_inner_steps": 0}, "max_inner_steps"),
    ({"inner_tol": 0.0}, "inner_tol"),
    ({"inner_tol": -1.0}, "inner_tol"),
])
def test_bad_arguments_name_the_argument(kwargs, name):
  with pytest.raises(ValueError, match=name):
    rj.ramda(1e-2, 0.1, rj.group_lasso(1e-3), **kwargs)
  with pytest.raises(ValueError, match=name):
    rj.ramda_multistep(1e-2, 0.1, [10], regularizer=rj.group_lasso(1e-3),
                       **kwargs)


def test_schedules_and_dtypes_where_none_is_taken_are_refused():
  with pytest.raises(TypeError, match="inner_tol"):
    rj.ramda(1e-2, 0.1, inner_tol=lambda count: 1e-8)
  with pytest.raises(TypeError, match="max_inner_steps"):
    rj.ramda(1e-2, 0.1, max_inner_steps=lambda count: 5)
  with pytest.raises(TypeError, match="accumulator_dtype"):
    rj.ramda(1e-2, 0.1, accumulator_dtype="no such dtype")


def test_regularizer_without_metric_prox_is_refused():
  class NoMetric(rj.GroupLasso):
    solvers = ("newton",)

  with pytest.raises(ValueError, match="regularizer"):
    rj.ramda(1e-2, 0.1, NoMetric(1e-3))


def test_cube_root_matches_cbrt():
  x = jnp.asarray([0.0, 1e-30, 1e-6, 0.3, 8.0, 1e12], jnp.float32)
  np.testing.assert_allclose(_ramda.cube_root(x), np.cbrt(np.float64(x)),
                             rtol=2e-6)
  assert float(_ramda.cube_root(x)[0]) == 0.0


def test_prox_adam_refuses_an_unknown_inner_stop():
  with pytest.raises(ValueError, match="inner_stop"):
    rj.prox_adam(1e-3, regularizer=rj.group_lasso(1e-3), inner_stop="x")


def test_rmda_train_builds_ramda_with_the_authors_defaults():
  pytest.importorskip("flax")  # rmda-train's examples need the examples extra
  from rmda_jax.examples import config, train
  cfg = config.Config(optimizer="ramda", milestones=(1,))
  assert (cfg.learning_rate, cfg.momentum_value) == (1e-2, 1e-2)
  tx = train.build_optimizer(cfg, rj.group_lasso(1e-3), steps_per_epoch=2)
  params = {"w": jnp.ones((4, 3))}
  state = tx.init(params)
  for _ in range(3):  # the restart at update 2 (epoch 1)
    updates, state = tx.update({"w": jnp.full((4, 3), 0.1)}, state, params)
    params = optax.apply_updates(params, updates)
  assert int(state.stage_count) == 1 and int(state.count) == 3
  with pytest.raises(config.ConfigError, match="momentum"):
    config.Config(optimizer="ramda", momentum=0.0)


def test_rmda_train_inner_solver_flag():
  pytest.importorskip("flax")
  from rmda_jax.examples import config, train
  cfg = config.parse_args(["--optimizer", "ramda", "--inner-solver", "newton",
                           "--milestones", "1"])
  assert cfg.inner_solver == "newton"
  assert cfg.fingerprint() != config.Config(optimizer="ramda",
                                            milestones=(1,)).fingerprint()
  reg = rj.group_lasso(1e-2)
  rng = np.random.default_rng(0)
  grads = [{"w": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)}
           for _ in range(3)]
  ran = {}
  for name, tx in [
      ("flag", train.build_optimizer(cfg, reg, steps_per_epoch=2)),
      ("newton", rj.ramda_multistep(1e-2, 1e-2, [2], regularizer=reg,
                                    inner_solver="newton")),
      ("pg", rj.ramda_multistep(1e-2, 1e-2, [2], regularizer=reg))]:
    params = {"w": jnp.ones((4, 3))}
    state = tx.init(params)
    for g in grads:
      updates, state = tx.update(g, state, params)
      params = optax.apply_updates(params, updates)
    ran[name] = (np.asarray(params["w"]), float(state.inner_steps))
  np.testing.assert_array_equal(ran["flag"][0], ran["newton"][0])
  assert ran["flag"][1] == ran["newton"][1] != ran["pg"][1]
  for argv, flag in [(["--inner-solver", "newton"], "inner-solver"),
                     (["--optimizer", "ramda", "--regularizer", "nuclear",
                       "--inner-solver", "newton"], "inner-solver"),
                     (["--optimizer", "ramda", "--inner-solver", "bfgs"],
                      "inner-solver")]:
    with pytest.raises(SystemExit) as e:
      config.parse_args(argv)
    assert e.value.code == 2, flag


def test_sparse_group_lasso_keeps_exact_zero_entries(x64):
  # The L1 part is closed form (soft thresholding at alpha lam1 / D_i); the
  # warm-started group part must keep those zeros exact inside kept groups.
  rng = np.random.default_rng(10)
  params = make_params(rng)
  grads = [make_params(rng) for _ in range(3)]
  lr, eps, lam1, lam2 = 0.3, 1e-6, 0.5, 0.2
  reg = rj.sparse_group_lasso(lam1, lam2)
  got, _ = run(rj.ramda(lr, 1.0, reg, epsilon=eps), params, grads)
  k = np.arange(1, len(grads) + 1)
  s = lr * np.sqrt(k)
  for name in ("conv", "dense"):
    v = sum(si * g[name] for si, g in zip(s, grads))
    u = sum(si * g[name] ** 2 for si, g in zip(s, grads))
    dd = np.cbrt(u) + eps
    y = params[name] - v / dd
    w = got[-1][name]
    kept = ~np.all(w == 0, axis=group_axes(w), keepdims=True)
    kept = np.broadcast_to(kept, w.shape)
    thresholded = np.abs(y) <= s.sum() * lam1 / dd
    np.testing.assert_array_equal((w == 0)[kept], thresholded[kept])
    assert thresholded[kept].any() and kept.any()


def test_multistep_takes_a_traced_momentum_as_a_float():
  # rmda-train's sweeps vmap over the runs' c0: a traced scalar is accepted
  # and gives each run what the float gives alone.
  reg = rj.group_lasso(0.05)
  params = {"w": jnp.linspace(-1.0, 1.0, 12).reshape(4, 3)}
  grads = [{"w": jnp.sin(jnp.arange(12.0) + k).reshape(4, 3)} for k in range(4)]

  def run(c0):
    tx = rj.ramda_multistep(0.1, c0, [2], regularizer=reg)
    p, s = params, tx.init(params)
    for g in grads:
      u, s = tx.update(g, s, p)
      p = optax.apply_updates(p, u)
    return p

  got = jax.vmap(run)(jnp.asarray([0.01, 0.5]))
  for k, c0 in enumerate((0.01, 0.5)):
    chex.assert_trees_all_close(jax.tree.map(lambda x: x[k], got), run(c0),
                                rtol=1e-6, atol=1e-7)
  with pytest.raises(TypeError, match="momentum"):
    rj.ramda_multistep(0.1, jnp.asarray([0.01, 0.5]), [2])
