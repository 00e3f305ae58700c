"""``rmda-train``: train a structured-sparse network with RMDA or a baseline.

    rmda-train                                   # LeNet5 / MNIST / group LASSO / RMDA
    rmda-train --dataset digits --model mlp --epochs 3 --plot
    python -m rmda_jax.examples.train --help

This module holds the training step and the loop. The model is split once into
pure pytrees (:func:`split_model`: parameters and BatchNorm statistics as plain
dicts); the whole step (gather the batch from the device-resident dataset,
augment, normalise, forward, backward, optimizer update) is the pure function
of :func:`make_train_step`, jitted once with donated buffers. Nothing is copied
back to the host per step; losses are summed on device and read once per
epoch. :func:`make_eval_step` and :func:`evaluate` measure loss and accuracy.
On CPU, ``rmda-train`` limits XLA's YNNPACK library fusions to reductions
before JAX starts its backend (``xla_flags.limit_ynn_fusions``;
``--ynn-fusions`` leaves jaxlib's default); with the nuclear norm it also sets
``OPENBLAS_NUM_THREADS=1`` for JAX's CPU SVD unless the user set it
(``xla_flags.limit_openblas_threads``); ``summary.json`` records both.

On several devices (``--mesh``; by default data parallelism over all of them)
and hosts (``--coordinator``), the same step is jitted with a mesh's
shardings and fed each epoch's batches split over the devices
(``sharding.Layout``); parameters and zero groups match the one-device run to
float32 rounding, and only process 0 writes logs and files. One device in one
process runs the path above unchanged.

Each epoch writes a line to ``metrics.jsonl`` and a checkpoint
(``checkpoint.Checkpointer``: parameters, BatchNorm statistics, optimizer
state, data-order key, config fingerprint). ``--resume`` continues from it and
reproduces the uninterrupted run bit for bit.

Reported sparsity: for RMDA the point ``Z`` of the last update
(``rmda_jax.structured_params``), which is exactly structured even while
``c < 1``; for the other optimizers the iterate itself. Test accuracy and psi
are measured at the reported point (for RMDA the accuracy at ``W`` is logged
too, as ``test_accuracy_w``). The objective is the mean of the epoch's
minibatch losses (taken at the iterates during the epoch, no extra pass over
the training set) plus psi at the reported point. With ``--regularizer nuclear``
the structure is the rank: each epoch reports the kernels' total numerical rank
(``rmda_jax.rank_report``) and the group metrics count singular values; with
``--regularizer sparse_group_lasso`` both the group sparsity and the fraction
of zero entries in the regularized kernels are reported.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm.auto import tqdm

import rmda_jax as rj
from rmda_jax.examples import config as config_lib
from rmda_jax.examples import data as data_lib
from rmda_jax.examples import report
from rmda_jax.examples import sharding as sharding_lib
from rmda_jax.examples import slimming
from rmda_jax.examples import xla_flags
from rmda_jax.examples._files import atomic_open
from rmda_jax.examples._files import write_json
from rmda_jax.examples.checkpoint import Checkpointer
from rmda_jax.examples.checkpoint import ResumeError
from rmda_jax.examples.config import Config
from rmda_jax.examples.models import CONVOLUTIONAL
from rmda_jax.examples.models import get_model

EVAL_BATCH = 1000


class TrainState(NamedTuple):
  """What one training step reads and returns (and what a checkpoint holds)."""
  params: Any        # plain dict of nnx.Param values
  batch_stats: Any   # plain dict of nnx.BatchStat values ({} if none)
  opt_state: Any


class ModelParts(NamedTuple):
  """A model split into static graph definitions and pure pytrees."""
  graphdef_train: Any   # nnx.GraphDef with BatchNorm in train mode
  graphdef_eval: Any    # the same with BatchNorm in eval mode (running statistics)
  params: Any           # plain dict of nnx.Param values
  batch_stats: Any      # plain dict of nnx.BatchStat values ({} if none)


# --------------------------------------------------------------------------
# The model as pure functions


def split_model(model: nnx.Module) -> ModelParts:
  """Splits ``model`` into train/eval graph definitions, parameters and BatchNorm statistics.

  Args:
    model: an ``nnx.Module`` whose state is ``nnx.Param`` and ``nnx.BatchStat``
      variables only (all models of ``rmda_jax.examples.models``).

  Returns:
    A :class:`ModelParts`; ``params`` and ``batch_stats`` are plain dicts.
  """
  model.train()
  graphdef_train, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  model.eval()
  graphdef_eval = nnx.graphdef(model)
  return ModelParts(graphdef_train, graphdef_eval, nnx.to_pure_dict(params),
                    nnx.to_pure_dict(stats))


def forward(graphdef, params, batch_stats, x: jax.Array) -> tuple[jax.Array, Any]:
  """Logits of the model ``graphdef`` at ``params`` and its BatchNorm statistics after the call.

  Args:
    graphdef: ``ModelParts.graphdef_train`` or ``graphdef_eval``.
    params: plain dict of parameters.
    batch_stats: plain dict of BatchNorm statistics (``{}`` if none).
    x: a batch of inputs, NHWC.

  Returns:
    ``(logits, new batch_stats)``; in eval mode the statistics come back unchanged.
  """
  model = nnx.merge(graphdef, params, batch_stats)
  logits = model(x)
  new_stats = nnx.to_pure_dict(nnx.state(model, nnx.BatchStat)) if batch_stats else {}
  return logits, new_stats


def init_train_state(parts: ModelParts, tx: optax.GradientTransformation) -> TrainState:
  """The state before the first step: device copies of the initial pytrees and ``tx.init``."""
  params = jax.tree.map(jnp.asarray, parts.params)
  stats = jax.tree.map(jnp.asarray, parts.batch_stats)
  # Fresh buffers: some states start as the params themselves (madgrad's x0,
  # rmda's W0), and a buffer cannot be donated twice in one call.
  opt_state = jax.tree.map(lambda x: jnp.array(x, copy=True), tx.init(params))
  return TrainState(params, stats, opt_state)


# --------------------------------------------------------------------------
# Steps


def _preprocess(x: jax.Array, norm_stats) -> jax.Array:
  return x if norm_stats is None else data_lib.normalize(x, norm_stats)


def make_train_step(graphdef, tx: optax.GradientTransformation, *,
                    regularizer_in_loss: Callable[[Any], jax.Array] | None = None,
                    augment: bool = False, norm_stats=None,
                    params_for_forward: Callable[[Any], Any] | None = None) -> Callable:
  """The pure training step of one model and optimizer; jit it with donated state.

  ``step = jax.jit(make_train_step(gd, tx), donate_argnums=(0, 1))``, then per
  step ``state, loss_sum = step(state, loss_sum, x_all, y_all, perm, i, key)``.

  Args:
    graphdef: ``ModelParts.graphdef_train``.
    tx: the optax transformation (proximal ones handle their regularizer).
    regularizer_in_loss: a regularizer added to the loss, so that its
      (sub)gradient enters the gradient (plain ``sgd``/``madgrad``); None for
      proximal methods or no regularizer. The loss summed into ``loss_sum`` is
      the cross-entropy alone.
    augment: apply ``data.augment`` (random crop + flip) with the key
      ``fold_in(key, i)``.
    norm_stats: ``(scale, mean, std)`` for ``data.normalize``, applied to each
      batch on device; None if the inputs are already normalised.
    params_for_forward: applied to the parameters before the forward pass
      (an FSDP mesh run gathers its split kernels there:
      ``sharding.Layout.gather``); None: the parameters as they are.

  Returns:
    ``train_step(state, loss_sum, x_all, y_all, perm, i, key)`` ->
    ``(state, loss_sum + loss)``: ``state`` a :class:`TrainState`,
    ``x_all, y_all`` the whole training set on device, ``perm`` an int32
    ``(steps, batch)`` array of sample indices (one row per step), ``i`` the
    step's row, ``key`` the augmentation key of the epoch (unused without
    ``augment``; may be None). Batches gathered beforehand work too:
    ``x_all, y_all`` shaped ``(steps, batch, ...)`` and ``perm =
    arange(steps)`` make step ``i`` take batch ``i`` whole (what a mesh run
    does, its batches sharded over devices: ``sharding.Layout.epoch_inputs``).
  """

  def loss_fn(params, batch_stats, x, y):
    if params_for_forward is not None:
      params = params_for_forward(params)
    logits, new_stats = forward(graphdef, params, batch_stats, x)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    total = loss if regularizer_in_loss is None else loss + regularizer_in_loss(params)
    return total, (loss, new_stats)

  def train_step(state: TrainState, loss_sum, x_all, y_all, perm, i, key):
    idx = perm[i]
    x, y = x_all[idx], y_all[idx]
    if augment:
      x = data_lib.augment(jax.random.fold_in(key, i), x)
    x = _preprocess(x, norm_stats)
    grads, (loss, new_stats) = jax.grad(loss_fn, has_aux=True)(
        state.params, state.batch_stats, x, y)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return TrainState(params, new_stats, opt_state), loss_sum + loss

  return train_step


def make_eval_step(graphdef, norm_stats=None,
                   params_for_forward: Callable[[Any], Any] | None = None) -> Callable:
  """The pure evaluation step of one model; jit it (:func:`evaluate` calls it per batch).

  Args:
    graphdef: ``ModelParts.graphdef_eval``.
    norm_stats: ``(scale, mean, std)`` for ``data.normalize``; None if the
      inputs are already normalised.
    params_for_forward: as for :func:`make_train_step`.

  Returns:
    ``eval_step(params, batch_stats, x_all, y_all, idx, weight)`` ->
    ``(summed loss, number correct)`` over the samples ``idx``, each counted
    with its ``weight`` (0 for the padding of a last partial batch).
  """

  def eval_step(params, batch_stats, x_all, y_all, idx, weight):
    x = _preprocess(x_all[idx], norm_stats)
    y = y_all[idx]
    if params_for_forward is not None:
      params = params_for_forward(params)
    logits, _ = forward(graphdef, params, batch_stats, x)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    correct = jnp.argmax(logits, -1) == y
    return jnp.sum(loss * weight), jnp.sum(correct * weight)

  return eval_step


def evaluate(eval_step: Callable, params, batch_stats, x, y,
             batch_size: int = EVAL_BATCH) -> tuple[float, float]:
  """Mean loss and accuracy over ``x, y`` (device arrays), in batches of one shape.

  Args:
    eval_step: the jitted step of :func:`make_eval_step`.
    params: the parameters to evaluate.
    batch_stats: BatchNorm statistics (``{}`` if none).
    x: inputs, all samples.
    y: integer labels.
    batch_size: samples per call; the last batch is padded (weight 0), so
      every call has the same shapes and one compilation serves all.

  Returns:
    ``(mean loss, accuracy)``.
  """
  n = len(y)
  steps = -(-n // batch_size)
  idx = np.arange(steps * batch_size) % n
  weight = (np.arange(steps * batch_size) < n).astype(np.float32)
  outs = [eval_step(params, batch_stats, x, y, idx[i * batch_size:(i + 1) * batch_size],
                    weight[i * batch_size:(i + 1) * batch_size]) for i in range(steps)]
  loss = sum(float(l) for l, _ in outs)
  correct = sum(float(c) for _, c in outs)
  return loss / n, correct / n


def epoch_permutation(data_key: np.ndarray, epoch: int, n: int, batch: int) -> np.ndarray:
  """The sample order of ``epoch`` (0-based): (steps, batch) indices, last partial batch dropped."""
  rng = np.random.default_rng([int(k) for k in np.asarray(data_key).ravel()] + [epoch])
  steps = n // batch
  return rng.permutation(n)[: steps * batch].reshape(steps, batch).astype(np.int32)


# --------------------------------------------------------------------------
# One configuration


def build_regularizers(cfg: Config, strength=None, l1_strength=None):
  """(psi used by the optimizer / objective or None, regularizer that defines groups).

  The nuclear norm's "groups" are each kernel's rank-one components (the support
  is the rank, ``support_changes`` counts rank changes); the sparse group
  LASSO's are the group LASSO's (``--groups``). ``strength`` and
  ``l1_strength``, when given, replace ``cfg``'s (traced values inside one
  program that trains several runs: :mod:`rmda_jax.examples.sweep`).
  """
  groups = cfg.groups if cfg.groups in ("input", "output") else int(cfg.groups)
  strength = cfg.strength if strength is None else strength
  l1_strength = cfg.l1_strength if l1_strength is None else l1_strength
  if cfg.regularizer == "group_lasso":
    reg = rj.group_lasso(strength, groups=groups)
    return reg, reg
  if cfg.regularizer == "nuclear":
    reg = rj.nuclear_norm(strength)
    return reg, reg
  if cfg.regularizer == "sparse_group_lasso":
    reg = rj.sparse_group_lasso(l1_strength, strength, groups=groups)
    return reg, reg
  if cfg.regularizer == "heads_and_neurons":  # groups found in the params tree
    reg = rj.head_and_neuron_lasso(strength)
    return reg, reg
  # Group metrics still need groups: same grouping, any strength (value unused).
  metric_reg = rj.group_lasso(1.0, groups=groups)
  if cfg.regularizer == "l1":
    return rj.l1(strength), metric_reg
  return None, metric_reg


def build_optimizer(cfg: Config, reg, steps_per_epoch: int, *, lr=None,
                    momentum=None) -> optax.GradientTransformation:
  """The optax transformation for ``cfg`` (milestones converted from epochs to updates).

  ``lr`` and ``momentum``, when given, replace ``cfg``'s (traced values inside
  one program that trains several runs: :mod:`rmda_jax.examples.sweep`).
  """
  lr = cfg.learning_rate if lr is None else lr
  mom = cfg.momentum_value if momentum is None else momentum
  milestones = [m * steps_per_epoch for m in cfg.milestones]
  schedule = (optax.piecewise_constant_schedule(lr, {m: cfg.gamma for m in milestones})
              if milestones else lr)
  if cfg.optimizer == "rmda":
    if milestones:
      tx = rj.rmda_multistep(lr, mom, milestones, gamma=cfg.gamma, regularizer=reg)
    else:
      tx = rj.rmda(lr, mom, regularizer=reg)
  elif cfg.optimizer == "ramda":
    # The authors' schedule: lr and epsilon times gamma and a restart at every
    # milestone, c ramped to 1 after the last (with no milestones: from the start).
    tx = rj.ramda_multistep(lr, mom, milestones, gamma=cfg.gamma, regularizer=reg,
                            inner_solver=cfg.inner_solver or "pg")
  elif cfg.optimizer in ("prox_sgd", "prox_adam", "prox_ssi"):
    kwargs = {} if mom is None else {"momentum": mom}
    if cfg.optimizer == "prox_sgd" and reg is not None:
      # prox_sgd's fixed points solve f + (1 - momentum) psi: scale the
      # strength so that it minimizes the objective this command reports.
      mu = 0.9 if mom is None else mom
      reg = reg.with_strength(reg.strength / (1 - mu))
    tx = getattr(rj, cfg.optimizer)(schedule, regularizer=reg, **kwargs)
  elif cfg.optimizer == "sgd":
    # momentum 0 is none (a traced momentum, in a sweep, keeps the trace).
    tx = optax.sgd(schedule, momentum=None if isinstance(mom, (int, float)) and not mom
                   else mom)
  else:  # madgrad (argparse's choices admit nothing else)
    tx = optax.contrib.madgrad(schedule, momentum=mom)
  if cfg.weight_decay:
    tx = optax.chain(optax.add_decayed_weights(cfg.weight_decay), tx)
  return tx


def structure_fields(cfg: Config, reg, point) -> dict:
  """What the regularizer's structure adds to an epoch's row.

  ``nuclear``: the total numerical rank of the kernels and their full rank
  (``rmda_jax.rank_report``); ``sparse_group_lasso``: the fraction of zero
  entries in the regularized kernels (next to the group sparsity every row has).
  """
  if cfg.regularizer == "nuclear":
    ranks = rj.rank_report(point, reg)
    return {"rank": ranks.rank, "full_rank": ranks.full_rank}
  if cfg.regularizer == "sparse_group_lasso":
    return {"regularized_sparsity": rj.sparsity_report(point, reg).regularized_sparsity}
  if cfg.regularizer == "heads_and_neurons":
    return report.units_kept(rj.group_support(point, reg))
  return {}


def structure_words(cfg: Config, row: dict) -> str:
  """The per-epoch line's words on the structure of the reported point."""
  if cfg.regularizer == "nuclear":
    return (f"rank {row['rank']}/{row['full_rank']} "
            f"({report.fmt_pct(row['rank'] / row['full_rank'])})")
  words = f"group sparsity {report.fmt_pct(row['group_sparsity'])}"
  if cfg.regularizer == "sparse_group_lasso":
    words += f"  kernel sparsity {report.fmt_pct(row['regularized_sparsity'])}"
  if cfg.regularizer == "heads_and_neurons":
    words += "  " + report.units_words(row)
  return words


