"""The joint front: test accuracy against weighted group sparsity over the whole
(learning rate, lambda) plane of every method (issue 19, part 2).

LeNet5 (small) on MNIST with random crop (2-pixel zero padding, no flip, as
``bench_equal_tuning``), group LASSO on input units, 20 epochs, the authors'
stage-wise schedules: every learning rate x 0.1 at epochs 5 and 10 (RMDA:
``rj.rmda_multistep``, which also restarts there and moves ``c`` from 0.1 to 1).
Trained on the first 50k training images; the last 10k are a validation set
(evaluated after every epoch, never trained on); the test set is evaluated once
per run, after the last epoch (the reported point: RMDA's ``Z``, the others'
iterate).

Methods and grids (:data:`LRS`, :data:`LAMS`): ``rmda``, ``prox_sgd``
(rmda-train's heavy-ball form, momentum 0.9, strength / (1 - 0.9): the
authors' EMA form with rho 0.1 and lr x 10), ``prox_adam`` (ProxGen),
``prox_ssi``, ``ramda`` (``rj.ramda_multistep``, c 1e-2 as its authors run it),
each at 4 learning rates (30x or more) x 4 lambdas; ``msgd``
(``optax.sgd`` with momentum 0.9, no regularizer) at 4 learning rates, the
dense accuracy reference. 3 seeds.

**One program per (method, seed) chunk**: the chunk's runs (its lr x lambda
grid) are ``rmda_jax.examples.sweep.Program``'s vmapped step, i.e. exactly the
runs ``rmda-train --lr ... --strength ...`` would train (same initialisation,
data order and augmentation keys per seed). ``--runs-per-program`` sets how
many runs one call of the compiled step advances: the whole chunk on an
accelerator; 1 on CPU, where the vmapped step costs 3 to 4 times more per run
than a single run's (``bench_sweep``), so the program (compiled once: the
hyperparameters are inputs) takes the runs one after another each epoch. Each chunk writes one file,
``results/front/<method>_seed<seed>.json`` (which device ran it, compile time,
per-epoch validation accuracy and sparsity of every run, the final test
accuracy); a chunk whose file exists is skipped, and an unfinished chunk
resumes from its last finished epoch (a checkpoint under ``--ckpt-dir``).

``--render`` (or :func:`render`, for ``benchmarks/render.py``) computes from
the files, choosing everything on the validation split: per method the Pareto
front of (validation accuracy, weighted group sparsity) over its (lr, lambda)
plane, each point reported with its test accuracy, mean and std over the seeds;
how many points of each method lie on the joint front; the sparsity each
method reaches within 0.1, 0.3 and 0.5 points of the dense model's accuracy;
which lambdas have their best learning rate on the edge of the grid; and
``front.png``. Results with fewer seeds or methods than asked are labelled
partial.

Run from the repository root:

    python -m benchmarks.bench_front --methods rmda prox_sgd --seeds 0
    python -m benchmarks.bench_front --render
    python -m benchmarks.bench_front --quick --out /tmp/q       # digits, seconds
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import rmda_jax as rj
from benchmarks import common
from rmda_jax.examples import config as config_lib
from rmda_jax.examples import data as data_lib
from rmda_jax.examples import sweep as sweep_lib
from rmda_jax.examples import train as train_lib

METHODS = ("rmda", "prox_sgd", "prox_adam", "prox_ssi", "ramda", "msgd")
REGULARIZED = METHODS[:5]
# The methods issue 19 asks the front for; RAMDA (the authors' successor) runs
# with --methods ramda and is then expected on every seed like the others.
REQUIRED = ("rmda", "prox_sgd", "prox_adam", "prox_ssi", "msgd")
SEEDS = (0, 1, 2)
LABELS = {"rmda": "RMDA", "prox_sgd": "ProxSGD", "prox_adam": "ProxGen",
          "prox_ssi": "ProxSSI", "ramda": "RAMDA", "msgd": "MSGD (dense)"}
COLORS = {"rmda": "C0", "prox_sgd": "C1", "prox_adam": "C2", "prox_ssi": "C3",
          "ramda": "C4", "msgd": "k"}
OPTIMIZER = {"rmda": "rmda", "prox_sgd": "prox_sgd", "prox_adam": "prox_adam",
             "prox_ssi": "prox_ssi", "ramda": "ramda", "msgd": "sgd"}
# rmda: c0; ramda: the authors' c (1e-2, ../shared/docs/ramda.md); the others:
# rmda-train's defaults.
MOMENTUM = {"rmda": 0.1, "ramda": 1e-2, "msgd": 0.9}
# Learning rates: each spans 33x. rmda-train's prox_sgd lr is the authors' EMA
# lr x rho (0.1): 0.003..0.1 here is their 0.03..1.
LRS = {"rmda": (0.03, 0.1, 0.3, 1.0), "prox_sgd": (0.003, 0.01, 0.03, 0.1),
       "prox_adam": (3e-4, 1e-3, 3e-3, 1e-2), "prox_ssi": (3e-4, 1e-3, 3e-3, 1e-2),
       "ramda": (1e-3, 3e-3, 1e-2, 3e-2),  # around the authors' 1e-2
       "msgd": (0.003, 0.01, 0.03, 0.1)}
LAMS = (2.5e-4, 5e-4, 1e-3, 2e-3)
DELTAS = (0.1, 0.3, 0.5)  # accuracy points below the dense model
QUICK = {"epochs": 2, "milestones": (1,), "lams": (2e-3, 3e-2), "seeds": (0,)}
CKPT_DIR = Path.home() / ".cache" / "rmda_jax" / "bench_front_ckpt"


# ------------------------------------------------------------------ chunks
def chunk_name(method: str, seed: int, lrs=None) -> str:
  """The file stem of a (method, seed) chunk; a grid other than ``LRS`` is named."""
  if lrs is None or tuple(lrs) == LRS[method]:
    return f"{method}_seed{seed}"
  return f"{method}_lr{'-'.join(f'{lr:g}' for lr in lrs)}_seed{seed}"


def chunk_configs(method: str, seed: int, lrs, lams, settings: dict, dataset: str):
  """The rmda-train configurations of one chunk (lr x lambda; msgd: lr only)."""
  base = config_lib.Config(
      model="lenet5_small", dataset=dataset, optimizer=OPTIMIZER[method],
      regularizer="group_lasso" if method in REGULARIZED else "none",
      strength=lams[0], lr=lrs[0], momentum=MOMENTUM.get(method),
      epochs=settings["epochs"], milestones=tuple(settings["milestones_epochs"]),
      gamma=settings["gamma"], batch_size=settings["batch_size"], seed=seed,
      output_dir="/nonexistent", progress=False)
  lams = lams if method in REGULARIZED else (None,)
  runs = [dataclasses.replace(base, lr=lr, **({} if lam is None else {"strength": lam}))
          for lr in lrs for lam in lams]
  return base, runs, [(lr, lam) for lr in lrs for lam in lams]


def split_data(dataset: str, quick: bool):
  """(training Dataset whose x_test is the validation set, x_test, y_test, note)."""
  ds = train_lib.prepare_data(config_lib.Config(dataset=dataset, model="lenet5_small"))
  n_val = len(ds.y_train) // 5 if quick else 10000
  n_tr = len(ds.y_train) - n_val
  train = dataclasses.replace(ds, x_train=ds.x_train[:n_tr], y_train=ds.y_train[:n_tr],
                              x_test=ds.x_train[n_tr:], y_test=ds.y_train[n_tr:])
  note = (f"{dataset}: first {n_tr} training images for training, last {n_val} for "
          f"validation, {len(ds.y_test)} test images read once per run")
  return train, ds.x_test, ds.y_test, note


def _save_ckpt(path: Path, state, epoch: int, records: list, key: str) -> None:
  leaves = [np.asarray(jax.device_get(x)) for x in jax.tree.leaves(state)]
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
  np.savez(tmp, *leaves, meta=np.asarray(json.dumps(
      {"epoch": epoch, "records": records, "key": key})))
  tmp.replace(path)


def _load_ckpt(path: Path, template, key: str):
  """(state, epoch, records) from ``path``, or None (missing, or another chunk's)."""
  try:
    with np.load(path) as f:
      meta = json.loads(str(f["meta"]))
      leaves = [f[f"arr_{i}"] for i in range(len(jax.tree.leaves(template)))]
  except (OSError, KeyError, ValueError):
    return None
  if meta["key"] != key:
    return None
  treedef = jax.tree.structure(template)
  state = jax.tree.unflatten(treedef, [jnp.asarray(x, t.dtype) for x, t in
                                       zip(leaves, jax.tree.leaves(template))])
  return state, meta["epoch"], meta["records"]


def run_chunk(method: str, seed: int, lrs, lams, settings: dict, split, path: Path,
              ckpt_dir: Path | None, machine: dict, log=print,
              runs_per_program: int | None = None) -> dict:
  """Trains one (method, seed) chunk with one compiled program; writes ``path``.

  ``runs_per_program``: how many of the chunk's runs the compiled step
  advances at once (None: all); the chunk's runs go through it in groups of
  that size, one group after another every epoch (on XLA:CPU the vmapped
  step costs several times more per run than a single run's: see
  ``bench_sweep``). Returns the chunk's record.
  """
  ds, x_test, y_test = split
  base, runs, grid = chunk_configs(method, seed, lrs, lams, settings, settings["dataset"])
  steps = len(ds.y_train) // base.batch_size
  crop = settings["crop"]
  program = sweep_lib.Program(base, ds, steps, augment=(
      functools.partial(data_lib.random_crop, padding=crop) if crop else None))
  hp = sweep_lib._hyper(runs)  # noqa: SLF001 (the program's per-run values)
  data = (jax.device_put(ds.x_train), jax.device_put(ds.y_train))
  x_val, y_val = jax.device_put(ds.x_test), jax.device_put(ds.y_test)
  t_start = time.perf_counter()
  state = program.init_state(runs, hp)
  size = len(runs) if runs_per_program is None else max(1, min(runs_per_program, len(runs)))
  groups = [slice(i, min(i + size, len(runs))) for i in range(0, len(runs), size)]
  t0 = time.perf_counter()
  compiled = {n: program.compile_step(state, n, data)
              for n in sorted({g.stop - g.start for g in groups})}
  compile_s = time.perf_counter() - t0
  part = lambda tree, g: jax.tree.map(lambda x: x[g], tree)  # noqa: E731
  metric_reg = program.metric_reg
  key = json.dumps([method, seed, list(lrs), list(lams), settings], sort_keys=True)
  ckpt = None if ckpt_dir is None else ckpt_dir / f"{path.parent.name}_{path.stem}.npz"
  records = [{"lr": lr, "lam": lam, "momentum": MOMENTUM.get(method), "validation_accuracy": [],
              "weighted_group_sparsity": [], "group_sparsity": [], "support_changes": [],
              "train_loss": []} for lr, lam in grid]
  start, epoch_s = 0, []
  loaded = None if ckpt is None else _load_ckpt(ckpt, state, key)
  if loaded is not None:
    state, start, records = loaded
    log(f"  {path.stem}: resuming after epoch {start} ({ckpt})")
  data_keys = [np.asarray(jax.random.key_data(jax.random.key(c.seed))) for c in runs]
  aug_keys = [jax.random.key(c.seed + 1) for c in runs]

  def supports(rep):
    return [rj.group_support(sweep_lib.take(rep, k), metric_reg) for k in range(len(runs))]

  prev = supports(program.reported(state))  # at the start, or the resumed epoch's end
  for epoch in range(start, base.epochs):
    t0 = time.perf_counter()
    perm = jnp.asarray(np.stack([train_lib.epoch_permutation(
        dk, epoch, len(ds.y_train), base.batch_size) for dk in data_keys]))
    keys = jnp.stack([jax.random.fold_in(k, epoch) for k in aug_keys])
    states, losses = [], []
    for j, g in enumerate(groups):
      sub, sub_hp, sub_perm, sub_keys = part(state, g), part(hp, g), perm[g], keys[g]
      sub_loss = jnp.zeros((g.stop - g.start,), jnp.float32)
      step = compiled[g.stop - g.start]
      for i in range(steps):
        sub, sub_loss = step(sub_hp, sub, sub_loss, *data, sub_perm, np.int32(i), sub_keys)
        if epoch == start and j == 0 and i == min(19, steps - 1):
          jax.block_until_ready(sub_loss)
          t_step = (time.perf_counter() - t0) / (i + 1)
          log(f"  {path.stem}: {len(runs)} runs, {size} per step, {t_step:.2f}s per step: "
              f"about {t_step * steps * len(groups) / 60:.0f} min per epoch")
      states.append(sub)
      losses.append(sub_loss)
    state = jax.tree.map(lambda *xs: jnp.concatenate(xs), *states)
    loss_sum = jnp.concatenate(losses)
    rep = program.reported(state)
    _, val_acc = program.evaluate(rep, state.batch_stats, x_val, y_val)
    loss = np.asarray(loss_sum, np.float64) / steps
    now = supports(rep)
    for k, r in enumerate(records):
      point = sweep_lib.take(rep, k)
      r["validation_accuracy"].append(float(val_acc[k]))
      r["weighted_group_sparsity"].append(float(rj.group_sparsity(point, metric_reg,
                                                                  weighted=True)))
      r["group_sparsity"].append(float(rj.group_sparsity(point, metric_reg)))
      r["support_changes"].append(None if prev is None
                                  else int(rj.support_changes(prev[k], now[k])))
      r["train_loss"].append(float(loss[k]))
    prev = now
    epoch_s.append(round(time.perf_counter() - t0, 2))
    log(f"  {path.stem} epoch {epoch + 1}/{base.epochs}: validation acc "
        f"{100 * min(val_acc):.2f}-{100 * max(val_acc):.2f}%, weighted group sp "
        f"{100 * min(r['weighted_group_sparsity'][-1] for r in records):.1f}-"
        f"{100 * max(r['weighted_group_sparsity'][-1] for r in records):.1f}% "
        f"({epoch_s[-1]:.0f}s)")
    if ckpt is not None and epoch + 1 < base.epochs:
      _save_ckpt(ckpt, state, epoch + 1, records, key)
  rep = program.reported(state)
  test_loss, test_acc = program.evaluate(rep, state.batch_stats, jax.device_put(x_test),
                                         jax.device_put(y_test))
  for k, r in enumerate(records):
    r["test_accuracy"] = float(test_acc[k])
    r["test_loss"] = float(test_loss[k])
  rec = {"benchmark": "bench_front", "method": method, "seed": seed, "lrs": list(lrs),
         "lams": list(lams) if method in REGULARIZED else [], "settings": settings,
         "device": _device(), "runs_per_step": size,
         "steps_per_epoch": steps,
         "compile_s": round(compile_s, 2), "epoch_s": epoch_s,
         "resumed_at_epoch": start, "wall_s": round(time.perf_counter() - t_start, 2),
         "machine": dict(machine, load_average_end=common.load_average()),
         "complete": True, "runs": records}
  common.write_json(path, rec)
  if ckpt is not None and ckpt.exists():
    ckpt.unlink()
  return rec


def _device() -> str:
  d = jax.devices()[0]
  return f"{common.cpu_model() if d.platform == 'cpu' else d.device_kind} ({d.platform})"


# ------------------------------------------------------------------ render
def _front(points) -> list:
  """Indices of the points (accuracy, sparsity) that no other point dominates."""
  return [i for i, on in enumerate(sweep_lib.pareto_front(points)) if on]


def collapsed(point) -> bool:
  """Whether every group of the point is zero in one of its seeds (weighted group sparsity 1).

  Such a seed is the empty network (chance accuracy); averaged with a seed that
  kept groups, it would make a point no run reached (half the accuracy, nearly
  all the sparsity) that beats every other point's sparsity.
  """
  return bool(point["collapsed_seeds"])


def load_chunks(parts: Path) -> list:
  """The finished chunk records under ``parts``."""
  out = []
  for f in sorted(Path(parts).glob("*.json")):
    try:
      rec = json.loads(f.read_text())
    except (OSError, ValueError):
      continue
    if rec.get("benchmark") == "bench_front" and rec.get("complete"):
      out.append(rec)
  return out


def _points(chunks, method):
  """(lr, lam) -> the runs of ``method`` at that point, one per seed."""
  by = {}
  for c in chunks:
    if c["method"] != method:
      continue
    for r in c["runs"]:
      by.setdefault((r["lr"], r["lam"]), {})[c["seed"]] = r
  return by


def _summary(lr, lam, runs: dict) -> dict:
  last = lambda r, key: r[key] if np.isscalar(r[key]) else r[key][-1]  # noqa: E731
  ms = lambda key: common.mean_std([last(r, key) for r in runs.values()])  # noqa: E731
  return {"lr": lr, "lam": lam, "seeds": sorted(runs),
          "collapsed_seeds": sorted(s for s, r in runs.items()
                                    if last(r, "weighted_group_sparsity") >= 1.0),
          "validation_accuracy": ms("validation_accuracy"),
          "test_accuracy": ms("test_accuracy"),
          "weighted_group_sparsity": ms("weighted_group_sparsity"),
          "group_sparsity": ms("group_sparsity")}


def render(parts: Path, expected_methods=REQUIRED, expected_seeds=SEEDS) -> dict:
  """Fronts, joint-front counts, sparsity near the dense accuracy and lr-edge flags.

  Every choice is made on the validation split: a point (lr, lambda) of a
  method is the mean over the seeds that every point of every method has
  finished (``common_seeds``; the others are listed in ``unused_seeds``), so
  that all methods are compared on the same seeds (only if no seed is common
  is each point its own seeds' mean); a method's front is the set of its
  points that no other of its points beats in both mean validation accuracy
  and mean weighted group sparsity; the joint front is the same over every
  regularized method's points. The dense reference is msgd's point of
  highest mean validation accuracy. "Sparsity at delta": the sparsest point
  of the method whose mean validation accuracy is at least the dense
  reference's minus ``delta`` points. Test accuracies are reported for the
  chosen points only. The results are partial while a method of
  ``expected_methods``, or any other method with a finished chunk, lacks a
  seed of ``expected_seeds``.
  """
  chunks = load_chunks(parts)
  methods = [m for m in METHODS if any(c["method"] == m for c in chunks)]
  by_point = {m: sorted(_points(chunks, m).items(), key=lambda kv: (kv[0][0], kv[0][1] or 0))
              for m in methods}
  # Every point of every method is summarised over the same seeds: those that
  # every point has finished. While seeds are missing (a method, or an
  # extended grid's chunk, not run yet), another seed of some methods would
  # otherwise move their means and not the others'.
  seed_sets = [set(runs) for m in methods for _, runs in by_point[m]]
  common = sorted(set.intersection(*seed_sets)) if seed_sets else []
  use = (lambda runs: {s: runs[s] for s in common}) if common else (lambda runs: runs)
  points = {m: [_summary(lr, lam, use(runs)) for (lr, lam), runs in by_point[m]]
            for m in methods}
  key = lambda p: (p["validation_accuracy"]["mean"], p["weighted_group_sparsity"]["mean"])  # noqa: E731
  out = {"benchmark": "bench_front", "parts": str(parts), "methods": {}, "done": {},
         "devices": sorted({c["device"] for c in chunks}),
         "settings": chunks[0]["settings"] if chunks else None,
         "common_seeds": common, "unused_seeds": {}}
  for m in methods:
    if extra := set().union(*(set(runs) for _, runs in by_point[m])) - set(common):
      out["unused_seeds"][m] = sorted(extra)
  for m in dict.fromkeys((*expected_methods, *methods)):
    out["done"][m] = sorted({c["seed"] for c in chunks if c["method"] == m})
  missing = {m: sorted(set(expected_seeds) - set(seeds)) for m, seeds in out["done"].items()}
  missing = {m: s for m, s in missing.items() if s}
  out["partial"] = bool(missing)
  out["missing_seeds"] = missing
  dense = None
  if "msgd" in points and points["msgd"]:
    dense = max(points["msgd"], key=lambda p: p["validation_accuracy"]["mean"])
  out["dense"] = dense
  regularized = [m for m in methods if m in REGULARIZED]
  # A point whose every group is zero is the empty network (a constant output,
  # chance accuracy): no point beats its sparsity, so it would sit on every
  # front. It is counted apart and left out of the fronts.
  kept = {m: [i for i, p in enumerate(points[m]) if not collapsed(p)] for m in regularized}
  joint = [(m, i) for m in regularized for i in kept[m]]
  joint_on = set(joint[j] for j in _front([key(points[m][i]) for m, i in joint]))
  for m in regularized:
    ps = points[m]
    front = [kept[m][j] for j in _front([key(ps[i]) for i in kept[m]])]
    edges = []
    lrs = sorted({p["lr"] for p in ps})
    for lam in sorted({p["lam"] for p in ps}):
      at = [p for p in ps if p["lam"] == lam]
      best = max(at, key=lambda p: p["validation_accuracy"]["mean"])
      if len(lrs) > 1 and best["lr"] in (lrs[0], lrs[-1]):
        edges.append({"lam": lam, "best_lr": best["lr"],
                      "edge": "low" if best["lr"] == lrs[0] else "high"})
    near = {}
    if dense is not None:
      for d in DELTAS:
        ok = [p for p in ps if p["validation_accuracy"]["mean"]
              >= dense["validation_accuracy"]["mean"] - d / 100]
        near[f"{d:g}"] = (max(ok, key=lambda p: p["weighted_group_sparsity"]["mean"])
                          if ok else None)
    out["methods"][m] = {
        "points": ps, "front": sorted((ps[i] for i in front),
                                      key=lambda p: p["weighted_group_sparsity"]["mean"]),
        "on_joint_front": sum((m, i) in joint_on for i in range(len(ps))),
        "collapsed": [{"lr": p["lr"], "lam": p["lam"], "seeds": p["collapsed_seeds"]}
                      for p in ps if collapsed(p)],
        "lrs": lrs, "best_lr_on_grid_edge": edges, "sparsity_near_dense": near}
  return out


def plot(result: dict, path: Path) -> None:
  """One plot: every method's points (faint) and front (mean +- std over seeds)."""
  from matplotlib.figure import Figure  # noqa: PLC0415
  fig = Figure(figsize=(6.5, 4.8))
  ax = fig.subplots()
  # The accuracy axis spans the fronts (and the dense line), not the collapsed
  # or diverged points far below them, which would flatten every front.
  fronts = [p for r in result["methods"].values() for p in r["front"]]
  accs = [100 * (p["test_accuracy"]["mean"] - p["test_accuracy"]["std"]) for p in fronts]
  low = min(accs) - 0.5 if accs else None
  hidden = 0
  for m, r in result["methods"].items():
    shown = [p for p in r["points"] if not collapsed(p)]
    hidden += len(r["points"]) - len(shown)
    xs = [100 * p["weighted_group_sparsity"]["mean"] for p in shown]
    ys = [100 * p["test_accuracy"]["mean"] for p in shown]
    if low is not None:
      hidden += sum(y < low for y in ys)
    ax.scatter(xs, ys, s=8, color=COLORS[m], alpha=0.25)
    f = r["front"]
    ax.errorbar([100 * p["weighted_group_sparsity"]["mean"] for p in f],
                [100 * p["test_accuracy"]["mean"] for p in f],
                xerr=[100 * p["weighted_group_sparsity"]["std"] for p in f],
                yerr=[100 * p["test_accuracy"]["std"] for p in f], fmt="o-", ms=4,
                color=COLORS[m], capsize=2,
                label=f"{LABELS[m]} ({r['on_joint_front']} on joint front)")
  dense = result["dense"]
  if dense is not None:
    acc = 100 * dense["test_accuracy"]["mean"]
    ax.axhline(acc, color="k", lw=0.8, label=f"MSGD dense, lr {dense['lr']:g}")
    for d in DELTAS:
      ax.axhline(acc - d, color="k", lw=0.4, ls=":")
  if low is not None:
    top = max([100 * (p["test_accuracy"]["mean"] + p["test_accuracy"]["std"]) for p in fronts]
              + ([100 * dense["test_accuracy"]["mean"]] if dense is not None else []))
    ax.set_ylim(low, top + 0.3)
  ax.set_xlabel("weighted group sparsity (%)"
                + (f"; {hidden} points not shown (collapsed in a seed, or below the axis)"
                   if hidden else ""), fontsize=8)
  ax.set_ylabel("test accuracy (%)")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=6)
  s = result["settings"] or {}
  done = ", ".join(f"{LABELS[m]} {len(v)}" for m, v in result["done"].items())
  ax.set_title(f"LeNet5 small, {s.get('dataset', '?')}, crop {s.get('crop')}, "
               f"{s.get('epochs')} epochs; fronts chosen on validation, mean +- std\n"
               f"{'PARTIAL: ' if result['partial'] else ''}seeds done: {done}; "
               f"{', '.join(result['devices'])}", fontsize=6)
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def print_report(result: dict, log=print) -> None:
  if result["partial"]:
    log(f"PARTIAL results: seeds missing {result['missing_seeds']}")
  d = result["dense"]
  if d is not None:
    log(f"dense (msgd lr {d['lr']:g}): validation {100 * d['validation_accuracy']['mean']:.2f}%, "
        f"test {100 * d['test_accuracy']['mean']:.2f} +- {100 * d['test_accuracy']['std']:.2f}% "
        f"(seeds {d['seeds']})")
  for m, r in result["methods"].items():
    log(f"{LABELS[m]}: {len(r['points'])} points, {len(r['front'])} on its front, "
        f"{r['on_joint_front']} on the joint front")
    for p in r["front"]:
      log(f"   lr {p['lr']:g} lam {p['lam']:g}: test {100 * p['test_accuracy']['mean']:.2f} +- "
          f"{100 * p['test_accuracy']['std']:.2f}%, weighted group sp "
          f"{100 * p['weighted_group_sparsity']['mean']:.1f} +- "
          f"{100 * p['weighted_group_sparsity']['std']:.1f}% (seeds {p['seeds']})")
    for d_, p in r["sparsity_near_dense"].items():
      log(f"   within {d_} points of dense: " + (
          "none" if p is None else f"{100 * p['weighted_group_sparsity']['mean']:.1f}% "
          f"(lr {p['lr']:g}, lam {p['lam']:g}, test {100 * p['test_accuracy']['mean']:.2f}%)"))
    for e in r["best_lr_on_grid_edge"]:
      log(f"   EDGE: at lam {e['lam']:g} the best lr {e['best_lr']:g} is the {e['edge']} end "
          f"of the grid {r['lrs']}: extend it")


