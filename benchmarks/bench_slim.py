"""Section 5: what slimming buys (``rmda_jax.slim``): parameters, multiply-adds, inference time.

Three models, each slimmed by ``rmda_jax.slim.slim`` (the channels that every
layer reading them has zeroed are removed; the slim model's outputs are
checked against the model's on the batch, or slim raises):

* **LeNet5 (small) trained by rmda-train's default run** (MNIST, group LASSO
  5e-4 on input groups, RMDA, 6 epochs, milestones 3 and 5), slimmed at its
  structured point Z, as ``rmda-train --slim`` does. The run is trained into
  ``--lenet-run`` (``runs/bench_slim/lenet5``, resumed if a checkpoint is
  there, so that a rerun only slims; any finished ``rmda-train`` output
  directory of the default configuration can be passed). Batch: the first
  ``--lenet-batch`` test images, normalised as rmda-train evaluates them.
* **VGG19-BN and ResNet50 (CIFAR shapes, 32x32x3)** with RMDA-like zero
  patterns: random weights (kernels N(0, 1/fan_in), BatchNorm statistics and
  offsets non-trivial), then in every layer but the first a fixed fraction of
  the *input groups* (kernel axis -2, what RMDA's group LASSO zeroes) set to
  zero, chosen independently per layer (seeded). A channel goes only when
  every reader zeroed it: in VGG19's chain each channel has one reader, in
  ResNet50 the residual stream's channels have one per block of the stage and
  mostly stay. Batch: ``--cifar-batch`` N(0, 1) images. BatchNorm in eval mode.

* **ViT (tiny, MNIST shapes, 28x28x1)**, the zoo's ``vit_tiny`` (2 pre-norm
  blocks of ``nnx.MultiHeadAttention``, 4 heads of 8, and a 64-unit MLP) with
  random weights and, in every block, the stated fraction of its heads and of
  its MLP hidden units zeroed as the coupled groups a heads-and-neurons group
  LASSO zeroes them (a head's query/key/value slices and biases and its rows of
  the output projection; a unit's column of ``fc1``, its bias and its row of
  ``fc2``), chosen independently per block (seeded). Slim removes exactly those
  heads and units; the residual stream (LayerNorm'd) keeps its width. Batch:
  ``--vit-batch`` N(0, 1) images.

Times: ``SlimReport`` (the jitted forward of each model, compiled and warmed
up, on the same batch, the two models' calls interleaved; median per batch).

Usage, from the repository root:
  python -m benchmarks.bench_slim --quick --out /tmp/slim   # < 2 minutes
  nice -n 10 python -m benchmarks.bench_slim                # results/slim.json
  nice -n 10 python -m benchmarks.bench_slim --models vit --update   # adds/replaces rows
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks import common
from rmda_jax import slim as slim_lib
from rmda_jax.examples import config
from rmda_jax.examples import models
from rmda_jax.examples import slimming
from rmda_jax.examples import train

FRACTIONS = (0.5, 0.65)
VIT_SHAPE = (28, 28, 1)


def lenet_run(run_dir: Path, epochs: int | None, dataset: str, quick: bool):
  """Trains (or resumes) rmda-train's default run; returns its config, summary, model, data."""
  argv = ["--output-dir", str(run_dir), "--resume", "--no-progress", "--dataset", dataset]
  if epochs is not None:
    argv += ["--epochs", str(epochs)]
  if quick:   # one epoch on digits: just the pipeline
    argv += ["--batch-size", "32", "--milestones", "none", "--lr", "1.0", "--strength", "3e-3"]
  cfg = config.parse_args(argv)
  t0 = time.perf_counter()
  summary = train.train(cfg, log=lambda s: print(f"  [rmda-train] {s}", flush=True))
  train_wall = time.perf_counter() - t0
  ds = train.prepare_data(cfg)
  trainer = train.Trainer(cfg, ds, len(ds.y_train) // cfg.batch_size)
  ckpt = train.Checkpointer(run_dir / "checkpoints")
  try:
    epoch = ckpt.latest_epoch()
    state, _ = ckpt.restore(epoch, trainer.init_state(), np.zeros(2, np.uint32))
  finally:
    ckpt.close()
  return cfg, summary, epoch, train_wall, slimming.trained_model(trainer, state), ds


def random_model(name: str, input_shape, rng, **kw):
  """A zoo model with random NumPy values (no XLA compilation to initialise it), eval mode."""
  abstract = nnx.eval_shape(lambda: models.MODELS[name](10, rngs=nnx.Rngs(0),
                                                        input_shape=input_shape, **kw))
  graphdef, state = nnx.split(abstract)

  def draw(path, leaf):
    what, shape = str(path[-2].key), leaf.shape
    if what == "kernel":
      v = rng.normal(size=shape) / np.sqrt(math.prod(shape[:-1]))
    elif what in ("scale", "var"):
      v = rng.uniform(0.5, 1.5, shape)
    else:
      v = rng.normal(0.0, 0.1, shape)
    return jnp.asarray(v, leaf.dtype)
  model = nnx.merge(graphdef, jax.tree_util.tree_map_with_path(draw, state))
  model.eval()
  return model


# The layer reading the images (its input groups are the data's own channels, which
# slim keeps unless prune_inputs): left dense.
FIRST_LAYER = {"vgg19_bn": "features/0/conv", "resnet50": "conv1"}


def _natural(name: str):
  """Sort key: ``blocks/2/conv1`` before ``blocks/10/conv1``."""
  return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in name.split("/")]