def prepare_data(cfg: Config) -> data_lib.Dataset:
  """The dataset of ``cfg``, images padded to 28x28 for the convolutional models."""
  ds = data_lib.load_dataset(cfg.dataset, cfg.data_dir, offline=cfg.offline)
  if cfg.model in CONVOLUTIONAL and ds.input_shape[0] < 28:
    ds = data_lib.pad_images(ds, 28)  # digits 8x8 -> 28x28, the MNIST frame
  return ds


class Trainer:
  """The model, optimizer and jitted steps of one configuration; the state stays outside.

  Args:
    cfg: the run's configuration.
    ds: its dataset (for shapes, classes, normalisation, augmentation).
    steps_per_epoch: updates per epoch (for the schedule's milestones).
    layout: a mesh to train on (``sharding.layout_for``): state, batches and
      the jitted functions placed on it; None for one device.
  """

  def __init__(self, cfg: Config, ds: data_lib.Dataset, steps_per_epoch: int,
               layout: sharding_lib.Layout | None = None):
    self.layout = layout
    self.reg, self.metric_reg = build_regularizers(cfg)
    self.tx = build_optimizer(cfg, self.reg, steps_per_epoch)
    self.parts = split_model(get_model(cfg.model, ds.num_classes, nnx.Rngs(cfg.seed),
                                       ds.input_shape))
    norm_stats = (ds.scale, ds.mean, ds.std)
    # psi is handled by the prox of proximal methods; plain sgd/madgrad see it
    # as a (sub)gradient term of the loss.
    in_loss = (self.reg.value if cfg.optimizer in ("sgd", "madgrad") and self.reg is not None
               else None)
    self.train_step = jax.jit(
        make_train_step(self.parts.graphdef_train, self.tx, regularizer_in_loss=in_loss,
                        augment=ds.augment, norm_stats=norm_stats),
        donate_argnums=(0, 1))
    self.eval_step = jax.jit(make_eval_step(self.parts.graphdef_eval, norm_stats))
    reg = self.reg
    self.psi = jax.jit(reg.value) if reg is not None else (lambda p: 0.0)
    if cfg.optimizer in ("rmda", "ramda"):
      self.reported = jax.jit(lambda s: rj.structured_params(s.opt_state, reg))
    else:
      self.reported = lambda s: s.params
    if layout is not None:  # the same functions, jitted with the mesh's shardings
      state = jax.eval_shape(lambda: init_train_state(self.parts, self.tx))
      self.train_step = layout.jit_train_step(
          make_train_step(self.parts.graphdef_train, self.tx, regularizer_in_loss=in_loss,
                          augment=ds.augment, norm_stats=norm_stats,
                          params_for_forward=layout.gather), state)
      self.eval_step = layout.jit_eval_step(
          make_eval_step(self.parts.graphdef_eval, norm_stats, layout.gather),
          state.params, state.batch_stats)
      if cfg.optimizer in ("rmda", "ramda"):
        self.reported = layout.jit_params_fn(
            lambda s: rj.structured_params(s.opt_state, reg), state, state.params)

  def init_state(self) -> TrainState:
    """The state before the first step (on the layout's mesh if any)."""
    if self.layout is None:
      return init_train_state(self.parts, self.tx)
    params = self.layout.put(self.parts.params)
    return TrainState(params, self.layout.put(self.parts.batch_stats),
                      self.layout.init_opt_state(self.tx, params))

  def evaluate(self, params, batch_stats, x, y) -> tuple[float, float]:
    """(mean loss, accuracy) over device arrays ``x, y``, in eval mode."""
    if self.layout is None:
      return evaluate(self.eval_step, params, batch_stats, x, y)
    return evaluate(self.eval_step, params, batch_stats, x, y,
                    self.layout.eval_batch(EVAL_BATCH))

  def place_data(self, ds: data_lib.Dataset) -> tuple:
    """``(x_train, y_train, x_test, y_test)`` where :meth:`epoch_inputs` and
    :meth:`evaluate` read them: on the device, or (mesh) the training set on
    the host and the test set replicated."""
    if self.layout is None:
      return (jax.device_put(ds.x_train), jax.device_put(ds.y_train),
              jax.device_put(ds.x_test), jax.device_put(ds.y_test))
    return self.layout.place_data(ds)

  def epoch_inputs(self, x_train, y_train, perm: np.ndarray) -> tuple:
    """``(x_all, y_all, perm)`` of one epoch for :attr:`train_step` (``perm`` from
    :func:`epoch_permutation`; a mesh gathers the epoch's batches, sharded)."""
    if self.layout is None:
      return x_train, y_train, jnp.asarray(perm)
    return self.layout.epoch_inputs(x_train, y_train, perm)

  def gathered(self, tree):
    """``tree`` whole on this host, for the metrics (unchanged on one device)."""
    return tree if self.layout is None else self.layout.fetch(tree)


