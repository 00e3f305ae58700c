"""rj.nuclear_norm: the prox by its optimality conditions and against NumPy's
SVD, values, errors, every optimizer, structured_params and the rank metrics."""

import re
import zlib

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
# Absolute tolerance of the optimality residuals, data of order 1.
ATOL = {"float32": 2e-5, "float64": 1e-11}


def as_matrix(x):
  x = np.asarray(x, np.float64)
  return x.reshape(-1, x.shape[-1])


def np_svt(x, t):
  """U max(S - t, 0) V^T of the (prod(shape[:-1]), shape[-1]) view, in float64."""
  a = as_matrix(x)
  u, s, vt = np.linalg.svd(a, full_matrices=False)
  return ((u * np.maximum(s - t, 0)) @ vt).reshape(np.shape(x))


def low_rank(rng, m, n, rank):
  return rng.normal(size=(m, rank)) @ rng.normal(size=(rank, n))


# name -> (shape, rank of the input or None for generic)
INPUTS = {
    "tall": ((9, 5), None),
    "wide": ((4, 11), None),
    "conv": ((3, 3, 4, 6), None),
    "rank_deficient_square": ((8, 8), 3),
    "rank_deficient_wide": ((3, 10), 2),
    "zero": ((6, 4), 0),
}


def make_input(name, rng):
  shape, rank = INPUTS[name]
  m, n = int(np.prod(shape[:-1])), shape[-1]
  if rank is None:
    return rng.normal(size=shape)
  if rank == 0:
    return np.zeros(shape)
  return low_rank(rng, m, n, rank).reshape(shape) / np.sqrt(rank)


def threshold_between(x, keep):
  """(t, kept): t halfway between singular values kept-1 and kept of x (no ties)."""
  s = np.linalg.svd(as_matrix(x), compute_uv=False)
  if s[0] == 0:
    return 0.7, 0
  keep = min(keep, int(np.sum(s > 1e-6 * s[0])))
  lo = s[keep] if keep < s.size else 0.0
  return 0.5 * (s[keep - 1] + lo), keep


def check_optimality(x, u, t, atol):
  r"""0 in U - X + t d||U||_*: with U = U1 S1 V1^T (rank r) and G = (X - U) / t,

  G = U1 V1^T + W, U1^T W = 0, W V1 = 0, ||W||_2 <= 1 (Watson 1992).
  """
  x, u = as_matrix(x), as_matrix(u)
  g = (x - u) / t
  uu, s, vt = np.linalg.svd(u, full_matrices=False)
  r = int(np.sum(s > 10 * atol))
  u1, v1 = uu[:, :r], vt[:r].T
  np.testing.assert_allclose(g @ v1, u1, atol=atol / t * 10)
  np.testing.assert_allclose(u1.T @ g, v1.T, atol=atol / t * 10)
  w = g - u1 @ v1.T
  assert np.linalg.norm(w, 2) <= 1 + atol / t * 10
  return r


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("name", list(INPUTS))
@pytest.mark.parametrize("keep", [1, 2])
def test_prox_satisfies_optimality(name, dtype, keep):
  with enable_x64(dtype == "float64"):
    rng = np.random.default_rng([zlib.crc32(name.encode()), keep])
    x = make_input(name, rng).astype(DTYPES[dtype])
    t, keep = threshold_between(x, keep)
    lam, scale = 0.5, 2 * t  # threshold = scale * strength = t
    reg = rj.nuclear_norm(lam)
    u = reg.prox({"k": jnp.asarray(x)}, scale)["k"]
    assert u.dtype == x.dtype and u.shape == x.shape
    u = np.asarray(u)
    r = check_optimality(x, u, t, ATOL[dtype])
    assert r == keep
    # The structure is exact: U's numerical rank (NumPy's default tolerance in
    # U's own dtype) is the number of singular values of X above t.
    assert np.linalg.matrix_rank(u.reshape(-1, u.shape[-1])) == keep


