"""rj.sparse_group_lasso: the prox (plain and in a diagonal metric) by its
optimality conditions and against NumPy, strengths, errors, every optimizer,
structured_params and both sparsities."""

import re

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

DTYPES = {"float32": np.float32, "float64": np.float64}
ATOL = {"float32": 1e-5, "float64": 1e-12}
SHAPES = [(7, 5), (3, 3, 4, 6)]
GROUPINGS = [("input", -2), ("output", -1), (0, 0)]


def np_groups(x, axis):
  """(index, group) pairs: one group per index of ``axis``."""
  axis = axis % x.ndim
  for i in range(x.shape[axis]):
    idx = [slice(None)] * x.ndim
    idx[axis] = i
    yield tuple(idx), x[tuple(idx)]


def np_soft(x, t):
  return np.sign(x) * np.maximum(np.abs(x) - t, 0)


def np_sgl_prox(x, t1, t2, axis):
  """Written from rmda.md: group shrink (t2 sqrt|g|) of the soft threshold (t1)."""
  x = np.asarray(x, np.float64)
  out = np.zeros_like(x)
  w = np.sqrt(x.size / x.shape[axis % x.ndim])
  for idx, g in np_groups(x, axis):
    z = np_soft(g, t1)
    n = np.linalg.norm(z)
    if n > t2 * w:
      out[idx] = z * (1 - t2 * w / n)
  return out


def np_sgl_value(x, lam1, lam2, axis):
  x = np.asarray(x, np.float64)
  w = np.sqrt(x.size / x.shape[axis % x.ndim])
  return lam1 * np.abs(x).sum() + lam2 * w * sum(
      np.linalg.norm(g) for _, g in np_groups(x, axis))


def make_input(rng, shape, axis):
  # Group scales from tiny to large: zero groups, partly sparse and dense ones.
  axis = axis % len(shape)
  scales = rng.permutation(np.linspace(0.05, 2.0, shape[axis]))
  return rng.normal(size=shape) * scales.reshape(
      [-1 if a == axis else 1 for a in range(len(shape))])


def check_optimality(x, u, d, t1, t2w, axis, atol):
  r"""0 in D (U - X) + t1 d||U||_1 + t2 w d||U_g|| for every group (D = diag(d)).

  U_g = 0:  ||S_{t1}(D X_g)|| <= t2 w  (some s in [-1, 1]^g has ||D X_g - t1 s|| <= t2 w);
  U_g != 0: d_i (u_i - x_i) + t1 sign(u_i) + t2 w u_i / ||U_g|| = 0 where u_i != 0,
            |d_i x_i| <= t1 where u_i = 0.
  Returns (zero groups, nonzero groups, zero entries in nonzero groups).
  """
  counts = [0, 0, 0]
  for idx, xg in np_groups(x, axis):
    ug, dg = u[idx], d[idx]
    if np.all(ug == 0):
      counts[0] += 1
      assert np.linalg.norm(np_soft(dg * xg, t1)) <= t2w + atol
      continue
    counts[1] += 1
    nz = ug != 0
    counts[2] += int(np.sum(~nz))
    assert np.all(np.abs(dg[~nz] * xg[~nz]) <= t1 + atol)
    res = (dg[nz] * (ug[nz] - xg[nz]) + t1 * np.sign(ug[nz])
           + t2w * ug[nz] / np.linalg.norm(ug))
    np.testing.assert_allclose(res, 0, atol=atol)
  return counts


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("groups,axis", GROUPINGS)
def test_prox_satisfies_optimality_and_matches_numpy(shape, groups, axis, dtype):
  with enable_x64(dtype == "float64"):
    rng = np.random.default_rng(0)
    x = make_input(rng, shape, axis).astype(DTYPES[dtype])
    lam1, lam2, scale = 0.4, 0.1, 0.8
    t1, t2 = scale * lam1, scale * lam2
    reg = rj.sparse_group_lasso(lam1, lam2, groups=groups)
    u = reg.prox({"k": jnp.asarray(x), "b": jnp.ones(2, DTYPES[dtype])}, scale)
    assert u["k"].dtype == x.dtype
    np.testing.assert_array_equal(u["b"], 1)  # 1-D leaves: default mask skips
    u = np.asarray(u["k"], np.float64)
    w = np.sqrt(x.size / x.shape[axis])
    zero, nonzero, sparse_inside = check_optimality(
        x.astype(np.float64), u, np.ones_like(u), t1, t2 * w, axis, ATOL[dtype])
    assert zero > 0 and nonzero > 0 and sparse_inside > 0  # every case exercised
    np.testing.assert_allclose(u, np_sgl_prox(x, t1, t2, axis), atol=ATOL[dtype])