# --------------------------------------------------------------------------
# The loop


def metrics_rows(metrics_path: Path, epoch: int) -> list[dict]:
  """The rows of ``metrics.jsonl`` up to ``epoch``, to resume a run from that epoch.

  A last line that does not parse is one a crash tore while appending it: it
  is dropped (its epoch is trained again). Rows after ``epoch`` (written
  before a crash lost their checkpoint) are dropped too. Any other line that
  is not a JSON object with an integer ``"epoch"`` is refused: the file is
  damaged and rewriting it would lose data.

  Args:
    metrics_path: the run's ``metrics.jsonl`` (missing: no rows).
    epoch: the epoch of the checkpoint the run resumes from.

  Returns:
    The rows with ``"epoch" <= epoch``, in the file's order.

  Raises:
    ResumeError: a damaged line other than the last (the message names the
      file and the line number).
  """
  if not metrics_path.exists():
    return []
  lines = metrics_path.read_text().splitlines()
  rows = []
  for number, line in enumerate(lines, 1):
    try:
      row = json.loads(line)
    except json.JSONDecodeError as e:
      if number == len(lines):  # torn by a crash while appending: retrained
        break
      raise ResumeError(f"{metrics_path}:{number}: not a JSON line ({e.msg}); the file is "
                        f"damaged: repair or remove that line to --resume") from e
    if not (isinstance(row, dict) and isinstance(row.get("epoch"), int)
            and not isinstance(row["epoch"], bool)):
      raise ResumeError(f"{metrics_path}:{number}: not a metrics row (a JSON object with an "
                        f"integer \"epoch\"); the file is damaged: repair or remove that "
                        f"line to --resume")
    if row["epoch"] <= epoch:
      rows.append(row)
  return rows


