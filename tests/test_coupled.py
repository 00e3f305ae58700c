"""Coupled groups (attention heads, MLP neurons): prox by its optimality
conditions, values, metrics, errors, the optimizers, and a short ViT run."""

import doctest

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import rmda_jax as rj
from rmda_jax import _coupled
from tests import reference
from tests._compat import enable_x64

IN, H, HD, OUT, HID, OUT2 = 3, 3, 2, 3, 4, 2


def _params(rng, scales_heads=None, scales_units=None):
  """An attention module (nnx layout) and an MLP as plain dicts, float64.

  Head h (unit i) is multiplied by scales_heads[h] (scales_units[i]) in every
  slice, so that a prox can zero some groups and keep others.
  """
  sh = np.ones(H) if scales_heads is None else np.asarray(scales_heads)
  su = np.ones(HID) if scales_units is None else np.asarray(scales_units)
  n = lambda *s: rng.normal(size=s)
  attn = {c: {"kernel": n(IN, H, HD) * sh[None, :, None], "bias": n(H, HD) * sh[:, None]}
          for c in ("query", "key", "value")}
  attn["out"] = {"kernel": n(H, HD, OUT) * sh[:, None, None], "bias": n(OUT)}
  mlp = {"fc1": {"kernel": n(IN, HID) * su[None, :], "bias": n(HID) * su},
         "fc2": {"kernel": n(HID, OUT2) * su[:, None], "bias": n(OUT2)}}
  return {"attn": attn, "mlp": mlp, "head": {"kernel": n(OUT2, 2)}}


def head_slices(p, h):
  """Head h's entries, from the definition (numpy indexing, not the library)."""
  a = p["attn"]
  return ([a[c]["kernel"][:, h, :] for c in ("query", "key", "value")]
          + [a[c]["bias"][h, :] for c in ("query", "key", "value")]
          + [a["out"]["kernel"][h, :, :]])


def unit_slices(p, i):
  m = p["mlp"]
  return [m["fc1"]["kernel"][:, i], m["fc1"]["bias"][i:i + 1], m["fc2"]["kernel"][i, :]]


HEAD_SIZE = 3 * IN * HD + 3 * HD + HD * OUT
UNIT_SIZE = IN + 1 + OUT2


def _flat(slices):
  return np.concatenate([np.ravel(s) for s in slices])


def _groups(p):
  """(slices of every group, weight) for all heads and units."""
  return ([(head_slices(p, h), np.sqrt(HEAD_SIZE)) for h in range(H)]
          + [(unit_slices(p, i), np.sqrt(UNIT_SIZE)) for i in range(HID)])


def _np(tree):
  return jax.tree.map(lambda x: np.asarray(x, np.float64), tree)


SCALES_H = [0.05, 1.0, 2.0]
SCALES_U = [1.5, 0.02, 1.0, 0.01]


def test_helpers_find_the_groups():
  p = _params(np.random.default_rng(0))
  (heads,) = rj.attention_heads(p)
  (units,) = rj.mlp_neurons(p)
  assert heads.key == "attn heads" and units.key == "mlp neurons"
  assert {(s.path[-2], s.path[-1], s.axis) for s in heads.slices} == {
      ("query", "kernel", 1), ("key", "kernel", 1), ("value", "kernel", 1),
      ("query", "bias", 0), ("key", "bias", 0), ("value", "bias", 0),
      ("out", "kernel", 0)}
  assert [(s.path, s.axis) for s in units.slices] == [
      (("mlp", "fc1", "kernel"), 1), (("mlp", "fc1", "bias"), 0),
      (("mlp", "fc2", "kernel"), 0)]
  assert len(rj.attention_heads(p, biases=False)[0].slices) == 4
  assert rj.mlp_neurons(p, under="attn") == ()