def test_prox_minimizes_its_objective():
  """Convex: no random perturbation of the prox lowers 1/2 ||U - X||^2 + t psi(U)."""
  with enable_x64(True):
    rng = np.random.default_rng(1)
    x = make_input(rng, (6, 5), -2)
    lam1, lam2 = 0.3, 0.2
    u = np.asarray(rj.sparse_group_lasso(lam1, lam2).prox({"k": jnp.asarray(x)},
                                                           1.0)["k"])
    obj = lambda v: 0.5 * np.sum((v - x) ** 2) + np_sgl_value(v, lam1, lam2, -2)
    base = obj(u)
    for _ in range(200):
      assert obj(u + 1e-3 * rng.normal(size=u.shape)) >= base - 1e-12


class MetricProxTest(chex.TestCase):
  """argmin 1/2 (U - Y)^T D (U - Y) + t psi(U), both solvers, jit and eager."""

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.product(solver=["pg", "newton"], groups=["input", "output"])
  def test_metric_prox_satisfies_optimality(self, solver, groups):
    with enable_x64(True):
      rng = np.random.default_rng(2)
      axis = -2 if groups == "input" else -1
      y = make_input(rng, (3, 3, 4, 6), axis)
      d = rng.uniform(1.0, 1.5, size=y.shape)
      lam1, lam2, scale = 0.3, 0.1, 1.0
      reg = rj.sparse_group_lasso(lam1, lam2, groups=groups)
      prox = self.variant(lambda p, m: reg.prox(p, scale, metric=m, solver=solver,
                                                max_steps=300, tol=1e-14))
      u = np.asarray(prox({"k": jnp.asarray(y)}, {"k": jnp.asarray(d)})["k"])
      w = np.sqrt(y.size / y.shape[axis])
      zero, nonzero, sparse_inside = check_optimality(
          y, u, d, scale * lam1, scale * lam2 * w, axis, 1e-9)
      assert zero > 0 and nonzero > 0 and sparse_inside > 0


@pytest.mark.parametrize("lam1,lam2,same", [
    (0.3, 0.0, lambda: rj.l1(0.3)),
    (0.0, 0.3, lambda: rj.group_lasso(0.3)),
])
def test_one_strength_zero_is_the_other_regularizer(lam1, lam2, same):
  x = {"k": jax.random.normal(jax.random.key(3), (3, 3, 4, 6)),
       "b": jnp.arange(4.0)}
  reg, other = rj.sparse_group_lasso(lam1, lam2), same()
  prox_and_value = lambda r: jax.jit(lambda x: (r.prox(x, 0.7), r.value(x)))(x)
  chex.assert_trees_all_close(prox_and_value(reg), prox_and_value(other),
                              atol=1e-6, rtol=1e-6)


def test_value_matches_the_formula():
  rng = np.random.default_rng(4)
  params = {"conv": rng.normal(size=(3, 3, 4, 5)), "dense": rng.normal(size=(6, 2)),
            "bias": rng.normal(size=(5,))}
  jparams = jax.tree.map(jnp.asarray, params)
  for groups, axis in [("input", -2), ("output", -1)]:
    want = sum(np_sgl_value(params[n], 0.02, 0.1, axis) for n in ("conv", "dense"))
    got = rj.sparse_group_lasso(0.02, 0.1, groups=groups).value(jparams)
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_strengths_and_with_strength():
  reg = rj.sparse_group_lasso(0.2, 0.6, groups="output")
  assert reg.strength == pytest.approx(0.8)
  assert reg.l1_fraction == pytest.approx(0.25)
  x = {"k": jax.random.normal(jax.random.key(5), (6, 5))}
  # The prox scale multiplies both strengths: prox(x, 2) is that of (0.4, 1.2).
  chex.assert_trees_all_close(
      reg.prox(x, 2.0), rj.sparse_group_lasso(0.4, 1.2, groups="output").prox(x, 1.0),
      atol=1e-6)
  # with_strength sets the total and keeps the mix (and groups, mask).
  doubled = reg.with_strength(1.6)
  assert (doubled.l1_strength, doubled.group_strength) == pytest.approx((0.4, 1.2))
  assert doubled.groups == "output" and reg.strength == pytest.approx(0.8)
  np.testing.assert_allclose(doubled.value(x), 2 * reg.value(x), rtol=1e-6)
  chex.assert_trees_all_close(doubled.prox(x, 1.0), reg.prox(x, 2.0), atol=1e-6)
  assert reg.with_strength(0.0).with_strength(0.8).l1_strength == pytest.approx(0.2)
  # Both zero: no mix to scale.
  none = rj.sparse_group_lasso(0.0, 0.0)
  assert none.with_strength(0.0).strength == 0.0
  with pytest.raises(ValueError, match="no mix"):
    none.with_strength(1.0)
  assert "l1_strength=0.2" in repr(reg)