class Run(NamedTuple):
  """What the steps of one run (:func:`resume`, :func:`run_epoch`, :func:`finish`) share."""
  cfg: Config
  out: Path                 # the output directory
  log: Callable[..., Any]   # prints nothing outside process 0
  main_process: bool        # process 0: the one that logs and writes files
  ds: data_lib.Dataset
  trainer: Trainer
  steps: int                # updates per epoch
  data: tuple               # (x_train, y_train, x_test, y_test): Trainer.place_data
  aug_key: jax.Array        # augmentation key; epoch e uses fold_in(aug_key, e)
  meta: dict                # the checkpoints' fingerprint and config
  t_start: float            # time.perf_counter() at the start

  @property
  def metrics_path(self) -> Path:
    return self.out / "metrics.jsonl"


def start(cfg: Config, log=print) -> Run:
  """Makes the output directory, loads the data and builds the :class:`Trainer`.

  Raises:
    config.UsageError: the output directory cannot be made, the batch is
      larger than the training set, or ``--mesh`` does not fit.
    data.DatasetError: the dataset is missing, unreadable or refused.
  """
  out = Path(cfg.output_dir)
  try:
    out.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise config_lib.UsageError(f"--output-dir {out}: {e.strerror or e}") from None
  t_start = time.perf_counter()
  layout = sharding_lib.layout_for(cfg)  # None: one device
  main_process = jax.process_index() == 0
  if not main_process:
    log = lambda *args, **kwargs: None
  ds = prepare_data(cfg)
  steps = len(ds.y_train) // cfg.batch_size
  if steps == 0:
    raise config_lib.UsageError(
        f"--batch-size {cfg.batch_size} exceeds the {len(ds.y_train)} training samples")
  trainer = Trainer(cfg, ds, steps, layout)
  meta = {"fingerprint": cfg.fingerprint(), "config": cfg.fingerprint_fields()}
  return Run(cfg, out, log, main_process, ds, trainer, steps, trainer.place_data(ds),
             jax.random.key(cfg.seed + 1), meta, t_start)


