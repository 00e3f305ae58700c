"""``rmda-train``: train a structured-sparse network with RMDA or a baseline.

    rmda-train                                   # LeNet5 / MNIST / group LASSO / RMDA
    rmda-train --dataset digits --model mlp --epochs 3 --plot
    python -m rmda_jax.examples.train --help

The model is split once into pure pytrees (``nnx.split``: parameters and
BatchNorm statistics as plain dicts); the whole step (gather the batch from
the device-resident dataset, augment, forward, backward, optimizer update)
is one ``jax.jit`` call with donated buffers. Nothing is copied back to the
host per step; losses are summed on device and read once per epoch. On CPU,
``rmda-train`` limits XLA's YNNPACK library fusions to reductions before JAX
starts (``xla_flags.limit_ynn_fusions``; ``--ynn-fusions`` leaves jaxlib's
default): that took its LeNet5 epoch from 1.59x to 1.24x the time of the same
PyTorch loop on a 2-core machine.

Each epoch writes a line to ``metrics.jsonl`` and an Orbax checkpoint
(parameters, BatchNorm statistics, optimizer state, data-order key, epoch,
config fingerprint). ``--resume`` continues from it and reproduces the
uninterrupted run bit for bit.

Reported sparsity: for RMDA the point ``Z`` of the last update
(``rmda_jax.structured_params``), which is exactly structured even while
``c < 1``; for the other optimizers the iterate itself. Test accuracy and psi
are measured at the reported point (for RMDA the accuracy at ``W`` is logged
too, as ``test_accuracy_w``). The objective is the mean of the epoch's
minibatch losses (taken at the iterates during the epoch, no extra pass over
the training set) plus psi at the reported point.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from rmda_jax.examples import config as config_lib
from rmda_jax.examples import xla_flags
from rmda_jax.examples.config import Config

EVAL_BATCH = 1000


class TrainState(NamedTuple):
  params: Any        # plain dict of nnx.Param values
  batch_stats: Any   # plain dict of nnx.BatchStat values ({} if none)
  opt_state: Any


# --------------------------------------------------------------------------
# Building blocks


def build_regularizers(cfg: Config):
  """(psi used by the optimizer / objective or None, regularizer that defines groups)."""
  import rmda_jax as rj

  groups = cfg.groups if cfg.groups in ("input", "output") else int(cfg.groups)
  if cfg.regularizer == "group_lasso":
    reg = rj.group_lasso(cfg.strength, groups=groups)
    return reg, reg
  # Group metrics still need groups: same grouping, any strength (value unused).
  metric_reg = rj.group_lasso(1.0, groups=groups)
  if cfg.regularizer == "l1":
    return rj.l1(cfg.strength), metric_reg
  return None, metric_reg


def build_optimizer(cfg: Config, reg, steps_per_epoch: int):
  """The optax transformation for ``cfg`` (milestones converted from epochs to updates)."""
  import optax
  import rmda_jax as rj

  lr, mom = cfg.learning_rate, cfg.momentum_value
  milestones = [m * steps_per_epoch for m in cfg.milestones]
  schedule = (optax.piecewise_constant_schedule(lr, {m: cfg.gamma for m in milestones})
              if milestones else lr)
  if cfg.optimizer == "rmda":
    if milestones:
      tx = rj.rmda_multistep(lr, mom, milestones, gamma=cfg.gamma, regularizer=reg)
    else:
      tx = rj.rmda(lr, mom, regularizer=reg)
  elif cfg.optimizer in ("prox_sgd", "prox_adam", "prox_ssi"):
    fn = getattr(rj, cfg.optimizer, None)
    if fn is None:
      raise SystemExit(f"rmda-train: error: this rmda_jax has no {cfg.optimizer} yet")
    kwargs = {} if mom is None else {"momentum": mom}
    if cfg.optimizer == "prox_sgd" and reg is not None:
      # prox_sgd's fixed points solve f + (1 - momentum) psi: scale the
      # strength so that it minimizes the objective this command reports.
      mu = 0.9 if mom is None else mom
      reg = reg.with_strength(reg.strength / (1 - mu))
    tx = fn(schedule, regularizer=reg, **kwargs)
  elif cfg.optimizer == "sgd":
    tx = optax.sgd(schedule, momentum=mom or None)
  elif cfg.optimizer == "madgrad":
    tx = optax.contrib.madgrad(schedule, momentum=mom)
  else:  # argparse's choices make this unreachable
    raise ValueError(cfg.optimizer)
  if cfg.weight_decay:
    tx = optax.chain(optax.add_decayed_weights(cfg.weight_decay), tx)
  return tx


def prepare_data(cfg: Config):
  from rmda_jax.examples import data as data_lib
  from rmda_jax.examples.models import CONVOLUTIONAL

  ds = data_lib.load_dataset(cfg.dataset, cfg.data_dir)
  if cfg.model in CONVOLUTIONAL and ds.input_shape[0] < 28:
    ds = data_lib.pad_images(ds, 28)  # digits 8x8 -> 28x28, the MNIST frame
  return ds


class Trainer:
  """Holds the jitted functions of one configuration; the state stays outside."""

  def __init__(self, cfg: Config, ds, steps_per_epoch: int):
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx
    from rmda_jax.examples import data as data_lib
    from rmda_jax.examples.models import get_model

    self.cfg, self.ds = cfg, ds
    self.reg, self.metric_reg = build_regularizers(cfg)
    self.tx = build_optimizer(cfg, self.reg, steps_per_epoch)
    model = get_model(cfg.model, ds.num_classes, nnx.Rngs(cfg.seed), ds.input_shape)
    model.train()
    self.graphdef_train, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    model.eval()
    self.graphdef_eval = nnx.graphdef(model)
    self.init_params = nnx.to_pure_dict(params)
    self.init_stats = nnx.to_pure_dict(stats)
    stats_norm = (ds.scale, ds.mean, ds.std)
    augment = ds.augment
    reg, tx = self.reg, self.tx
    # psi is handled by the prox of proximal methods; plain sgd/madgrad see it
    # as a (sub)gradient term of the loss.
    subgradient_psi = reg is not None and cfg.optimizer in ("sgd", "madgrad")
    gd_train, gd_eval = self.graphdef_train, self.graphdef_eval

    def forward(graphdef, params, stats, x):
      m = nnx.merge(graphdef, params, stats)
      logits = m(x)
      new_stats = nnx.to_pure_dict(nnx.state(m, nnx.BatchStat)) if stats else {}
      return logits, new_stats

    def train_step(state: TrainState, loss_sum, x_all, y_all, idx, epoch_key, i):
      x = x_all[idx]
      y = y_all[idx]
      if augment:
        x = data_lib.augment(jax.random.fold_in(epoch_key, i), x)
      x = data_lib.normalize(x, stats_norm)

      def loss_fn(p):
        logits, new_stats = forward(gd_train, p, state.batch_stats, x)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        total = loss + reg(p) if subgradient_psi else loss
        return total, (loss, new_stats)

      grads, (loss, new_stats) = jax.grad(loss_fn, has_aux=True)(state.params)
      updates, opt_state = tx.update(grads, state.opt_state, state.params)
      params = optax.apply_updates(state.params, updates)
      return TrainState(params, new_stats, opt_state), loss_sum + loss

    def eval_step(params, stats, x_all, y_all, idx, mask):
      x = data_lib.normalize(x_all[idx], stats_norm)
      y = y_all[idx]
      logits, _ = forward(gd_eval, params, stats, x)
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, y)
      correct = (jnp.argmax(logits, -1) == y)
      return jnp.sum(loss * mask), jnp.sum(correct * mask)

    self.train_step = jax.jit(train_step, donate_argnums=(0, 1))
    self.eval_step = jax.jit(eval_step)
    self.psi = jax.jit(lambda p: reg(p)) if reg is not None else (lambda p: 0.0)
    if cfg.optimizer == "rmda":
      import rmda_jax as rj
      self.reported = jax.jit(lambda s: rj.structured_params(s.opt_state, reg))
    else:
      self.reported = lambda s: s.params

  def init_state(self) -> TrainState:
    import jax
    import jax.numpy as jnp
    params = jax.tree.map(jnp.asarray, self.init_params)
    stats = jax.tree.map(jnp.asarray, self.init_stats)
    # Fresh buffers: some states start as the params themselves (madgrad's x0,
    # rmda's W0), and a buffer cannot be donated twice in one call.
    opt_state = jax.tree.map(lambda x: jnp.array(x, copy=True), self.tx.init(params))
    return TrainState(params, stats, opt_state)

  def evaluate(self, params, stats, x, y) -> tuple[float, float]:
    """(mean loss, accuracy) over device arrays ``x, y``, in eval mode."""
    n = len(y)
    steps = -(-n // EVAL_BATCH)
    idx = np.arange(steps * EVAL_BATCH) % n
    mask = (np.arange(steps * EVAL_BATCH) < n).astype(np.float32)
    loss, correct = 0.0, 0.0
    outs = [self.eval_step(params, stats, x, y, idx[i * EVAL_BATCH:(i + 1) * EVAL_BATCH],
                           mask[i * EVAL_BATCH:(i + 1) * EVAL_BATCH]) for i in range(steps)]
    for l, c in outs:
      loss += float(l)
      correct += float(c)
    return loss / n, correct / n


def epoch_permutation(data_key: np.ndarray, epoch: int, n: int, batch: int) -> np.ndarray:
  """The sample order of ``epoch`` (0-based): (steps, batch) indices, last partial batch dropped."""
  rng = np.random.default_rng([int(k) for k in np.asarray(data_key).ravel()] + [epoch])
  steps = n // batch
  return rng.permutation(n)[: steps * batch].reshape(steps, batch).astype(np.int32)


# --------------------------------------------------------------------------
# Checkpoints


class Checkpointer:
  """Orbax checkpoints in ``output_dir/checkpoints``, one per epoch (the last two kept)."""

  def __init__(self, directory: Path):
    import orbax.checkpoint as ocp
    self.ocp = ocp
    self.manager = ocp.CheckpointManager(
        directory.absolute(),
        options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True,
                                             enable_async_checkpointing=False))

  def latest_epoch(self) -> int | None:
    return self.manager.latest_step()

  def save(self, epoch: int, state: TrainState, data_key, meta: dict):
    ocp = self.ocp
    tree = {"state": state._asdict(), "data_key": np.asarray(data_key)}
    self.manager.save(epoch, args=ocp.args.Composite(
        arrays=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta)))
    self.manager.wait_until_finished()

  def read_meta(self, epoch: int) -> dict:
    ocp = self.ocp
    return self.manager.restore(epoch, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

  def restore(self, epoch: int, template: TrainState, data_key):
    import jax
    ocp = self.ocp
    tree = {"state": template._asdict(), "data_key": np.asarray(data_key)}
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
    out = self.manager.restore(epoch, args=ocp.args.Composite(
        arrays=ocp.args.StandardRestore(abstract)))["arrays"]
    return TrainState(**out["state"]), np.asarray(out["data_key"])

  def close(self):
    self.manager.close()


class ResumeError(RuntimeError):
  pass


# --------------------------------------------------------------------------
# Reporting


def _fmt_pct(x: float) -> str:
  return f"{100 * x:.2f}%"


def layer_groups(support) -> dict[str, str]:
  """{leaf path: "kept/total"} for the regularized kernels."""
  import jax
  from rmda_jax.regularizers import path_str
  out = {}
  for path, s in jax.tree_util.tree_flatten_with_path(support)[0]:
    if s is None:
      continue
    s = np.asarray(s)
    out[path_str(path)] = f"{int(s.sum())}/{s.size}"
  return out


def write_plot(rows: list[dict], path: Path) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  ep = [r["epoch"] for r in rows]
  fig, ax = plt.subplots(1, 3, figsize=(13, 3.6))
  ax[0].plot(ep, [100 * r["test_accuracy"] for r in rows], marker="o")
  ax[0].set(title="test accuracy", xlabel="epoch", ylabel="%")
  ax[1].plot(ep, [100 * r["group_sparsity"] for r in rows], marker="o", label="group")
  ax[1].plot(ep, [100 * r["weighted_group_sparsity"] for r in rows], marker="s", label="weighted group")
  ax[1].plot(ep, [100 * r["sparsity"] for r in rows], marker="^", label="unstructured")
  ax[1].set(title="sparsity (reported point)", xlabel="epoch", ylabel="%")
  ax[1].legend()
  ax[2].plot(ep, [r["support_changes"] for r in rows], marker="o")
  ax[2].set(title="groups changing zero/nonzero status", xlabel="epoch")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


# --------------------------------------------------------------------------
# The loop


def train(cfg: Config, *, log=print) -> dict:
  """Runs ``cfg`` and returns the summary (also written to ``summary.json``)."""
  import jax
  import jax.numpy as jnp
  import rmda_jax as rj

  out = Path(cfg.output_dir)
  out.mkdir(parents=True, exist_ok=True)
  t_start = time.perf_counter()

  ds = prepare_data(cfg)
  n_train = len(ds.y_train)
  steps = n_train // cfg.batch_size
  if steps == 0:
    raise ValueError(f"--batch-size {cfg.batch_size} exceeds the {n_train} training samples")
  trainer = Trainer(cfg, ds, steps)
  state = trainer.init_state()
  data_key = np.asarray(jax.random.key_data(jax.random.key(cfg.seed)))
  x_train, y_train = jax.device_put(ds.x_train), jax.device_put(ds.y_train)
  x_test, y_test = jax.device_put(ds.x_test), jax.device_put(ds.y_test)
  aug_key = jax.random.key(cfg.seed + 1)

  meta = {"fingerprint": cfg.fingerprint(), "config": cfg.fingerprint_fields()}
  ckpt = Checkpointer(out / "checkpoints")
  start_epoch = 0
  rows: list[dict] = []
  metrics_path = out / "metrics.jsonl"
  if cfg.resume:
    last = ckpt.latest_epoch()
    if last is None:
      log(f"no checkpoint in {out / 'checkpoints'}; starting from scratch")
    else:
      saved = ckpt.read_meta(last)
      if saved.get("fingerprint") != meta["fingerprint"]:
        diff = {k: (saved.get("config", {}).get(k), v) for k, v in meta["config"].items()
                if saved.get("config", {}).get(k) != v}
        raise ResumeError(
            f"checkpoint in {out / 'checkpoints'} is from a different configuration "
            f"(saved vs now: {diff}); use another --output-dir or the same flags")
      state, data_key = ckpt.restore(last, state, data_key)
      start_epoch = last
      if metrics_path.exists():
        rows = [json.loads(l) for l in metrics_path.read_text().splitlines() if l.strip()]
        rows = [r for r in rows if r["epoch"] <= last]
      log(f"resumed from epoch {last} of {out / 'checkpoints'}")
      if last >= cfg.epochs:
        log(f"the checkpoint is already at epoch {last} >= --epochs {cfg.epochs}: nothing to train")
  elif ckpt.latest_epoch() is not None:
    raise ResumeError(f"{out / 'checkpoints'} already holds checkpoints: pass --resume "
                      f"to continue that run, or choose another --output-dir")
  metrics_path.write_text("".join(json.dumps(r) + "\n" for r in rows))

  point = "Z (rmda_jax.structured_params)" if cfg.optimizer == "rmda" else "W (the iterate)"
  n_params = sum(int(np.size(x)) for x in jax.tree.leaves(state.params))
  log(f"{cfg.model} on {cfg.dataset} ({n_train} train / {len(ds.y_test)} test, "
      f"{n_params} parameters), {cfg.optimizer} lr {cfg.learning_rate} "
      f"momentum {cfg.momentum_value}, {cfg.regularizer} {cfg.strength if trainer.reg else ''}"
      f" ({cfg.groups} groups), {steps} steps/epoch; sparsity reported at {point}")

  prev_support = rj.group_support(trainer.reported(state), trainer.metric_reg)
  try:
    from tqdm.auto import tqdm
  except ImportError:  # pragma: no cover
    tqdm = None

  for epoch in range(start_epoch, cfg.epochs):
    perm = epoch_permutation(data_key, epoch, n_train, cfg.batch_size)
    epoch_key = jax.random.fold_in(aug_key, epoch)
    loss_sum = jnp.zeros((), jnp.float32)
    bar = (tqdm(total=steps, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
                unit="step", file=sys.stderr)
           if (tqdm is not None and cfg.progress) else None)
    t0 = time.perf_counter()
    for i in range(steps):
      state, loss_sum = trainer.train_step(state, loss_sum, x_train, y_train, perm[i], epoch_key,
                                             np.int32(i))
      if bar is not None:
        if i % 50 == 49:  # keep the bar honest: wait for the device now and then
          loss_sum.block_until_ready()
          bar.update(50)
    train_loss = float(loss_sum) / steps
    train_time = time.perf_counter() - t0
    if bar is not None:
      bar.update(steps - bar.n)
      bar.close()

    t1 = time.perf_counter()
    rep = trainer.reported(state)
    test_loss, test_acc = trainer.evaluate(rep, state.batch_stats, x_test, y_test)
    psi = float(trainer.psi(rep))
    support = rj.group_support(rep, trainer.metric_reg)
    changes = rj.support_changes(prev_support, support)
    prev_support = support
    row = {
        "epoch": epoch + 1,
        "train_loss": train_loss,
        "psi": psi,
        "objective": train_loss + psi,
        "test_loss": test_loss,
        "test_accuracy": test_acc,
        "group_sparsity": float(rj.group_sparsity(rep, trainer.metric_reg)),
        "weighted_group_sparsity": float(rj.group_sparsity(rep, trainer.metric_reg, weighted=True)),
        "sparsity": float(rj.sparsity(rep)),
        "support_changes": int(changes),
        "epoch_time_s": train_time,
    }
    if cfg.optimizer == "rmda":
      row["test_accuracy_w"] = trainer.evaluate(state.params, state.batch_stats, x_test, y_test)[1]
    row["eval_time_s"] = time.perf_counter() - t1
    rows.append(row)
    with open(metrics_path, "a") as f:
      f.write(json.dumps(row) + "\n")
    ckpt.save(epoch + 1, state, data_key, meta)
    log(f"epoch {epoch + 1:3d}/{cfg.epochs}  loss {train_loss:.4f}  objective "
        f"{row['objective']:.4f}  test acc {_fmt_pct(test_acc)}  group sparsity "
        f"{_fmt_pct(row['group_sparsity'])}  changes {changes:4d}  "
        f"[{train_time:.1f}s train, {steps * cfg.batch_size / train_time:.0f} samples/s]")
  ckpt.close()

  rep = trainer.reported(state)
  support = rj.group_support(rep, trainer.metric_reg)
  last = rows[-1] if rows else {}
  summary = {
      "config": dataclasses.asdict(cfg),
      "fingerprint": cfg.fingerprint(),
      "reported_point": point,
      "epochs": cfg.epochs,
      "num_params": n_params,
      "test_accuracy": last.get("test_accuracy"),
      "test_accuracy_w": last.get("test_accuracy_w"),
      "objective": last.get("objective"),
      "group_sparsity": last.get("group_sparsity"),
      "weighted_group_sparsity": last.get("weighted_group_sparsity"),
      "sparsity": last.get("sparsity"),
      "support_changes": last.get("support_changes"),
      "groups_kept": layer_groups(support),
      "wall_time_s": time.perf_counter() - t_start,
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
  }
  (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
  if cfg.plot and rows:
    write_plot(rows, out / "training_curves.png")

  log("")
  log(f"final (reported point: {point})")
  table = [("test accuracy", _fmt_pct(summary["test_accuracy"]))]
  if summary["test_accuracy_w"] is not None:
    table.append(("test accuracy at W", _fmt_pct(summary["test_accuracy_w"])))
  table += [
      ("objective (epoch-mean train loss + psi)", f"{summary['objective']:.4f}"),
      ("group sparsity", _fmt_pct(summary["group_sparsity"])),
      ("weighted group sparsity", _fmt_pct(summary["weighted_group_sparsity"])),
      ("unstructured sparsity", _fmt_pct(summary["sparsity"])),
      ("wall time", f"{summary['wall_time_s']:.1f} s"),
  ]
  width = max(len(k) for k, _ in table)
  for k, v in table:
    log(f"  {k:<{width}}  {v}")
  log("  groups kept per layer: " + ", ".join(f"{k} {v}" for k, v in summary["groups_kept"].items()))
  log(f"wrote {metrics_path}, {out / 'summary.json'}"
      + (f", {out / 'training_curves.png'}" if cfg.plot else ""))
  return summary


def main(argv=None) -> int:
  cfg = config_lib.parse_args(argv)
  if not cfg.ynn_fusions:
    # Before the first JAX computation: XLA reads XLA_FLAGS when its backend starts.
    status = xla_flags.limit_ynn_fusions()
    if status != "reductions only":
      print(f"rmda-train: XLA:CPU YNNPACK fusions {status}", file=sys.stderr)
  from rmda_jax.examples.data import DatasetNotFoundError
  try:
    train(cfg)
  except (DatasetNotFoundError, ResumeError) as e:
    print(f"rmda-train: error: {e}", file=sys.stderr)
    return 1
  except KeyboardInterrupt:
    print("rmda-train: interrupted; continue with --resume", file=sys.stderr)
    return 130
  return 0


if __name__ == "__main__":
  sys.exit(main())
