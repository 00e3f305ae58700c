"""benchmarks/bench_front: chunk files, resuming, the crop hook, and the fronts computed from the files."""

import functools
import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from benchmarks import bench_front as bf
from benchmarks import common
from benchmarks import render_front
from rmda_jax.examples import data as data_lib
from rmda_jax.examples import sweep as sweep_lib
from rmda_jax.examples import train as train_lib

QUIET = lambda *a, **k: None  # noqa: E731
SETTINGS = {"dataset": "digits", "model": "lenet5_small", "epochs": 2, "milestones_epochs": [1],
            "gamma": 0.1, "batch_size": 128, "crop": 2}


# ------------------------------------------------------------ the fronts
def _chunk(method, seed, rows):
  return {"benchmark": "bench_front", "complete": True, "method": method, "seed": seed,
          "device": "test (cpu)", "settings": SETTINGS,
          "runs": [{"lr": lr, "lam": lam, "validation_accuracy": [0.0, val],
                    "weighted_group_sparsity": [0.0, sp], "group_sparsity": [0.0, sp],
                    "test_accuracy": test} for lr, lam, val, sp, test in rows]}


# rmda, seed by seed: (lr, lam, val, weighted sparsity, test)
RMDA = {0: [(0.1, 1e-3, .989, .5, .988), (0.3, 1e-3, .986, .4, .985), (1.0, 1e-3, .90, .1, .9),
            (0.1, 2e-3, .980, .7, .981), (0.3, 2e-3, .984, .75, .983),
            (1.0, 2e-3, .970, .9, .971)],
        1: [(0.1, 1e-3, .987, .6, .986), (0.3, 1e-3, .986, .4, .985), (1.0, 1e-3, .90, .1, .9),
            (0.1, 2e-3, .980, .7, .981), (0.3, 2e-3, .984, .75, .983),
            (1.0, 2e-3, .970, .9, .971)]}
PROX_SGD = [(0.01, 1e-3, .9892, .3, .99), (0.03, 1e-3, .9875, .5, .986),
            (0.01, 2e-3, .96, .95, .961), (0.03, 2e-3, .95, .6, .95)]
MSGD = [(0.01, None, .990, 0.0, .991), (0.1, None, .985, 0.0, .986)]


@pytest.fixture
def parts(tmp_path):
  """Seeds 0 and 1 of rmda, prox_sgd and msgd (the last two: seed 1 = seed 0)."""
  for seed, rows in RMDA.items():
    (tmp_path / f"rmda_seed{seed}.json").write_text(json.dumps(_chunk("rmda", seed, rows)))
  for seed in (0, 1):
    (tmp_path / f"prox_sgd_seed{seed}.json").write_text(
        json.dumps(_chunk("prox_sgd", seed, PROX_SGD)))
    (tmp_path / f"msgd_seed{seed}.json").write_text(json.dumps(_chunk("msgd", seed, MSGD)))
  unfinished = dict(_chunk("prox_adam", 0, PROX_SGD), complete=False)
  (tmp_path / "prox_adam_seed0.json").write_text(json.dumps(unfinished))
  return tmp_path


@pytest.fixture
def partial_parts(parts):
  """As ``parts`` without seed 1 of prox_sgd and msgd: only RMDA has two seeds."""
  (parts / "prox_sgd_seed1.json").unlink()
  (parts / "msgd_seed1.json").unlink()
  return parts


def _pts(ps):
  return [(p["lr"], p["lam"]) for p in ps]


def test_each_methods_front_over_its_plane(parts):
  # Worked by hand: rmda's (0.3, 1e-3) and (1, 1e-3) lose to (0.1, 1e-3),
  # (0.1, 2e-3) to (0.3, 2e-3); prox_sgd's (0.03, 2e-3) to (0.01, 2e-3).
  r = bf.render(parts, ("rmda", "prox_sgd", "msgd"), (0, 1))
  assert _pts(r["methods"]["rmda"]["front"]) == [(0.1, 1e-3), (0.3, 2e-3), (1.0, 2e-3)]
  assert _pts(r["methods"]["prox_sgd"]["front"]) == [(0.01, 1e-3), (0.03, 1e-3), (0.01, 2e-3)]
  p = r["methods"]["rmda"]["front"][0]
  assert p["seeds"] == [0, 1]
  np.testing.assert_allclose(p["test_accuracy"]["mean"], 0.987)
  np.testing.assert_allclose(p["test_accuracy"]["std"], np.sqrt(2 * 0.001 ** 2))
  np.testing.assert_allclose(p["weighted_group_sparsity"]["mean"], 0.55)
  assert "prox_adam" not in r["methods"]  # its chunk is unfinished
  assert r["common_seeds"] == [0, 1] and r["unused_seeds"] == {}