def test_prox_optimality_conditions():
  """Nonzero group: U_g - X_g + t w U_g/||U_g|| = 0; zero group: ||X_g|| <= t w."""
  with enable_x64(True):
    x = _params(np.random.default_rng(1), SCALES_H, SCALES_U)
    lam, scale = 0.4, 0.5
    t = lam * scale
    reg = rj.head_and_neuron_lasso(lam, x)
    u = _np(reg.prox(jax.tree.map(jnp.asarray, x), scale))
    n_zero = n_nonzero = 0
    for (xs, w), (us, _) in zip(_groups(x), _groups(u)):
      xg, ug = _flat(xs), _flat(us)
      if np.all(ug == 0):
        n_zero += 1
        assert np.linalg.norm(xg) <= t * w + 1e-12
      else:
        n_nonzero += 1
        assert np.all(ug != 0)  # no slice of a kept group is zeroed
        np.testing.assert_allclose(ug - xg + t * w * ug / np.linalg.norm(ug), 0,
                                   atol=1e-12)
    assert n_zero >= 2 and n_nonzero >= 2
    # Leaves in no group are untouched.
    np.testing.assert_array_equal(u["attn"]["out"]["bias"], x["attn"]["out"]["bias"])
    np.testing.assert_array_equal(u["mlp"]["fc2"]["bias"], x["mlp"]["fc2"]["bias"])
    np.testing.assert_array_equal(u["head"]["kernel"], x["head"]["kernel"])


@pytest.mark.parametrize("solver", ["pg", "newton", "warm"])
def test_metric_prox_optimality_conditions(solver):
  """D (U_g - X_g) + t w U_g/||U_g|| = 0 for a nonzero group; ||D X_g|| <= t w for a zero one."""
  with enable_x64(True):
    rng = np.random.default_rng(2)
    x = _params(rng, SCALES_H, SCALES_U)
    d = jax.tree.map(lambda a: rng.uniform(0.5, 2.0, size=np.shape(a)), x)
    lam, scale = 0.4, 0.5
    t = lam * scale
    reg = rj.head_and_neuron_lasso(lam, x)
    xj, dj = jax.tree.map(jnp.asarray, x), jax.tree.map(jnp.asarray, d)
    # PG and Newton stop on their steps' size (tol 1e-14): residuals of 1e-14 and
    # 1e-15 here. The warm solver stops, as RAMDA's authors' does, when the
    # objective stops decreasing: in float64 that is a relative decrease near
    # 1e-16, so the point is accurate to about its square root (4e-8 here after
    # 41 steps; 2e-7 after 37 with XLA:CPU's LLVM at -O0, 2026-12-05). Its
    # bound is set by that floor, not by this machine's rounding.
    atol = 1e-6 if solver == "warm" else 1e-12
    if solver == "warm":  # RAMDA's warm-started solver, from a point away from X
      u, steps = reg.prox(xj, scale, dj, init=jax.tree.map(lambda a: 0.5 * a, xj),
                          max_steps=20000, tol=1e-30, return_steps=True)
      assert int(steps["attn"]["query"]["kernel"]) > 1
      assert int(steps["head"]["kernel"]) == 0  # in no group
      u = _np(u)
    else:
      u = _np(reg.prox(xj, scale, dj, solver=solver, max_steps=5000, tol=1e-14))
    n_zero = n_nonzero = 0
    for (xs, w), (us, _), (ds, _) in zip(_groups(x), _groups(u), _groups(d)):
      xg, ug, dg = _flat(xs), _flat(us), _flat(ds)
      if np.all(ug == 0):
        n_zero += 1
        assert np.linalg.norm(dg * xg) <= t * w + 1e-12
      else:
        n_nonzero += 1
        np.testing.assert_allclose(dg * (ug - xg) + t * w * ug / np.linalg.norm(ug), 0,
                                   atol=atol)
    assert n_zero >= 2 and n_nonzero >= 2


