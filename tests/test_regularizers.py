"""Each prox checked by its optimality conditions, plus values, masks and errors."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rmda_jax as rj
from tests import reference
from tests._compat import enable_x64

SHAPES = [(7, 5), (3, 3, 4, 6), (2, 5, 3)]


def _groups(x, axis):
  """Yields (index, group) pairs, one per index of `axis`."""
  axis = axis % x.ndim
  for i in range(x.shape[axis]):
    idx = [slice(None)] * x.ndim
    idx[axis] = i
    yield tuple(idx), x[tuple(idx)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("groups,axis", [("input", -2), ("output", -1), (0, 0)])
def test_group_lasso_prox_optimality(shape, groups, axis):
  """u = prox(x): u_g - x_g + t w u_g/||u_g|| = 0 if u_g != 0, ||x_g|| <= t w else."""
  with enable_x64(True):
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape) * rng.permutation(np.linspace(0.02, 1.5, shape[axis])).reshape(
        [-1 if a == axis % len(shape) else 1 for a in range(len(shape))])
    lam, scale = 0.3, 0.7
    t = lam * scale
    reg = rj.group_lasso(lam, groups=groups)
    u = np.asarray(reg.prox({"k": jnp.asarray(x)}, scale)["k"])
    w = np.sqrt(x.size / x.shape[axis])
    n_zero = n_nonzero = 0
    for idx, xg in _groups(x, axis):
      ug = u[idx]
      if np.all(ug == 0):
        n_zero += 1
        assert np.linalg.norm(xg) <= t * w + 1e-12
      else:
        n_nonzero += 1
        assert np.all(ug != 0)
        residual = ug - xg + t * w * ug / np.linalg.norm(ug)
        np.testing.assert_allclose(residual, 0, atol=1e-12)
    assert n_zero > 0 and n_nonzero > 0  # both conditions were exercised
    np.testing.assert_allclose(u, reference.group_lasso_prox(x, t, axis), atol=1e-12)


def test_l1_prox_optimality():
  with enable_x64(True):
    x = np.random.default_rng(1).normal(size=(6, 9))
    t = 0.4
    u = np.asarray(rj.l1(0.8).prox({"k": jnp.asarray(x)}, 0.5)["k"])
    zero = u == 0
    assert zero.any() and (~zero).any()
    assert np.all(np.abs(x[zero]) <= t)
    np.testing.assert_allclose(u[~zero] - x[~zero] + t * np.sign(u[~zero]), 0,
                               atol=1e-14)
    assert not np.any(np.signbit(u[zero]))  # +0.0, not -0.0


@pytest.mark.parametrize("reg", [rj.l1(0.2), rj.group_lasso(0.2),
                                 rj.group_lasso(0.2, groups="output")])
def test_prox_shrinks_and_is_nonexpansive(reg):
  rng = np.random.default_rng(2)
  x = {"k": jnp.asarray(rng.normal(size=(4, 4, 3, 8)), jnp.float32)}
  y = {"k": jnp.asarray(rng.normal(size=(4, 4, 3, 8)), jnp.float32)}
  px, py = reg.prox(x, 0.5)["k"], reg.prox(y, 0.5)["k"]
  # Shrinkage: every entry moves towards 0 and keeps its sign.
  assert np.all(np.abs(px) <= np.abs(x["k"]) + 1e-7)
  assert np.all(px * x["k"] >= 0)
  # Firm nonexpansiveness implies nonexpansiveness.
  assert jnp.linalg.norm(px - py) <= jnp.linalg.norm(x["k"] - y["k"]) + 1e-5
  assert reg.value(reg.prox(x, 0.5)) <= reg.value(x)


@pytest.mark.parametrize("reg", [rj.l1(0.5), rj.group_lasso(0.5)])
def test_prox_with_zero_threshold_is_identity(reg):
  x = {"k": jax.random.normal(jax.random.key(0), (3, 3, 2, 4)),
       "b": jnp.arange(4.0)}
  for got, want in zip(jax.tree.leaves(reg.prox(x, 0.0)), jax.tree.leaves(x)):
    np.testing.assert_array_equal(got, want)
  zero_strength = type(reg)(0.0)
  for got, want in zip(jax.tree.leaves(zero_strength.prox(x, 3.0)),
                       jax.tree.leaves(x)):
    np.testing.assert_array_equal(got, want)


def test_values_match_the_formula():
  rng = np.random.default_rng(3)
  params = {"conv": rng.normal(size=(3, 3, 4, 5)), "dense": rng.normal(size=(6, 2)),
            "bias": rng.normal(size=(5,))}
  jparams = jax.tree.map(jnp.asarray, params)
  want_gl = sum(reference.group_lasso_value(params[n], 0.1, -2)
                for n in ("conv", "dense"))
  np.testing.assert_allclose(rj.group_lasso(0.1).value(jparams), want_gl, rtol=1e-5)
  want_l1 = 0.1 * (np.abs(params["conv"]).sum() + np.abs(params["dense"]).sum())
  np.testing.assert_allclose(rj.l1(0.1).value(jparams), want_l1, rtol=1e-5)
  # An explicit mask that includes the bias: groups="output" works on 1-D.
  reg = rj.group_lasso(0.1, groups="output",
                       mask={"conv": True, "dense": False, "bias": True})
  want = (reference.group_lasso_value(params["conv"], 0.1, -1)
          + reference.group_lasso_value(params["bias"], 0.1, -1))
  np.testing.assert_allclose(reg.value(jparams), want, rtol=1e-5)


def test_default_mask_leaves_biases_alone():
  params = {"kernel": jnp.ones((3, 4)), "bias": jnp.full((4,), 1e-3),
            "scale": jnp.full((4,), 1e-3)}
  out = rj.group_lasso(10.0).prox(params, 1.0)
  assert np.all(out["kernel"] == 0)  # strongly shrunk to zero
  np.testing.assert_array_equal(out["bias"], params["bias"])
  np.testing.assert_array_equal(out["scale"], params["scale"])


def test_mask_as_function_and_as_prefix():
  params = {"a": {"kernel": jnp.ones((2, 3))}, "b": {"kernel": jnp.ones((2, 3))}}
  by_fn = rj.l1(10.0, mask=lambda p: {"a": {"kernel": True}, "b": {"kernel": False}})
  by_prefix = rj.l1(10.0, mask={"a": True, "b": False})
  for reg in (by_fn, by_prefix):
    out = reg.prox(params, 1.0)
    assert np.all(out["a"]["kernel"] == 0)
    assert np.all(out["b"]["kernel"] == 1)


@pytest.mark.parametrize("reg", [rj.l1(1.0), rj.group_lasso(1.0),
                                 rj.group_lasso(1.0, groups="output")])
def test_no_nan_at_zero(reg):
  params = {"k": jnp.zeros((3, 3, 2, 4)), "d": jnp.zeros((5, 2))}
  grads = jax.grad(reg.value)(params)
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
  assert np.isfinite(reg.value(params)) and reg.value(params) == 0
  out = reg.prox(params, 1.0)
  assert all(np.all(o == 0) for o in jax.tree.leaves(out))
  # Gradient away from zero is the usual one: lam * sqrt(|g|) * x_g / ||x_g||.
  x = {"k": jnp.zeros((3, 2)).at[1].set(jnp.array([3.0, 4.0]))}
  if isinstance(reg, rj.GroupLasso) and reg.groups == "input":
    g = jax.grad(reg.value)(x)["k"]
    np.testing.assert_allclose(g[1], np.sqrt(2) * np.array([0.6, 0.8]), rtol=1e-6)
    np.testing.assert_array_equal(g[0], 0)


def test_bfloat16_prox_keeps_dtype():
  x = {"k": jnp.ones((4, 3), jnp.bfloat16)}
  out = rj.group_lasso(0.1).prox(x, 1.0)
  assert out["k"].dtype == jnp.bfloat16


def test_bad_arguments():
  with pytest.raises(ValueError, match="strength"):
    rj.group_lasso(-1e-4)
  with pytest.raises(ValueError, match="strength"):
    rj.l1(float("nan"))
  with pytest.raises(TypeError, match="strength"):
    rj.l1("0.1")
  with pytest.raises(ValueError, match="groups"):
    rj.group_lasso(0.1, groups="filters")
  with pytest.raises(ValueError, match="groups"):
    rj.group_lasso(0.1, groups=1.5)
  with pytest.raises(TypeError, match="mask"):
    rj.l1(0.1, mask={"a": 1})


def test_missing_group_axis_names_the_path():
  reg = rj.group_lasso(0.1, groups=3)
  params = {"conv": {"kernel": jnp.ones((3, 3, 2, 4))},
            "dense": {"kernel": jnp.ones((4, 2))}}
  with pytest.raises(ValueError, match=r"\['dense'\]\['kernel'\].*\(4, 2\)"):
    reg.prox(params, 1.0)
  with pytest.raises(ValueError, match=r"\['dense'\]\['kernel'\]"):
    reg.value(params)


def test_non_float_leaf_names_the_path():
  params = {"emb": jnp.ones((4, 3), jnp.int32)}
  with pytest.raises(TypeError, match=r"\['emb'\].*int32"):
    rj.l1(0.1).prox(params, 1.0)


def test_mask_structure_mismatch_is_an_error():
  reg = rj.l1(0.1, mask={"a": True, "zzz": False})
  with pytest.raises(ValueError, match="mask does not match"):
    reg.value({"a": jnp.ones((2, 2)), "b": jnp.ones((2, 2))})


def test_default_mask_skips_embedding_tables():
  nnx = pytest.importorskip("flax.nnx")

  class Tiny(nnx.Module):
    def __init__(self, rngs):
      self.embed = nnx.Embed(10, 4, rngs=rngs)
      self.dense = nnx.Linear(4, 3, rngs=rngs)

  params = nnx.state(Tiny(nnx.Rngs(0)), nnx.Param)
  mask = rj.group_lasso(0.1).mask_tree(params)
  leaf = lambda m: jax.tree.leaves(m)[0]  # unwrap nnx.Param
  assert leaf(mask["embed"]["embedding"]) is False
  assert leaf(mask["dense"]["kernel"]) is True
  assert leaf(mask["dense"]["bias"]) is False
  plain = {"embedding": jnp.ones((10, 4)), "kernel": jnp.ones((4, 3))}
  assert rj.default_mask(plain) == {"embedding": False, "kernel": True}


def test_with_strength_copies_groups_and_mask():
  reg = rj.group_lasso(0.1, groups="output", mask={"a": True, "b": False})
  other = reg.with_strength(0.4)
  assert other.strength == 0.4 and reg.strength == 0.1
  assert other.groups == "output" and other.mask == reg.mask
  params = {"a": jnp.ones((3, 2)), "b": jnp.ones((3, 2))}
  np.testing.assert_allclose(other.value(params), 4 * reg.value(params), rtol=1e-6)
  with pytest.raises(ValueError, match="strength"):
    reg.with_strength(-1.0)


# ------------------------------------------------ regularizers as pytrees
ALL_KINDS = [
    lambda s: rj.l1(s), lambda s: rj.group_lasso(s),
    lambda s: rj.group_lasso(s, groups="output"), lambda s: rj.nuclear_norm(s),
    lambda s: rj.sparse_group_lasso(s / 4, s),
]


@pytest.mark.parametrize("make", ALL_KINDS)
def test_equal_and_hash_by_value(make):
  a, b = make(1e-3), make(1e-3)
  assert a == b and hash(a) == hash(b) and a is not b
  assert a != make(2e-3)
  assert len({a, b, make(2e-3)}) == 2
  assert not callable(a)  # optax.inject_hyperparams would take it for a schedule


def test_equality_sees_groups_masks_and_class():
  assert rj.group_lasso(1.0) != rj.group_lasso(1.0, groups="output")
  assert rj.group_lasso(1.0) != rj.l1(1.0)
  m1 = {"w": True, "b": False}
  assert rj.group_lasso(1.0, mask=m1) == rj.group_lasso(1.0, mask=dict(m1))
  assert rj.group_lasso(1.0, mask=m1) != rj.group_lasso(1.0, mask={"w": False, "b": False})
  assert rj.group_lasso(1.0, mask=m1) != rj.group_lasso(1.0)


def test_immutable_and_replace_checks():
  reg = rj.group_lasso(0.5)
  with pytest.raises(AttributeError, match="immutable"):
    reg.strength = 1.0
  assert reg.replace(strength=2.0) == rj.group_lasso(2.0)
  with pytest.raises(ValueError, match="strength must be finite and >= 0"):
    reg.replace(strength=-1.0)
  with pytest.raises(TypeError, match="unknown field"):
    reg.replace(groups="output")


@pytest.mark.parametrize("make", ALL_KINDS)
def test_strength_is_a_leaf_traced_by_jit_without_recompiling(make):
  x = {"w": jax.random.normal(jax.random.key(0), (4, 3))}
  assert jax.tree.leaves(make(0.5)) and all(
      np.ndim(v) == 0 for v in jax.tree.leaves(make(0.5)))
  chex.clear_trace_counter()

  @jax.jit
  @chex.assert_max_traces(n=1)
  def prox(reg, x):
    return reg.prox(x, 1.0), reg.value(x)

  for s in (0.1, 0.4, 0.9):
    got = prox(make(s), x)
    want = (make(s).prox(x, 1.0), make(s).value(x))
    chex.assert_trees_all_close(got, want, atol=1e-6)


@pytest.mark.parametrize("make", ALL_KINDS)
def test_vmap_over_strength_equals_separate_regularizers(make):
  x = {"w": jax.random.normal(jax.random.key(1), (5, 3))}
  strengths = jnp.array([0.0, 0.2, 0.7, 3.0])
  batched = jax.vmap(lambda s: make(s).prox(x, 0.5))(strengths)
  for i, s in enumerate(strengths.tolist()):
    chex.assert_trees_all_close(
        jax.tree.map(lambda b: b[i], batched), make(s).prox(x, 0.5), atol=1e-5)


def test_inner_solver_options_need_a_metric():
  x = {"w": jnp.ones((3, 2))}
  reg = rj.group_lasso(0.1)
  for kwargs in ({"max_steps": 5}, {"tol": 1e-3}):
    with pytest.raises(ValueError, match="without metric= the prox is in closed form"):
      reg.prox(x, 1.0, **kwargs)
  d = {"w": jnp.full((3, 2), 2.0)}
  chex.assert_trees_all_close(reg.prox(x, 1.0, d, max_steps=50, tol=1e-9),
                              reg.prox(x, 1.0, d), atol=1e-6)