def _reported_point(cfg: Config) -> str:
  return ("Z (rmda_jax.structured_params)" if cfg.optimizer in ("rmda", "ramda")
          else "W (the iterate)")


def _num_params(state: TrainState) -> int:
  return sum(int(np.size(x)) for x in jax.tree.leaves(state.params))


def resume(run: Run, ckpt: Checkpointer) -> tuple[TrainState, np.ndarray, int, list[dict]]:
  """The state to start from: fresh, or (``--resume``) the last checkpoint's.

  Rewrites ``metrics.jsonl`` with the rows of the epochs before the start.

  Returns:
    ``(state, data_key, start_epoch, rows)``: ``rows`` the metrics of the
    epochs already trained (empty when starting from scratch).

  Raises:
    ResumeError: the directory holds checkpoints this run cannot use, or its
      ``metrics.jsonl`` a damaged line other than the last
      (:func:`metrics_rows`); nothing is rewritten then.
  """
  cfg, log = run.cfg, run.log
  state = run.trainer.init_state()
  data_key = np.asarray(jax.random.key_data(jax.random.key(cfg.seed)))
  start_epoch, rows = 0, []
  last = ckpt.resume_epoch(run.meta, cfg.resume)
  if cfg.resume and last is None:
    log(f"no checkpoint in {ckpt.directory}; starting from scratch")
  elif last is not None:
    state, data_key = ckpt.restore(last, state, data_key)
    start_epoch = last
    rows = metrics_rows(run.metrics_path, last)
    log(f"resumed from epoch {last} of {ckpt.directory}")
    if last >= cfg.epochs:
      log(f"the checkpoint is already at epoch {last} >= --epochs {cfg.epochs}: nothing to train")
  if run.main_process:
    with atomic_open(run.metrics_path, "w") as f:
      f.write("".join(json.dumps(r) + "\n" for r in rows))
  return state, data_key, start_epoch, rows