def _lrs_arg(text: str):
  method, _, values = text.partition("=")
  if method not in METHODS or not values:
    raise argparse.ArgumentTypeError(f"expected METHOD=lr,lr,... with METHOD in {METHODS}, "
                                     f"got {text!r}")
  try:
    return method, tuple(float(v) for v in values.split(","))
  except ValueError:
    raise argparse.ArgumentTypeError(f"learning rates must be numbers: {text!r}") from None


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--methods", nargs="+", default=REQUIRED, choices=METHODS,
                 help=f"default: {' '.join(REQUIRED)} (issue 19's); ramda on request")
  p.add_argument("--seeds", type=int, nargs="+", default=SEEDS)
  p.add_argument("--epochs", type=int, default=20)
  p.add_argument("--milestones", type=int, nargs="*", default=(5, 10))
  p.add_argument("--lams", type=float, nargs="+", default=LAMS)
  p.add_argument("--lrs", type=_lrs_arg, action="append", default=[], metavar="METHOD=LR,...",
                 help="another learning-rate grid for a method (its chunks get their own files)")
  p.add_argument("--crop", type=int, default=2, help="random-crop padding (pixels; 0: none)")
  p.add_argument("--quick", action="store_true", help="digits, 2 epochs, 2 lrs x 2 lambdas")
  p.add_argument("--out", type=Path, default=common.RESULTS)
  p.add_argument("--name", default=None, help="results folder (default: front, front_quick, "
                                               "front_e<epochs>)")
  p.add_argument("--ckpt-dir", type=Path, default=CKPT_DIR,
                 help="per-epoch checkpoints of unfinished chunks")
  p.add_argument("--runs-per-program", type=int, default=None,
                 help="runs the compiled step advances at once (0: the whole chunk; "
                      "default: the whole chunk, 1 on CPU)")
  p.add_argument("--render", action="store_true", help="only compute the fronts from the files")
  args = p.parse_args(argv)
  lrs = dict(LRS)
  lrs.update(dict(args.lrs))
  dataset = "mnist"
  if args.quick:
    dataset, args.epochs, args.milestones = "digits", QUICK["epochs"], QUICK["milestones"]
    args.lams = QUICK["lams"]
    if args.seeds == SEEDS:
      args.seeds = QUICK["seeds"]
    lrs = {m: (v[0], v[-1]) for m, v in lrs.items()}
  name = args.name or ("front_quick" if args.quick else
                       "front" if args.epochs == 20 else f"front_e{args.epochs}")
  parts = args.out / name
  # What the folder should hold, not only this invocation's part: the required
  # methods and those asked for (render adds any other with a finished chunk),
  # on the default seeds and those asked for.
  expected = ((*REQUIRED, *(m for m in args.methods if m not in REQUIRED)),
              tuple(sorted({*(QUICK["seeds"] if args.quick else SEEDS), *args.seeds})))
  if args.render:
    result = render(parts, *expected)
    common.write_json(args.out / f"{name}.json", result)
    plot(result, args.out / f"{name}.png")
    print_report(result)
    print(f"wrote {args.out / name}.json and .png")
    return 0
  common.cpu_speed_flags()
  settings = {"dataset": dataset, "model": "lenet5_small", "epochs": args.epochs,
              "milestones_epochs": list(args.milestones), "gamma": 0.1, "batch_size": 128,
              "crop": args.crop, "regularizer": "group_lasso, input-unit groups",
              "augmentation": f"random crop, {args.crop}-pixel zero padding, no flip",
              "reported_point": "RMDA: Z (rj.structured_params); the others: the iterate"}
  train, x_test, y_test, note = split_data(dataset, args.quick)
  settings["data"] = note
  machine = common.machine_info()
  machine["load_average_start"] = common.load_average()
  ckpt_dir = None if args.quick else args.ckpt_dir
  rpp = args.runs_per_program
  if rpp is None and jax.default_backend() == "cpu":
    rpp = 1  # XLA:CPU: the vmapped step costs more per run than one run's (bench_sweep)
  elif rpp == 0:
    rpp = None
  for seed in args.seeds:
    for method in args.methods:
      path = parts / f"{chunk_name(method, seed, lrs[method])}.json"
      if path.exists():
        print(f"  {path.stem}: done, skipped")
        continue
      lock = None if ckpt_dir is None else common.claim(ckpt_dir / f"{name}_{path.stem}.lock")
      if lock is False:
        print(f"  {path.stem}: being trained by another process, skipped")
        continue
      t0 = time.perf_counter()
      try:
        rec = run_chunk(method, seed, lrs[method], args.lams, settings,
                        (train, x_test, y_test), path, ckpt_dir, machine, runs_per_program=rpp)
      finally:
        if lock is not None:
          lock.unlink(missing_ok=True)
      print(f"  {path.stem}: {len(rec['runs'])} runs in {time.perf_counter() - t0:.0f}s "
            f"(compile {rec['compile_s']:.0f}s) -> {path}", flush=True)
  result = render(parts, *expected)
  common.write_json(args.out / f"{name}.json", result)
  plot(result, args.out / f"{name}.png")
  print_report(result)
  return 0


if __name__ == "__main__":
  sys.exit(main())