def test_methods_are_compared_on_the_seeds_every_point_has(partial_parts):
  # Only RMDA has seed 1: every point is then the mean over seed 0 alone, and
  # RMDA's seed 1 waits (mixed, RMDA's (0.1, 1e-3) would be .988 / 55% on
  # validation, under the 0.1-point threshold .989, instead of .989 / 50%).
  r = bf.render(partial_parts, ("rmda", "prox_sgd", "msgd"), (0, 1))
  assert r["common_seeds"] == [0] and r["unused_seeds"] == {"rmda": [1]}
  p = next(p for p in r["methods"]["rmda"]["points"] if (p["lr"], p["lam"]) == (0.1, 1e-3))
  assert p["seeds"] == [0]
  np.testing.assert_allclose([p["validation_accuracy"]["mean"], p["test_accuracy"]["mean"],
                              p["weighted_group_sparsity"]["mean"]], [.989, .988, .5])
  near = r["methods"]["rmda"]["sparsity_near_dense"]["0.1"]
  assert (near["lr"], near["lam"]) == (0.1, 1e-3)
  md = render_front.section(r)
  assert "over seed 0, the seeds that every point of every method has" in md
  assert "| RMDA | 0.1 | 0.001 | 98.90 | 98.80 | 50.0 | 0 |" in md  # one seed: the mean alone
  assert "Finished but not used until every method has them: RMDA seed 1." in md
  assert "compared on seed 0" in render_front.claim(r)


def test_joint_front_counts(parts):
  # prox_sgd's (0.03, 1e-3) = (.9875, .5) loses to rmda's (.988, .55).
  r = bf.render(parts, ("rmda", "prox_sgd", "msgd"), (0, 1))
  assert r["methods"]["rmda"]["on_joint_front"] == 3
  assert r["methods"]["prox_sgd"]["on_joint_front"] == 2


def test_sparsity_near_the_dense_accuracy(parts):
  r = bf.render(parts, ("rmda", "prox_sgd", "msgd"), (0, 1))
  assert (r["dense"]["lr"], r["dense"]["seeds"]) == (0.01, [0, 1])
  near = {m: {d: None if p is None else p["weighted_group_sparsity"]["mean"]
              for d, p in r["methods"][m]["sparsity_near_dense"].items()}
          for m in ("rmda", "prox_sgd")}
  # Dense validation .990: thresholds .989, .987, .985.
  assert near["rmda"]["0.1"] is None
  np.testing.assert_allclose([near["rmda"]["0.3"], near["rmda"]["0.5"]], [0.55, 0.55])
  np.testing.assert_allclose([near["prox_sgd"][d] for d in ("0.1", "0.3", "0.5")],
                             [0.3, 0.5, 0.5])


def test_best_lr_on_the_grid_edge_is_flagged(parts):
  r = bf.render(parts, ("rmda",), (0, 1))
  assert r["methods"]["rmda"]["best_lr_on_grid_edge"] == [
      {"lam": 1e-3, "best_lr": 0.1, "edge": "low"}]  # 2e-3's best, 0.3, is inside


def test_partial_results_are_labelled(partial_parts, tmp_path):
  parts = partial_parts
  r = bf.render(parts, ("rmda", "prox_sgd", "msgd"), (0, 1))
  assert r["partial"] and r["missing_seeds"] == {"prox_sgd": [1], "msgd": [1]}
  assert r["done"] == {"rmda": [0, 1], "prox_sgd": [0], "msgd": [0]}
  assert not bf.render(parts, ("rmda", "prox_sgd", "msgd"), (0,))["partial"]
  bf.plot(r, tmp_path / "front.png")
  assert (tmp_path / "front.png").stat().st_size > 1000


def test_an_extended_grid_chunk_joins_its_method_and_seed(parts):
  # `--lrs rmda=3` writes rmda_lr3_seed0.json: one more lr for the same seed.
  (parts / "rmda_lr3_seed0.json").write_text(json.dumps(
      _chunk("rmda", 0, [(3.0, 1e-3, .95, .95, .949)])))
  r = bf.render(parts, ("rmda", "prox_sgd", "msgd"), (0, 1))
  assert r["done"]["rmda"] == [0, 1]
  p = next(p for p in r["methods"]["rmda"]["points"] if p["lr"] == 3.0)
  assert p["seeds"] == [0] and r["methods"]["rmda"]["lrs"] == [0.1, 0.3, 1.0, 3.0]