def _log_header(run: Run, state: TrainState) -> None:
  cfg, trainer = run.cfg, run.trainer
  strengths = (f"{cfg.l1_strength} (L1) + {cfg.strength} (groups)"
               if cfg.regularizer == "sparse_group_lasso"
               else (cfg.strength if trainer.reg else ""))
  structure = ("kernels as matrices" if cfg.regularizer == "nuclear"
               else "attention heads and MLP units" if cfg.regularizer == "heads_and_neurons"
               else f"{cfg.groups} groups")
  run.log(f"{cfg.model} on {cfg.dataset} ({len(run.ds.y_train)} train / "
          f"{len(run.ds.y_test)} test, {_num_params(state)} parameters), {cfg.optimizer} lr "
          f"{cfg.learning_rate} momentum {cfg.momentum_value}, {cfg.regularizer} {strengths}"
          f" ({structure}), {run.steps} steps/epoch; sparsity reported at "
          f"{_reported_point(cfg)}")
  if trainer.layout is not None:
    run.log(f"mesh {sharding_lib.mesh_name(trainer.layout)}")


def _train_steps(run: Run, state: TrainState, data_key,
                 epoch: int) -> tuple[TrainState, float, float]:
  """The updates of ``epoch``: ``(state, mean minibatch loss, seconds)``."""
  cfg, trainer, steps = run.cfg, run.trainer, run.steps
  x_train, y_train = run.data[:2]
  inputs = trainer.epoch_inputs(
      x_train, y_train, epoch_permutation(data_key, epoch, len(run.ds.y_train), cfg.batch_size))
  epoch_key = jax.random.fold_in(run.aug_key, epoch)
  loss_sum = jnp.zeros((), jnp.float32)
  bar = (tqdm(total=steps, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
              unit="step", file=sys.stderr) if cfg.progress and run.main_process else None)
  t0 = time.perf_counter()
  for i in range(steps):
    state, loss_sum = trainer.train_step(state, loss_sum, *inputs, np.int32(i), epoch_key)
    if bar is not None and i % 50 == 49:  # keep the bar honest: wait for the device
      loss_sum.block_until_ready()
      bar.update(50)
  train_loss = float(loss_sum) / steps
  train_time = time.perf_counter() - t0
  if bar is not None:
    bar.update(steps - bar.n)
    bar.close()
  return state, train_loss, train_time