def test_prox_of_zero_and_below_threshold_is_exactly_zero():
  rng = np.random.default_rng(3)
  x = rng.normal(size=(5, 7)).astype(np.float32)
  s_max = np.linalg.svd(x, compute_uv=False)[0]
  reg = rj.nuclear_norm(1.0)
  chex.assert_trees_all_equal(reg.prox({"k": jnp.asarray(x)}, 1.01 * s_max)["k"],
                              jnp.zeros((5, 7)))
  chex.assert_trees_all_equal(reg.prox({"k": jnp.zeros((5, 7))}, 1.0)["k"],
                              jnp.zeros((5, 7)))


def test_zero_threshold_is_the_identity():
  x = {"k": jax.random.normal(jax.random.key(0), (3, 3, 2, 4)),
       "b": jnp.arange(4.0)}
  chex.assert_trees_all_equal(rj.nuclear_norm(0.7).prox(x, 0.0), x)
  chex.assert_trees_all_equal(rj.nuclear_norm(0.0).prox(x, 3.0), x)


class ProxAgainstNumpyTest(chex.TestCase):
  """The jitted and the eager prox against an SVD computed with NumPy."""

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.product(name=["wide", "conv", "rank_deficient_square", "zero"],
                         dtype=list(DTYPES))
  def test_prox_matches_numpy_svd(self, name, dtype):
    with enable_x64(dtype == "float64"):
      rng = np.random.default_rng(7)
      x = make_input(name, rng).astype(DTYPES[dtype])
      params = {"k": jnp.asarray(x), "bias": jnp.ones(3, DTYPES[dtype])}
      reg = rj.nuclear_norm(0.25)
      got = self.variant(reg.prox)(params, jnp.asarray(2.0, DTYPES[dtype]))
      want = {"k": np_svt(x, 0.5).astype(DTYPES[dtype]),
              "bias": np.ones(3, DTYPES[dtype])}
      tol = 1e-5 if dtype == "float32" else 1e-12
      chex.assert_trees_all_close(got, want, atol=tol, rtol=0)
      chex.assert_trees_all_equal_dtypes(got, params)


def test_bfloat16_leaf_is_thresholded_in_float32():
  x = jax.random.normal(jax.random.key(1), (6, 4))
  got = rj.nuclear_norm(1.0).prox({"k": x.astype(jnp.bfloat16)}, 0.5)["k"]
  assert got.dtype == jnp.bfloat16
  want = np_svt(np.asarray(x.astype(jnp.bfloat16), np.float64), 0.5)
  np.testing.assert_allclose(np.asarray(got, np.float64), want, atol=3e-2)


def test_value_matches_numpy_and_its_gradient_is_finite():
  rng = np.random.default_rng(4)
  params = {"conv": rng.normal(size=(3, 3, 2, 5)),
            "dense": low_rank(rng, 7, 4, 2),     # rank deficient
            "zero": np.zeros((4, 3)),
            "bias": rng.normal(size=(5,))}
  jparams = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)
  reg = rj.nuclear_norm(0.3)
  want = 0.3 * sum(np.linalg.svd(as_matrix(params[k]), compute_uv=False).sum()
                   for k in ("conv", "dense", "zero"))
  np.testing.assert_allclose(reg.value(jparams), want, rtol=1e-5)
  grads = jax.grad(reg.value)(jparams)
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
  np.testing.assert_array_equal(grads["bias"], 0)
  # Where the kernel has full rank the gradient is lam * U V^T.
  u, _, vt = np.linalg.svd(as_matrix(params["conv"]), full_matrices=False)
  np.testing.assert_allclose(as_matrix(grads["conv"]), 0.3 * u @ vt, atol=1e-5)


def test_bad_inputs_raise_clear_errors():
  with pytest.raises(ValueError, match="strength must be finite and >= 0"):
    rj.nuclear_norm(-1.0)
  params = {"dense": {"kernel": jnp.ones((3, 2)), "bias": jnp.ones(2)}}
  reg = rj.nuclear_norm(0.1, mask={"dense": {"kernel": True, "bias": True}})
  path = re.escape("['dense']['bias']")
  with pytest.raises(ValueError, match=f"{path}.*ndim >= 2"):
    reg.check(params)
  with pytest.raises(ValueError, match=path):
    reg.prox(params, 1.0)
  with pytest.raises(ValueError, match=path):
    rj.rmda(0.1, 0.1, reg).init(params)
  with pytest.raises(ValueError, match=path):
    rj.prox_sgd(0.1, 0.9, reg).init(params)


