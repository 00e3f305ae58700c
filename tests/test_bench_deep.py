"""The deep-network benchmarks of issue 10 (benchmarks.deep and its three users).

The training loop is checked against a step written here from its parts (the
same batch order, crop and update), the dropout model against the model it
extends, the per-epoch records against supports counted here, the merges on
synthetic run files, and each ``--quick`` mode end to end (form, not values).
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import rmda_jax as rj
from benchmarks import (bench_equal_tuning, bench_identification_deep, common, deep,
                        render_deep, sharded)
from rmda_jax.examples import data as data_lib
from rmda_jax.examples import models as models_lib

ROOT = Path(__file__).resolve().parents[1]


def _split(n=256, m=64, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.integers(0, 256, (n + m, 28, 28, 1), dtype=np.uint8)
  y = rng.integers(0, 10, n + m).astype(np.int32)
  return deep.Split("synthetic", jnp.asarray(x[:n]), jnp.asarray(y[:n]),
                    jnp.asarray(x[n:]), jnp.asarray(y[n:]), "test",
                    (1 / 255.0, (0.13,), (0.31,)))


def test_dropout_model_without_a_key_is_lenet5_small():
  x = jax.random.normal(jax.random.key(0), (4, 28, 28, 1))
  plain = models_lib.LeNet5Small(10, rngs=nnx.Rngs(3))
  drop = deep.DropoutLeNet5Small(10, rngs=nnx.Rngs(3), rate=0.5)
  chex.assert_trees_all_close(nnx.to_pure_dict(nnx.state(plain, nnx.Param)),
                              nnx.to_pure_dict(nnx.state(drop, nnx.Param)))
  chex.assert_trees_all_close(drop(x), plain(x), atol=1e-6)
  y1, y2 = drop(x, jax.random.key(1)), drop(x, jax.random.key(2))
  assert not np.allclose(y1, plain(x)) and not np.allclose(y1, y2)


def test_dropout_zeroes_a_rate_of_the_dense_inputs_and_rescales_the_rest():
  m = deep.DropoutLeNet5Small(10, rngs=nnx.Rngs(0), rate=0.25)
  seen = {}

  class Spy(nnx.Module):
    def __init__(self, inner):
      self.inner = inner

    def __call__(self, h):
      seen["h"] = h
      return self.inner(h)

  m.fc1 = Spy(m.fc1)
  x = jax.random.normal(jax.random.key(0), (64, 28, 28, 1))
  m(x)
  clean = seen["h"]
  m(x, jax.random.key(5))
  dropped = seen["h"]
  kept = dropped != 0
  live = clean != 0
  frac = 1 - float(jnp.sum(kept & live)) / float(jnp.sum(live))
  assert abs(frac - 0.25) < 0.03
  np.testing.assert_allclose(dropped[kept], clean[kept] / 0.75, rtol=1e-5)


def test_one_epoch_is_the_steps_written_out():
  split = _split()
  tx = optax.sgd(0.05, momentum=0.9)
  train = deep.make_trainer("lenet5_small", tx, split, batch_size=64, crop=2)
  got = {}
  params, _ = train(7, 1, lambda r: got.setdefault("r", r))
  # Reference: the same model, order, crops and updates, step by step, unjitted.
  graphdef, p = deep.build_model("lenet5_small", 7)
  p = jax.tree.map(jnp.asarray, p)
  s = tx.init(p)
  perm = np.random.default_rng([7, 0]).permutation(256)[:256].reshape(4, 64)
  key = jax.random.fold_in(jax.random.key(7), 0)
  for i in range(4):
    x = split.x_train[perm[i]]
    kc, _ = jax.random.split(jax.random.fold_in(key, i))
    x = data_lib.normalize(data_lib.random_crop(kc, x, 2), split.stats)

    def loss(q):
      logits = nnx.merge(graphdef, q, {})(x)
      return optax.softmax_cross_entropy_with_integer_labels(
          logits, split.y_train[perm[i]]).mean()

    u, s = tx.update(jax.grad(loss)(p), s, p)
    p = optax.apply_updates(p, u)
  chex.assert_trees_all_close(params, p, atol=2e-5, rtol=2e-5)
  logits = nnx.merge(graphdef, p, {})(data_lib.normalize(split.x_eval, split.stats))
  assert got["r"].eval_accuracy == pytest.approx(
      float(jnp.mean(jnp.argmax(logits, -1) == split.y_eval)), abs=1e-9)


def test_every_method_sees_the_same_batches():
  # Two optimizers that only differ in a no-op see identical runs.
  split = _split()
  a = deep.make_trainer("lenet5_small", optax.sgd(0.05), split, batch_size=64, crop=2,
                        dropout=0.25)
  b = deep.make_trainer("lenet5_small", optax.chain(optax.identity(), optax.sgd(0.05)), split,
                        batch_size=64, crop=2, dropout=0.25)
  pa, _ = a(3, 2, lambda r: None)
  pb, _ = b(3, 2, lambda r: None)
  chex.assert_trees_all_equal(pa, pb)


def test_observed_run_counts_the_groups_that_change_status(tmp_path):
  reg = rj.group_lasso(1e-3)
  w = np.ones((3, 4), np.float32)
  points = []
  for zero_rows in ([], [0], [0, 2], [1], [1]):
    p = w.copy()
    p[zero_rows] = 0
    points.append({"k": jnp.asarray(p), "b": jnp.ones(4)})

  def fake_train(seed, epochs, on_epoch, start=None):
    for e in range(epochs):
      on_epoch(deep.EpochRecord(e + 1, points[e], 0.5, 1.0, 0.0))
  fake_train.eval_name = "test"

  rec = deep.observed_run(fake_train, 0, 5, reg, tmp_path / "r.json", {"method": "x"})
  assert rec["support_changes"] == [None, 1, 1, 3, 0]
  assert rec["nonzero_groups"] == [3, 2, 1, 2, 2]
  assert rec["groups"] == 3 and rec["complete"]
  assert json.loads((tmp_path / "r.json").read_text()) == rec
  assert deep.load_part(tmp_path / "r.json") == rec
  assert deep.load_part(tmp_path / "missing.json") is None


def _ident_run(method, seed, changes):
  n = len(changes) + 1
  return {"config": "crop", "method": method, "seed": seed, "epochs": n, "complete": True,
          "support_changes": [None] + changes, "test_accuracy": [0.9] * n,
          "weighted_group_sparsity": [0.5] * n, "group_sparsity": [0.4] * n,
          "train_loss": [0.1] * n, "nonzero_groups": [1] * n, "wall_s": [1.0] * n}


def test_identification_claim_reads_the_last_epochs(tmp_path):
  parts = tmp_path / "parts" / "crop"
  parts.mkdir(parents=True)
  runs = {("rmda", 0): [5, 3] + [0] * 10, ("rmda", 1): [5, 1] + [0] * 10,
          ("prox_sgd", 0): [9] * 12, ("prox_sgd", 1): [9] * 11 + [0],
          ("prox_adam", 0): [4] + [0] * 11,
          # RAMDA and RDA claim identification: judged on their own, not as baselines.
          ("ramda", 0): [2, 1] + [0] * 10, ("rda", 0): [3] * 12}
  for (m, s), ch in runs.items():
    (parts / f"{m}_seed{s}.json").write_text(json.dumps(_ident_run(m, s, ch)))
  machine = {"cpu": "x", "jax": "y"}
  out = bench_identification_deep.merge(tmp_path / "parts", tmp_path / "r.json",
                                        {"lam": 1e-3, "milestones_epochs": [3]}, machine)
  claim = out["claim"]["crop"]
  assert claim["rmda_frozen_every_seed"] is True
  assert claim["baselines_still_changing_every_seed"] == {"prox_sgd": True,
                                                          "prox_adam": False}
  assert "ramda" in bench_identification_deep.METHODS
  assert claim["ramda_frozen_every_seed"] is True and claim["rda_frozen_every_seed"] is False
  rows = {t["method"]: t for t in out["table"]}
  assert rows["rmda"]["last_epoch_with_change"] == [3, 3]
  assert rows["prox_sgd"]["changes_last_epochs"] == [90, 81]
  assert (tmp_path / "r.png").exists()
  out["settings"] = {"data": "d", "epochs": 13, "batch_size": 8, "lam": 1e-3, "gamma": 0.1,
                     "milestones_epochs": [3], "augmentation": "crop",
                     "configs": {"crop": {}, "crop_dropout": {"dropout": 0.25}},
                     "dropout": "here", "methods": {"rmda": "r", "prox_sgd": "p"},
                     "support_changes": "s"}
  md, headline = render_deep.identification_deep(out)
  assert "| crop | RMDA | 0, 1 | 0, 0 | 3, 3 |" in md
  assert "| crop | ProxSGD | 0, 1 | 90, 81 |" in md
  assert "RMDA froze (0 changes over the last epochs) in every seed" in md
  assert "still changing in every seed: ProxSGD" in md and "frozen in some seed: ProxGen" in md
  assert headline[0][1:] == ["rmda", "0, 0; 90.00%; 50.0%"]
  # A longer RMDA run (here: the same runs read as a 20-epoch budget) gets its sentence.
  longer = {"settings": dict(out["settings"], epochs=11, milestones_epochs=[3]),
            "table": [t for t in out["table"] if t["method"] == "rmda"],
            "runs": [r for r in out["runs"] if r["method"] == "rmda"]}
  md, _ = render_deep.identification_deep(out, longer)
  assert ("seed 0, 1, 11 epochs (milestones [3], so the last stage runs 8 epochs instead of "
          "10): 0 changes over its last 10 epochs, last change at epoch 3") in md
  assert "Changes per epoch after epoch 13: []" in md
  assert ["", "prox_sgd", "90, 81; 90.00%; 50.0%"] in headline


@pytest.mark.parametrize("section", ["identification_deep", "equal_tuning", "rigl_converged",
                                     "torch_denormal"])
def test_sections_not_run_yet_say_so(section):
  out = getattr(render_deep, section)(None)
  md = out[0] if isinstance(out, tuple) else out
  assert "Not run yet" in md and f"benchmarks.bench_{section}" in md


def test_equal_tuning_chooses_the_best_validation_accuracy(tmp_path):
  grid = {"rmda": [{"rmda_lr": 0.1}, {"rmda_lr": 0.3}], "prox_sgd": [{"prox_sgd_lr": 0.1}]}
  accs = {"rmda": [0.7, 0.9], "prox_sgd": [0.8]}
  (tmp_path / "tune").mkdir()
  for m, configs in grid.items():
    for c, a in zip(configs, accs[m]):
      (tmp_path / "tune" / f"{m}_{bench_equal_tuning._tag(c)}.json").write_text(
          json.dumps({"complete": True, "validation_accuracy": [0.1, a],
                      "weighted_group_sparsity": [0.0, 0.2]}))
  assert bench_equal_tuning.chosen(tmp_path, grid) == {"rmda": {"rmda_lr": 0.3},
                                                       "prox_sgd": {"prox_sgd_lr": 0.1}}
  grid["prox_sgd"].append({"prox_sgd_lr": 1.0})  # not run yet: no choice
  assert bench_equal_tuning.chosen(tmp_path, grid)["prox_sgd"] is None


def test_rigl_matched_reads_each_seeds_pair():
  pair = lambda t, seed, a, b: {"target": t, "seed": seed, "rmda_l1_kernel_sparsity": 0.9,  # noqa: E731
                                "rigl_kernel_sparsity": 0.9, "rmda_l1_test_accuracy": a,
                                "rigl_test_accuracy": b}
  d = {"matched": [pair(0.9, 0, 0.99, 0.98), pair(0.9, 1, 0.97, 0.98), pair(0.9, 2, 0.99, 0.985)],
       "dense": {"lr": 0.03, "runs": [{"seed": 0, "test_accuracy": 0.993}]}}
  md = render_deep.rigl_matched(d)
  assert "| 0.9 | 1 | 90.00 | 90.00 | 97.00 | 98.00 | -1.00 |" in md
  assert ("At target 90%: RMDA + L1 ahead in 2 of 3 seeds, mean gap +0.17 points (range -1.00 "
          "to +1.00).") in md
  assert "The dense model (lr 0.03) reaches 99.30% test accuracy (seeds 0: 99.30)." in md
  assert "Not run yet." in render_deep.rigl_matched({"matched": [], "dense": {}})
  assert "Devices:" not in md
  rows = render_deep.rigl_headline(dict(d, table=[], settings={}))
  assert rows[0][1:] == ["rmda_l1 - rigl", "+1.00, -1.00, +0.50 (target 90%)"]
  for r in d["matched"]:
    r.update(rmda_l1_device="GPU", device="CPU")
  d["dense"]["runs"][0]["device"] = "CPU"
  assert ("Devices: RMDA + L1 on GPU; matched RigL on CPU; dense on CPU (the same programs; "
          "float32 results can differ slightly between devices).") in render_deep.rigl_matched(d)


def test_rigl_converged_needs_equal_tuning_budgets():
  proc = subprocess.run([sys.executable, "-m", "benchmarks.bench_rigl_converged",
                         "--lrs-rmda", "0.1", "0.3", "--lrs-rigl", "0.1"], cwd=ROOT,
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2
  assert "same length" in proc.stderr and "Traceback" not in proc.stderr


# ------------------------------------------- groups on the threshold (issue 19, part 3)
def test_threshold_ratios_are_one_on_the_nonzero_groups_of_an_exact_optimum():
  # F(W) = 1/2 ||W - A||^2 + lam sum_g w_g ||W_g||: the optimum is the group
  # shrinkage of A, written here by hand (rows of the (in, out) kernel are the
  # groups, w_g = sqrt(3)); grad F = W* - A.
  lam, w_g = 0.5, np.sqrt(3.0)
  a = np.array([[3.0, 0.0, 4.0], [0.1, 0.2, -0.2], [0.0, 1.0, 0.0], [-2.0, 2.0, 1.0]])
  norms = np.linalg.norm(a, axis=1, keepdims=True)
  w_star = a * np.maximum(0, 1 - lam * w_g / norms)
  point = {"k": jnp.asarray(w_star, jnp.float32), "b": jnp.zeros(3)}
  grad = {"k": jnp.asarray(w_star - a, jnp.float32), "b": jnp.ones(3)}
  reg = rj.group_lasso(lam)
  ratios = deep.threshold_ratios(point, grad, reg)
  assert ratios.shape == (4,)  # the bias is not regularized
  nonzero = norms.ravel() > lam * w_g
  assert nonzero.tolist() == [True, False, True, True]
  np.testing.assert_allclose(ratios[nonzero], 1.0, rtol=1e-5)
  np.testing.assert_allclose(ratios[~nonzero], norms.ravel()[~nonzero] / (lam * w_g), rtol=1e-5)
  assert ratios[~nonzero].max() < 1
  support = deep.group_record(point, reg)["support"]
  assert support.tolist() == nonzero.tolist()  # the same group order as the support


def test_threshold_ratios_refuse_a_regularizer_without_per_leaf_groups():
  with pytest.raises(TypeError, match="per-leaf group regularizer"):
    deep.threshold_ratios({"w": jnp.ones((2, 2))}, {"w": jnp.ones((2, 2))},
                          rj.nuclear_norm(1.0))


@pytest.mark.parametrize("which", ["rmda", "ramda"])
def test_dual_ratios_threshold_exactly_the_zero_groups_of_z(which):
  # The ratio read from the state is what the last prox thresholded: the
  # groups at or under 1 are exactly the zero groups of rj.structured_params.
  rng = np.random.default_rng(0)
  params = {"conv": jnp.asarray(rng.normal(size=(3, 3, 8, 6)), jnp.float32),
            "dense": jnp.asarray(rng.normal(size=(12, 5)), jnp.float32),
            "bias": jnp.zeros(5, jnp.float32)}
  reg = rj.group_lasso(0.7 if which == "rmda" else 2.0)
  tx = (rj.rmda(0.5, 0.5, reg) if which == "rmda"
        else rj.ramda(0.05, 0.5, reg))
  state = tx.init(params)
  for _ in range(4):
    g = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), params)
    updates, state = tx.update(g, state, params)
    params = optax.apply_updates(params, updates)
  ratios = deep.dual_ratios(optax.chain(optax.identity()).init(params) + (state,), reg)
  support = deep.group_record(rj.structured_params(state), reg)["support"]
  assert ratios.shape == support.shape
  assert 0 < support.mean() < 1
  np.testing.assert_array_equal(ratios > 1, support)
  assert deep.dual_ratios(optax.sgd(0.1).init(params), reg) is None


def test_support_bits_round_trip():
  rng = np.random.default_rng(0)
  for n in (1, 7, 8, 611):
    s = rng.random(n) < 0.5
    assert deep.unpack_support(deep.pack_support(s), n).tolist() == s.tolist()


def test_near_threshold_reads_the_late_flips():
  # 4 groups over 5 epochs; group 1 flips in the last 2 epochs, group 3 early only.
  sup = [[1, 1, 0, 1], [1, 1, 0, 0], [1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 0, 0]]
  rec = {"groups": 4, "support_bits": [deep.pack_support(np.array(x, bool)) for x in sup],
         "final_ratios": [1.0, 0.97, 0.5, 0.95]}
  out = deep.near_threshold(rec, last=2, near=0.1)
  assert out["flipped_groups"] == [1] and out["flipped_ratios"] == [0.97]
  assert out["flipped_within_near_of_1"] == 1
  # The zero groups that did not flip late: 2 (ratio .5) and 3 (.95, near 1).
  assert (out["stable_zero_groups"], out["stable_zero_within_near_of_1"]) == (2, 1)
  assert out["max_ratio_of_a_zero_group"] == 0.95
  assert deep.near_threshold({"groups": 4}) is None


def test_full_gradient_is_the_mean_gradient_over_every_training_image():
  split = deep.Split(x_train=jnp.asarray(np.random.default_rng(0).integers(
      0, 256, (5, 28, 28, 1)), jnp.uint8), y_train=jnp.arange(5) % 10,
      x_eval=None, y_eval=None, stats=(1 / 255, 0.1307, 0.3081), eval_name="test", note="")
  train = deep.make_trainer("lenet5_small", optax.sgd(0.1), split, batch_size=2)
  _, params = deep.build_model("lenet5_small", 0)
  graphdef, _ = deep.build_model("lenet5_small", 0)

  def mean_loss(p):
    logits = nnx.merge(graphdef, p, {})(data_lib.normalize(split.x_train, split.stats))
    return optax.softmax_cross_entropy_with_integer_labels(logits, split.y_train).mean()

  chex.assert_trees_all_close(train.full_gradient(params), jax.grad(mean_loss)(params),
                              rtol=1e-4, atol=1e-7)
  with pytest.raises(ValueError, match="crop"):
    train.full_gradient(params, crops=2)
  # With crops: the mean over draws of the gradient on the cropped images (one
  # chunk here: the draw's key folded with the chunk's first row, 0).
  cropping = deep.make_trainer("lenet5_small", optax.sgd(0.1), split, batch_size=2, crop=2)

  def cropped_loss(p, k):
    x = data_lib.random_crop(jax.random.fold_in(jax.random.fold_in(jax.random.key(3), k), 0),
                             split.x_train, 2)
    logits = nnx.merge(graphdef, p, {})(data_lib.normalize(x, split.stats))
    return optax.softmax_cross_entropy_with_integer_labels(logits, split.y_train).mean()

  want = jax.tree.map(lambda a, b: (a + b) / 2, jax.grad(cropped_loss)(params, 0),
                      jax.grad(cropped_loss)(params, 1))
  got = cropping.full_gradient(params, crops=2, seed=3)
  chex.assert_trees_all_close(got, want, rtol=1e-4, atol=1e-7)
  assert not all(bool(jnp.allclose(a, b)) for a, b in zip(
      jax.tree.leaves(got), jax.tree.leaves(train.full_gradient(params))))


def test_late_flips_are_rendered_per_seed_and_left_out_when_not_recorded():
  flips = {"flipped": 3, "flipped_within_near_of_1": 2, "stable_zero_groups": 40,
           "stable_zero_within_near_of_1": 1, "max_ratio_of_a_zero_group": 0.9876}
  table = [{"config": "crop", "method": "rmda", "seeds": [0, 1], "late_flips": [flips, None]}]
  md = "\n".join(render_deep.late_flips(table))
  assert "| crop | RMDA | 0 | 3 | 2 | 1 of 40 | 0.988 |" in md
  assert "| crop | RMDA | 1 |" not in md
  assert render_deep.late_flips([dict(table[0], late_flips=[None, None])]) == []
  assert render_deep.late_flips([{"config": "crop", "method": "rmda", "seeds": [0]}]) == []


# ------------------------------------------------ the averaging ablation (part 4)
def _steps(tx, params, grads):
  state = tx.init(params)
  for g in grads:
    updates, state = tx.update(g, state, params)
    params = optax.apply_updates(params, updates)
  return params, state


def _find_rmda_state(state):
  return next(s for s in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, rj.RMDAState))
              if isinstance(s, rj.RMDAState))


def test_prox_sgd_rho_sets_the_averaging_weight():
  # Authors' EMA form with lr 0.1 and rho r, run as heavy-ball: the first step
  # moves by r * 0.1 * g (a negligible lambda: no shrinkage).
  rates = common.Rates(milestones=(100,))
  params = {"w": jnp.array([[1.0, -2.0], [0.5, 3.0]])}
  g = {"w": jnp.array([[0.3, 0.1], [-0.2, 0.4]])}
  for name, rho in (("prox_sgd_rho0.01", 0.01), ("prox_sgd_rho0.001", 0.001),
                    ("prox_sgd", rates.prox_sgd_rho)):
    tx, point = common.build_method(name, rj.group_lasso(1e-12), rates)
    w, _ = _steps(tx, params, [g])
    assert point is None
    np.testing.assert_allclose(w["w"], params["w"] - rho * 0.1 * g["w"], rtol=1e-6)
  for bad in ("prox_sgd_rhox", "prox_sgd_rho0", "prox_sgd_rho2"):
    with pytest.raises(ValueError, match=bad):
      common.build_method(bad, rj.group_lasso(1e-3), rates)


def test_rda_never_restarts_and_its_iterate_is_z():
  rates = common.Rates(milestones=(2, 4))
  reg = rj.group_lasso(0.05)
  params = {"w": jnp.array([[1.0, -2.0], [0.05, 0.02]])}
  grads = [{"w": jnp.full((2, 2), 0.1 * (i + 1))} for i in range(6)]
  tx, point = common.build_method("rda", reg, rates)
  w, state = _steps(tx, params, grads)
  assert int(_find_rmda_state(state).stage_count) == 6  # no restart at the milestones
  chex.assert_trees_all_close(w, point(w, state))  # c = 1: the iterate is Z


def test_rmda_ramp_keeps_c0_after_the_first_milestone_where_divide_reaches_1():
  rates = common.Rates(milestones=(2, 4))
  reg = rj.group_lasso(0.05)
  params = {"w": jnp.array([[1.0, -2.0], [0.05, 0.02]])}
  grads = [{"w": jnp.full((2, 2), 0.1 * (i + 1))} for i in range(3)]  # one step past 2
  for name, c_is_one in (("rmda", True), ("rmda_ramp", False)):
    tx, point = common.build_method(name, reg, rates)
    w, state = _steps(tx, params, grads)
    z = point(w, state)
    same = all(bool(jnp.allclose(a, b)) for a, b in zip(jax.tree.leaves(w), jax.tree.leaves(z)))
    assert same is c_is_one, name


def test_adam_like_methods_are_the_library_optimizers_with_the_stepped_lr():
  # ProxGen and ProxSSI (which test_identification_deep_quick does not train): the
  # library's optimizers at adam_lr, x gamma at each milestone, no reported point.
  rates = common.Rates(milestones=(2,))
  reg = rj.group_lasso(0.05)
  params = {"w": jnp.array([[1.0, -2.0], [0.05, 0.02]]), "b": jnp.array([0.1, -0.1])}
  grads = [{"w": jnp.array([[0.3, 0.1], [-0.2, 0.4]]) * (i + 1), "b": jnp.ones(2)}
           for i in range(4)]
  for name, make in (("prox_adam", rj.prox_adam), ("prox_ssi", rj.prox_ssi)):
    tx, point = common.build_method(name, reg, rates)
    assert point is None
    w, _ = _steps(tx, params, grads)
    ref = params
    for i, g in enumerate(grads):  # the stepped lr, written out: a fresh optimizer per
      lr = rates.adam_lr * (rates.gamma if i >= 2 else 1.0)  # value, the same state
      if i == 0:
        state = make(lr, regularizer=reg).init(params)
      u, state = make(lr, regularizer=reg).update(g, state, ref)
      ref = optax.apply_updates(ref, u)
    chex.assert_trees_all_close(w, ref, rtol=1e-6, atol=1e-7)


def test_reuse_copies_a_finished_run_only_under_the_same_settings(tmp_path):
  from benchmarks.bench_identification_deep import SAME, reuse
  settings = {k: f"value of {k}" for k in SAME}
  settings.update(lam=1e-3, configs={"crop": {"crop_padding": 2, "dropout": 0.0}},
                  methods={"rmda": "rmda as built"})
  src = tmp_path / "first" / "crop" / "rmda_seed1.json"
  src.parent.mkdir(parents=True)
  src.write_text(json.dumps({"complete": True, "seed": 1, "support_changes": [None, 3]}))
  src.with_suffix(".final.npz").write_bytes(b"final point")
  (tmp_path / "first.json").write_text(json.dumps({"settings": settings}))
  part = tmp_path / "second" / "crop" / "rmda_seed1.json"
  for other in (dict(settings, lam=5e-4), dict(settings, epochs=60),
                dict(settings, methods={"rmda": "another rule"}),
                dict(settings, configs={"crop": {"crop_padding": 4, "dropout": 0.0}})):
    assert not reuse(tmp_path, "first", part, other, "crop", "rmda")
    assert not part.exists()
  assert not reuse(tmp_path, "missing", part, settings, "crop", "rmda")
  assert not reuse(tmp_path, "first", part.with_name("rmda_seed2.json"), settings, "crop", "rmda")
  assert reuse(tmp_path, "first", part, settings, "crop", "rmda")
  rec = json.loads(part.read_text())
  assert rec["support_changes"] == [None, 3] and rec["copied_from"].startswith(
      "first/crop/rmda_seed1.json")
  assert part.with_suffix(".final.npz").read_bytes() == b"final point"
  src.write_text(json.dumps({"complete": False}))  # an unfinished run is not taken
  part.unlink()
  assert not reuse(tmp_path, "first", part, settings, "crop", "rmda") and not part.exists()


def test_issue19_queue_script_runs_commands_their_parsers_accept(tmp_path, monkeypatch):
  # The script with a stand-in python that records its arguments; each command is then
  # parsed by its module's own parser (stopped right after parsing).
  import importlib
  log = tmp_path / "argv.log"
  fake = tmp_path / "python"
  fake.write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
  fake.chmod(0o755)
  subprocess.run(["bash", str(ROOT / "benchmarks" / "run_issue19.sh")], check=True, cwd=ROOT,
                 env={"PATH": "/usr/bin:/bin", "PYTHON": str(fake), "SEEDS": "0 1"})
  commands = [line.split() for line in log.read_text().splitlines()]
  assert len(commands) == 2 * 2 + 2 + 5 * 2 + 2  # budget x lam x seed, ablation, front, renders

  class Parsed(Exception):
    pass
  parse = argparse.ArgumentParser.parse_args
  def stop(self, args=None, namespace=None):
    raise Parsed(parse(self, args, namespace))
  monkeypatch.setattr(argparse.ArgumentParser, "parse_args", stop)
  for argv in commands:
    assert argv[0] == "-m" and argv[1].startswith("benchmarks.")
    with pytest.raises(Parsed) as e:
      importlib.import_module(argv[1]).main(argv[2:])
    if argv[1].endswith("bench_identification_deep"):
      assert e.value.args[0].epochs == 200 and e.value.args[0].milestones == [50, 100]


def test_identification_deep_accepts_the_ablation_and_labels_it():
  assert set(common.ABLATION) <= set(bench_identification_deep.ALL_METHODS)
  assert not set(common.ABLATION) & set(bench_identification_deep.METHODS)  # not by default
  for m in bench_identification_deep.ALL_METHODS:
    assert m in bench_identification_deep.LABELS and m in render_deep.LABELS
  assert {"rda", "rmda_ramp"} <= set(bench_identification_deep.IDENTIFYING)


def test_authors_budget_section_sums_the_last_stage_and_says_what_ran():
  from benchmarks import render_deep as rd
  assert "Not run yet" in rd.authors_budget([])
  ch = [None] + [5] * 99 + [3] * 20 + [2] * 20 + [1] * 20 + [0] * 20 + [1] + [0] * 19
  run = {"complete": True, "method": "rmda", "seed": 0, "support_changes": ch,
         "test_accuracy": [0.99] * 200, "weighted_group_sparsity": [0.7] * 200,
         "near_threshold": {"flipped": 1, "flipped_within_near_of_1": 1,
                            "max_ratio_of_a_zero_group": 0.999, "nonzero_ratio_median": 1.0}}
  d = {"settings": {"lam": 1e-3, "gamma": 0.1, "augmentation": "crop", "data": "mnist"},
       "runs": [run, dict(run, complete=False, seed=1)]}
  md = rd.authors_budget([d])
  # Epochs 101-120: 20 x 3; 121-140: 40; 141-160: 20; 161-180: 0; 181-200: 1.
  assert ("| RMDA | 0.001 | 0 | 60 40 20 0 1 | 0 | 181 | 99.00 | 70.0 | 1 | 1 | 0.999 | 1.000 "
          "| - | - | - |") in md  # no cropped-loss ratios in this record
  assert "finished: 1 run(s)" in md and "| RMDA | 0.001 | 1 |" not in md
  assert ("the changes per 20 epochs went 60 -> 40 -> 20 -> 0 -> 1 (fading: the last 20 epochs at most half "
          "the first); 1 of the 1 "
          "groups that changed status in the last 20 epochs end within 0.1 of the threshold "
          "ratio 1 (F0), and the nonzero groups' median ratio is 1.0") in md
  steady = dict(run, support_changes=[None] + [5] * 99 + [8] * 100)  # 160 per 20 epochs
  assert "(not fading" in rd.authors_budget([dict(d, runs=[steady])])
  crop = {"flipped": 1, "flipped_within_near_of_1": 0, "max_ratio_of_a_zero_group": 0.5,
          "nonzero_ratio_median": 1.02}
  md = rd.authors_budget([dict(d, runs=[dict(run, near_threshold_crop=crop)])])
  assert "| 1 | 1 | 0.999 | 1.000 | 0 | 0.500 | 1.020 |" in md and "(Fc)" in md
  assert "it is not recorded yet" in md
  dual = {"flipped": 2, "flipped_ratios": [0.98, 1.04], "flipped_within_near_of_1": 2,
          "stable_zero_groups": 7, "stable_zero_within_near_of_1": 1,
          "max_ratio_of_a_zero_group": 0.99, "nonzero_ratio_median": 3.1}
  md = rd.authors_budget([dict(d, runs=[dict(run, near_threshold_dual=dual)])])
  assert ("By the ratio its last prox thresholded (dual, from the optimizer state) 2 of the "
          "2 late flips lie within 0.1 of 1 (their ratios 0.980 to 1.040); of the 7 zero "
          "groups that did not change, 1 lie within 0.1 of 1, the largest zero ratio is 0.99 "
          "and the nonzero groups' median 3.1.") in md
  assert "not recorded yet" not in md
  with_ratios = dict(run, near_threshold_dual=dual, final_dual_ratios=[0.98, 1.04, 0.5, 1.2, 1.01])
  md = rd.authors_budget([dict(d, runs=[with_ratios])])
  assert ("(their ratios 0.980 to 1.040); every late flip lies within 0.040 of 1, a band that "
          "holds 3 of the 5 groups; of the 7 zero groups") in md


def test_authors_budget_pools_the_seeds_of_each_method():
  from benchmarks import render_deep as rd
  def run(seed, last, dual=None):
    ch = [None] + [5] * 99 + [6] * 20 + [4] * 60 + [last] * 20  # 120 ... 20 * last
    return {"complete": True, "method": "rmda", "seed": seed, "support_changes": ch,
            "test_accuracy": [0.99] * 200, "weighted_group_sparsity": [0.7] * 200,
            **({"near_threshold_dual": dual} if dual else {})}
  dual = lambda near, n: {"flipped": n, "flipped_ratios": [1.0] * n,
                          "flipped_within_near_of_1": near, "stable_zero_groups": 3,
                          "stable_zero_within_near_of_1": 0, "max_ratio_of_a_zero_group": 0.9,
                          "nonzero_ratio_median": 2.0}
  d = {"settings": {"lam": 1e-3, "gamma": 0.1, "augmentation": "crop", "data": "mnist"},
       "runs": [run(1, 4, dual(3, 4)), run(0, 0, dual(2, 2)), run(2, 3)]}
  md = rd.authors_budget([d])
  assert ("Across seeds: RMDA (lambda 0.001), seeds 0, 1, 2: the last stage's changes per 20 "
          "epochs fade in 2 of 3 seeds (epochs 101-120 against 181-200: 120 -> 0, 120 -> 80, "
          "120 -> 60); the last 10 epochs hold 0, 40, 30 changes (zero in 1 of 3 seeds); by the "
          "dual ratio, 5 of the 6 late flips of the 2 seeds that record it lie within 0.1 "
          "of 1.") in md
  one = dict(d, runs=d["runs"][:1])  # a single seed: no pooled sentence
  assert "Across seeds" not in rd.authors_budget([one])
  # The Fc columns' dashes are explained only while a run lacks them.
  assert "runs before this column existed show -" in md
  crop = dict(d, runs=[dict(r, near_threshold_crop=dual(1, 1)) for r in d["runs"]])
  assert "runs before this column existed" not in rd.authors_budget([crop])


def test_budget_headline_has_a_row_per_method_and_lambda_with_its_seeds():
  from benchmarks import render_deep as rd
  def run(method, seed, first, last, acc):
    ch = [None] + [9] * 99 + [first] * 20 + [1] * 60 + [last] * 20
    return {"complete": True, "method": method, "seed": seed, "support_changes": ch,
            "test_accuracy": [acc] * 200, "weighted_group_sparsity": [0.5] * 200}
  lam1 = {"settings": {"lam": 1e-3}, "runs": [
      run("prox_sgd", 0, 7, 6, 0.98), run("rmda", 1, 5, 0, 0.99), run("rmda", 0, 6, 2, 0.97),
      dict(run("rmda", 2, 1, 1, 0.5), complete=False)]}
  lam2 = {"settings": {"lam": 5e-4}, "runs": [run("rmda", 0, 3, 1, 0.96)]}
  rows = rd.budget_headline([lam2, lam1])
  assert [r[1] for r in rows] == ["RMDA, lambda 0.001, seeds 0, 1", "ProxSGD, lambda 0.001, seeds 0",
                                  "RMDA, lambda 0.0005, seeds 0"]
  assert "Huang & Lee 2022" in rows[0][0] and rows[1][0] == rows[2][0] == ""
  # Epochs 101-120 hold 20 x first, 181-200 20 x last, the last 10 epochs 10 x last.
  assert rows[0][2] == "120 -> 40, 100 -> 0; 20, 0; 98.00%; 50.0%"
  assert rows[1][2] == "140 -> 120; 60; 98.00%; 50.0%"
  assert rd.budget_headline([]) == []


def test_ablation_section_lists_the_variants_that_ran():
  from benchmarks import render_deep as rd
  assert "Not run yet" in rd.ablation([])
  ch = [None] + [5] * 99 + [4] * 100
  run = {"complete": True, "method": "rda", "seed": 0, "support_changes": ch,
         "test_accuracy": [0.98] * 200, "weighted_group_sparsity": [0.6] * 200}
  d = {"settings": {"lam": 1e-3, "data": "mnist", "methods": {"rda": "plain RDA"}},
       "runs": [run]}
  md = rd.ablation([d])
  assert "varied: RDA (c 1, no restarts): plain RDA. Planned:" in md
  assert "finished: 1 run(s)" in md
  assert "| 0.001 | 0 | 80 80 80 80 80 | 40 | 200 | 98.00 | 60.0 |" in md
  assert "(not fading" in md and "Taken from 1c" not in md
  copied = dict(run, method="rmda", copied_from="identification_200_lam1e-3/crop/rmda_seed0.json "
                "(the same command)")
  md = rd.ablation([dict(d, runs=[run, copied])])
  assert ("Taken from 1c, as the same command with the same settings ran them: RMDA seed 0 "
          "(identification_200_lam1e-3/crop/rmda_seed0.json).") in md


def _quick(module, tmp_path, *flags):
  proc = subprocess.run([sys.executable, "-m", f"benchmarks.{module}", "--quick", "--out",
                         str(tmp_path), *flags], cwd=ROOT, capture_output=True, text=True,
                        timeout=600)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.mark.slow
def test_identification_deep_quick(tmp_path, mnist):
  # One identifying method and one baseline, on the configuration with both crop and
  # dropout (the crop-only one runs the same code without the dropout keys;
  # test_equal_tuning_quick trains it with ProxGen; the methods themselves are
  # common.build_method's, tested on their own; RAMDA's claim is read in
  # test_identification_claim_reads_the_last_epochs, its dual ratios in
  # test_dual_ratios_threshold_exactly_the_zero_groups_of_z). Two of the five keep CI short.
  methods = ("rmda", "prox_sgd")
  _quick("bench_identification_deep", tmp_path, "--configs", "crop_dropout",
         "--methods", *methods)
  d = json.loads((tmp_path / "identification_deep_quick.json").read_text())
  assert d["complete"] and (tmp_path / "identification_deep_quick.png").exists()
  assert {(r["config"], r["method"]) for r in d["runs"]} == {
      ("crop_dropout", m) for m in methods}
  claim = d["claim"]["crop_dropout"]
  assert set(claim["baselines_still_changing_every_seed"]) == {"prox_sgd"}
  rmda = next(t for t in d["table"] if t["method"] == "rmda")
  assert claim["rmda_frozen_every_seed"] == all(c == 0 for c in rmda["changes_last_epochs"])
  for r in d["runs"]:
    assert len(r["support_changes"]) == r["epochs"] == 4 and r["support_changes"][0] is None
    nz = r["nonzero_groups"]
    assert all(0 <= n <= r["groups"] for n in nz)
    for c, a, b in zip(r["support_changes"][1:], nz, nz[1:]):
      # Groups that changed status: at least the change in the count, and of its parity.
      assert isinstance(c, int) and c >= abs(b - a) and (c - abs(b - a)) % 2 == 0
    # A fraction of the quick mode's test images.
    n = deep.QUICK_EVAL
    assert all(abs(n * a - round(n * a)) < 1e-6 for a in r["test_accuracy"])
    # Every epoch's support, and at the end each group's distance to the threshold.
    sups = [deep.unpack_support(b, r["groups"]) for b in r["support_bits"]]
    assert [int(x.sum()) for x in sups] == nz
    assert [int((a != b).sum()) for a, b in zip(sups, sups[1:])] == r["support_changes"][1:]
    assert len(r["final_ratios"]) == r["groups"] and min(r["final_ratios"]) >= 0
    assert r["near_threshold"]["flipped"] == int(np.any(
        np.stack(sups[-21:]) != sups[-1], axis=0).sum())
    # The crop configuration's runs also get the ratios of the cropped loss, and
    # the final point is saved beside the record.
    assert len(r["final_ratios_crop"]) == r["groups"] and r["crop_draws"] == deep.CROP_DRAWS
    assert r["near_threshold_crop"]["flipped"] == r["near_threshold"]["flipped"]
    part = tmp_path / "identification_deep_quick" / r["config"] / f"{r['method']}_seed0"
    with np.load(part.with_suffix(".final.npz")) as f:
      assert sum(f[k].size for k in f.files) > 0


# Two of the methods (an SGD-like and an Adam-like one, built by the same
# common.build_method as the others); test_identification_deep_quick trains RMDA,
# ProxSGD and RAMDA.
EQUAL_TUNING_METHODS = ("rmda", "prox_adam")


@pytest.mark.slow
def test_equal_tuning_quick(tmp_path, mnist):
  _quick("bench_equal_tuning", tmp_path, "--methods", *EQUAL_TUNING_METHODS)
  d = json.loads((tmp_path / "equal_tuning_quick.json").read_text())
  n = {m: sum(t["method"] == m for t in d["tuning"]) for m in EQUAL_TUNING_METHODS}
  assert set(n.values()) == {2} and all(t["complete"] for t in d["tuning"])
  for m, c in d["chosen"].items():
    best = max((t for t in d["tuning"] if t["method"] == m),
               key=lambda t: t["validation_accuracy"])
    assert c == best["config"]
  assert {r["method"] for r in d["sweep"]} == set(EQUAL_TUNING_METHODS)
  assert (tmp_path / "equal_tuning_quick.png").exists()
  md = render_deep.equal_tuning(d)
  assert md.count("**chosen**") == len(EQUAL_TUNING_METHODS)
  r = d["sweep"][0]
  assert f"{100 * r['test_accuracy']['mean']:.2f} ± " in md


@pytest.mark.slow
def test_rigl_converged_quick(tmp_path, mnist):
  _quick("bench_rigl_converged", tmp_path)  # --stage all: tune, final, then matched
  d = json.loads((tmp_path / "rigl_converged_quick.json").read_text())
  assert {r["method"] for r in d["table"]} == {"rmda_l1", "rigl"}
  rigl_row = next(r for r in d["table"] if r["method"] == "rigl")
  assert abs(rigl_row["kernel_sparsity"]["mean"] - 0.9) < 0.01
  assert d["tuning_runs"]["rigl"] == len(d["settings"]["lrs_rigl"])
  before = {k: v for k, v in d.items() if k not in ("matched", "dense")}
  md = render_deep.rigl_converged(before)
  assert f"{100 * rigl_row['test_accuracy']['mean']:.2f} ± 0.00" in md
  assert "Not run yet." in md  # the matched stage, before it has run
  # Part 5 of issue 19: RigL at the sparsity each RMDA + L1 run reached, and the dense model.
  assert len(d["matched"]) == len(d["settings"]["targets"]) * len(d["settings"]["seeds"])
  for m in d["matched"]:
    assert abs(m["rigl_kernel_sparsity"] - m["rmda_l1_kernel_sparsity"]) < 0.005
    final = next(r for r in d["runs"] if r["method"] == "rmda_l1" and r["target"] == m["target"]
                 and r["seed"] == m["seed"])
    assert m["rmda_l1_kernel_sparsity"] == final["kernel_sparsity"]
  assert [r["seed"] for r in d["dense"]["runs"]] == d["settings"]["seeds"]
  md = render_deep.rigl_converged(d)
  assert "Not run yet." not in md and "The dense model (lr" in md


def test_shard_arg_reads_k_of_n_and_refuses_the_rest():
  assert deep.shard_arg("1/3") == (1, 3)
  for bad in ("3/3", "-1/2", "a/b", "1", "1/0"):
    with pytest.raises(argparse.ArgumentTypeError):
      deep.shard_arg(bad)


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_every_run_belongs_to_exactly_one_shard(n):
  for i in range(17):
    assert sum(deep.owns(i, (k, n)) for k in range(n)) == 1
  assert all(deep.owns(i, None) for i in range(17))


def test_sharded_reads_jobs():
  assert sharded.parse_job("2:bench_x --a 1") == (2, "bench_x", ["--a", "1"])
  for bad in ("x:bench_x", "0:bench_x", "3:", "bench_x"):
    with pytest.raises(argparse.ArgumentTypeError):
      sharded.parse_job(bad)


def test_run_once_skips_a_run_another_live_process_trains(tmp_path, capsys):
  part = tmp_path / "crop" / "rmda_seed0.json"
  lock = part.with_name("rmda_seed0.json.lock")
  ran = []

  def run():
    assert lock.exists()  # held while it runs
    ran.append(1)
    part.write_text(json.dumps({"complete": True, "seed": 0}))

  lock.parent.mkdir(parents=True)
  lock.write_text(str(os.getpid()))  # a live process (this one) trains it
  assert deep.run_once(part, "r", run) is None and ran == []
  assert "r: being trained by another process, skipped" in capsys.readouterr().out
  lock.write_text("999999999")  # its process is gone: taken over, run, released
  assert deep.run_once(part, "r", run) is None and ran == [1] and not lock.exists()
  assert deep.run_once(part, "r", run) == {"complete": True, "seed": 0} and ran == [1]


@pytest.mark.slow
def test_sharded_shards_run_each_run_once(tmp_path, mnist):
  """Two shards of the quick tuning of RMDA: each runs one of its two configurations."""
  logs = tmp_path / "logs"
  proc = subprocess.run(
      [sys.executable, "-m", "benchmarks.sharded", "--logs", str(logs),
       f"2:bench_equal_tuning --quick --out {tmp_path} --stage tune --methods rmda"],
      cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  tags = [bench_equal_tuning._tag(c) for c in bench_equal_tuning.GRID["rmda"][:2]]
  parts = sorted(p.name for p in (tmp_path / "equal_tuning_quick" / "tune").glob("*.json"))
  assert parts == sorted(f"rmda_{t}.json" for t in tags)
  for k, tag in enumerate(tags):
    log = (logs / f"bench_equal_tuning_{k}of2.log").read_text()
    assert f"tune rmda {tag} " in log and f"tune rmda {tags[1 - k]} " not in log
  d = json.loads((tmp_path / "equal_tuning_quick.json").read_text())
  assert all(t["complete"] for t in d["tuning"]) and len(d["tuning"]) == 2


@pytest.mark.parametrize("stage", ["final", "matched"])
def test_rigl_converged_later_stages_need_the_tuning(tmp_path, stage):
  # Refused before the data are read (no tuning file at all).
  proc = subprocess.run([sys.executable, "-m", "benchmarks.bench_rigl_converged", "--quick",
                         "--out", str(tmp_path), "--stage", stage], cwd=ROOT,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2
  assert "tuning is unfinished" in proc.stderr and "Traceback" not in proc.stderr


def test_rigl_reading_separates_ties_from_gaps():
  def row(method, t, mean, std, sp):
    return {"method": method, "target": t, "test_accuracy": {"mean": mean, "std": std},
            "kernel_sparsity": {"mean": sp, "std": 0.0}}
  d = {"table": [row("rmda_l1", 0.9, 0.9925, 0.0003, 0.89), row("rigl", 0.9, 0.9924, 0.0005, 0.9),
                 row("rmda_l1", 0.95, 0.9920, 0.0004, 0.95), row("rigl", 0.95, 0.9907, 0.0002, 0.95)],
       "settings": {"lrs_rmda": [0.03, 0.1, 0.3], "lrs_rigl": [0.01, 0.03, 0.1]},
       "chosen": {"rmda_l1": {"lr": 0.3}, "rigl": {"lr": 0.03}}}
  text = render_deep.rigl_reading(d)
  assert "At 90% the test accuracy gap (RMDA + L1 minus RigL) is +0.01 points" in text
  assert "a tie" in text.split("At 95%")[0]
  assert "+0.13 points" in text and "RMDA + L1 ahead by more than" in text
  assert "-1.00 points from RigL's" in text
  assert "chosen lr 0.3 is at the edge" in text and "chosen lr 0.03" not in text


def _sweep_row(method, lam, acc, wgs):
  return {"method": method, "lam": lam, "seeds": [0], "test_accuracy": {"mean": acc, "std": 0.0},
          "weighted_group_sparsity": {"mean": wgs, "std": 0.0}}


def test_pareto_front_keeps_the_undominated_rows():
  rows = [_sweep_row("rmda", 1e-3, 0.98, 0.6), _sweep_row("prox_sgd", 1e-3, 0.985, 0.4),
          _sweep_row("prox_adam", 1e-3, 0.97, 0.5),   # beaten by rmda on both
          _sweep_row("prox_ssi", 1e-3, 0.985, 0.3)]   # beaten by prox_sgd on sparsity
  assert render_deep.pareto(rows) == {0, 1}
  d = {"sweep": rows, "settings": {"tune_lam": 1e-3, "lams": [1e-3], "epochs": 20}}
  text = render_deep.equal_reading(d)
  assert text.startswith("Points on the Pareto front: RMDA 1, ProxSGD 1, ProxGen 0, ProxSSI 0")
  assert "most accurate ProxSGD (98.50%), sparsest RMDA (60.0%)" in text
  head = render_deep.equal_headline(d)
  assert [h[1] for h in head] == ["rmda", "prox_sgd", "prox_adam", "prox_ssi"]
  assert head[0][2] == "98.00%; 60.0%; 1 of 1" and head[2][2].endswith("0 of 1")


def test_claims_count_frozen_rmda_runs_and_changing_baselines():
  def row(method, changes, acc, wgs):
    return {"config": "crop", "method": method, "changes_last_epochs": changes,
            "test_accuracy": {"mean": acc}, "weighted_group_sparsity": {"mean": wgs}}
  ident = {"claim_last_epochs": 10, "settings": {"epochs": 60},
           "table": [row("rmda", [0, 3], 0.987, 0.6), row("prox_sgd", [40, 90], 0.988, 0.5)]}
  text = render_deep.claims(ident, None, None)
  assert "in 1 of its 2 runs (changes per run: 0, 3)" in text
  assert "every one of the 2 baseline runs changed (40 to 90 groups)" in text
  assert "below the best, ProxSGD, by 0.10 points" in text


def _budget_run(method, seed, first, last, acc=0.98, dual=None, ratios=None):
  """A finished 200-epoch record: 101-120 hold 20 x ``first``, 181-200 20 x ``last``."""
  ch = [None] + [9] * 99 + [first] * 20 + [2] * 60 + [last] * 20
  return {"complete": True, "method": method, "seed": seed, "support_changes": ch,
          "test_accuracy": [acc] * 200, "weighted_group_sparsity": [0.5] * 200,
          **({"near_threshold_dual": dual} if dual else {}),
          **({"final_dual_ratios": ratios} if ratios else {})}


def test_opening_paragraph_says_what_each_budget_measured():
  from benchmarks import render_deep as rd
  dual = lambda fr, near: {"flipped": len(fr), "flipped_ratios": fr,
                           "flipped_within_near_of_1": near}
  # Seed 0: two flips at 0.99 and 1.01 (width 0.01); of its 100 groups 3 lie that close to 1.
  ratios = [0.99, 1.01, 1.0] + [2.0] * 97
  lam1 = {"settings": {"lam": 1e-3}, "runs": [
      _budget_run("rmda", 0, 5, 1, dual=dual([0.99, 1.01], 2), ratios=ratios),
      _budget_run("rmda", 1, 4, 3),  # 80 -> 60: not fading, no dual record
      _budget_run("prox_sgd", 0, 7, 6), _budget_run("prox_adam", 0, 8, 0)]}
  lam2 = {"settings": {"lam": 5e-4}, "runs": [_budget_run("prox_ssi", 2, 6, 6)]}
  ident = {"claim_last_epochs": 10, "settings": {"epochs": 60, "lam": 5e-4,
                                                 "milestones_epochs": [15, 30]},
           "table": [{"config": "crop", "method": "rmda", "changes_last_epochs": [3, 0]},
                     {"config": "crop", "method": "prox_sgd", "changes_last_epochs": [40, 9]}]}
  text = rd.opening(ident, [lam2, lam1], [])
  assert ("(LeNet5 on MNIST with random crop, 60 epochs, this project's lambda 0.0005 and "
          "milestones 15/30; benchmarks section 1b): over the last 10 epochs RMDA's support "
          "changed in 0 to 3 groups (0 in 1 of 2 runs), the proximal baselines' in 9 to 40 "
          "groups (2 runs).") in text
  # The authors' lambda first; every count read from the runs.
  assert ("lambda 1e-3 (their MNIST value), published for logistic regression and applied "
          "here to LeNet5 with the crop (benchmarks section 1c; 2 seeds of "
          "RMDA, 1 of ProxSGD and ProxGen) RMDA's changes per 20 epochs over the last stage "
          "went from 100 to 20 and 80 to 60 (seeds 0 and 1; fading, the last 20 epochs at most "
          "half the first 20, in 1 of 2), and its last 10 epochs held 10 and 30 changes: it "
          "stopped in 0 of 2.") in text
  assert ("All 2 of its late flips (groups that changed status in the last 20 epochs: 2 in "
          "seed 0) end with a ratio within 0.1 of 1, the threshold of its prox's input (the "
          "dual average), namely 0.990 to 1.010; the band around 1 of that width holds 3 of "
          "the 100 groups. These are groups on the threshold") in text
  assert ("ProxSGD's and ProxGen's changes stayed at 0 or more in every 20 epochs of the last "
          "stage in each of their 2 runs (fading in 1 of 2), with 0 to 60 changes") in text
  # A lambda with baselines only still says which schedule and which runs.
  assert ("At lambda 5e-4 (the same schedule; 1 seed of ProxSSI) ProxSSI's changes stayed at "
          "40 or more in every 20 epochs of the last stage in its one run (not fading), with 60 "
          "changes in the last 10 epochs.") in text
  assert text.index("lambda 1e-3") < text.index("lambda 5e-4")
  # A late flip far from the threshold, or a crowded band: no claim of degeneracy.
  far = dict(lam1, runs=[_budget_run("rmda", 0, 5, 1, dual=dual([0.5, 1.01], 1),
                                     ratios=ratios)])
  assert ("1 of its 2 late flips (groups that changed status in the last 20 epochs: 2 in "
          "seed 0) end with a ratio within 0.1 of 1, the threshold of its prox's input (the "
          "dual average) (all 2: 0.500 to 1.010)") in rd.opening(None, [far], [])
  assert "on the threshold" not in rd.opening(None, [far], [])
  crowded = dict(lam1, runs=[_budget_run("rmda", 0, 5, 1, dual=dual([0.99], 1),
                                         ratios=[0.99, 1.0, 1.005] + [3.0] * 7)])
  assert "holds 3 of the 10 groups" in rd.opening(None, [crowded], [])
  assert "on the threshold" not in rd.opening(None, [crowded], [])
  assert rd.opening(None, [], []) == ""


def test_opening_paragraph_reads_the_ablation_by_variant():
  from benchmarks import render_deep as rd
  ab = {"settings": {"lam": 1e-3}, "runs": [
      _budget_run("rda", 0, 9, 9, acc=0.97), _budget_run("rmda_ramp", 0, 9, 1),
      _budget_run("rmda_ramp", 1, 9, 0), _budget_run("prox_sgd_rho0.01", 0, 9, 7),
      _budget_run("prox_sgd_rho0.001", 0, 9, 2)]}
  text = rd.opening(None, [], [ab])
  assert ("In the ablation of the averaging at that budget (lambda 1e-3, benchmarks section "
          "1d) the last 20 epochs held these changes per seed (mean test accuracy, weighted "
          "group sparsity): RMDA (ramp rule) 20 and 0 (seeds 0 and 1; 98.00%, 50.0%); plain "
          "RDA (c 1, constant lr, no restarts) 180 (seed 0; 97.00%, 50.0%); ProxSGD (rho 0.01) "
          "140 (seed 0; 98.00%, 50.0%); ProxSGD (rho 0.001) 40 (seed 0; 98.00%, 50.0%).") in text
  assert ("The changes faded in every seed of RMDA (ramp rule) and ProxSGD (rho 0.001), in "
          "none of plain RDA (c 1, constant lr, no restarts) and ProxSGD (rho 0.01).") in text
  assert "stopped changing over the last 10 epochs in RMDA (ramp rule) seed 1." in text


def test_readme_opening_is_rendered_from_the_committed_results():
  # The measured part of the README's opening paragraph is what benchmarks.render writes
  # from benchmarks/results: a new result file without a re-render fails here.
  from benchmarks import render, render_deep as rd
  text = (ROOT / "README.md").read_text()
  block = text.split("<!-- measured:start -->\n")[1].split("\n<!-- measured:end -->")[0]
  budget = [render._load(f.name) for f in sorted((ROOT / "benchmarks/results").iterdir())
            if f.name.startswith("identification_200_") and f.suffix == ".json"]
  assert block == rd.opening(render._load("identification_deep.json"), budget,
                             [d for d in [render._load("ablation_200.json")] if d])
