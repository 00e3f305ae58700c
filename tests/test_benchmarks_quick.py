"""The --quick mode of each benchmark runs and writes well-formed results.

Values are not checked (they are what the benchmarks measure); structure is.
"""

import json
import math

import pytest

from benchmarks import bench_cost, bench_identification, common, render


def _finite(x):
  return isinstance(x, (int, float)) and math.isfinite(x)


@pytest.mark.slow
def test_identification_quick(tmp_path, mnist):
  out = bench_identification.main(["--quick", "--out", str(tmp_path)])
  on_disk = json.loads((tmp_path / "identification.json").read_text())
  assert on_disk["quick"] is True and on_disk["optimum"]["groups"] == 784
  assert (tmp_path / "identification.png").stat().st_size > 1000
  assert _finite(on_disk["optimum"]["residual"])
  assert set(on_disk["methods"]) == {"RMDA", "ProxSGD", "ProxGen", "ProxSSI", "RAMDA"}
  assert set(on_disk["methods"]["RMDA"]["history"]) == {"W", "Z"}
  assert set(on_disk["methods"]["RAMDA"]["history"]) == {"W", "Z"}
  # RAMDA's Z is exactly structured, its W (c < 1 through the ramp) is not.
  ramda = on_disk["methods"]["RAMDA"]["history"]
  assert ramda["Z"][-1]["nonzero_groups"] < ramda["W"][-1]["nonzero_groups"]
  epochs = out["settings"]["epochs"]
  for res in on_disk["methods"].values():
    for hist in res["history"].values():
      assert [h["epoch"] for h in hist] == list(range(1, epochs + 1))
      assert hist[0]["changes"] is None
      for h in hist:
        assert 0 <= h["support_match"] <= 1
        assert _finite(h["objective_gap"]) and _finite(h["distance"])
        assert h["changes"] is None or h["changes"] >= 0
  # The long RMDA run: RMDA alone, same seed and milestones, more epochs.
  long = on_disk["rmda_long"]
  assert long["epochs"] > epochs and long["milestones_epochs"] == out["settings"]["milestones_epochs"]
  assert set(long["history"]) == {"W", "Z"} and set(long["summary"]) == {"W", "Z"}
  for kind, hist in long["history"].items():
    assert [h["epoch"] for h in hist] == list(range(1, long["epochs"] + 1))
    for h in hist:
      assert 0 <= h["support_match"] <= 1
      assert _finite(h["objective_gap"]) and _finite(h["distance"])
    # The summary says what the history says.
    exact = [h["epoch"] for h in hist if h["support_match"] == 1.0]
    summary = long["summary"][kind]
    assert summary["first_epoch_exact_support"] == (exact[0] if exact else None)
    assert summary["best_support_match"] == max(h["support_match"] for h in hist)
    kept = summary["exact_support_from_epoch_on"]
    if kept is None:
      assert hist[-1]["support_match"] < 1.0
    else:
      assert all(h["support_match"] == 1.0 for h in hist[kept - 1:])
      assert kept == 1 or hist[kept - 2]["support_match"] < 1.0
    # Same seed, same schedule, same process: its first epochs are the RMDA run's.
    assert hist[:epochs] == on_disk["methods"]["RMDA"]["history"][kind]
  assert long["vs_RMDA_run"]["epochs_with_same_support_match"] == epochs
  assert long["vs_RMDA_run"]["max_relative_objective_gap_difference"] == 0.0
  # The README section and headline show it, with F - F* and ||W - W*|| for every method.
  md, headline = render.identification(on_disk)
  assert f"RMDA, {long['epochs']} epochs, structured point Z" in md
  assert "F(W) - F(W*), last epoch" in md and "‖W - W*‖, last epoch" in md
  methods = [row[1] for row in headline]
  assert {"RMDA", "ProxSGD", "ProxGen", "ProxSSI", "RAMDA",
          "RAMDA, structured point Z"} <= set(methods)
  assert any(str(long["epochs"]) in m for m in methods)
  last = on_disk["methods"]["ProxGen"]["history"]["W"][-1]
  assert f"{last['objective_gap']:.2e}; {last['distance']:.3e}" in headline[methods.index("ProxGen")][2]


def test_exact_support_summary():
  def hist(matches):
    return [{"epoch": i + 1, "support_match": m, "changes": None if i == 0 else int(m != 1.0)}
            for i, m in enumerate(matches)]
  s = bench_identification.exact_support_summary(hist([0.9, 1.0, 0.95, 1.0, 1.0]))
  assert s["first_epoch_exact_support"] == 2 and s["exact_support_from_epoch_on"] == 4
  assert s["best_support_match"] == 1.0 and s["first_epoch_best_support_match"] == 2
  s = bench_identification.exact_support_summary(hist([0.5, 1.0, 0.75]))
  assert s["first_epoch_exact_support"] == 2 and s["exact_support_from_epoch_on"] is None
  s = bench_identification.exact_support_summary(hist([0.5, 0.75, 0.7]))
  assert s["first_epoch_exact_support"] is None and s["exact_support_from_epoch_on"] is None
  assert s["best_support_match"] == 0.75 and s["first_epoch_best_support_match"] == 2
  assert s["last_epoch_with_support_change"] == 3