def test_prox_ssi_refuses_it_and_names_the_alternative():
  with pytest.raises(ValueError, match=r"no 'newton' solver.*rj\.prox_adam"):
    rj.prox_ssi(1e-3, regularizer=rj.nuclear_norm(0.1))
  with pytest.raises(ValueError, match="supports 'pg'"):
    rj.nuclear_norm(0.1).prox({"k": jnp.ones((2, 2))}, 1.0,
                              metric={"k": jnp.ones((2, 2))}, solver="nope")


def test_metric_prox_solves_its_subproblem():
  """argmin 1/2 (U - Y)^T D (U - Y) + t ||U||_*:  D o (Y - U) / t in d||U||_*."""
  with enable_x64(True):
    rng = np.random.default_rng(5)
    y = rng.normal(size=(7, 5))
    d = rng.uniform(1.0, 1.6, size=y.shape)
    t = 0.5 * np.linalg.svd(y, compute_uv=False)[1]  # some kept, some dropped
    u = rj.nuclear_norm(1.0).prox({"k": jnp.asarray(y)}, t,
                                  metric={"k": jnp.asarray(d)}, max_steps=500,
                                  tol=1e-13)["k"]
    u = np.asarray(u)
    # Same conditions as the plain prox with G = D o (Y - U) / t.
    r = check_optimality(u + d * (y - u), u, t, 1e-9)
    assert 0 < r < 5


def _tree(rng):
  return {"conv": {"kernel": jnp.asarray(rng.normal(size=(3, 3, 2, 4)), jnp.float32),
                   "bias": jnp.zeros(4)},
          "dense": {"kernel": jnp.asarray(rng.normal(size=(6, 5)), jnp.float32),
                    "bias": jnp.zeros(5)}}


@pytest.mark.parametrize("make_tx", [
    lambda reg: rj.rmda(0.5, 1.0, reg),
    lambda reg: rj.rmda_multistep(0.5, 0.1, [2], regularizer=reg),
    lambda reg: rj.prox_sgd(0.5, 0.9, reg),
    lambda reg: rj.prox_adam(0.1, regularizer=reg, max_inner_steps=20),
], ids=["rmda", "rmda_multistep", "prox_sgd", "prox_adam"])
def test_every_optimizer_lowers_the_rank(make_tx):
  rng = np.random.default_rng(6)
  params, target = _tree(rng), _tree(rng)
  reg = rj.nuclear_norm(3.0)
  params = reference.run_on_quadratic(make_tx(reg), params, target, 4)
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(params))
  report = rj.rank_report(params, reg)
  assert report.full_rank == 4 + 5
  assert report.rank < report.full_rank
  assert np.isfinite(float(reg.value(params)))


def test_structured_params_is_the_svt_of_the_dual_point():
  """After one RMDA update (k = 1, beta = 1, alpha = lr): Z = SVT(W0 - lr g, lr lam)."""
  rng = np.random.default_rng(8)
  w0 = rng.normal(size=(6, 5)).astype(np.float32)
  g = rng.normal(size=(6, 5)).astype(np.float32)
  lr, c = 0.5, 0.3
  s = np.linalg.svd(w0.astype(np.float64) - lr * g, compute_uv=False)
  lam = (s[1] + s[2]) / 2 / lr  # keeps 2 of 5
  reg = rj.nuclear_norm(lam)
  tx = rj.rmda(lr, c, reg)
  params = {"w": jnp.asarray(w0)}
  state = tx.init(params)
  updates, state = tx.update({"w": jnp.asarray(g)}, state, params)
  params = optax.apply_updates(params, updates)
  z = rj.structured_params(state, reg)
  want = np_svt(w0.astype(np.float64) - lr * g, lr * lam)
  np.testing.assert_allclose(z["w"], want, atol=2e-5)
  assert rj.rank_report(z, reg).rank == 2            # Z exactly low rank
  assert rj.rank_report(params, reg).rank == 5       # W (c < 1) is not