def test_a_point_with_every_group_zero_is_left_out_of_the_fronts(parts):
  # The empty network (weighted sparsity 1, chance accuracy) beats every point's
  # sparsity: counted, named, but on no front; the other counts are unchanged.
  # Here seed 0 collapsed and seed 1 did not: their mean (val .528, sparsity .95)
  # is a point no run reached, left out too.
  (parts / "rmda_lr3_seed0.json").write_text(json.dumps(
      _chunk("rmda", 0, [(3.0, 1e-3, .1064, 1.0, .1135)])))
  (parts / "rmda_lr3_seed1.json").write_text(json.dumps(
      _chunk("rmda", 1, [(3.0, 1e-3, .95, .9, .949)])))
  r = bf.render(parts, ("rmda", "prox_sgd", "msgd"), (0, 1))
  assert r["common_seeds"] == [0, 1]
  m = r["methods"]["rmda"]
  assert m["collapsed"] == [{"lr": 3.0, "lam": 1e-3, "seeds": [0]}]
  assert (3.0, 1e-3) not in _pts(m["front"]) and len(m["points"]) == 7
  assert m["on_joint_front"] == 3 and r["methods"]["prox_sgd"]["on_joint_front"] == 2
  md = render_front.section(r)
  assert ("with the seeds that collapsed: RMDA at (lr 3, λ 0.001: seed 0).") in md
  # Without the rule the point would be on both fronts:
  assert (3.0, 1e-3) in [(p["lr"], p["lam"]) for i, p in enumerate(m["points"])
                         if sweep_lib.pareto_front([(q["validation_accuracy"]["mean"],
                                                     q["weighted_group_sparsity"]["mean"])
                                                    for q in m["points"]])[i]]


def test_section_shows_each_front_point_and_says_partial(parts):
  r = bf.render(parts, ("rmda", "prox_sgd", "msgd"), (0, 1, 2))
  md = render_front.section(r)
  assert md.startswith(render_front.TITLE) and "**Partial" in md
  assert "ProxSGD [2]" in md and "MSGD (dense) [2]" in md
  assert "over seeds 0, 1, the seeds that every point" in md and "not used until" not in md
  front_md, summary_md = md.split("Points on the joint front")

  def rows(text):
    return [line.split(" | ") for line in text.splitlines()
            if line.startswith("| RMDA | ") or line.startswith("| ProxSGD | ")]

  front = [(r_[0][2:], float(r_[1]), float(r_[2])) for r_ in rows(front_md)]
  assert front == [("RMDA", 0.1, 1e-3), ("RMDA", 0.3, 2e-3), ("RMDA", 1.0, 2e-3),
                   ("ProxSGD", 0.01, 1e-3), ("ProxSGD", 0.03, 1e-3), ("ProxSGD", 0.01, 2e-3)]
  # Mean +- sample std over the two seeds (RMDA (0.1, 1e-3): test .988 and .986, std
  # sqrt(2) * 0.1 points; ProxSGD (0.01, 1e-3): .99 twice).
  assert "| 98.70 ± 0.14 |" in md and "| 99.00 ± 0.00 |" in md
  summary = {r_[0][2:]: r_[3] for r_ in rows(summary_md)}
  assert summary == {"RMDA": "3", "ProxSGD": "2"}  # on the joint front (hand-counted above)
  assert "RMDA at λ 0.001 (best lr 0.1, low end" in md
  line = render_front.claim(r)
  assert "points on it: RMDA 3, ProxSGD 2 (partial:" in line and "edge for RMDA" in line
  assert "not run yet" in render_front.claim(None)
  assert render_front.section(None).startswith(render_front.TITLE)
  assert "Not run yet" in render_front.section(None)


def test_headline_rows_count_the_joint_front_and_the_points_near_dense(parts):
  r = bf.render(parts, ("rmda", "prox_sgd", "msgd"), (0, 1, 2))
  rows = render_front.headline(r)
  assert [row[1] for row in rows] == ["RMDA", "ProxSGD"]
  assert "partial" in rows[0][0] and "(99.00%)" in rows[0][0] and rows[1][0] == ""
  # Hand-counted in the tests above: on the joint front RMDA 3 of its 6 points,
  # ProxSGD 2 of 4; near dense (.990): RMDA none / 55% / 55%, ProxSGD 30 / 50 / 50%.
  assert rows[0][2] == "3 of 6; none / 55.0% / 55.0% (seeds 0, 1)"
  assert rows[1][2] == "2 of 4; 30.0% / 50.0% / 50.0% (seeds 0, 1)"
  assert render_front.headline(None) == []


