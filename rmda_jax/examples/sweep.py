"""Many runs in one compiled program: ``rmda-train`` with comma lists.

``rmda-train --dataset digits --strength 1e-4,1e-3 --lr 0.1,0.3 --seed 0,1``
trains the Cartesian product of the lists (8 runs) as **one** jitted step:
the step of one run (:func:`rmda_jax.examples.train.make_train_step`) is
applied over a leading run axis of the parameters, the optimizer state, the
data order and the augmentation key (``jax.vmap`` on accelerators; one copy
of the step per run in the program on XLA:CPU, where vmapped convolutions
are slow: :func:`over_runs`, ``--batching``), and over the per-run
hyperparameters: the learning rate, the momentum (RMDA's ``c``), the
regularizer's strength (a pytree leaf of every ``rmda_jax`` regularizer, so
it can be traced) and the seed (which sets the initialization, the data
order and the augmentation, as for a single run). Each run gets exactly the
updates it would get trained alone, up to float32 rounding (the batched
kernels may sum in another order): ``tests/test_examples_sweep.py`` checks
that.

What it writes, under ``--output-dir``:

* ``<run name>/metrics.jsonl`` and ``<run name>/summary.json`` per run, with
  the rows and keys of a single run (the run name lists the swept values,
  e.g. ``lr0.1_strength0.001_seed0``);
* ``sweep.json``: one row per run (its settings, test accuracy, group
  sparsity, weighted group sparsity) and which runs lie on the
  accuracy / weighted-group-sparsity Pareto front;
* with ``--plot``, ``sweep_front.png``: every run and the front.

A sweep too large for the device's memory is split into chunks of runs that
train one after another (each chunk one program; ``--runs-per-program``
sets the size), or refused with the memory one run needs when even one run
does not fit. ``--resume``, ``--slim`` and ``--mesh`` / multi-process runs
are single-run features: a sweep refuses them (one line, exit status 2).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import time
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import rmda_jax as rj
from rmda_jax.examples import config as config_lib
from rmda_jax.examples import data as data_lib
from rmda_jax.examples import report
from rmda_jax.examples import train as train_lib
from rmda_jax.examples._files import write_json
from rmda_jax.examples.config import Config
from rmda_jax.examples.models import get_model

# flag -> Config field: the values one program can differ in.
SWEEPABLE = {"--lr": "lr", "--momentum": "momentum", "--strength": "strength",
             "--l1-strength": "l1_strength", "--seed": "seed"}
# Single-run features a sweep refuses: (Config field, flag, its value when off).
_SINGLE_RUN_ONLY = (("resume", "--resume", False), ("slim", "--slim", False),
                    ("mesh", "--mesh", None), ("coordinator", "--coordinator", None),
                    ("num_processes", "--num-processes", None),
                    ("process_id", "--process-id", None))


class Sweep(NamedTuple):
  """The runs of one ``rmda-train`` command.

  Attributes:
    base: the configuration shared by every run (the first value of each list).
    runs: one :class:`Config` per run, in the order of the Cartesian product.
    names: each run's directory name under ``--output-dir``.
    swept: the fields that take several values, in flag order.
  """
  base: Config
  runs: tuple[Config, ...]
  names: tuple[str, ...]
  swept: tuple[str, ...]


def _split_lists(argv: Sequence[str]) -> tuple[list[str], dict[str, list[str]]]:
  """``argv`` with each sweepable flag's first value, and every flag's values."""
  argv, out, lists, i = list(argv), [], {}, 0
  while i < len(argv):
    arg = argv[i]
    flag, eq, value = arg.partition("=")
    if flag in SWEEPABLE and (eq or i + 1 < len(argv)):
      if not eq:
        i += 1
        value = argv[i]
      values = [v.strip() for v in value.split(",")]
      lists[flag] = values
      out.append(f"{flag}={values[0]}")
    else:
      out.append(arg)
    i += 1
  return out, lists


def parse_sweep(argv=None, parser: argparse.ArgumentParser | None = None) -> Sweep:
  """The runs of ``argv``: one, or the Cartesian product of the comma lists.

  Every value is checked as the flag checks a single value; a usage problem
  exits with status 2 and one line naming the flag.
  """
  import sys  # noqa: PLC0415 (argv default, as argparse)
  argv = sys.argv[1:] if argv is None else list(argv)
  parser = parser or config_lib.build_parser()
  first, lists = _split_lists(argv)
  base = config_lib.parse_args(first)
  swept = tuple(SWEEPABLE[f] for f in SWEEPABLE if len(lists.get(f, ())) > 1)
  values = {}
  for flag, texts in lists.items():
    field = SWEEPABLE[flag]
    if len(set(texts)) != len(texts):
      parser.error(f"argument {flag}: a value is repeated in {','.join(texts)}")
    parse = config_lib._flag_type(field)  # noqa: SLF001 (the flag's own check)
    try:
      values[field] = [parse(t) for t in texts]
    except argparse.ArgumentTypeError as e:
      parser.error(f"argument {flag}: {e}")
  if not swept:
    return Sweep(base, (base,), ("",), ())
  for field, flag, off in _SINGLE_RUN_ONLY:
    if getattr(base, field) != off:
      parser.error(f"argument {flag}: not with a sweep (several values of "
                   f"{', '.join(config_lib.flag_of(f) for f in swept)}); "
                   "train that run alone")
  runs, names = [], []
  texts = {SWEEPABLE[f]: t for f, t in lists.items()}
  for combo in itertools.product(*(range(len(values[f])) for f in swept)):
    changes = {f: values[f][j] for f, j in zip(swept, combo)}
    try:
      runs.append(dataclasses.replace(base, **changes))
    except config_lib.ConfigError as e:
      parser.error(f"argument {config_lib.flag_of(e.field)}: {e.reason}")
    names.append("_".join(f"{f}{texts[f][j]}" for f, j in zip(swept, combo)))
  return Sweep(base, tuple(runs), tuple(names), swept)


# --------------------------------------------------------------------------
# The program


class Hyper(NamedTuple):
  """The per-run values of one program, each shaped ``(runs,)``."""
  lr: jax.Array
  momentum: jax.Array | None
  strength: jax.Array
  l1_strength: jax.Array | None


def _hyper(runs: Sequence[Config]) -> Hyper:
  dtype = jnp.result_type(float)
  base = runs[0]
  return Hyper(
      lr=jnp.asarray([c.learning_rate for c in runs], dtype),
      momentum=(None if base.momentum_value is None
                else jnp.asarray([c.momentum_value for c in runs], dtype)),
      strength=jnp.asarray([c.strength for c in runs], dtype),
      l1_strength=(None if base.l1_strength is None
                   else jnp.asarray([c.l1_strength for c in runs], dtype)))


def stack(trees: Sequence[Any]) -> Any:
  """Pytrees of the same structure stacked along a new leading (run) axis."""
  return jax.tree.map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]), *trees)


def take(tree: Any, k: int) -> Any:
  """Run ``k`` of a stacked pytree."""
  return jax.tree.map(lambda x: x[k], tree)


def take_first(tree: Any) -> Any:
  """The first run of a stacked pytree, its run axis kept (length 1)."""
  return jax.tree.map(lambda x: x[:1], tree)


BATCHINGS = ("auto", "vmap", "unroll")


def over_runs(f, in_axes, batching: str):
  """``f`` of one run applied to every run of stacked arguments, in one program.

  ``"vmap"``: ``jax.vmap``, the runs' arrays batched together (what
  accelerators want). ``"unroll"``: one copy of ``f`` per run in the same
  compiled program: on XLA:CPU a vmapped convolution with a batched kernel
  becomes a grouped convolution, about 3x slower per run than the runs'
  own convolutions (LeNet5 on digits, 8 runs: 181 ms per run-step vmapped,
  56 ms unrolled, 22-48 ms alone, on the loaded 2-core CPU of
  ``benchmarks/results/sweep_throughput.json``), while the unrolled program
  compiles in about K times a single run's time. ``in_axes``: 0 for an
  argument with a run axis, None for one every run shares.
  """
  if batching == "vmap":
    return jax.vmap(f, in_axes=in_axes)

  def unrolled(*args):
    k = next(jax.tree.leaves(a)[0].shape[0] for a, ax in zip(args, in_axes) if ax == 0)
    outs = [f(*(take(a, r) if ax == 0 else a for a, ax in zip(args, in_axes)))
            for r in range(k)]
    return jax.tree.map(lambda *xs: jnp.stack(xs), *outs)
  return unrolled


def resolve_batching(batching: str) -> str:
  """``"auto"``: ``"unroll"`` on XLA:CPU, ``"vmap"`` on accelerators."""
  if batching not in BATCHINGS:
    raise ValueError(f"batching must be one of {BATCHINGS}, got {batching!r}")
  if batching == "auto":
    return "unroll" if jax.default_backend() == "cpu" else "vmap"
  return batching


class Program:
  """The jitted steps of the runs ``runs`` in one program (same model, data, optimizer kind).

  Args:
    base: the configuration the runs share (model, dataset, optimizer,
      regularizer kind, schedule, batch size, epochs).
    ds: the dataset.
    steps_per_epoch: updates per epoch.
    augment: ``(key, x) -> x`` applied to each batch before normalisation
      (e.g. ``functools.partial(data.random_crop, padding=2)``), in place of
      the dataset's own augmentation; None: ``ds.augment`` decides, as in a
      single run.
    batching: how one program holds the runs (:func:`over_runs`): ``"vmap"``,
      ``"unroll"`` or ``"auto"`` (``"unroll"`` on CPU, ``"vmap"`` elsewhere).
  """

  def __init__(self, base: Config, ds: data_lib.Dataset, steps_per_epoch: int,
               augment=None, batching: str = "auto"):
    self.base, self.ds, self.steps = base, ds, steps_per_epoch
    self.batching = batching = resolve_batching(batching)
    model = get_model(base.model, ds.num_classes, nnx.Rngs(base.seed), ds.input_shape)
    self.parts = train_lib.split_model(model)
    _, self.metric_reg = train_lib.build_regularizers(base)
    norm_stats = (ds.scale, ds.mean, ds.std)
    in_loss = base.optimizer in ("sgd", "madgrad") and base.regularizer != "none"

    def reg_of(hp: Hyper):
      return train_lib.build_regularizers(base, hp.strength, hp.l1_strength)[0]

    def tx_of(hp: Hyper):
      return train_lib.build_optimizer(base, reg_of(hp), steps_per_epoch, lr=hp.lr,
                                       momentum=hp.momentum)

    def init(hp, params):
      opt_state = tx_of(hp).init(params)
      return jax.tree.map(lambda x: jnp.array(x, copy=True), opt_state)

    def step(hp, state, loss_sum, x_all, y_all, perm, i, key):
      one = train_lib.make_train_step(
          self.parts.graphdef_train, tx_of(hp),
          regularizer_in_loss=reg_of(hp).value if in_loss else None,
          augment=ds.augment and augment is None, norm_stats=norm_stats)
      if augment is None:
        return one(state, loss_sum, x_all, y_all, perm, i, key)
      idx = perm[i]  # the batch, augmented here, then taken whole by the step
      x = augment(jax.random.fold_in(key, i), x_all[idx])
      return one(state, loss_sum, x[None], y_all[idx][None], jnp.zeros((1,), jnp.int32),
                 0, key)

    eval_one = train_lib.make_eval_step(self.parts.graphdef_eval, norm_stats)

    def reported(state):
      if base.optimizer in ("rmda", "ramda"):
        return rj.structured_params(state.opt_state)
      return state.params

    def psi(hp, params):
      reg = reg_of(hp)
      return jnp.zeros(()) if reg is None else reg.value(params)

    self.init = jax.jit(over_runs(init, (0, 0), batching))
    self.step = jax.jit(over_runs(step, (0, 0, 0, None, None, 0, None, 0), batching),
                        donate_argnums=(1, 2))
    self.eval_step = jax.jit(over_runs(eval_one, (0, 0, None, None, None, None), batching))
    self.reported = jax.jit(over_runs(reported, (0,), batching))
    self.psi = jax.jit(over_runs(psi, (0, 0), batching))

  def init_state(self, runs: Sequence[Config], hp: Hyper) -> train_lib.TrainState:
    """The stacked states of ``runs`` before their first step (each from its seed)."""
    by_seed = {}
    for c in runs:
      if c.seed not in by_seed:
        model = get_model(c.model, self.ds.num_classes, nnx.Rngs(c.seed), self.ds.input_shape)
        by_seed[c.seed] = train_lib.split_model(model)
    params = stack([by_seed[c.seed].params for c in runs])
    stats = stack([by_seed[c.seed].batch_stats for c in runs])
    return train_lib.TrainState(params, stats, self.init(hp, params))

  def evaluate(self, params, batch_stats, x, y) -> tuple[np.ndarray, np.ndarray]:
    """Per-run (mean loss, accuracy) over ``x, y``, in batches of one shape."""
    n, b = len(y), train_lib.EVAL_BATCH
    steps = -(-n // b)
    idx = np.arange(steps * b) % n
    weight = (np.arange(steps * b) < n).astype(np.float32)
    outs = [self.eval_step(params, batch_stats, x, y, idx[i * b:(i + 1) * b],
                           weight[i * b:(i + 1) * b]) for i in range(steps)]
    loss = sum(np.asarray(l, np.float64) for l, _ in outs)
    correct = sum(np.asarray(c, np.float64) for _, c in outs)
    return loss / n, correct / n

  def compile_step(self, template: train_lib.TrainState, k: int, data):
    """The step of ``k`` runs, compiled ahead of time (``template``: one run's
    stacked state, for the shapes); call it as the jitted step."""
    spec = lambda x: jax.ShapeDtypeStruct((k,) + x.shape[1:], x.dtype)  # noqa: E731
    state = jax.tree.map(spec, template)
    hp = jax.tree.map(lambda x: jax.ShapeDtypeStruct((k,), x.dtype),
                      _hyper(self.runs_like(1)))
    keys = jax.eval_shape(lambda: jnp.stack([jax.random.key(0)] * k))
    perm = jax.ShapeDtypeStruct((k, self.steps, self.base.batch_size), jnp.int32)
    return self.step.lower(hp, state, jax.ShapeDtypeStruct((k,), jnp.float32),
                           data[0], data[1], perm, np.int32(0), keys).compile()

  def runs_like(self, k: int) -> list[Config]:
    return [self.base] * k


def program_bytes(compiled, shared: int) -> int:
  """Device memory a compiled step needs beyond the ``shared`` bytes (the
  dataset), from XLA's memory analysis (0 where the backend has none)."""
  try:
    mem = compiled.memory_analysis()
  except (NotImplementedError, RuntimeError):
    mem = None
  if mem is None:
    return 0
  total = (mem.argument_size_in_bytes + mem.output_size_in_bytes
           + mem.temp_size_in_bytes - mem.alias_size_in_bytes)
  return max(int(total) - shared, 0)