# ------------------------------------------------------------------ metrics
def _ranked_params(rng):
  return {"a": {"kernel": jnp.asarray(low_rank(rng, 8, 5, 2), jnp.float32)},
          "conv": {"kernel": jnp.asarray(
              low_rank(rng, 18, 4, 3).reshape(3, 3, 2, 4), jnp.float32)},
          "zero": {"kernel": jnp.zeros((3, 6))},
          "full": {"kernel": jnp.asarray(rng.normal(size=(4, 4)), jnp.float32)},
          "bias": jnp.ones(4)}


def test_rank_report_agrees_with_numpy_matrix_rank():
  params = _ranked_params(np.random.default_rng(9))
  report = rj.rank_report(params, rj.nuclear_norm(1.0))
  rows = {r.path: r for r in report.rows}
  assert set(rows) == {"['a']['kernel']", "['conv']['kernel']",
                       "['zero']['kernel']", "['full']['kernel']"}
  for name, rank, full, mshape in [("a", 2, 5, (8, 5)), ("conv", 3, 4, (18, 4)),
                                   ("zero", 0, 3, (3, 6)), ("full", 4, 4, (4, 4))]:
    row = rows[f"['{name}']['kernel']"]
    k = np.asarray(params[name]["kernel"])
    assert row.rank == rank == np.linalg.matrix_rank(k.reshape(-1, k.shape[-1]))
    assert row.full_rank == full and row.matrix_shape == mshape
    s = np.linalg.svd(k.reshape(-1, k.shape[-1]).astype(np.float64),
                      compute_uv=False)
    np.testing.assert_allclose(row.tol, max(mshape) * np.finfo(np.float32).eps * s[0])
  assert report.rank == 9 and report.full_rank == 16
  assert report.rank_fraction == pytest.approx(9 / 16)
  text = str(report)
  assert "['conv']['kernel']" in text and "3/4" in text and "9/16" in text
  assert report.to_dicts()[0]["matrix_shape"] == [8, 5]
  # Default mask without a regularizer; rtol overrides the tolerance.
  assert rj.rank_report(params).rank == 9
  assert rj.rank_report(params, rtol=2.0).rank == 0


def test_rank_report_refuses_vectors_by_path():
  reg = rj.l1(0.1, mask={"w": True, "b": True})
  with pytest.raises(ValueError, match=re.escape("['b']")):
    rj.rank_report({"w": jnp.ones((2, 2)), "b": jnp.ones(2)}, reg)


def test_group_metrics_read_ranks():
  params = _ranked_params(np.random.default_rng(10))
  reg = rj.nuclear_norm(1.0)
  # Groups are singular values: zero groups = full rank - rank, per kernel.
  assert rj.group_sparsity(params, reg) == pytest.approx((3 + 1 + 3 + 0) / 16)
  # Weighted: each kernel weighs its m * n entries.
  want = (40 * 3 / 5 + 72 * 1 / 4 + 18 * 3 / 3 + 16 * 0) / (40 + 72 + 18 + 16)
  assert rj.group_sparsity(params, reg, weighted=True) == pytest.approx(want)
  support = rj.group_support(params, reg)
  assert support["bias"] is None
  np.testing.assert_array_equal(support["a"]["kernel"], [1, 1, 0, 0, 0])
  report = rj.sparsity_report(params, reg)
  rows = {r.path: r for r in report.rows}
  assert rows["['conv']['kernel']"].groups == 4
  assert rows["['conv']['kernel']"].zero_groups == 1
  # support_changes counts rank changes.
  rng = np.random.default_rng(11)
  other = dict(params, a={"kernel": jnp.asarray(low_rank(rng, 8, 5, 4), jnp.float32)})
  assert rj.support_changes(support, rj.group_support(other, reg)) == 2


def test_group_metrics_name_a_regularizer_without_groups():
  class Ridge(rj.Regularizer):
    name = "ridge"

    def value_leaf(self, x):
      return jnp.sum(x ** 2) / 2

    def prox_leaf(self, x, threshold):
      return x / (1 + threshold)

  params = {"w": jnp.ones((2, 2))}
  for fn in (rj.group_sparsity, rj.group_support, rj.sparsity_report):
    with pytest.raises(TypeError, match=f"{fn.__name__}: the ridge regularizer"):
      fn(params, Ridge(0.1))