@pytest.mark.slow
def test_cost_quick(tmp_path):
  bench_cost.main(["--quick", "--out", str(tmp_path)])
  d = json.loads((tmp_path / "cost.json").read_text())
  assert set(d["models"]) == {"lenet5"}
  for m in d["models"].values():
    res = m["results"]
    # LeNet5 (small): PyTorch's count of its parameters (test_examples_models).
    assert m["num_params"] == 61_706
    assert {"rmda (none)", "rmda (group_lasso)", "prox_sgd (group_lasso)"} <= set(res)
    sgd = res["optax.sgd(momentum=0.9)"]["median_ms"]
    # One pass over the float32 parameters at the measured bandwidth.
    pass_ms = 1e3 * 4 * 61_706 / (m["memory_bandwidth_GBps"] * 1e9)
    assert m["param_pass_ms"] == pytest.approx(pass_ms, rel=1e-9)
    for name, r in res.items():
      assert r["min_ms"] <= r["median_ms"] <= r["max_ms"], name
      assert r["ratio_to_sgd"] == pytest.approx(r["median_ms"] / sgd, rel=1e-12), name
      assert r["bound_ms"] == pytest.approx(r["min_passes"] * pass_ms, rel=1e-9), name
      assert r["fraction_of_bound"] == pytest.approx(r["bound_ms"] / r["median_ms"],
                                                     rel=1e-12), name


# ------------------------------------------------ bench_torch_denormal (PyTorch optional)
def test_torch_denormal_without_torch_exits_2(monkeypatch, capsys):
  from benchmarks import bench_torch_denormal
  monkeypatch.setattr(common, "optional_torch", lambda: None)
  with pytest.raises(SystemExit) as e:
    bench_torch_denormal.main(["--quick"])
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "PyTorch is not installed" in err


def test_torch_denormal_authors_rmda_is_rmda_jax_rmda():
  """The transcription of the authors' optimizer takes rmda_jax's steps (same lr, c,
  input-unit group LASSO; torch layouts (out, in[, kh, kw]) against Flax's)."""
  torch = pytest.importorskip("torch")
  import jax.numpy as jnp
  import numpy as np
  import optax
  import rmda_jax as rj
  from benchmarks import bench_torch_denormal
  RMDA, prox_glasso = bench_torch_denormal.authors_rmda(torch)
  rng = np.random.default_rng(0)
  w = {"conv": rng.normal(size=(4, 3, 2, 2)).astype(np.float32),
       "fc": rng.normal(size=(5, 6)).astype(np.float32),
       "bias": rng.normal(size=(5,)).astype(np.float32)}
  w["fc"][:, 2] *= 1e-3  # a group the prox zeroes
  grads = [{k: rng.normal(size=v.shape).astype(np.float32) for k, v in w.items()}
           for _ in range(4)]
  for g in grads:
    g["fc"][:, 2] *= 1e-3
  to_flax = {"conv": lambda a: a.transpose(2, 3, 1, 0), "fc": lambda a: a.T, "bias": lambda a: a}
  lr, c, lam = 0.3, 0.1, 0.05
  params = {k: torch.tensor(v) for k, v in w.items()}
  opt = RMDA(params.values(), lr=lr, momentum=c, lambda_=lam, prox_fn=prox_glasso)
  tx = rj.rmda(lr, c, rj.group_lasso(lam))
  p = {k: jnp.asarray(to_flax[k](v)) for k, v in w.items()}
  state = tx.init(p)
  for g in grads:
    for k, t in params.items():
      t.grad = torch.tensor(g[k])
    opt.step()
    updates, state = tx.update({k: jnp.asarray(to_flax[k](v)) for k, v in g.items()}, state, p)
    p = optax.apply_updates(p, updates)
  for k, t in params.items():
    np.testing.assert_allclose(to_flax[k](t.numpy()), np.asarray(p[k]), rtol=2e-5, atol=2e-6)
  z = rj.structured_params(state, rj.group_lasso(lam))
  assert float(jnp.abs(z["fc"][2]).max()) == 0.0  # the group is zero in Z, not in W
  assert float(jnp.abs(p["fc"][2]).max()) > 0.0


