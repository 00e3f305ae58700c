import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rmda_jax as rj


def _params():
  dense = np.ones((4, 3), np.float32)
  dense[[0, 2]] = 0  # input features 0 and 2 removed: 2 of 4 groups, size 3
  conv = np.ones((2, 2, 3, 5), np.float32)
  conv[:, :, 0, :] = 0  # input channel 0 removed: 1 of 3 groups, size 20
  conv[0, 0, 1, 0] = 0  # a stray zero does not make a group
  bias = np.array([0.0, 1.0, 0.0, 2.0, 3.0], np.float32)
  return {"dense": jnp.asarray(dense), "conv": jnp.asarray(conv),
          "bias": jnp.asarray(bias)}


def test_sparsity_counts_every_leaf():
  p = _params()
  zeros = 6 + 21 + 2
  assert rj.sparsity(p) == pytest.approx(zeros / (12 + 60 + 5))
  assert rj.sparsity({}) == 0.0


def test_group_sparsity_plain_and_weighted():
  p = _params()
  reg = rj.group_lasso(1e-3)
  assert rj.group_sparsity(p, reg) == pytest.approx(3 / 7)
  assert rj.group_sparsity(p, reg, weighted=True) == pytest.approx((6 + 20) / 72)
  out = rj.group_lasso(1e-3, groups="output")
  # Output grouping: dense columns are never all zero; conv filters neither.
  assert rj.group_sparsity(p, out) == 0.0
  # L1: every regularized entry is a group.
  assert rj.group_sparsity(p, rj.l1(1e-3)) == pytest.approx((6 + 21) / 72)


def test_support_and_changes():
  p = _params()
  reg = rj.group_lasso(1e-3)
  s1 = rj.group_support(p, reg)
  assert s1["bias"] is None
  np.testing.assert_array_equal(s1["dense"], [False, True, False, True])
  q = dict(p, dense=p["dense"].at[0].set(1.0).at[1].set(0.0))
  assert rj.support_changes(s1, rj.group_support(q, reg)) == 2
  assert rj.support_changes(s1, s1) == 0


def test_sparsity_report_rows_and_table():
  p = _params()
  reg = rj.group_lasso(1e-3)
  report = rj.sparsity_report(p, reg)
  rows = {r.path: r for r in report.rows}
  assert rows["['dense']"].groups == 4 and rows["['dense']"].zero_groups == 2
  assert rows["['conv']"].shape == (2, 2, 3, 5)
  assert rows["['conv']"].zero_entries == 21
  assert not rows["['bias']"].regularized and rows["['bias']"].groups == 0
  assert report.group_sparsity == pytest.approx(rj.group_sparsity(p, reg))
  assert report.sparsity == pytest.approx(rj.sparsity(p))
  text = str(report)
  lines = text.splitlines()
  assert lines[0].split()[0] == "leaf" and "zero groups" in lines[0]
  assert any(line.startswith("['dense']") and "2/4" in line for line in lines)
  assert lines[-1].startswith("total") and "4/7" in lines[-1]
  assert len({len(line) for line in lines}) <= 2  # aligned columns
  assert report.to_dicts()[0]["shape"] == [5]


def test_support_changes_refuses_supports_of_another_structure():
  reg = rj.group_lasso(1.0)
  a = rj.group_support({"w": jnp.ones((3, 2)), "v": jnp.ones((4, 2))}, reg)
  other_tree = rj.group_support({"w": jnp.ones((3, 2))}, reg)
  other_groups = rj.group_support({"w": jnp.ones((5, 2)), "v": jnp.ones((4, 2))}, reg)
  with pytest.raises(ValueError, match="different structures"):
    rj.support_changes(a, other_tree)
  with pytest.raises(ValueError, match=r"\['w'\] has \(3,\) groups"):
    rj.support_changes(a, other_groups)
  b = rj.group_support({"w": jnp.ones((3, 2)).at[1].set(0), "v": jnp.ones((4, 2))}, reg)
  assert rj.support_changes(a, b) == 1 and rj.support_changes(a, a) == 0


def _attention_mlp_params(rng):
  """One attention module (6 features, 2 heads of 3) and a 6-5-6 MLP, nnx layouts."""
  def low_rank(m, n, r):
    return rng.normal(size=(m, r)) @ rng.normal(size=(r, n))
  attn = {c: {"kernel": jnp.asarray(low_rank(6, 6, 4).reshape(6, 2, 3), jnp.float32),
              "bias": jnp.asarray(rng.normal(size=(2, 3)), jnp.float32)}
          for c in ("query", "key", "value")}
  attn["out"] = {"kernel": jnp.asarray(low_rank(6, 6, 5).reshape(2, 3, 6), jnp.float32),
                 "bias": jnp.ones(6)}
  return {"attn": attn,
          "fc1": {"kernel": jnp.asarray(low_rank(6, 5, 3), jnp.float32), "bias": jnp.ones(5)},
          "fc2": {"kernel": jnp.asarray(rng.normal(size=(5, 6)), jnp.float32),
                  "bias": jnp.ones(6)}}


def test_rank_report_with_coupled_groups_reports_the_kernels_only():
  params = _attention_mlp_params(np.random.default_rng(11))
  reg = rj.head_and_neuron_lasso(0.1)      # biases in the groups: (2, 3) and (5,) slices
  assert jnp.ndim(params["fc1"]["bias"]) == 1 and rj.group_sparsity(params, reg) == 0.0
  report = rj.rank_report(params, reg)
  rows = {r.path: r for r in report.rows}
  # the maps: q/k/v (in, heads * head_dim), out (heads * head_dim, out), fc1, fc2
  want = {"['attn']['query']['kernel']": (6, 6), "['attn']['key']['kernel']": (6, 6),
          "['attn']['value']['kernel']": (6, 6), "['attn']['out']['kernel']": (6, 6),
          "['fc1']['kernel']": (6, 5), "['fc2']['kernel']": (5, 6)}
  assert set(rows) == set(want)
  total = 0
  for path, mshape in want.items():
    keys = [k.strip("'") for k in path[1:-1].split("][")]
    x = np.asarray(params[keys[0]][keys[1]][keys[2]] if len(keys) == 3
                   else params[keys[0]][keys[1]])
    rank = np.linalg.matrix_rank(x.reshape(mshape).astype(np.float64),
                                 tol=max(mshape) * np.finfo(np.float32).eps
                                 * np.linalg.norm(x.reshape(mshape), 2))
    assert rows[path].matrix_shape == mshape and rows[path].full_rank == min(mshape), path
    assert rows[path].rank == rank, path
    total += rank
  assert (report.rank, report.full_rank) == (total, 6 * 4 + 5 + 5)
  assert total == 3 * 4 + 5 + 3 + 5        # the ranks the kernels were drawn with
  # Zeroing one head's query slice leaves a rank-3 (in, heads * head_dim) map.
  q = np.asarray(params["attn"]["query"]["kernel"]).copy()
  q[:, 1, :] = 0
  params["attn"]["query"]["kernel"] = jnp.asarray(q)
  rows = {r.path: r for r in rj.rank_report(params, reg).rows}
  assert rows["['attn']['query']['kernel']"].rank == np.linalg.matrix_rank(
      q.reshape(6, 6)) == 3
  # A vector the rest regularizer acts on is still refused, by its path.
  with_rest = rj.head_and_neuron_lasso(0.1, rest=rj.l1(0.1, mask=lambda p: jax.tree.map(
      lambda x: jnp.ndim(x) == 1, p)))
  with pytest.raises(ValueError, match=re.escape("['attn']['out']['bias']")):
    rj.rank_report(params, with_rest)
