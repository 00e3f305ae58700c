"""Tests of rj.prox_sgd, rj.prox_adam (ProxGen) and rj.prox_ssi.

References are NumPy transcriptions of the equations (float64), written here
from shared/docs/rmda.md section 4 and the docstrings' math, and the
optimality conditions of the preconditioned subproblem

    min_U 1/2 (U - Y)^T D (U - Y) + tau * sum_g ||U_g||,

which are: zero group  <=>  ||D_g Y_g|| <= tau;  nonzero group:
D_g (U_g - Y_g) + tau U_g / ||U_g|| = 0.
"""

import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized

import rmda_jax as rj
from rmda_jax import _prox
from rmda_jax._checks import NO_PARAMS_MSG
from tests._compat import enable_x64


@pytest.fixture
def x64():
  with enable_x64(True):
    yield


# ------------------------------------------------------------ NumPy helpers
def np_groups(x):
  """(groups, entries) view of a kernel, groups = indices of axis -2."""
  moved = np.moveaxis(x, -2, 0)
  return moved.reshape(moved.shape[0], -1), moved.shape


def np_ungroup(g, moved_shape):
  return np.moveaxis(g.reshape(moved_shape), 0, -2)


def np_group_prox(x, t):
  """prox of t * sum_g sqrt(|g|) ||x_g|| (groups: axis -2)."""
  g, shape = np_groups(np.asarray(x, np.float64))
  w = np.sqrt(g.shape[1])
  out = np.zeros_like(g)
  for i in range(g.shape[0]):
    n = np.linalg.norm(g[i])
    if n > t * w:
      out[i] = g[i] * (1 - t * w / n)
  return np_ungroup(out, shape)


def np_l1_prox(x, t):
  return np.sign(x) * np.maximum(np.abs(x) - t, 0.0)


def np_prox(kind, x, t):
  if kind is None or x.ndim < 2:
    return x
  return np_l1_prox(x, t) if kind == "l1" else np_group_prox(x, t)


def make_reg(kind, lam):
  return {None: lambda: None, "l1": lambda: rj.l1(lam),
          "group_lasso": lambda: rj.group_lasso(lam)}[kind]()


def shapes():
  return {"conv": {"kernel": (3, 3, 4, 8), "bias": (8,)},
          "dense": {"kernel": (32, 10), "bias": (10,)}}


def random_tree(rng, scale=1.0):
  return jax.tree.map(lambda s: scale * rng.normal(size=s), shapes(),
                      is_leaf=lambda s: isinstance(s, tuple))