@pytest.mark.slow
def test_torch_denormal_quick(tmp_path, mnist):
  pytest.importorskip("torch")
  from benchmarks import bench_torch_denormal
  out = bench_torch_denormal.main(["--quick", "--out", str(tmp_path)])
  d = json.loads((tmp_path / "torch_denormal_quick.json").read_text())
  assert d == json.loads(json.dumps(out))
  assert d["quick"] is True and d["torch_threads"] == 1
  variants = bench_torch_denormal.VARIANTS
  assert set(d["per_epoch"]) == set(variants)
  assert d["settings"]["flush_denormal"] == {v: v.endswith("+flush") for v in variants}
  epochs = d["settings"]["epochs"]
  for v in variants:
    rows = d["per_epoch"][v]
    assert [r["epoch"] for r in rows] == list(range(1, epochs + 1))
    for r in rows:
      assert r["epoch_s"] > 0 and _finite(r["train_loss"])
      assert r["groups"] == 1 + 6 + 400 + 120 + 84  # input units of the five kernels
      assert 0 <= r["groups_zero"] <= r["groups_zero_or_denormal"] <= r["groups"]
  for k in ("rmda", "rmda+flush", "sgd+flush"):
    assert len(d["ratio_to_sgd"][k]) == epochs and all(_finite(r) for r in d["ratio_to_sgd"][k])
  assert len(d["rmda_over_rmda_flush"]) == epochs and len(d["load_average_after_epoch"]) == epochs
  assert 0 <= d["test_accuracy"]["rmda"] <= 1
  assert d["xla_cpu"]["backend"] == "cpu" and isinstance(d["xla_cpu"]["flushes"], bool)


def _ramda_cost(gl_ms, madgrad_ms=100.0, bound_ms=50.0):
  """A hand-made cost_ramda.json: RAMDA + group LASSO at ``gl_ms`` per step."""
  r = lambda ms, **kw: {"median_ms": ms, "ratio_to_sgd": ms / 10.0, **kw}  # noqa: E731
  return {"repeats": 3, "machine": {}, "settings": {
      "l1_strength": 1e-5, "gl_strength": 5e-5, "ramda_gl_passes": "14 + 4 per inner iteration",
      "ramda": {"learning_rate": 1e-2, "momentum": 1e-2, "epsilon": 1e-6}},
          "models": {"resnet50": {"num_params": 2e6, "num_leaves": 3,
                                  "memory_bandwidth_GBps": 10.0, "warm_steps": 5,
                                  "results": {
      "optax.sgd(momentum=0.9)": r(10.0),
      "optax.contrib.madgrad": r(madgrad_ms),
      "ramda (group_lasso)": r(gl_ms, ratio_to_madgrad=gl_ms / madgrad_ms,
                               inner_iterations_mean=3.0, min_passes=26.0,
                               bound_ms=bound_ms, fraction_of_bound=bound_ms / gl_ms)}}}}


def test_ramda_headline_rows():
  rows = render.ramda_headline(_ramda_cost(150.0))
  assert rows == [["step time x optax.contrib.madgrad, resnet50-shaped pytree (section 4f; "
                   "inner iterations)", "ramda (group_lasso)", "1.50 (3.0)"]]
  assert render.ramda_headline(None) == []
  d = _ramda_cost(150.0)
  d["models"]["resnet50"]["results"]["prox_adam (group_lasso)"] = {"median_ms": 147.0,
                                                                   "ratio_to_sgd": 14.7}
  assert render.ramda_headline(d)[-1] == [
      "step time x optax.sgd(momentum=0.9), resnet50-shaped pytree (section 4f)",
      "prox_adam (group_lasso, inner_stop='objective')", "14.70"]


def test_headline_names_prox_adams_inner_solver():
  table = render.headline_table(None, {("resnet50", "prox_adam (group_lasso)"): 134.2}, None)
  assert "| prox_adam (group_lasso, inner_stop='change', the default) | 134.20 |" in table


@pytest.mark.parametrize("gl_ms, words", [
    (60.0, "Both goals are met"),  # 0.6x madgrad, 1.2x its bound
    (150.0, "Only the MADGRAD goal is met"),  # 1.5x madgrad, 3x its bound
    (360.0, "Neither goal is met"),  # 3.6x madgrad, 7.2x its bound
])
def test_render_cost_ramda_goals(gl_ms, words):
  md = render.cost_ramda(_ramda_cost(gl_ms))
  assert f"goals for RAMDA with group LASSO and the authors' inner solver (the warm step " \
         f"at most 2x MADGRAD's and " \
         f"within 1.5x of its own bound): {words}." in md
  assert f"Its step is {gl_ms / 100:.2f}x MADGRAD's" in md
  assert f"and {gl_ms / 50:.2f}x its bound of 50 ms" in md
  assert "| ramda (group_lasso) | " + f"{gl_ms:.1f} | {gl_ms / 10:.2f} | {gl_ms / 100:.2f} | 3.0 |" in md
  assert "Not run yet" in render.cost_ramda(None)
  # the same row under inner_solver="newton" gets its own verdict
  d = _ramda_cost(360.0)
  res = d["models"]["resnet50"]["results"]
  res["ramda (group_lasso, newton)"] = dict(res["ramda (group_lasso)"], median_ms=gl_ms,
                                           ratio_to_madgrad=gl_ms / 100,
                                           fraction_of_bound=50 / gl_ms)
  md = render.cost_ramda(d)
  assert "and the authors' inner solver (the warm step at most 2x MADGRAD's and within " \
         "1.5x of its own bound): Neither goal is met." in md
  assert "and `inner_solver=\"newton\"` (the warm step at most 2x MADGRAD's and within " \
         f"1.5x of its own bound): {words}." in md