def test_rest_regularizes_the_other_leaves():
  with enable_x64(True):
    x = _params(np.random.default_rng(3), SCALES_H, SCALES_U)
    reg = rj.head_and_neuron_lasso(0.4, x, rest=rj.group_lasso(0.3))
    u = _np(reg.prox(jax.tree.map(jnp.asarray, x), 2.0))
    np.testing.assert_allclose(u["head"]["kernel"],
                               reference.group_lasso_prox(x["head"]["kernel"], 0.6, -2),
                               atol=1e-12)
    # group_lasso's default mask (ndim >= 2) would take the kernels of the
    # groups too: there the coupled prox wins, so the biases outside stay.
    ref = _np(rj.head_and_neuron_lasso(0.4, x).prox(jax.tree.map(jnp.asarray, x), 2.0))
    np.testing.assert_allclose(u["attn"]["query"]["kernel"], ref["attn"]["query"]["kernel"])
    np.testing.assert_array_equal(u["attn"]["out"]["bias"], x["attn"]["out"]["bias"])
    value = float(reg.value(jax.tree.map(jnp.asarray, x)))
    expected = 0.4 * sum(w * np.linalg.norm(_flat(s)) for s, w in _groups(x))
    expected += reference.group_lasso_value(x["head"]["kernel"], 0.3, -2)
    np.testing.assert_allclose(value, expected, rtol=1e-12)


def test_value_and_strength_as_a_leaf():
  with enable_x64(True):
    x = _params(np.random.default_rng(4))
    reg = rj.head_and_neuron_lasso(0.7)  # groups found in params at each use
    expected = 0.7 * sum(w * np.linalg.norm(_flat(s)) for s, w in _groups(x))
    xj = jax.tree.map(jnp.asarray, x)
    np.testing.assert_allclose(float(reg.value(xj)), expected, rtol=1e-12)
    value = jax.jit(lambda r, p: r.value(p))
    np.testing.assert_allclose(float(value(reg.with_strength(1.4), xj)), 2 * expected,
                               rtol=1e-12)
    assert jax.tree.leaves(reg) == [0.7]
    assert reg == rj.head_and_neuron_lasso(0.7) != rj.head_and_neuron_lasso(0.8)
    assert hash(reg) == hash(rj.head_and_neuron_lasso(0.7))
    grads = jax.grad(reg.value)(jax.tree.map(jnp.zeros_like, xj))  # finite at 0
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))


def test_a_group_is_zero_exactly_when_all_its_slices_are():
  x = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32),
                   _params(np.random.default_rng(5)))
  reg = rj.head_and_neuron_lasso(1.0, x)
  a = x["attn"]
  # Head 0: zero in every slice. Head 1: zero except its output rows.
  for c in ("query", "key", "value"):
    a[c]["kernel"] = a[c]["kernel"].at[:, :2].set(0)
    a[c]["bias"] = a[c]["bias"].at[:2].set(0)
  a["out"]["kernel"] = a["out"]["kernel"].at[0].set(0)
  # Unit 3: only its bias entry is nonzero.
  m = x["mlp"]
  m["fc1"]["kernel"] = m["fc1"]["kernel"].at[:, 3].set(0)
  m["fc2"]["kernel"] = m["fc2"]["kernel"].at[3].set(0)
  support = rj.group_support(x, reg)
  np.testing.assert_array_equal(support["attn heads"], [False, True, True])
  np.testing.assert_array_equal(support["mlp neurons"], [True, True, True, True])
  m["fc1"]["bias"] = m["fc1"]["bias"].at[3].set(0)
  new = rj.group_support(x, reg)
  np.testing.assert_array_equal(new["mlp neurons"], [True, True, True, False])
  assert rj.support_changes(support, new) == 1
  assert rj.group_sparsity(x, reg) == pytest.approx(2 / 7)
  assert rj.group_sparsity(x, reg, weighted=True) == pytest.approx(
      (HEAD_SIZE + UNIT_SIZE) / (H * HEAD_SIZE + HID * UNIT_SIZE))
  # The prox zeroes every slice of a group together, or none.
  u = reg.prox(x, 3.0)
  for us, _ in _groups(_np(u)):
    zeros = [np.all(s == 0) for s in us]
    assert all(zeros) or not any(np.any(s == 0) for s in us)