def test_main_skips_finished_chunks_and_renders(parts, capsys):
  out = parts.parent / "out"
  (out / "front_quick").mkdir(parents=True)
  (out / "front_quick" / "msgd_lr0.003-0.1_seed0.json").write_text(
      json.dumps(_chunk("msgd", 0, MSGD)))
  assert bf.main(["--quick", "--methods", "msgd", "--out", str(out)]) == 0
  assert "msgd_lr0.003-0.1_seed0: done, skipped" in capsys.readouterr().out
  result = json.loads((out / "front_quick.json").read_text())
  assert result["dense"]["lr"] == 0.01
  # The file describes the folder, not this invocation: the other required
  # methods have not run (an optional one, RAMDA, is not expected).
  assert result["done"] == {"rmda": [], "prox_sgd": [], "prox_adam": [], "prox_ssi": [],
                            "msgd": [0]}
  assert result["partial"] and result["missing_seeds"] == {
      m: [0] for m in ("rmda", "prox_sgd", "prox_adam", "prox_ssi")}
  # Once RAMDA has run a seed, it is expected on the others too.
  (out / "front_quick" / "ramda_lr0.001-0.03_seed1.json").write_text(
      json.dumps(_chunk("ramda", 1, [(0.01, 2e-3, .9, .5, .9)])))
  assert bf.main(["--render", "--quick", "--out", str(out)]) == 0
  result = json.loads((out / "front_quick.json").read_text())
  assert result["done"]["ramda"] == [1] and result["missing_seeds"]["ramda"] == [0]


def test_bad_lrs_flag_is_a_usage_error(capsys):
  with pytest.raises(SystemExit) as e:
    bf.main(["--lrs", "sgd=0.1", "--render"])
  assert e.value.code == 2 and "--lrs" in capsys.readouterr().err


# ------------------------------------------------------------ training
@pytest.fixture(scope="module")
def split():
  train, x_test, y_test, note = bf.split_data("digits", quick=True)
  return train, x_test, y_test