def zero_input_groups(model, fraction: float, rng, first: str) -> dict:
  """Zeroes ``round(fraction * n)`` of the n input groups of every kernel but ``first``'s.

  Returns ``{layer: [zeroed, n]}``.
  """
  kernels = {"/".join(map(str, path)): module.kernel for path, module in nnx.iter_modules(model)
             if isinstance(getattr(module, "kernel", None), nnx.Variable)}
  if first not in kernels:
    raise ValueError(f"no layer {first!r} in the model")
  done = {}
  for name in sorted(kernels, key=_natural):
    if name == first:
      continue
    k = np.array(kernels[name][...])
    n = k.shape[-2]
    rows = rng.choice(n, int(round(fraction * n)), replace=False)
    k[..., rows, :] = 0.0
    kernels[name][...] = jnp.asarray(k)
    done[name] = [len(rows), n]
  return done


def zero_heads_and_units(model, fraction: float, rng) -> dict:
  """Zeroes ``round(fraction * n)`` heads and MLP units of every block, as coupled groups.

  A head: its slices of the query, key and value kernels and biases (heads
  axis) and its rows of the output projection; a unit: its column of ``fc1``,
  its bias entry and its row of ``fc2``. Returns ``{block: {"heads": [zeroed,
  n], "units": [zeroed, n]}}``.
  """
  done = {}
  for i, b in enumerate(model.blocks):
    attn, n_heads, n_units = b.attn, b.attn.num_heads, b.fc1.kernel.shape[1]
    heads = rng.choice(n_heads, int(round(fraction * n_heads)), replace=False)
    units = rng.choice(n_units, int(round(fraction * n_units)), replace=False)
    for proj in (attn.query, attn.key, attn.value):
      proj.kernel[...] = proj.kernel[...].at[:, heads].set(0.0)
      if proj.bias is not None:
        proj.bias[...] = proj.bias[...].at[heads].set(0.0)
    attn.out.kernel[...] = attn.out.kernel[...].at[heads].set(0.0)
    b.fc1.kernel[...] = b.fc1.kernel[...].at[:, units].set(0.0)
    if b.fc1.bias is not None:
      b.fc1.bias[...] = b.fc1.bias[...].at[units].set(0.0)
    b.fc2.kernel[...] = b.fc2.kernel[...].at[units].set(0.0)
    done[f"blocks/{i}"] = {"heads": [len(heads), n_heads], "units": [len(units), n_units]}
  return done


def heads_and_units(model) -> tuple[int, int]:
  """Attention heads (``nnx.MultiHeadAttention``) and MLP hidden units (``fc1``) of a ViT."""
  heads = sum(m.num_heads for _, m in nnx.iter_modules(model)
              if isinstance(m, nnx.MultiHeadAttention))
  units = sum(int(b.fc1.kernel.shape[1]) for b in getattr(model, "blocks", ())
              if hasattr(b, "attn") and hasattr(b, "fc1"))
  return heads, units


def _zoo_name(row: dict) -> str:
  """The zoo model of a results row (its label's first word): what --update replaces."""
  return row["model"].split(",")[0].split()[0]


def measure(label: str, model, x, timing_runs: int, extra: dict) -> dict:
  """Slims ``model`` on ``x``; the report's totals, times and channels as a row."""
  load = common.load_average()
  t0 = time.perf_counter()
  result = slim_lib.slim(model, x, timing_runs=timing_runs)
  wall = time.perf_counter() - t0
  r = result.report
  print(f"\n{label}\n{r}", flush=True)
  before, after = slimming.layer_channels(model), slimming.layer_channels(result.model)
  transformer = {}
  if heads_and_units(model)[0]:
    (h0, u0), (h1, u1) = heads_and_units(model), heads_and_units(result.model)
    transformer = {"heads_before": h0, "heads_after": h1, "mlp_units_before": u0,
                   "mlp_units_after": u1}
  return {
      "model": label,
      **extra,
      "batch": r.batch_size,
      "params_before": r.params_before, "params_after": r.params_after,
      "macs_per_example_before": r.macs_before, "macs_per_example_after": r.macs_after,
      "ms_per_batch_before": 1e3 * r.seconds_before, "ms_per_batch_after": 1e3 * r.seconds_after,
      "speedup": r.seconds_before / r.seconds_after,
      "channels_before": sum(before.values()), "channels_after": sum(after.values()),
      **transformer,
      "timing_runs": r.timing_runs,
      "nothing_removed": r.nothing_removed,
      "load_average_start": load, "slim_wall_s": wall,
      "report": r.to_dict(),
  }