def run_epoch(run: Run, ckpt: Checkpointer, state: TrainState, data_key, epoch: int,
              prev_support) -> tuple[TrainState, dict, Any]:
  """Trains ``epoch`` (0-based), measures it, appends its row and saves its checkpoint.

  Args:
    run: the run (:func:`start`).
    ckpt: its checkpointer.
    state: the state after the previous epoch.
    data_key: the data-order key.
    epoch: the epoch to train.
    prev_support: the group support at the end of the previous epoch.

  Returns:
    ``(state, row, support)``: the state after the epoch, its ``metrics.jsonl``
    row and the group support of its reported point.
  """
  cfg, trainer = run.cfg, run.trainer
  x_test, y_test = run.data[2:]
  state, train_loss, train_time = _train_steps(run, state, data_key, epoch)

  t1 = time.perf_counter()
  rep = trainer.reported(state)
  test_loss, test_acc = trainer.evaluate(rep, state.batch_stats, x_test, y_test)
  psi = float(trainer.psi(rep))
  rep = trainer.gathered(rep)  # the metrics read it whole, on the host
  support = rj.group_support(rep, trainer.metric_reg)
  changes = rj.support_changes(prev_support, support)
  row = {
      "epoch": epoch + 1,
      "train_loss": train_loss,
      "psi": psi,
      "objective": train_loss + psi,
      "test_loss": test_loss,
      "test_accuracy": test_acc,
      "group_sparsity": float(rj.group_sparsity(rep, trainer.metric_reg)),
      "weighted_group_sparsity": float(
          rj.group_sparsity(rep, trainer.metric_reg, weighted=True)),
      "sparsity": float(rj.sparsity(rep)),
      **structure_fields(cfg, trainer.metric_reg, rep),
      "support_changes": int(changes),
      "epoch_time_s": train_time,
  }
  if cfg.optimizer in ("rmda", "ramda"):
    row["test_accuracy_w"] = trainer.evaluate(state.params, state.batch_stats, x_test,
                                              y_test)[1]
  row["eval_time_s"] = time.perf_counter() - t1
  if run.main_process:
    with open(run.metrics_path, "a") as f:
      f.write(json.dumps(row) + "\n")
      f.flush()
      os.fsync(f.fileno())
  ckpt.save(epoch + 1, state, data_key, run.meta)
  run.log(f"epoch {epoch + 1:3d}/{cfg.epochs}  loss {train_loss:.4f}  objective "
          f"{row['objective']:.4f}  test acc {report.fmt_pct(test_acc)}  "
          f"{structure_words(cfg, row)}  changes {changes:4d}  "
          f"[{train_time:.1f}s train, {run.steps * cfg.batch_size / train_time:.0f} samples/s]")
  return state, row, support