def test_sparsity_report_rows():
  x = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32),
                   _params(np.random.default_rng(6)))
  x["mlp"]["fc1"]["kernel"] = x["mlp"]["fc1"]["kernel"].at[:, 1].set(0)
  x["mlp"]["fc1"]["bias"] = x["mlp"]["fc1"]["bias"].at[1].set(0)
  x["mlp"]["fc2"]["kernel"] = x["mlp"]["fc2"]["kernel"].at[1].set(0)
  reg = rj.head_and_neuron_lasso(1.0, x)
  report = rj.sparsity_report(x, reg)
  rows = {r.path: r for r in report.rows}
  assert rows["mlp neurons"].groups == HID and rows["mlp neurons"].zero_groups == 1
  assert rows["mlp neurons"].entries == IN * HID + HID + HID * OUT2
  assert rows["mlp neurons"].zero_entries == UNIT_SIZE
  assert rows["attn heads"].groups == H and rows["attn heads"].zero_groups == 0
  # Every entry is counted once: the groups' leaves have no rows of their own.
  assert sum(r.entries for r in report.rows) == sum(
      np.size(v) for v in jax.tree.leaves(x))
  assert not rows["['attn']['out']['bias']"].regularized
  assert "mlp neurons" in str(report)


def _fam(*slices, name="g"):
  return rj.CoupledGroups.make(name, slices)


def test_errors_name_the_group_and_the_path():
  x = jax.tree.map(jnp.asarray, _params(np.random.default_rng(7)))
  bad = rj.coupled_group_lasso(1.0, _fam(("mlp/fc1/kernel", 1), ("mlp/fc2/kernel", 1),
                                         name="units"))
  with pytest.raises(ValueError, match=r"'units groups'.*\['mlp'\]\['fc2'\]\['kernel'\]"
                                       r".*disagree in size"):
    bad.check(x)
  missing = rj.coupled_group_lasso(1.0, _fam(("mlp/fc1/kernel", 1), ("mlp/fc3/kernel", 0)))
  with pytest.raises(ValueError, match=r"'g groups'.*mlp/fc3/kernel.*does not have"):
    missing.prox(x, 1.0)
  overlap = rj.coupled_group_lasso(1.0, [
      _fam(("mlp/fc1/kernel", 1), ("mlp/fc2/kernel", 0), name="a"),
      _fam(("mlp/fc2/kernel", 1), name="b")])
  with pytest.raises(ValueError, match=r"'b groups'.*\['mlp'\]\['fc2'\]\['kernel'\]"
                                       r" overlaps coupled group 'a groups'"):
    rj.rmda(0.1, regularizer=overlap).init(x)
  no_axis = rj.coupled_group_lasso(1.0, _fam(("mlp/fc1/bias", 1)))
  with pytest.raises(ValueError, match=r"\['mlp'\]\['fc1'\]\['bias'\] has shape \(4,\)"):
    no_axis.check(x)
  with pytest.raises(ValueError, match="found no attention modules"):
    rj.head_and_neuron_lasso(1.0).check({"w": jnp.ones((2, 2))})
  with pytest.raises(ValueError, match="block must be"):
    _fam(("mlp/fc1/kernel", 1, 0))


def test_block_slices():
  """A hand-written (in, heads * head_dim) kernel: block = head_dim."""
  with enable_x64(True):
    rng = np.random.default_rng(8)
    q, o = rng.normal(size=(3, 3 * 2)), rng.normal(size=(3 * 2, 4))
    reg = rj.coupled_group_lasso(0.5, _fam(("q", 1, 2), ("o", 0, 2)))
    u = _np(reg.prox({"q": jnp.asarray(q), "o": jnp.asarray(o)}, 1.0))
    w = np.sqrt(3 * 2 + 2 * 4)
    for h in range(3):
      xg = np.concatenate([q[:, 2 * h:2 * h + 2].ravel(), o[2 * h:2 * h + 2].ravel()])
      ug = np.concatenate([u["q"][:, 2 * h:2 * h + 2].ravel(), u["o"][2 * h:2 * h + 2].ravel()])
      n = np.linalg.norm(xg)
      np.testing.assert_allclose(ug, xg * max(0, 1 - 0.5 * w / n), atol=1e-12)