def target_tree(rng):
  """Regression targets: half the input groups of each kernel are exactly 0."""
  t = random_tree(rng)
  for name in ("conv", "dense"):
    k = t[name]["kernel"]
    idx = [slice(None)] * k.ndim
    idx[-2] = slice(0, k.shape[-2] // 2)
    k[tuple(idx)] = 0.0
  return t


def flat(tree):
  return {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(x)
          for path, x in jax.tree_util.tree_leaves_with_path(tree)}


def f32_noises(rng, n):
  return [jax.tree.map(jnp.float32, random_tree(rng, 0.05)) for _ in range(n)]


def lr_schedule(count):
  return 0.05 * 0.5 ** (count // 100)


def grad_of(params, target, noise):
  """Gradient of 1/2 ||W - target||^2 plus fixed noise."""
  return jax.tree.map(lambda w, c, n: w - c + n, params, target, noise)


# ------------------------------------------------------------ prox_sgd
def np_prox_sgd(w0, target, noises, kind, lam, mu, nesterov):
  w = {k: v.copy() for k, v in w0.items()}
  m = {k: np.zeros_like(v) for k, v in w0.items()}
  for k, noise in enumerate(noises):
    lr = 0.05 * 0.5 ** (k // 100)
    for name in w:
      g = w[name] - target[name] + noise[name]
      m[name] = mu * m[name] + g
      d = g + mu * m[name] if nesterov else m[name]
      w[name] = np_prox(kind, w[name] - lr * d, lr * lam)
  return w


def np_authors_prox_sgd(w0, target, noises, kind, lam, rho, lr_bar):
  """The authors' EMA form: m = (1-rho) m + rho g, m0 = rho g0."""
  w = {k: v.copy() for k, v in w0.items()}
  m = {}
  for k, noise in enumerate(noises):
    for name in w:
      g = w[name] - target[name] + noise[name]
      m[name] = rho * g if k == 0 else (1 - rho) * m[name] + rho * g
      w[name] = np_prox(kind, w[name] - lr_bar * m[name], lr_bar * lam)
  return w


def run_rj(tx, params, target, noises):
  state = tx.init(params)

  @jax.jit
  def step(params, state, noise):
    grads = grad_of(params, target, noise)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  for noise in noises:
    params, state = step(params, state, noise)
  return params


def assert_same_points(got, want, tol):
  got = flat(got)
  assert set(got) == set(want)
  for name, w in want.items():
    g = got[name]
    np.testing.assert_array_equal(g == 0, w == 0, err_msg=name)
    np.testing.assert_allclose(g, w, rtol=0, atol=tol, err_msg=name)


@pytest.mark.parametrize("kind,lam", [(None, 0.0), ("l1", 0.3),
                                      ("group_lasso", 0.2)])
@pytest.mark.parametrize("nesterov", [False, True])
def test_prox_sgd_matches_numpy(x64, kind, lam, nesterov):
  rng = np.random.default_rng(0)
  params, target = random_tree(rng), target_tree(rng)
  noises = [random_tree(rng, 0.05) for _ in range(300)]
  tx = rj.prox_sgd(lr_schedule, 0.9, make_reg(kind, lam), nesterov=nesterov)
  got = run_rj(tx, params, target, noises)
  want = np_prox_sgd(flat(params), flat(target), [flat(n) for n in noises],
                     kind, lam, 0.9, nesterov)
  assert_same_points(got, want, 1e-10)
  for name, x in flat(got).items():
    assert x.dtype == np.float64
    if kind is not None and name.endswith("kernel"):
      # The test means something: some, not all, entries/groups are zero.
      assert 0 < np.mean(x == 0) < 1, name
      if kind == "group_lasso":
        zero_groups = np.all(np_groups(x)[0] == 0, axis=1)
        assert 0 < zero_groups.sum() < zero_groups.size, name


@pytest.mark.parametrize("kind,lam", [("l1", 0.03), ("group_lasso", 0.02)])
def test_prox_sgd_is_the_authors_ema_form(x64, kind, lam):
  rho, lr_bar = 0.1, 0.5
  rng = np.random.default_rng(1)
  params, target = random_tree(rng), target_tree(rng)
  noises = [random_tree(rng, 0.05) for _ in range(200)]
  tx = rj.prox_sgd(rho * lr_bar, 1 - rho, make_reg(kind, lam / rho))
  got = run_rj(tx, params, target, noises)
  want = np_authors_prox_sgd(flat(params), flat(target),
                             [flat(n) for n in noises], kind, lam, rho, lr_bar)
  assert_same_points(got, want, 1e-9)
  assert any(np.any(x == 0) for x in flat(got).values())


def test_prox_sgd_unregularized_is_optax_sgd():
  rng = np.random.default_rng(2)
  params = jax.tree.map(jnp.float32, random_tree(rng))
  target = jax.tree.map(jnp.float32, target_tree(rng))
  noises = f32_noises(rng, 20)
  for nesterov in (False, True):
    got = run_rj(rj.prox_sgd(0.1, 0.9, nesterov=nesterov), params, target,
                 noises)
    want = run_rj(optax.sgd(0.1, momentum=0.9, nesterov=nesterov), params,
                  target, noises)
    chex.assert_trees_all_close(got, want, rtol=1e-6, atol=1e-6)


# ---------------------------------------------- preconditioned subproblems
def np_check_group_optimality(u, y, d, tau, axes, tol):
  """Optimality of min 1/2 (u-y)^T D (u-y) + tau sum_g ||u_g|| (groups: axes)."""
  u, y, d = (np.asarray(a, np.float64) for a in (u, y, d))
  keep = lambda a: np.sum(a, axis=axes, keepdims=True) if axes else a
  dy_norm = np.sqrt(keep((d * y) ** 2))
  u_norm = np.sqrt(keep(u ** 2))
  zero = keep((u != 0).astype(float)) == 0
  np.testing.assert_array_equal(zero, dy_norm <= tau)
  assert 0 < zero.sum() < zero.size  # both kinds of groups occur
  safe = np.where(u_norm > 0, u_norm, 1)
  resid = np.where(zero, 0, d * (u - y) + tau * u / safe)
  assert np.max(np.abs(resid)) <= tol * max(1.0, tau), np.max(np.abs(resid))


def random_subproblem(rng, shape, spread=1.0):
  """y, d > 0 with max/min ratio about e^(2 spread) and tau giving mixed groups."""
  y = rng.normal(size=shape)
  d = np.exp(rng.uniform(-spread, spread, size=shape))
  axes = tuple(a for a in range(len(shape)) if a != len(shape) - 2)
  dy_norm = np.sqrt(np.sum((d * y) ** 2, axis=axes))
  tau = float(np.median(dy_norm))
  return y, d, tau, axes


SHAPES = [(3, 3, 16, 8), (64, 12)]


@pytest.mark.parametrize("shape", SHAPES)
def test_group_solvers_satisfy_optimality_and_agree(x64, shape):
  rng = np.random.default_rng(3)
  y, d, tau, axes = random_subproblem(rng, shape)
  pg = jax.jit(lambda y, d, t: _prox.group_prox_pg(
      y, d, t, axes, max_steps=5000, tol=1e-14))
  u_pg, steps_pg = pg(y, d, tau)
  u_nt, steps_nt = jax.jit(lambda y, d, t: _prox.group_prox_newton(
      y, d, t, axes))(y, d, tau)
  assert 1 < int(steps_pg) < 5000
  assert 1 < int(steps_nt) <= 20
  np_check_group_optimality(u_pg, y, d, tau, axes, 1e-10)
  np_check_group_optimality(u_nt, y, d, tau, axes, 1e-10)
  np.testing.assert_allclose(u_pg, u_nt, rtol=0, atol=1e-10)


def test_group_solvers_float32():
  rng = np.random.default_rng(4)
  y, d, tau, axes = random_subproblem(rng, (3, 3, 16, 8))
  y32, d32 = jnp.float32(y), jnp.float32(d)
  u_pg, _ = _prox.group_prox_pg(y32, d32, tau, axes, max_steps=500, tol=1e-8)
  u_nt, steps = _prox.group_prox_newton(y32, d32, tau, axes)
  assert u_pg.dtype == u_nt.dtype == jnp.float32
  # 1e-7 is below float32's resolution: Newton must still stop early.
  assert int(steps) < 15
  np_check_group_optimality(u_nt, y, d, tau, axes, 1e-5)
  np_check_group_optimality(u_pg, y, d, tau, axes, 1e-4)


def test_newton_one_step_when_d_constant_per_group(x64):
  # Constant D on a group: the secular equation is linear, the solution is
  # the plain group shrinkage with threshold tau / D.
  rng = np.random.default_rng(5)
  y = rng.normal(size=(20, 6))
  d = np.repeat(np.exp(rng.uniform(-2, 2, size=(1, 6))), 20, axis=0)
  tau = 2.0
  u, steps = _prox.group_prox_newton(jnp.asarray(y), jnp.asarray(d), tau, (0,))
  n = np.linalg.norm(y, axis=0, keepdims=True)
  want = y * np.maximum(0, 1 - tau / (d[:1] * n))
  np.testing.assert_allclose(u, want, rtol=0, atol=1e-13)
  assert int(steps) <= 2


def test_newton_iterates_increase_monotonically(x64):
  rng = np.random.default_rng(6)
  y, d, tau, axes = random_subproblem(rng, (64, 12), spread=3.0)
  solve = jax.jit(lambda k: _prox.group_prox_newton(y, d, tau, axes,
                                                  max_steps=k, tol=0.0)[0])
  rs = [solve(k) for k in range(1, 8)]  # one compilation: k is traced
  norms = [np.sqrt(np.sum(np.square(u), axis=axes)) for u in rs]
  for a, b in zip(norms, norms[1:]):
    assert np.all(b >= a * (1 - 1e-12))
  np_check_group_optimality(rs[-1], y, d, tau, axes, 1e-9)


def test_group_solvers_edge_cases(x64):
  y = np.array([[0.0, 1.0], [0.0, -2.0]])
  d = np.array([[1.0, 2.0], [3.0, 4.0]])
  for solve in (lambda *a: _prox.group_prox_pg(*a, max_steps=100, tol=0.0),
                _prox.group_prox_newton):
    u, _ = solve(y, d, 0.0, (0,))  # tau = 0: u = y, the zero group stays 0
    np.testing.assert_allclose(u, y, atol=1e-12)
    u, _ = solve(y, d, 100.0, (0,))  # everything zero, no NaN
    assert np.all(np.asarray(u) == 0)


def test_l1_closed_form_optimality(x64):
  rng = np.random.default_rng(7)
  y = rng.normal(size=(50, 40))
  d = np.exp(rng.uniform(-2, 2, size=y.shape))
  tau = float(np.median(np.abs(d * y)))
  u = np.asarray(_prox.soft_threshold_metric(y, d, tau))
  zero = u == 0
  np.testing.assert_array_equal(zero, np.abs(d * y) <= tau)
  assert 0 < zero.mean() < 1
  resid = d * (u - y) + tau * np.sign(u)
  assert np.max(np.abs(resid[~zero])) <= 1e-12


# --------------------------------------- prox_adam / prox_ssi, full updates
def np_adam_y_d(params, grads_seq, lr, b1, b2, eps):
  """Y and D of the last update (NumPy Adam), params kept fixed."""
  mu = {k: np.zeros_like(v) for k, v in params.items()}
  nu = {k: np.zeros_like(v) for k, v in params.items()}
  for k, grads in enumerate(grads_seq, start=1):
    for name, g in grads.items():
      mu[name] = b1 * mu[name] + (1 - b1) * g
      nu[name] = b2 * nu[name] + (1 - b2) * g * g
  ys, ds = {}, {}
  for name, p in params.items():
    m_hat, v_hat = mu[name] / (1 - b1 ** k), nu[name] / (1 - b2 ** k)
    ds[name] = np.sqrt(v_hat) + eps
    ys[name] = p - lr * m_hat / ds[name]
  return ys, ds


@pytest.mark.parametrize("kind", ["l1", "group_lasso"])
@pytest.mark.parametrize("which", ["prox_adam", "prox_ssi"])
def test_adaptive_update_solves_its_subproblem(x64, which, kind):
  rng = np.random.default_rng(8)
  lr, b1, b2, eps = 0.3, 0.9, 0.99, 1e-3
  params = random_tree(rng, 0.3)
  # Half the input groups of each kernel get small gradients, hence a small
  # D: those groups end at zero, the others not.
  small = jax.tree.map(lambda t: 1.0 - 0.99 * (t == 0), target_tree(rng))
  small = jax.tree.map(lambda s, p: s if p.ndim >= 2 else np.ones_like(p),
                       small, params)
  grads_seq = [jax.tree.map(np.multiply, random_tree(rng), small)
               for _ in range(5)]
  reg = make_reg(kind, 0.15)
  if which == "prox_adam":
    # The change rule runs to machine precision (the default objective rule
    # stalls at residuals ~1e-8: tests/test_ramda.py checks that one).
    tx = rj.prox_adam(lr, b1, b2, eps, reg, max_inner_steps=20000,
                      inner_tol=1e-15, inner_stop="change")
  else:
    tx = rj.prox_ssi(lr, b1, b2, eps, reg)
  state = tx.init(params)
  update = jax.jit(tx.update)
  for grads in grads_seq:  # params held fixed: only the last update is checked
    updates, state = update(grads, state, params)
  new = flat(optax.apply_updates(params, updates))
  ys, ds = np_adam_y_d(flat(params), [flat(g) for g in grads_seq], lr, b1, b2,
                       eps)
  for name, u in new.items():
    y, d = ys[name], ds[name]
    if u.ndim < 2:  # unregularized: the plain Adam step
      np.testing.assert_allclose(u, y, rtol=0, atol=1e-12)
    elif kind == "l1":
      zero = u == 0
      np.testing.assert_array_equal(zero, np.abs(d * y) <= lr * 0.15)
      assert 0 < zero.mean() < 1
      resid = d * (u - y) + lr * 0.15 * np.sign(u)
      assert np.max(np.abs(resid[~zero])) <= 1e-10
    else:
      axes = tuple(a for a in range(u.ndim) if a != u.ndim - 2)
      w = np.sqrt(np.prod([u.shape[a] for a in axes]))
      np_check_group_optimality(u, y, d, lr * 0.15 * w, axes, 1e-9)


@pytest.mark.parametrize("which", ["prox_adam", "prox_ssi"])
@pytest.mark.parametrize("reg", [None, rj.group_lasso(0.0)],
                         ids=["unregularized", "zero_strength"])
def test_adaptive_without_shrinkage_is_optax_adam(which, reg):
  # No regularizer, or lambda = 0: the subproblem's solution is the Adam step.
  rng = np.random.default_rng(9)
  params = jax.tree.map(jnp.float32, random_tree(rng))
  target = jax.tree.map(jnp.float32, target_tree(rng))
  noises = f32_noises(rng, 20)
  eps = 1e-8 if which == "prox_adam" else 1e-6
  got = run_rj(getattr(rj, which)(1e-2, regularizer=reg), params, target, noises)
  want = run_rj(optax.adam(1e-2, eps=eps), params, target, noises)
  chex.assert_trees_all_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("which", ["prox_adam", "prox_ssi"])
def test_adaptive_biases_take_the_adam_step(which):
  rng = np.random.default_rng(10)
  params = jax.tree.map(jnp.float32, random_tree(rng))
  target = jax.tree.map(jnp.float32, target_tree(rng))
  noises = f32_noises(rng, 10)
  reg = rj.group_lasso(0.05)
  tx = getattr(rj, which)(1e-2, regularizer=reg)
  # Gradients of the biases do not depend on the kernels here, so the bias
  # trajectories must be Adam's.
  got = flat(run_rj(tx, params, target, noises))
  eps = 1e-8 if which == "prox_adam" else 1e-6
  want = flat(run_rj(optax.adam(1e-2, eps=eps), params, target, noises))
  for name in got:
    if name.endswith("bias"):
      np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6)
    else:  # the kernels are shrunk
      assert np.sum(np.abs(got[name])) < np.sum(np.abs(want[name])), name


@pytest.mark.parametrize("which", ["prox_adam", "prox_ssi"])
def test_inner_solvers_are_jitted_loops(which):
  params = {"w": jnp.ones((4, 3)), "b": jnp.zeros(3)}
  tx = getattr(rj, which)(1e-3, regularizer=rj.group_lasso(1e-2))
  state = tx.init(params)

  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  chex.clear_trace_counter()  # counts are kept per function code object
  jstep = jax.jit(chex.assert_max_traces(step, n=1))
  for i in range(3):
    grads = jax.tree.map(lambda x: jnp.full_like(x, 0.1 * (i + 1)), params)
    params, state = jstep(params, state, grads)
  assert "while" in str(jax.make_jaxpr(step)(params, state, params))


def test_max_inner_steps_bounds_the_loop(x64):
  rng = np.random.default_rng(11)
  y, d, tau, axes = random_subproblem(rng, (32, 8), spread=3.0)
  _, steps = _prox.group_prox_pg(y, d, tau, axes, max_steps=7, tol=0.0)
  assert int(steps) == 7
  _, steps = _prox.group_prox_newton(y, d, tau, axes, max_steps=3, tol=0.0)
  assert int(steps) == 3


# ----------------------------------------------------------- integration
ALL = {
    "prox_sgd": lambda lr, reg: rj.prox_sgd(lr, 0.9, reg),
    "prox_adam": lambda lr, reg: rj.prox_adam(lr, regularizer=reg),
    "prox_ssi": lambda lr, reg: rj.prox_ssi(lr, regularizer=reg),
}


@pytest.mark.parametrize("which", list(ALL))
def test_inject_hyperparams_in_chain_equals_plain(which):
  rng = np.random.default_rng(12)
  params = jax.tree.map(jnp.float32, random_tree(rng, 0.05))
  target = jax.tree.map(jnp.float32, target_tree(rng))
  noises = f32_noises(rng, 15)
  reg = rj.group_lasso(2.0)
  lr = 0.05 if which == "prox_sgd" else 0.01
  fn = getattr(rj, which)
  plain = optax.chain(optax.clip_by_global_norm(1.0), ALL[which](lr, reg))
  injected = optax.chain(
      optax.clip_by_global_norm(1.0),
      optax.inject_hyperparams(fn, static_args="regularizer")(
          learning_rate=lr, regularizer=reg))
  got = run_rj(injected, params, target, noises)
  want = run_rj(plain, params, target, noises)
  chex.assert_trees_all_close(got, want, rtol=1e-5, atol=1e-6)
  assert any(np.any(np.asarray(x) == 0) for x in jax.tree.leaves(got))


@pytest.mark.parametrize("which", list(ALL))
def test_jit_compiles_once_with_schedule_and_donation(which):
  params = jax.tree.map(jnp.float32, random_tree(np.random.default_rng(13)))
  tx = ALL[which](optax.linear_schedule(0.1, 0.0, 10), rj.l1(0.01))
  state = tx.init(params)

  chex.clear_trace_counter()  # counts are kept per function code object

  @chex.assert_max_traces(n=1)
  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  jstep = jax.jit(step, donate_argnums=(0, 1))
  for i in range(4):  # a second trace would raise in chex
    grads = jax.tree.map(lambda x: jnp.full_like(x, 0.1 * i), params)
    params, state = jstep(params, state, grads)


def exact_zero_case(dtype):
  """Kernel rows 0 and 2 are tiny with zero gradient, rows 1 and 3 large."""
  w = np.array([[1e-3, -1e-3, 2e-3], [1.0, -2.0, 1.5],
                [-2e-3, 1e-3, 0.0], [0.5, 0.25, -1.0]])
  params = {"w": jnp.asarray(w, dtype), "b": jnp.asarray([1.0, -1.0], dtype)}
  g = (np.sign(w) * 0.5 + 0.25) * (np.abs(w) > 0.1)
  grads = {"w": jnp.asarray(g, dtype),
           "b": jnp.ones(2, dtype)}
  return params, grads


@pytest.mark.parametrize("which", list(ALL))
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float64"])
def test_dtypes_kept_and_zeros_exact(which, dtype):
  with enable_x64(dtype == "float64"):
    params, grads = exact_zero_case(dtype)
    reg = rj.group_lasso(1.0)
    tx = ALL[which](0.01, reg)
    state = tx.init(params)
    for leaf in jax.tree.leaves(state):
      if jnp.ndim(leaf) > 0:
        assert leaf.dtype == jnp.dtype(dtype)
    update = jax.jit(tx.update)
    for _ in range(3):
      updates, state = update(grads, state, params)
      assert jax.tree.map(lambda u: u.dtype, updates) == jax.tree.map(
          lambda p: p.dtype, params)
      params = optax.apply_updates(params, updates)
    w = np.asarray(params["w"].astype(jnp.float32))
    assert params["w"].dtype == jnp.dtype(dtype)
    assert np.all(w[[0, 2]] == 0)  # removed exactly, not approximately
    assert np.all(w[[1, 3]] != 0)
    assert np.all(np.isfinite(w))


@pytest.mark.parametrize("which", list(ALL))
def test_l1_zeros_exact_after_apply_updates(which):
  params, grads = exact_zero_case("float32")
  tx = ALL[which](0.01, rj.l1(0.5))
  state = tx.init(params)
  updates, state = tx.update(grads, state, params)
  w = np.asarray(optax.apply_updates(params, updates)["w"])
  small = np.abs(np.asarray(params["w"])) < 0.005
  assert np.all(w[small] == 0) and np.all(w[~small] != 0)


def test_prox_sgd_accumulator_dtype():
  params = {"w": jnp.ones((3, 2), jnp.bfloat16)}
  tx = rj.prox_sgd(0.1, regularizer=rj.l1(0.1), accumulator_dtype=jnp.float32)
  state = tx.init(params)
  assert state.trace["w"].dtype == jnp.float32
  updates, state = tx.update({"w": jnp.ones((3, 2), jnp.bfloat16)}, state,
                             params)
  assert updates["w"].dtype == jnp.bfloat16
  assert state.trace["w"].dtype == jnp.float32


# ------------------------------------------------------------- bad input
@pytest.mark.parametrize("make,name", [
    (lambda: rj.prox_sgd(-0.1), "learning_rate"),
    (lambda: rj.prox_sgd(0.1, momentum=1.0), "momentum"),
    (lambda: rj.prox_sgd(0.1, momentum=-0.5), "momentum"),
    (lambda: rj.prox_adam(-1e-3), "learning_rate"),
    (lambda: rj.prox_adam(1e-3, b1=1.0), "b1"),
    (lambda: rj.prox_adam(1e-3, b2=-0.1), "b2"),
    (lambda: rj.prox_adam(1e-3, eps=0.0), "eps"),
    (lambda: rj.prox_adam(1e-3, max_inner_steps=0), "max_inner_steps"),
    (lambda: rj.prox_adam(1e-3, max_inner_steps=2.5), "max_inner_steps"),
    (lambda: rj.prox_ssi(-1e-3), "learning_rate"),
    (lambda: rj.prox_ssi(1e-3, b1=1.5), "b1"),
    (lambda: rj.prox_ssi(1e-3, b2=1.0), "b2"),
    (lambda: rj.prox_ssi(1e-3, eps=-1e-6), "eps"),
])
def test_bad_hyperparameters_raise(make, name):
  with pytest.raises(ValueError, match=name):
    make()


def test_bfloat16_injected_b2_is_refused_with_a_hint():
  # inject_hyperparams casts hyperparameters to the params' dtype: 0.999 -> 1.
  params = {"w": jnp.ones((3, 2), jnp.bfloat16)}
  tx = optax.inject_hyperparams(rj.prox_adam, static_args="regularizer")(
      learning_rate=1e-3, regularizer=rj.l1(0.1))
  with pytest.raises(ValueError, match="b2 .*hyperparam_dtype"):
    tx.init(params)
  tx = optax.inject_hyperparams(rj.prox_adam, static_args="regularizer",
                                hyperparam_dtype=jnp.float32)(
      learning_rate=1e-3, regularizer=rj.l1(0.1))
  state = tx.init(params)
  updates, _ = tx.update(params, state, params)
  assert updates["w"].dtype == jnp.bfloat16
  assert np.all(np.isfinite(np.asarray(updates["w"], np.float32)))


class _Ridge(rj.Regularizer):
  """psi = strength/2 ||W||^2: a regularizer written against the interface only.

  The optimizers must work with it through ``value_leaf`` and ``prox_leaf``
  alone. Its metric prox has the closed form ``U = D Y / (D + tau)`` (from
  ``D (U - Y) + tau U = 0``), which the tests use as the reference.
  """

  name = "ridge"

  def value_leaf(self, x):
    return 0.5 * jnp.sum(jnp.square(x))

  def prox_leaf(self, x, threshold):
    return x / (1 + jnp.asarray(threshold, x.dtype))


def test_new_regularizer_works_with_every_optimizer_by_its_interface(x64):
  rng = np.random.default_rng(14)
  params = random_tree(rng, 0.3)
  lr, lam = 0.3, 0.7
  # prox_adam: the generic metric prox (proximal gradient over the leaf)
  # must reach the closed form of the subproblem.
  grads_seq = [random_tree(rng) for _ in range(3)]
  tx = rj.prox_adam(lr, 0.9, 0.99, 1e-3, _Ridge(lam), max_inner_steps=100000,
                    inner_tol=1e-15, inner_stop="change")
  state = tx.init(params)
  for grads in grads_seq:
    updates, state = jax.jit(tx.update)(grads, state, params)
  new = flat(optax.apply_updates(params, updates))
  ys, ds = np_adam_y_d(flat(params), [flat(g) for g in grads_seq], lr, 0.9,
                       0.99, 1e-3)
  for name, u in new.items():
    y, d = ys[name], ds[name]
    want = d * y / (d + lr * lam) if u.ndim >= 2 else y
    np.testing.assert_allclose(u, want, rtol=0, atol=1e-10, err_msg=name)
  # prox_sgd (no momentum, one step) and rmda (c = 1, one step): the plain
  # prox, U = (W - lr g) / (1 + lr lam) on kernels.
  grads = random_tree(rng)
  want = jax.tree.map(lambda p, g: (p - lr * g) / (1 + lr * lam) if p.ndim >= 2
                      else p - lr * g, params, grads)
  for tx in (rj.prox_sgd(lr, 0.0, _Ridge(lam)),
             rj.rmda(lr, 1.0, _Ridge(lam))):
    updates, _ = tx.update(grads, tx.init(params), params)
    chex.assert_trees_all_close(optax.apply_updates(params, updates), want,
                                atol=1e-12, rtol=0)


def test_prox_ssi_refuses_a_regularizer_without_newton():
  with pytest.raises(ValueError, match="ridge.*'newton'.*supports 'pg'"):
    rj.prox_ssi(1e-3, regularizer=_Ridge(0.1))
  with pytest.raises(TypeError, match="regularizer"):
    rj.prox_ssi(1e-3, regularizer="group_lasso")


@pytest.mark.parametrize("reg", [rj.l1(0.1), rj.group_lasso(0.1), _Ridge(0.1)],
                         ids=["l1", "group_lasso", "ridge"])
def test_unknown_solver_name_is_an_error(reg):
  params = {"w": jnp.ones((3, 2))}
  metric = {"w": jnp.ones((3, 2))}
  with pytest.raises(ValueError, match="'bisection'"):
    reg.prox(params, 1.0, metric, solver="bisection")
  with pytest.raises(ValueError, match="'bisection'"):
    reg.prox(params, 1.0, solver="bisection")


@pytest.mark.parametrize("solver", ["pg", "newton"])
@pytest.mark.parametrize("kind", ["l1", "group_lasso"])
def test_metric_prox_of_the_interface_satisfies_optimality(x64, kind, solver):
  rng = np.random.default_rng(15)
  y, d, tau, axes = random_subproblem(rng, (3, 3, 16, 8))
  reg = make_reg(kind, 1.0)
  if kind == "group_lasso":
    tau /= np.sqrt(np.prod([y.shape[a] for a in axes]))  # the weight sqrt|g|
  else:
    tau = float(np.median(np.abs(d * y)))
  u = reg.prox({"k": y, "b": y[0, 0, 0]}, tau, {"k": d, "b": d[0, 0, 0]},
               solver=solver, max_steps=20000, tol=1e-15)
  np.testing.assert_array_equal(u["b"], y[0, 0, 0])  # 1-D: not regularized
  u = np.asarray(u["k"])
  if kind == "l1":
    zero = u == 0
    np.testing.assert_array_equal(zero, np.abs(d * y) <= tau)
    assert 0 < zero.mean() < 1
    resid = d * (u - y) + tau * np.sign(u)
    assert np.max(np.abs(resid[~zero])) <= 1e-10
  else:
    w = np.sqrt(np.prod([y.shape[a] for a in axes]))
    np_check_group_optimality(u, y, d, tau * w, axes, 1e-9)


@pytest.mark.parametrize("which", list(ALL))
def test_bad_trees_raise(which):
  tx = ALL[which](0.01, rj.group_lasso(0.1))
  with pytest.raises(TypeError, match=re.escape("['layer']['step']")):
    tx.init({"layer": {"w": jnp.ones((2, 2)),
                       "step": jnp.zeros((), jnp.int32)}})
  params = {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}
  state = tx.init(params)
  with pytest.raises(ValueError, match=re.escape(NO_PARAMS_MSG)):
    tx.update(params, state)
  with pytest.raises(ValueError, match="same pytree structure"):
    tx.update({"w": jnp.ones((2, 2))}, state, params)
  with pytest.raises(ValueError, match=re.escape("['w']")):
    tx.update({"w": jnp.ones((3, 2)), "b": jnp.ones(2)}, state, params)


@pytest.mark.parametrize("which", list(ALL))
def test_grouping_errors_name_the_leaf(which):
  # group_lasso(groups=2) needs a third axis: a 2-D kernel cannot be grouped.
  tx = ALL[which](0.01, rj.group_lasso(0.1, groups=2))
  with pytest.raises(ValueError, match=re.escape("['dense']['kernel']")):
    tx.init({"dense": {"kernel": jnp.ones((3, 2))}})


class BaselineUpdateVariantsTest(chex.TestCase):
  """Each baseline's bare update, with and without jit, against NumPy (x64)."""

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(("l1", "l1", 0.3),
                                  ("group_lasso", "group_lasso", 0.2))
  def test_prox_sgd_update(self, kind, lam):
    with enable_x64(True):
      rng = np.random.default_rng(16)
      params, target = random_tree(rng), target_tree(rng)
      noises = [random_tree(rng, 0.05) for _ in range(25)]
      tx = rj.prox_sgd(lr_schedule, 0.9, make_reg(kind, lam))
      update = self.variant(tx.update)
      state = tx.init(params)
      for noise in noises:
        updates, state = update(grad_of(params, target, noise), state, params)
        params = optax.apply_updates(params, updates)
      want = np_prox_sgd(flat(random_tree(np.random.default_rng(16))),
                         flat(target), [flat(n) for n in noises], kind, lam,
                         0.9, False)
      assert_same_points(params, want, 1e-10)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(("prox_adam", "prox_adam"),
                                  ("prox_ssi", "prox_ssi"))
  def test_adaptive_l1_update(self, which):
    # With L1 both solve the subproblem in closed form: soft thresholding of
    # the Adam step Y at lr * lam / D.
    lr, b1, b2, eps, lam = 0.3, 0.9, 0.99, 1e-3, 0.15
    with enable_x64(True):
      rng = np.random.default_rng(17)
      params = random_tree(rng, 0.3)
      grads_seq = [random_tree(rng) for _ in range(4)]
      tx = getattr(rj, which)(lr, b1, b2, eps, rj.l1(lam))
      update = self.variant(tx.update)
      state = tx.init(params)
      for grads in grads_seq:  # params held fixed: the last update is checked
        updates, state = update(grads, state, params)
      got = flat(optax.apply_updates(params, updates))
      ys, ds = np_adam_y_d(flat(params), [flat(g) for g in grads_seq], lr, b1,
                           b2, eps)
      want = {n: np_l1_prox(y, lr * lam / ds[n]) if y.ndim >= 2 else y
              for n, y in ys.items()}
      chex.assert_trees_all_close(got, want, rtol=0, atol=1e-12)
      assert 0 < np.mean(got["dense/kernel"] == 0) < 1