def device_memory_bytes() -> int:
  """What the default device can hold: the accelerator's limit, or on CPU half the RAM."""
  stats = None
  try:
    stats = jax.devices()[0].memory_stats()
  except (NotImplementedError, RuntimeError):
    stats = None
  if stats and stats.get("bytes_limit"):
    return int(stats["bytes_limit"])
  return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[bool]:
  """Which points no other point dominates (higher or equal in both, higher in one)."""
  front = []
  for i, (a, s) in enumerate(points):
    dominated = any(b >= a and t >= s and (b > a or t > s)
                    for j, (b, t) in enumerate(points) if j != i)
    front.append(not dominated)
  return front


def _run_row(cfg: Config, name: str, summary: dict) -> dict:
  return {"name": name, "lr": cfg.learning_rate, "momentum": cfg.momentum_value,
          "strength": cfg.strength, "l1_strength": cfg.l1_strength, "seed": cfg.seed,
          "test_accuracy": summary["test_accuracy"],
          "group_sparsity": summary["group_sparsity"],
          "weighted_group_sparsity": summary["weighted_group_sparsity"]}


def _write_front_plot(rows: list[dict], path: Path) -> None:
  import matplotlib  # noqa: PLC0415
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # noqa: PLC0415
  fig, ax = plt.subplots(figsize=(5.5, 4))
  xs = [100 * r["weighted_group_sparsity"] for r in rows]
  ys = [100 * r["test_accuracy"] for r in rows]
  ax.scatter(xs, ys, s=14, c="0.6", label="runs")
  front = sorted((x, y) for x, y, r in zip(xs, ys, rows) if r["pareto"])
  ax.plot([p[0] for p in front], [p[1] for p in front], "o-", c="C3", label="Pareto front")
  ax.set_xlabel("weighted group sparsity (%)")
  ax.set_ylabel("test accuracy (%)")
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def train_sweep(sweep: Sweep, *, log=print, runs_per_program: int | None = None) -> dict:
  """Trains every run of ``sweep`` in as few compiled programs as memory allows.

  Args:
    sweep: from :func:`parse_sweep`, with more than one run.
    log: where the progress lines go.
    runs_per_program: runs per compiled program; None: as many as fit in
      the device's memory (:func:`device_memory_bytes`).

  Returns:
    The content of ``sweep.json``. Also returns, under ``"_states"``, the
    final state of every run (not written).

  Raises:
    config.UsageError: the output directory cannot be made, the batch is
      larger than the training set, or one run does not fit in memory.
    data.DatasetError: the dataset is missing, unreadable or refused.
  """
  base, out = sweep.base, Path(sweep.base.output_dir)
  try:
    out.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise config_lib.UsageError(f"--output-dir {out}: {e.strerror or e}") from None
  t_start = time.perf_counter()
  ds = train_lib.prepare_data(base)
  steps = len(ds.y_train) // base.batch_size
  if steps == 0:
    raise config_lib.UsageError(
        f"--batch-size {base.batch_size} exceeds the {len(ds.y_train)} training samples")
  program = Program(base, ds, steps, batching=base.batching)
  data = (jax.device_put(ds.x_train), jax.device_put(ds.y_train),
          jax.device_put(ds.x_test), jax.device_put(ds.y_test))
  k_all = len(sweep.runs)
  template = program.init_state(sweep.runs[:1], _hyper(sweep.runs[:1]))
  shared = sum(int(a.nbytes) for a in data)
  limit = device_memory_bytes()
  runs_per_program = runs_per_program or base.runs_per_program
  size = k_all if runs_per_program is None else min(runs_per_program, k_all)
  compiled = program.compile_step(template, size, data)
  need = program_bytes(compiled, shared)
  per_run = max(need // size, 1)
  if runs_per_program is None and need > 0.8 * (limit - shared):
    fit = int(0.8 * (limit - shared) // per_run)
    if fit < 1:
      raise config_lib.UsageError(
          f"one run needs about {per_run / 2**20:.0f} MiB of device memory, more than "
          f"the {(limit - shared) / 2**20:.0f} MiB available: lower --batch-size or use a "
          "smaller --model")
    size = fit
    compiled = program.compile_step(template, size, data)
  runs_per_program = size
  program.compiled = {size: compiled}
  chunks = [range(i, min(i + runs_per_program, k_all))
            for i in range(0, k_all, runs_per_program)]
  log(f"{k_all} runs of {base.model} on {base.dataset} ({base.optimizer}, "
      f"{base.regularizer}; swept: {', '.join(sweep.swept)}) in {len(chunks)} "
      f"program(s) of up to {runs_per_program} runs (about {per_run / 2**20:.1f} MiB "
      f"of device memory each); {steps} steps/epoch")
  rows, states = [], []
  for chunk in chunks:
    runs = [sweep.runs[k] for k in chunk]
    names = [sweep.names[k] for k in chunk]
    summaries, final = _train_chunk(program, runs, names, data, out, log)
    states.append(final)
    rows += [_run_row(c, n, s) for c, n, s in zip(runs, names, summaries)]
  front = pareto_front([(r["test_accuracy"], r["weighted_group_sparsity"]) for r in rows])
  for r, f in zip(rows, front):
    r["pareto"] = f
  result = {
      "config": dataclasses.asdict(base),
      "swept": list(sweep.swept),
      "runs": rows,
      "pareto_front": [r["name"] for r in rows if r["pareto"]],
      "runs_per_program": runs_per_program,
      "programs": len(chunks),
      "batching": program.batching,
      "bytes_per_run": per_run,
      "device": jax.devices()[0].device_kind,
      "wall_time_s": time.perf_counter() - t_start,
  }
  write_json(out / "sweep.json", result)
  if base.plot:
    _write_front_plot(rows, out / "sweep_front.png")
  log("")
  log(f"{'run':<{max(len(r['name']) for r in rows)}}  test acc  group sp.  weighted  front")
  for r in rows:
    log(f"{r['name']:<{max(len(q['name']) for q in rows)}}  "
        f"{report.fmt_pct(r['test_accuracy']):>8}  {report.fmt_pct(r['group_sparsity']):>9}"
        f"  {report.fmt_pct(r['weighted_group_sparsity']):>8}  {'*' if r['pareto'] else ''}")
  log(f"wrote {out / 'sweep.json'} and each run's metrics.jsonl and summary.json"
      + (f", {out / 'sweep_front.png'}" if base.plot else ""))
  result["_states"] = states
  return result


def _train_chunk(program: Program, runs: list[Config], names: list[str], data, out: Path,
                 log) -> tuple[list[dict], train_lib.TrainState]:
  """Trains ``runs`` as one program; writes each run's metrics and summary."""
  base, steps = program.base, program.steps
  t_start = time.perf_counter()
  hp = _hyper(runs)
  state = program.init_state(runs, hp)
  x_train, y_train, x_test, y_test = data
  data_keys = [np.asarray(jax.random.key_data(jax.random.key(c.seed))) for c in runs]
  aug_keys = [jax.random.key(c.seed + 1) for c in runs]
  dirs = [out / n for n in names]
  for d in dirs:
    d.mkdir(parents=True, exist_ok=True)
    (d / "metrics.jsonl").write_text("")
  metric_reg = program.metric_reg

  def supports_of(rep):
    return [rj.group_support(take(rep, k), metric_reg) for k in range(len(runs))]

  support = supports_of(program.reported(state))
  rows = [[] for _ in runs]
  for epoch in range(base.epochs):
    perm = jnp.asarray(np.stack([
        train_lib.epoch_permutation(dk, epoch, len(program.ds.y_train), base.batch_size)
        for dk in data_keys]))
    keys = jnp.stack([jax.random.fold_in(k, epoch) for k in aug_keys])
    loss_sum = jnp.zeros((len(runs),), jnp.float32)
    t0 = time.perf_counter()
    step = program.compiled.get(len(runs))
    if step is None:  # the last, smaller chunk
      step = program.compiled[len(runs)] = program.compile_step(
          take_first(state), len(runs), data)
    for i in range(steps):
      state, loss_sum = step(hp, state, loss_sum, x_train, y_train, perm,
                             np.int32(i), keys)
    train_loss = np.asarray(loss_sum, np.float64) / steps
    train_time = time.perf_counter() - t0
    rep = program.reported(state)
    test_loss, test_acc = program.evaluate(rep, state.batch_stats, x_test, y_test)
    psi = np.asarray(program.psi(hp, rep), np.float64)
    acc_w = (program.evaluate(state.params, state.batch_stats, x_test, y_test)[1]
             if base.optimizer in ("rmda", "ramda") else None)
    new_support = supports_of(rep)
    for k, cfg in enumerate(runs):
      point = take(rep, k)
      row = {
          "epoch": epoch + 1,
          "train_loss": float(train_loss[k]),
          "psi": float(psi[k]),
          "objective": float(train_loss[k] + psi[k]),
          "test_loss": float(test_loss[k]),
          "test_accuracy": float(test_acc[k]),
          "group_sparsity": float(rj.group_sparsity(point, metric_reg)),
          "weighted_group_sparsity": float(rj.group_sparsity(point, metric_reg,
                                                             weighted=True)),
          "sparsity": float(rj.sparsity(point)),
          **train_lib.structure_fields(cfg, metric_reg, point),
          "support_changes": int(rj.support_changes(support[k], new_support[k])),
          "epoch_time_s": train_time,
          "runs_in_program": len(runs),
      }
      if acc_w is not None:
        row["test_accuracy_w"] = float(acc_w[k])
      rows[k].append(row)
      with open(dirs[k] / "metrics.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    support = new_support
    accs = [r[-1]["test_accuracy"] for r in rows]
    sps = [r[-1]["weighted_group_sparsity"] for r in rows]
    log(f"epoch {epoch + 1:3d}/{base.epochs}  {len(runs)} runs  test acc "
        f"{report.fmt_pct(min(accs))}-{report.fmt_pct(max(accs))}  weighted group sparsity "
        f"{report.fmt_pct(min(sps))}-{report.fmt_pct(max(sps))}  [{train_time:.1f}s train, "
        f"{len(runs) * steps * base.batch_size / train_time:.0f} samples/s over the runs]")
  summaries = []
  wall = time.perf_counter() - t_start
  for k, cfg in enumerate(runs):
    last = rows[k][-1]
    summary = {
        "config": dataclasses.asdict(cfg),
        "fingerprint": cfg.fingerprint(),
        "reported_point": train_lib._reported_point(cfg),  # noqa: SLF001
        "epochs": cfg.epochs,
        "num_params": sum(int(np.size(x)) for x in jax.tree.leaves(take(state.params, k))),
        **{key: last.get(key) for key in (
            "test_accuracy", "test_accuracy_w", "objective", "group_sparsity",
            "weighted_group_sparsity", "sparsity", "support_changes")},
        **{key: last[key] for key in ("rank", "full_rank", "regularized_sparsity")
           if key in last},
        "groups_kept": report.layer_groups(support[k]),
        "wall_time_s": wall,
        "runs_in_program": len(runs),
        "sweep": str(out / "sweep.json"),
    }
    write_json(dirs[k] / "summary.json", summary)
    summaries.append(summary)
  return summaries, state