def finish(run: Run, state: TrainState, rows: list[dict]) -> dict:
  """Writes ``summary.json`` (and ``--plot``'s curves), prints the final table, slims (``--slim``).

  Returns:
    The summary.

  Raises:
    slimming.SlimFailed: ``--slim`` failed; everything else was written.
  """
  cfg, trainer, out, log = run.cfg, run.trainer, run.out, run.log
  support = rj.group_support(trainer.gathered(trainer.reported(state)), trainer.metric_reg)
  last_row = rows[-1] if rows else {}
  summary = {
      "config": dataclasses.asdict(cfg),
      "fingerprint": cfg.fingerprint(),
      "reported_point": _reported_point(cfg),
      "epochs": cfg.epochs,
      "num_params": _num_params(state),
      "test_accuracy": last_row.get("test_accuracy"),
      "test_accuracy_w": last_row.get("test_accuracy_w"),
      "objective": last_row.get("objective"),
      "group_sparsity": last_row.get("group_sparsity"),
      "weighted_group_sparsity": last_row.get("weighted_group_sparsity"),
      "sparsity": last_row.get("sparsity"),
      "support_changes": last_row.get("support_changes"),
      **{k: last_row.get(k) for k in ("rank", "full_rank", "regularized_sparsity")
         if k in last_row},
      "groups_kept": report.layer_groups(support),
      "wall_time_s": time.perf_counter() - run.t_start,
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "openblas_num_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
      "mesh": None if trainer.layout is None else trainer.layout.describe(),
  }
  if run.main_process:
    write_json(out / "summary.json", summary)
  if cfg.plot and rows and run.main_process:
    report.write_plot(rows, out / "training_curves.png")

  log("")
  for line in report.final_table(summary):
    log(line)
  if summary.get("rank") is not None:
    log(f"total rank kept: {summary['rank']}/{summary['full_rank']} "
        f"(per kernel in summary.json's groups_kept)")
  if summary.get("regularized_sparsity") is not None:
    log(f"sparsity of the regularized kernels: "
        f"{report.fmt_pct(summary['regularized_sparsity'])}")
  log(f"wrote {run.metrics_path}, {out / 'summary.json'}"
      + (f", {out / 'training_curves.png'}" if cfg.plot else ""))
  if cfg.slim:  # last: a slim failure (SlimFailed) finds the run written
    slimming.slim_run(cfg, run.ds, trainer, state, out, summary, example_size=EVAL_BATCH,
                      log=log)
  return summary


def train(cfg: Config, *, log=print) -> dict:
  """Runs ``cfg`` and returns the summary (also written to ``summary.json``).

  The steps: :func:`start` (output directory, data, :class:`Trainer`),
  :func:`resume` (the state to start from), :func:`run_epoch` per epoch,
  :func:`finish` (summary, final table, ``--slim``).

  Raises:
    data.DatasetError: the dataset is missing, unreadable or refused.
    ResumeError: the output directory holds checkpoints this run cannot use,
      or a damaged ``metrics.jsonl``.
    config.UsageError: the output directory cannot be made, the batch is
      larger than the training set, or ``--mesh`` does not fit the devices or
      the batch.
    slimming.SlimFailed: ``--slim`` failed; everything else was written.
  """
  run = start(cfg, log)
  ckpt = Checkpointer(run.out / "checkpoints")
  try:
    state, data_key, start_epoch, rows = resume(run, ckpt)
    _log_header(run, state)
    support = rj.group_support(run.trainer.gathered(run.trainer.reported(state)),
                               run.trainer.metric_reg)
    for epoch in range(start_epoch, cfg.epochs):
      state, row, support = run_epoch(run, ckpt, state, data_key, epoch, support)
      rows.append(row)
  finally:
    ckpt.close()  # also when a resume check fails
  return finish(run, state, rows)


def prepare_process(cfg: Config) -> None:
  """What must happen before JAX starts its backend: XLA:CPU's YNNPACK fusions
  (``--ynn-fusions``), single-threaded Eigen for a mesh of virtual CPU devices,
  and, for the nuclear norm, OpenBLAS's threads."""
  if not cfg.ynn_fusions:
    # Before JAX starts its backend: XLA reads XLA_FLAGS then (importing jax does not).
    status = xla_flags.limit_ynn_fusions()
    if status != "reductions only":
      print(f"rmda-train: XLA:CPU YNNPACK fusions {status}", file=sys.stderr)
  if cfg.mesh is not None:
    # A mesh of virtual CPU devices can deadlock with multi-threaded Eigen
    # (xla_flags' docstring); nothing is edited without virtual devices.
    status = xla_flags.single_thread_eigen_for_virtual_devices()
    if status.startswith("unchanged: JAX had"):
      print(f"rmda-train: XLA:CPU Eigen threads {status}", file=sys.stderr)
  if cfg.regularizer == "nuclear":
    # Before JAX's first SVD loads SciPy's OpenBLAS, which reads the variable then.
    status = xla_flags.limit_openblas_threads()
    if status != "1 thread":
      print(f"rmda-train: OpenBLAS threads (JAX's CPU SVD) {status}", file=sys.stderr)


def main(argv=None) -> int:
  """``rmda-train``: 0 on success, 2 on a problem the user can fix, 1 when ``--slim``
  fails after the run was written (one line on stderr)."""
  cfg = config_lib.parse_args(argv)
  prepare_process(cfg)
  try:
    # Before any JAX computation too: jax.distributed must start first.
    sharding_lib.initialize_distributed(cfg.coordinator, cfg.num_processes, cfg.process_id)
    train(cfg)
  except (data_lib.DatasetError, ResumeError, config_lib.UsageError) as e:
    print(f"rmda-train: error: {e}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print("rmda-train: interrupted; continue with --resume", file=sys.stderr)
    return 130
  except slimming.SlimFailed as e:
    print(f"rmda-train: error: {e}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