def main(argv=None) -> dict:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                               formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  ap.add_argument("--quick", action="store_true",
                  help="LeNet5 on digits for 1 epoch and a 2-block ResNet50 on 8x8 inputs, "
                       "2 timed runs (< 2 min; checks the pipeline)")
  ap.add_argument("--out", type=Path, default=common.RESULTS, help="output folder")
  ap.add_argument("--lenet-run", type=Path, default=None,
                  help="rmda-train output directory of the default run (trained there if "
                       "missing; default runs/bench_slim/lenet5, with --quick OUT/lenet5)")
  ap.add_argument("--lenet-epochs", type=int, default=None,
                  help="train fewer epochs than rmda-train's default 6 (say so)")
  ap.add_argument("--lenet-batch", type=int, default=1000,
                  help="test images in LeNet5's batch (rmda-train's evaluation batch)")
  ap.add_argument("--cifar-batch", type=int, default=32, help="batch of the CIFAR-shaped models")
  ap.add_argument("--fractions", type=float, nargs="+", default=FRACTIONS,
                  help="fractions of input groups zeroed per layer (VGG19-BN, ResNet50)")
  ap.add_argument("--models", nargs="+", default=("lenet5", "vgg19", "resnet50", "vit"),
                  choices=("lenet5", "vgg19", "resnet50", "vit"))
  ap.add_argument("--vit-batch", type=int, default=256, help="batch of the ViT (28x28x1)")
  ap.add_argument("--vit-runs", type=int, default=20, help="timed calls per model, ViT")
  ap.add_argument("--update", action="store_true",
                  help="keep the rows of OUT/slim.json for the models not measured now "
                       "(rows of the models measured are replaced)")
  ap.add_argument("--lenet-runs", type=int, default=50, help="timed calls per model, LeNet5")
  ap.add_argument("--cifar-runs", type=int, default=10, help="timed calls per model, CIFAR")
  ap.add_argument("--seed", type=int, default=0, help="seed of the weights and zero patterns")
  args = ap.parse_args(argv)
  common.cpu_speed_flags()   # rmda-train's XLA:CPU setting, before JAX starts its backend


  t_start = time.perf_counter()
  machine = {**common.machine_info(), "load_average_start": common.load_average()}
  q = args.quick
  fractions = args.fractions[:1] if q else args.fractions
  lenet_runs, cifar_runs = (2, 2) if q else (args.lenet_runs, args.cifar_runs)
  vit_runs, vit_batch = (2, 4) if q else (args.vit_runs, args.vit_batch)
  cifar_batch = 2 if q else args.cifar_batch
  rows, lenet = [], None
  if "lenet5" in args.models:
    run_dir = args.lenet_run or ((args.out / "lenet5") if q else
                                 common.ROOT / "runs" / "bench_slim" / "lenet5")
    print(f"LeNet5 (small): rmda-train{' (quick)' if q else ''} in {run_dir}", flush=True)
    cfg, summary, epoch, train_wall, model, ds = lenet_run(
        run_dir, 1 if q else args.lenet_epochs, "digits" if q else "mnist", q)
    x = slimming.example_batch(ds, args.lenet_batch)
    lenet = {
        "run_dir": str(run_dir), "epochs": epoch, "dataset": cfg.dataset,
        "config": {k: getattr(cfg, k) for k in ("model", "optimizer", "regularizer",
                                                 "strength", "groups", "lr", "momentum",
                                                 "milestones", "batch_size", "seed")},
        "test_accuracy": summary["test_accuracy"], "group_sparsity": summary["group_sparsity"],
        "weighted_group_sparsity": summary["weighted_group_sparsity"],
        "groups_kept": summary["groups_kept"],
        "wall_s_this_call": train_wall,
    }
    rows.append(measure(f"lenet5_small, trained (rmda-train, {cfg.dataset}, {epoch} epochs), Z",
                        model, x, lenet_runs,
                        {"input_shape": list(ds.input_shape), "zero_pattern": "trained (Z)",
                         "fraction_zeroed": None}))
  cifar = [m for m in ("vgg19", "resnet50") if m in args.models and not (q and m == "vgg19")]
  for name in cifar:
    zoo, shape = common.SHAPED_MODELS[name]
    kw = {}
    if q:
      shape, kw = (8, 8, 3), {"num_blocks": (1, 1)}
    for f in fractions:
      rng = np.random.default_rng([args.seed, int(1000 * f)])
      model = random_model(zoo, shape, rng, **kw)
      zeroed = zero_input_groups(model, f, rng, FIRST_LAYER[zoo])
      x = jnp.asarray(rng.normal(size=(cifar_batch, *shape)), jnp.float32)
      label = f"{zoo}{' (2 stages, 8x8)' if q else ''}, {100 * f:g}% of input groups zero"
      rows.append(measure(label, model, x, cifar_runs,
                          {"input_shape": list(shape), "zero_pattern": "random per layer",
                           "fraction_zeroed": f, "groups_zeroed": zeroed}))
  if "vit" in args.models:
    for f in fractions:
      rng = np.random.default_rng([args.seed, int(1000 * f), 21])
      model = random_model("vit_tiny", VIT_SHAPE, rng)
      zeroed = zero_heads_and_units(model, f, rng)
      x = jnp.asarray(rng.normal(size=(vit_batch, *VIT_SHAPE)), jnp.float32)
      rows.append(measure(f"vit_tiny, {100 * f:g}% of heads and MLP units zero", model, x,
                          vit_runs, {"input_shape": list(VIT_SHAPE),
                                     "zero_pattern": "random heads and units per block",
                                     "fraction_zeroed": f, "groups_zeroed": zeroed}))
  previous = None
  if args.update and (args.out / "slim.json").exists():
    previous = json.loads((args.out / "slim.json").read_text())
    measured = {_zoo_name(r) for r in rows}
    kept = [r for r in previous["results"] if _zoo_name(r) not in measured]
    for r in kept:   # rows written before the load-average key had one name
      if "load_average_before" in r:
        r["load_average_start"] = r.pop("load_average_before")
    rows = kept + rows
  table = [{
      "model": r["model"], "batch": r["batch"],
      "params": f"{r['params_before']:,} -> {r['params_after']:,}",
      "params kept": f"{100 * r['params_after'] / r['params_before']:.1f}%",
      "MACs/example": f"{r['macs_per_example_before']:,} -> {r['macs_per_example_after']:,}",
      "MACs kept": f"{100 * r['macs_per_example_after'] / r['macs_per_example_before']:.1f}%",
      "channels": f"{r['channels_before']:,} -> {r['channels_after']:,}",
      "ms/batch": f"{r['ms_per_batch_before']:.2f} -> {r['ms_per_batch_after']:.2f}",
      "speedup": f"{r['speedup']:.2f}x",
  } for r in rows]
  out = {
      "machine": machine,
      "load_average_end": common.load_average(),
      "quick": q,
      "wall_seconds": time.perf_counter() - t_start,
      "settings": {
          "lenet5": ("rmda-train's default run (LeNet5 small, MNIST, group LASSO 5e-4 on input "
                     "groups, RMDA lr 0.3 c 0.1, milestones 3, 5), slimmed at Z"
                     if not q else "quick: digits, 1 epoch"),
          "lenet_batch": rows[0]["batch"] if lenet else args.lenet_batch,
          "cifar_models": ("random weights; in every layer but the first, the stated fraction "
                           "of input groups (kernel axis -2) zeroed, chosen independently per "
                           f"layer (seed {args.seed})"),
          "cifar_batch": cifar_batch,
          "timing": ("SlimReport: jitted forward, compiled and warmed up, same batch, the two "
                     "models' calls interleaved, median per batch"),
          "vit": ("vit_tiny (2 blocks, 4 heads of 8, MLP 64, 28x28x1), random weights; in "
                  "every block the stated fraction of heads and of MLP units zeroed as coupled "
                  f"groups, chosen independently per block (seed {args.seed})"),
          "vit_batch": vit_batch,
          "lenet_timing_runs": lenet_runs, "cifar_timing_runs": cifar_runs,
          "vit_timing_runs": vit_runs,
          "outputs": "slim checks the slim model's outputs against the model's on the batch",
      },
      "lenet5_run": lenet if lenet or previous is None else previous.get("lenet5_run"),
      "table": table,
      "results": rows,
  }
  if previous is not None:   # the header stays the full run's; this run is listed in updates
    out["settings"] = {**previous.get("settings", {}), **out["settings"]}
    this = {k: out[k] for k in ("machine", "load_average_end", "wall_seconds")}
    out.update({k: previous[k] for k in this if k in previous})
    out["updates"] = [*previous.get("updates", []), {"models": list(args.models), **this}]
  path = args.out / "slim.json"
  common.write_json(path, out)
  print(f"\nwrote {path} ({(time.perf_counter() - t_start) / 60:.1f} min; load average "
        f"{machine['load_average_start']} -> {common.load_average()})")
  return out


if __name__ == "__main__":
  main()