def test_bad_inputs_raise_clear_errors():
  with pytest.raises(ValueError, match="l1_strength must be finite and >= 0"):
    rj.sparse_group_lasso(-0.1, 0.1)
  with pytest.raises(ValueError, match="group_strength must be finite and >= 0"):
    rj.sparse_group_lasso(0.1, -1.0)
  with pytest.raises(TypeError, match="group_strength must be a real number"):
    rj.sparse_group_lasso(0.1, "0.2")
  with pytest.raises(ValueError, match="groups must be"):
    rj.sparse_group_lasso(0.1, 0.1, groups="rows")
  with pytest.raises(ValueError, match="strength must be finite"):
    rj.sparse_group_lasso(0.1, 0.1).with_strength(-1.0)
  reg = rj.sparse_group_lasso(0.1, 0.1, groups=2)
  with pytest.raises(ValueError, match=re.escape("['dense']['kernel']")):
    rj.rmda(0.1, 0.1, reg).init({"dense": {"kernel": jnp.ones((3, 2))}})


def _tree(rng):
  return {"conv": {"kernel": jnp.asarray(make_input(rng, (3, 3, 4, 6), -2),
                                         jnp.float32), "bias": jnp.zeros(6)},
          "dense": {"kernel": jnp.asarray(make_input(rng, (8, 5), -2), jnp.float32),
                    "bias": jnp.zeros(5)}}


@pytest.mark.parametrize("make_tx", [
    lambda reg: rj.rmda(0.5, 1.0, reg),
    lambda reg: rj.prox_sgd(0.5, 0.0, reg),
    lambda reg: rj.prox_adam(0.3, regularizer=reg),
    lambda reg: rj.prox_ssi(0.3, regularizer=reg),
], ids=["rmda", "prox_sgd", "prox_adam", "prox_ssi"])
def test_every_optimizer_gives_both_sparsities(make_tx):
  rng = np.random.default_rng(6)
  params = _tree(rng)
  target = _tree(rng)  # f = 1/2 ||W - T||^2: the optimum is prox(T)
  reg = rj.sparse_group_lasso(0.15, 0.08)
  params = reference.run_on_quadratic(make_tx(reg), params, target, 10)
  report = rj.sparsity_report(params, reg)
  assert 0 < report.group_sparsity < 1
  # Sparse inside the groups that survive, too.
  kept = [r for r in report.rows if r.regularized]
  assert any(r.zero_entries > (r.zero_groups * r.entries // r.groups) for r in kept)
  assert report.regularized_sparsity > rj.group_sparsity(params, reg, weighted=True)


def test_rmda_step_and_structured_params_against_numpy():
  """One RMDA update, c = 0.5: Z = prox(W0 - lr g, lr), W = W0 + c (Z - W0)."""
  rng = np.random.default_rng(7)
  w0 = make_input(rng, (6, 5), -2).astype(np.float32)
  g = 0.2 * rng.normal(size=(6, 5)).astype(np.float32)
  lr, lam1, lam2, c = 0.5, 0.4, 0.3, 0.5
  reg = rj.sparse_group_lasso(lam1, lam2)
  tx = rj.rmda(lr, c, reg)
  params = {"w": jnp.asarray(w0)}
  state = tx.init(params)
  updates, state = tx.update({"w": jnp.asarray(g)}, state, params)
  params = optax.apply_updates(params, updates)
  z = rj.structured_params(state, reg)["w"]
  want = np_sgl_prox(w0.astype(np.float64) - lr * g, lr * lam1, lr * lam2, -2)
  np.testing.assert_allclose(z, want, atol=1e-5)
  np.testing.assert_array_equal(z == 0, want == 0)  # the zeros are exact
  np.testing.assert_allclose(params["w"], w0 + c * (want - w0), atol=1e-5)
  zero_rows = np.all(want == 0, axis=1)
  assert 0 < zero_rows.sum() < 6
  assert rj.group_sparsity({"w": z}, reg) == pytest.approx(zero_rows.mean())
  assert rj.sparsity({"w": z}) == pytest.approx(np.mean(want == 0))


def test_group_metrics_use_the_group_lasso_groups():
  w = np.ones((4, 3), np.float32)
  w[1] = 0            # a zero group (input 1)
  w[2, 0] = 0         # a zero entry inside a kept group
  params = {"w": jnp.asarray(w), "b": jnp.zeros(3)}
  reg = rj.sparse_group_lasso(0.1, 0.1)
  assert rj.group_sparsity(params, reg) == pytest.approx(1 / 4)
  assert rj.group_sparsity(params, reg, weighted=True) == pytest.approx(3 / 12)
  support = rj.group_support(params, reg)
  np.testing.assert_array_equal(support["w"], [True, False, True, True])
  report = rj.sparsity_report(params, reg)
  assert report.regularized_sparsity == pytest.approx(4 / 12)
  assert report.sparsity == pytest.approx(7 / 15)  # the zero bias counts here
  w2 = w.copy()
  w2[1] = 1
  assert rj.support_changes(support, rj.group_support({"w": jnp.asarray(w2),
                                                       "b": jnp.zeros(3)}, reg)) == 1