def test_validation_is_the_end_of_the_training_set(split):
  train, x_test, _ = split
  full = train_lib.prepare_data(bf.config_lib.Config(dataset="digits"))
  n = len(full.y_train)
  assert len(train.y_train) + len(train.y_test) == n and len(train.y_test) == n // 5
  np.testing.assert_array_equal(train.x_test, full.x_train[n - n // 5:])
  np.testing.assert_array_equal(x_test, full.x_test)


def test_crop_hook_equals_a_hand_written_cropped_step(split):
  # Program(augment=crop): each batch is cropped with fold_in(epoch key, i)
  # before normalisation; reference: the single-run step on batches cropped here.
  train = split[0]
  base, runs, _ = bf.chunk_configs("prox_sgd", 0, (0.01,), (1e-3,), SETTINGS, "digits")
  steps = len(train.y_train) // 128
  crop = functools.partial(data_lib.random_crop, padding=2)
  program = sweep_lib.Program(base, train, steps, augment=crop)
  hp = sweep_lib._hyper(runs)  # noqa: SLF001
  state = program.init_state(runs, hp)
  x, y = jnp.asarray(train.x_train), jnp.asarray(train.y_train)
  perm = np.arange(steps * 128, dtype=np.int32).reshape(1, steps, 128)[:, ::-1]
  perm = np.ascontiguousarray(perm)
  key = jax.random.key(7)
  loss = jnp.zeros((1,), jnp.float32)
  for i in range(3):
    state, loss = program.step(hp, state, loss, x, y, jnp.asarray(perm), np.int32(i),
                               key[None])
  reg, _ = train_lib.build_regularizers(base)
  tx = train_lib.build_optimizer(base, reg, steps)
  ref_step = jax.jit(train_lib.make_train_step(
      program.parts.graphdef_train, tx, norm_stats=(train.scale, train.mean, train.std)))
  ref = sweep_lib.take(program.init_state(runs, hp), 0)
  ref_loss = jnp.zeros((), jnp.float32)
  for i in range(3):
    xb = crop(jax.random.fold_in(key, i), x[perm[0, i]])
    ref, ref_loss = ref_step(ref, ref_loss, xb[None], y[perm[0, i]][None],
                             jnp.zeros((1,), jnp.int32), 0, None)
  chex.assert_trees_all_close(sweep_lib.take(state.params, 0), ref.params, rtol=1e-4,
                              atol=1e-6)
  np.testing.assert_allclose(loss[0], ref_loss, rtol=1e-5)
  # and the crop matters: without it the parameters differ
  plain = sweep_lib.Program(base, train, steps)
  s2 = plain.init_state(runs, hp)
  l2 = jnp.zeros((1,), jnp.float32)
  for i in range(3):
    s2, l2 = plain.step(hp, s2, l2, x, y, jnp.asarray(perm), np.int32(i), key[None])
  assert not np.allclose(l2, loss)


class _Stop(Exception):
  pass


def _stop_at_epoch_2(*args, **kwargs):
  if args and "epoch 2/" in str(args[0]):
    raise _Stop


@pytest.fixture(scope="module")
def chunks(split, tmp_path_factory):
  """The same chunk: whole in one program, and 1 run per step, cut after epoch 1 and resumed."""
  tmp = tmp_path_factory.mktemp("front")
  args = ("rmda", 0, (0.1, 1.0), (3e-2,), SETTINGS, split)
  whole = bf.run_chunk(*args, tmp / "a" / "rmda_seed0.json", None, {}, log=QUIET)
  ckpt = tmp / "ckpt"
  with pytest.raises(_Stop):
    bf.run_chunk(*args, tmp / "b" / "rmda_seed0.json", ckpt, {}, log=_stop_at_epoch_2,
                 runs_per_program=1)
  assert not (tmp / "b" / "rmda_seed0.json").exists() and len(list(ckpt.iterdir())) == 1
  lines = []
  resumed = bf.run_chunk(*args, tmp / "b" / "rmda_seed0.json", ckpt, {},
                         log=lambda *a, **k: lines.append(a[0]), runs_per_program=1)
  return whole, resumed, lines, tmp, ckpt


@pytest.mark.slow
def test_chunk_file_records_every_run(chunks):
  whole, _, _, tmp, _ = chunks
  on_disk = json.loads((tmp / "a" / "rmda_seed0.json").read_text())
  assert on_disk == whole
  assert whole["complete"] and whole["device"].endswith("(cpu)")
  assert [(r["lr"], r["lam"]) for r in whole["runs"]] == [(0.1, 3e-2), (1.0, 3e-2)]
  for r in whole["runs"]:
    assert len(r["validation_accuracy"]) == 2 and len(r["weighted_group_sparsity"]) == 2
    assert r["support_changes"][0] is not None and 0 <= r["test_accuracy"] <= 1
  assert whole["runs_per_step"] == 2 and len(whole["epoch_s"]) == 2


@pytest.mark.slow
def test_a_cut_chunk_resumes_to_the_same_runs(chunks):
  whole, resumed, lines, _, ckpt = chunks
  assert resumed["resumed_at_epoch"] == 1 and resumed["runs_per_step"] == 1
  assert any("resuming after epoch 1" in line for line in lines)
  assert not list(ckpt.iterdir())  # the checkpoint goes when the chunk is done
  for a, b in zip(whole["runs"], resumed["runs"]):
    for key in ("validation_accuracy", "weighted_group_sparsity", "train_loss"):
      np.testing.assert_allclose(a[key], b[key], rtol=1e-4, atol=1e-4, err_msg=key)
    np.testing.assert_allclose(a["test_accuracy"], b["test_accuracy"], atol=1e-2)
    assert a["support_changes"] == b["support_changes"]  # epoch 2's too, after the resume
  # the runs differ from each other (the lr is per run)
  assert whole["runs"][0]["train_loss"] != whole["runs"][1]["train_loss"]


def test_claim_lets_one_live_process_hold_a_chunk(tmp_path):
  pid = __import__("os").getpid()
  lock = tmp_path / "locks" / "front_rmda_seed0.lock"
  assert common.claim(lock) == lock and lock.read_text().split()[0] == str(pid)
  assert common.claim(lock) is False  # held by a live process (this one)
  lock.write_text("999999999")  # no such process: taken over
  assert common.claim(lock) == lock
  lock.write_text(str(pid))  # a lock of the former format (the id alone): alive
  assert common.claim(lock) is False
  if common._start_time(pid):  # Linux: a lock left by a process whose id was reused
    lock.write_text(f"{pid} 1")
    assert common.claim(lock) == lock