@pytest.mark.parametrize("name", ["prox_sgd", "prox_adam", "prox_ssi", "rmda"])
def test_optimizers_use_it_unchanged(name):
  rng = np.random.default_rng(9)
  x = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), _params(rng, SCALES_H, SCALES_U))
  grads = jax.tree.map(lambda a: jnp.asarray(0.1 * rng.normal(size=a.shape), a.dtype), x)
  reg = rj.head_and_neuron_lasso(0.5)
  tx = getattr(rj, name)(0.1, regularizer=reg)
  state = tx.init(x)
  updates, state = tx.update(grads, state, x)
  new = optax.apply_updates(x, updates)
  chex.assert_trees_all_equal_shapes_and_dtypes(new, x)
  z = rj.structured_params(state, reg) if name == "rmda" else new
  support = rj.group_support(z, reg)
  assert not all(np.all(v) for v in support.values())  # some group went
  for us, _ in _groups(_np(z)):  # ... in all its slices at once
    zeros = [np.all(s == 0) for s in us]
    assert all(zeros) or not any(zeros)
  if name in ("prox_sgd", "rmda"):  # plain prox: the small groups go, the large stay
    assert not support["attn heads"][0] and support["attn heads"][2]
    assert not support["mlp neurons"][3] and support["mlp neurons"][0]


def test_docstring_examples():
  finder = doctest.DocTestFinder()
  tests = [t for t in finder.find(_coupled) if t.examples]
  assert {t.name.rsplit(".", 1)[-1] for t in tests} >= {
      "attention_heads", "coupled_group_lasso", "head_and_neuron_lasso"}
  for t in tests:
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    out = []
    runner.run(t, out=out.append)
    assert runner.summarize(verbose=False).failed == 0, "".join(out)


def test_vit_on_digits_loses_heads_at_a_large_lambda():
  from rmda_jax.examples import data as data_lib
  from rmda_jax.examples import models
  ds = data_lib.load_dataset("digits")
  model = models.ViTTiny(ds.num_classes, rngs=nnx.Rngs(0), input_shape=ds.input_shape,
                         dim=16, depth=1, heads=4, mlp_dim=16)
  graphdef, params = nnx.split(model, nnx.Param)
  params = nnx.to_pure_dict(params)
  reg = rj.head_and_neuron_lasso(0.3, model)
  tx = rj.rmda(0.1, 0.1, regularizer=reg)
  x = jnp.asarray(ds.x_train[:256], jnp.float32)
  y = jnp.asarray(ds.y_train[:256])

  def loss(p):
    logits = nnx.merge(graphdef, p)(x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  @jax.jit
  def step(p, s):
    g = jax.grad(loss)(p)
    u, s = tx.update(g, s, p)
    return optax.apply_updates(p, u), s

  state = tx.init(params)
  before = rj.group_support(params, reg)
  assert all(np.all(v) for v in before.values())
  for _ in range(15):
    params, state = step(params, state)
  z = rj.structured_params(state, reg)
  support = rj.group_support(z, reg)
  heads = support["blocks/0/attn heads"]
  assert heads.size == 4 and not heads.all()
  # The heads that went are zero in all their slices, in the model itself.
  attn = z["blocks"][0]["attn"]
  for h in np.flatnonzero(~heads):
    for c in ("query", "key", "value"):
      assert not jnp.any(attn[c]["kernel"][:, h]) and not jnp.any(attn[c]["bias"][h])
    assert not jnp.any(attn["out"]["kernel"][h])
