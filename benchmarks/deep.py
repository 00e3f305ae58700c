"""Long MNIST training runs with augmentation and dropout, observed every epoch.

What the deep-network benchmarks of issue 10 share (``bench_identification_deep``,
``bench_equal_tuning``, ``bench_rigl_converged``):

* :func:`load_split`: MNIST as raw ``uint8`` on the device (normalised per batch,
  after the crop, so the crop pads with black as torchvision's does on raw
  images), all 60k training images or the first 50k with the last 10k held out
  as a validation set that is never trained on.
* :class:`DropoutLeNet5Small`: ``models.LeNet5Small`` with dropout before each
  dense layer (same parameters, so the same groups).
* :func:`make_trainer`: one jitted step per batch (params and optimizer state
  donated); the data order and the crop / dropout
  keys come from the seed alone, so every method sees the same batches and the
  same augmentations. After every epoch ``on_epoch`` receives the reported point
  (RMDA: ``Z``) and its test (or validation) accuracy.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import rmda_jax as rj
from rmda_jax.examples import data as data_lib
from rmda_jax.examples import models as models_lib
from rmda_jax.examples import train as train_lib
from benchmarks.common import RESULTS, claim, cpu_model, write_json

EVAL_BATCH = 2000
CROP_DRAWS = 8  # random-crop draws of the training set for the augmented gradient
# The quick modes (a check of the pipeline, run by the tests): the first images only.
QUICK_TRAIN, QUICK_EVAL = 1024, 500


def add_run_args(p: argparse.ArgumentParser, *, epochs: int, milestones) -> None:
  """The flags the deep benchmarks share: mode, output, seeds, schedule, batch, crop."""
  p.add_argument("--quick", action="store_true", help="tiny run (< 2 min) to check the pipeline")
  p.add_argument("--out", type=Path, default=RESULTS, help="output folder")
  p.add_argument("--name", default=None, help="results file stem (default by mode)")
  p.add_argument("--seeds", type=int, nargs="+", default=(0, 1, 2))
  p.add_argument("--epochs", type=int, default=epochs)
  p.add_argument("--milestones", type=int, nargs="*", default=milestones,
                 help="epochs where every lr is multiplied by gamma (RMDA restarts)")
  p.add_argument("--gamma", type=float, default=0.1)
  p.add_argument("--batch-size", type=int, default=128)
  p.add_argument("--crop", type=int, default=2, help="random-crop padding (pixels)")
  p.add_argument("--merge-only", action="store_true",
                 help="only rebuild the JSON and PNG from the per-run files")
  p.add_argument("--shard", type=shard_arg, default=None, metavar="K/N",
                 help="run only the runs whose index is K modulo N (N processes, one "
                      "device; see benchmarks/sharded.py)")


def shard_arg(text: str) -> tuple:
  """``"K/N"`` -> ``(K, N)`` with ``0 <= K < N`` (argparse type of ``--shard``)."""
  try:
    k, n = (int(v) for v in text.split("/"))
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected K/N (two integers), got {text!r}") from None
  if not 0 <= k < n:
    raise argparse.ArgumentTypeError(f"expected 0 <= K < N, got {text!r}")
  return k, n


def owns(index: int, shard: Optional[tuple]) -> bool:
  """Whether the process with ``--shard`` ``shard`` runs the run numbered ``index``."""
  return shard is None or index % shard[1] == shard[0]


def run_shard(units: Sequence[Callable[[], Any]], shard: Optional[tuple],
              merge: Callable[[], Any]) -> None:
  """The deep benchmarks' one flow for sharded runs.

  ``units`` are numbered in order; this process runs those its ``--shard``
  gives it (:func:`owns`) and rebuilds the results file from every finished
  per-run file (``merge()``) after each, so that the file is current while
  other shards still run. A unit skips the runs whose per-run file is
  finished (:func:`run_once`), so a command run again continues.
  """
  for i, unit in enumerate(units):
    if owns(i, shard):
      unit()
      merge()


def run_once(part: Path, label: str, run: Callable[[], Any]) -> Optional[dict]:
  """``run()`` unless ``part`` holds a finished run (then its record, unrun).

  The run is claimed first (``<part>.lock``, :func:`benchmarks.common.claim`):
  while another live process trains it, it is skipped here, so that two
  copies of one command (one per core) share its runs instead of training
  each twice.
  """
  rec = load_part(part)
  if rec is None:
    lock = claim(Path(part).with_name(Path(part).name + ".lock"))
    if lock is False:
      print(f"  {label}: being trained by another process, skipped", flush=True)
      return None
    try:
      rec = load_part(part)  # finished between the two looks?
      if rec is None:
        t0 = time.perf_counter()
        run()
        print(f"  {label}: {time.perf_counter() - t0:.0f}s", flush=True)
        return None
    finally:
      lock.unlink(missing_ok=True)
  print(f"  {label}: done, skipped", flush=True)
  return rec


def device_name() -> str:
  """What ran a run (recorded in every per-run file): the device kind and backend."""
  d = jax.devices()[0]
  return f"{cpu_model() if d.platform == 'cpu' else d.device_kind} ({d.platform})"


@dataclasses.dataclass
class Split:
  """Raw uint8 images on the device and the normalisation applied per batch."""
  note: str
  x_train: jax.Array
  y_train: jax.Array
  x_eval: jax.Array   # the test set, or the validation set
  y_eval: jax.Array
  eval_name: str      # "test" or "validation"
  stats: tuple        # (scale, mean, std) for data.normalize
  x_test: Optional[jax.Array] = None  # with a validation split: the test set too
  y_test: Optional[jax.Array] = None

  def on_test(self) -> "Split":
    """The same training set, evaluated on the test set (after tuning on validation)."""
    if self.x_test is None:
      return self
    return Split(self.note, self.x_train, self.y_train, self.x_test, self.y_test, "test",
                 self.stats)


def load_split(validation: bool = False, train_subset: Optional[int] = None,
               eval_subset: Optional[int] = None) -> Split:
  """MNIST on the device. ``validation``: train on the first 50k, evaluate on the
  last 10k of the training set (the test set is kept aside in ``x_test``).
  ``train_subset`` / ``eval_subset`` (the quick modes) keep the first images."""
  ds = data_lib.load_mnist()
  x, y = ds.x_train, ds.y_train.astype(np.int32)
  xt, yt = ds.x_test, ds.y_test.astype(np.int32)
  if validation:
    x_tr, y_tr, x_ev, y_ev = x[:50000], y[:50000], x[50000:], y[50000:]
    note = "MNIST: first 50000 train images for training, last 10000 for validation"
  else:
    x_tr, y_tr, x_ev, y_ev = x, y, xt, yt
    note = "MNIST: 60000 train / 10000 test"
  if train_subset:
    x_tr, y_tr = x_tr[:train_subset], y_tr[:train_subset]
    note += f"; quick: first {train_subset} training images"
  if eval_subset:
    x_ev, y_ev = x_ev[:eval_subset], y_ev[:eval_subset]
    xt, yt = xt[:eval_subset], yt[:eval_subset]
    note += f"; quick: first {eval_subset} evaluation images"
  return Split(note, jnp.asarray(x_tr), jnp.asarray(y_tr), jnp.asarray(x_ev),
               jnp.asarray(y_ev), "validation" if validation else "test",
               (ds.scale, ds.mean, ds.std),
               jnp.asarray(xt) if validation else None,
               jnp.asarray(yt) if validation else None)


class DropoutLeNet5Small(models_lib.LeNet5Small):
  """``LeNet5Small`` with dropout (rate ``rate``) on the input of each dense layer."""

  def __init__(self, num_classes: int = 10, *, rngs: nnx.Rngs, input_shape=(28, 28, 1),
               rate: float = 0.0):
    super().__init__(num_classes, rngs=rngs, input_shape=input_shape)
    self.rate = rate

  def __call__(self, x, key=None):
    def drop(h, i):
      if key is None or self.rate == 0:
        return h
      keep = jax.random.bernoulli(jax.random.fold_in(key, i), 1 - self.rate, h.shape)
      return jnp.where(keep, h / (1 - self.rate), 0)

    x = models_lib.conv_relu_pool(self.conv1, x)
    x = models_lib._pool(jax.nn.relu(self.conv2(x)))
    x = models_lib._flatten(x)
    x = jax.nn.relu(self.fc1(drop(x, 0)))
    x = jax.nn.relu(self.fc2(drop(x, 1)))
    return self.fc3(drop(x, 2))


def build_model(name: str, seed: int, dropout: float = 0.0):
  """(graphdef, params) of ``name`` initialised from ``seed``; dropout only for lenet5_small."""
  rngs = nnx.Rngs(seed)
  if dropout:
    if name != "lenet5_small":
      raise ValueError(f"dropout is implemented for lenet5_small only, not {name!r}")
    model = DropoutLeNet5Small(10, rngs=rngs, rate=dropout)
  else:
    model = models_lib.get_model(name, 10, rngs, (28, 28, 1))
  parts = train_lib.split_model(model)
  if parts.batch_stats:
    raise ValueError(f"{name} has BatchNorm; these benchmarks train BatchNorm-free models")
  return parts.graphdef_train, parts.params


@dataclasses.dataclass
class EpochRecord:
  epoch: int
  point: Any            # the reported point after the epoch
  eval_accuracy: float
  train_loss: float
  wall_s: float


def make_trainer(model: str, tx: optax.GradientTransformation, split: Split, *,
                 batch_size: int = 128, crop: int = 0, dropout: float = 0.0,
                 reported: Optional[Callable[[Any, Any], Any]] = None):
  """``train(seed, epochs, on_epoch, start=None) -> (params, opt_state)``.

  Each epoch draws its order from ``np.random.default_rng([seed, epoch])`` and
  its crop / dropout keys from ``fold_in(key(seed), epoch)``, step by step: the
  same for every method. ``crop``: random-crop padding in pixels (0: none).
  ``on_epoch(EpochRecord)`` after every epoch; returning True stops the run.
  ``start(params, opt_state, seed) -> (params, opt_state)`` replaces the
  initial state (RigL's masks).
  """
  graphdef, _ = build_model(model, 0, dropout)
  stats = split.stats
  n = int(split.y_train.shape[0])
  spe = n // batch_size

  def apply(params, x, key):
    m = nnx.merge(graphdef, params, {})
    return m(x, key) if dropout else m(x)

  def loss_fn(params, x, y, key):
    logits = apply(params, x, key)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  # One jitted step per call: XLA:CPU runs a fori_loop over the steps about
  # 4x slower than the same steps dispatched one by one (measured: 48 vs 12
  # ms per LeNet5 step).
  def step_fn(params, opt_state, loss_sum, x_all, y_all, perm, i, key):
    idx = perm[i]
    x, y = x_all[idx], y_all[idx]
    k_crop, k_drop = jax.random.split(jax.random.fold_in(key, i))
    if crop:
      x = data_lib.random_crop(k_crop, x, crop)
    x = data_lib.normalize(x, stats)
    loss, g = jax.value_and_grad(loss_fn)(params, x, y, k_drop)
    updates, opt_state = tx.update(g, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss_sum + loss

  step_jit = jax.jit(step_fn, donate_argnums=(0, 1, 2))

  def epoch_jit(params, opt_state, x_all, y_all, perm, key):
    loss_sum = jnp.zeros([], jnp.float32)
    for i in range(perm.shape[0]):
      params, opt_state, loss_sum = step_jit(params, opt_state, loss_sum, x_all, y_all,
                                             perm, np.int32(i), key)
    return params, opt_state, loss_sum

  @jax.jit
  def correct(params, x, y):
    logits = apply(params, data_lib.normalize(x, stats), None)
    return jnp.sum(jnp.argmax(logits, -1) == y)

  def accuracy(params, x, y) -> float:
    m = int(y.shape[0])
    total = 0
    for i in range(0, m - m % EVAL_BATCH, EVAL_BATCH):
      total += int(correct(params, x[i:i + EVAL_BATCH], y[i:i + EVAL_BATCH]))
    if m % EVAL_BATCH:
      total += int(correct(params, x[m - m % EVAL_BATCH:], y[m - m % EVAL_BATCH:]))
    return total / m

  def train(seed: int, epochs: int, on_epoch: Callable[[EpochRecord], Any],
            start=None):
    _, params = build_model(model, seed, dropout)
    params = jax.tree.map(jnp.asarray, params)
    opt_state = jax.tree.map(lambda x: jnp.array(x, copy=True), tx.init(params))
    if start is not None:
      params, opt_state = start(params, opt_state, seed)
    key = jax.random.key(seed)
    t0 = time.perf_counter()
    for e in range(epochs):
      perm = np.random.default_rng([seed, e]).permutation(n)[: spe * batch_size]
      perm = jnp.asarray(perm.reshape(spe, batch_size).astype(np.int32))
      params, opt_state, loss_sum = epoch_jit(params, opt_state, split.x_train,
                                              split.y_train, perm, jax.random.fold_in(key, e))
      point = params if reported is None else reported(params, opt_state)
      acc = accuracy(point, split.x_eval, split.y_eval)
      stop = on_epoch(EpochRecord(e + 1, point, acc, float(loss_sum) / spe,
                                  time.perf_counter() - t0))
      if stop:
        break
    return params, opt_state

  @jax.jit
  def grad_sum(params, x, y, key):
    """Sum over the rows of ``x`` of the loss gradient, no dropout; cropped with ``key``
    (a crop draw) when the trainer crops and ``key`` is not None."""
    def total(p):
      xx = x if key is None else data_lib.random_crop(key, x, crop)
      logits = apply(p, data_lib.normalize(xx, stats), None)
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).sum()
    return jax.grad(total)(params)

  def full_gradient(params, crops: int = 0, seed: int = 0):
    """The gradient at ``params`` of the mean training loss over every training image,
    without dropout. ``crops == 0``: without augmentation. ``crops = K``: the
    mean over K random-crop draws of the whole training set (an estimate of the
    gradient of the augmented loss the run minimizes; needs a cropping trainer)."""
    if crops and not crop:
      raise ValueError("crops > 0 needs a trainer made with crop > 0")
    draws = [None] if not crops else [jax.random.fold_in(jax.random.key(seed), k)
                                      for k in range(crops)]
    g = None
    for k in draws:
      for i in range(0, n, EVAL_BATCH):
        gi = grad_sum(params, split.x_train[i:i + EVAL_BATCH], split.y_train[i:i + EVAL_BATCH],
                      None if k is None else jax.random.fold_in(k, i))
        g = gi if g is None else jax.tree.map(jnp.add, g, gi)
    return jax.tree.map(lambda a: a / (n * len(draws)), g)

  train.accuracy = accuracy
  train.full_gradient = full_gradient
  train.crop = crop
  train.eval_name = split.eval_name
  train.steps_per_epoch = spe
  return train


def group_record(point, reg) -> dict:
  """Group support (numpy bools, flat), group and weighted group sparsity of ``point``."""
  support = np.concatenate([np.asarray(s).ravel() for s in
                            jax.tree.leaves(rj.group_support(point, reg))])
  return {"support": support,
          "group_sparsity": rj.group_sparsity(point, reg),
          "weighted_group_sparsity": rj.group_sparsity(point, reg, weighted=True)}


def per_leaf_groups(reg) -> bool:
  """Whether ``reg`` splits each leaf into groups of its own (what the ratios read)."""
  return isinstance(reg, rj.GroupRegularizer) and not hasattr(reg, "group_sets")


def threshold_ratios(point, grad, reg) -> np.ndarray:
  r"""Per group, :math:`\|\nabla_g F\| / (\lambda w_g)`, flat in :func:`group_record`'s order.

  At a stationary point of :math:`F + \lambda \sum_g w_g \|W_g\|` a nonzero
  group has ratio exactly 1 and a zero group ratio at most 1; a zero group
  with ratio near 1 sits on the threshold (a degenerate group, which the
  identification theory excludes). ``reg``: a plain group regularizer
  (``rj.group_lasso``), whose groups and weights :func:`group_record` reads.
  """
  if not per_leaf_groups(reg):
    raise TypeError(f"threshold_ratios needs a per-leaf group regularizer, got {reg!r}")
  mask = reg.mask_tree(point)
  out = []
  for m, w, g in zip(jax.tree.leaves(mask), jax.tree.leaves(point), jax.tree.leaves(grad)):
    if m:
      norms = np.asarray(reg.group_norms(jnp.asarray(g, jnp.float32)), np.float64)
      out.append(norms.ravel() / (float(reg.strength) * reg.group_weight(w)))
  return np.concatenate(out)


def dual_ratios(opt_state, reg) -> Optional[np.ndarray]:
  r"""Per group, the ratio RMDA's (or RAMDA's) prox thresholds, read from its state.

  RMDA's :math:`Z = \mathrm{prox}_{(\alpha/\beta)\psi}(Y)`, with the dual point
  :math:`Y = W^0 - V/\beta` and :math:`\beta = \sqrt{k}` after ``k`` updates of
  the stage, zeroes group ``g`` exactly when
  :math:`\|Y_g\| / ((\alpha/\beta) \lambda w_g) \le 1`; RAMDA's screening
  zeroes it when :math:`\|D_g Y_g\| / (\alpha \lambda w_g) \le 1`
  (:math:`Y = W^0 - V/D`, :math:`D = U^{1/3} + \epsilon`). A group whose ratio
  is near 1 sits on the threshold of the last update: a small change of the
  dual average flips it. Flat in :func:`group_record`'s order; None when
  ``opt_state`` holds no RMDA/RAMDA state or ``reg`` is not a per-leaf group
  regularizer.
  """
  if not per_leaf_groups(reg):
    return None
  is_state = lambda x: isinstance(x, (rj.RMDAState, rj.RAMDAState))  # noqa: E731
  states = [x for x in jax.tree.leaves(opt_state, is_leaf=is_state) if is_state(x)]
  if len(states) != 1:
    return None
  st = states[0]
  if isinstance(st, rj.RMDAState):
    beta = float(np.sqrt(max(int(st.stage_count), 1)))
    inputs, scale = st.dual_point, float(st.alpha) / beta
  else:
    eps = float(st.epsilon)
    d = jax.tree.map(lambda u: jnp.cbrt(u.astype(jnp.float32)) + eps, st.grad_sum_sq)
    inputs = jax.tree.map(lambda w0, v, d: d * (w0 - v / d), st.initial_params,
                          st.grad_sum, d)
    scale = float(st.alpha)
  mask = reg.mask_tree(inputs)
  out = []
  for m, y in zip(jax.tree.leaves(mask), jax.tree.leaves(inputs)):
    if m:
      norms = np.asarray(reg.group_norms(jnp.asarray(y, jnp.float32)), np.float64)
      out.append(norms.ravel() / (scale * float(reg.strength) * reg.group_weight(y)))
  return np.concatenate(out)


def pack_support(support: np.ndarray) -> str:
  """A flat bool support as a compact string (hex of its packed bits)."""
  return np.packbits(np.asarray(support, bool)).tobytes().hex()


def unpack_support(text: str, groups: int) -> np.ndarray:
  """The inverse of :func:`pack_support`."""
  return np.unpackbits(np.frombuffer(bytes.fromhex(text), np.uint8))[:groups].astype(bool)


def near_threshold(rec: dict, last: int = 20, near: float = 0.1,
                   key: str = "final_ratios") -> Optional[dict]:
  """Do the groups that changed status late sit on the threshold? From a run's record.

  Reads ``support_bits`` (every epoch's support) and ``rec[key]``
  (:func:`threshold_ratios` at the final point). Returns None when the record
  has neither. Otherwise: the groups that changed status at least once over
  the last ``last`` epochs (``flipped``), their final ratios, how many lie
  within ``near`` of 1, and, for comparison, the same count over the zero
  groups that did not change, and the largest ratio of a zero group.
  """
  bits, ratios = rec.get("support_bits"), rec.get(key)
  if not bits or ratios is None:
    return None
  groups = int(rec["groups"])
  sup = np.stack([unpack_support(b, groups) for b in bits])
  ratios = np.asarray(ratios, np.float64)
  tail = sup[-(last + 1):]
  flipped = np.any(tail != tail[-1], axis=0)
  final = sup[-1]
  stable_zero = ~final & ~flipped
  close = np.abs(ratios - 1) <= near
  return {
      "last_epochs": last, "near": near, "flipped": int(flipped.sum()),
      "flipped_groups": [int(i) for i in np.flatnonzero(flipped)],
      "flipped_ratios": [round(float(r), 4) for r in ratios[flipped]],
      "flipped_within_near_of_1": int((flipped & close).sum()),
      "stable_zero_groups": int(stable_zero.sum()),
      "stable_zero_within_near_of_1": int((stable_zero & close).sum()),
      "max_ratio_of_a_zero_group": (round(float(ratios[~final].max()), 4)
                                    if (~final).any() else None),
      "nonzero_ratio_median": (round(float(np.median(ratios[final])), 4)
                               if final.any() else None),
  }


def load_part(part: Path) -> Optional[dict]:
  """The record of a finished run (None if the file is missing or the run was cut short)."""
  try:
    rec = json.loads(Path(part).read_text())
  except (OSError, ValueError):
    return None
  return rec if rec.get("complete") else None


def observed_run(train, seed: int, epochs: int, reg, part: Path, meta: dict,
                 on_record: Optional[Callable[[dict], None]] = None,
                 ratios: bool = False) -> dict:
  """Trains ``seed`` for ``epochs`` and records every epoch into ``part`` (JSON, atomically).

  Per epoch: ``support_changes`` (groups whose zero/nonzero status at the
  reported point differs from the previous epoch's; None for epoch 1),
  ``support_bits`` (the support itself, :func:`pack_support`),
  ``nonzero_groups``, ``group_sparsity``, ``weighted_group_sparsity``,
  ``<eval>_accuracy`` (``test`` or ``validation``), ``train_loss``, ``wall_s``.
  At the end, with ``ratios`` and a per-leaf group regularizer, ``final_ratios``
  (:func:`threshold_ratios` at the final point, the gradient of the training
  loss over every training image without augmentation or dropout) and
  ``near_threshold`` (:func:`near_threshold`); for a cropping trainer also
  ``final_ratios_crop`` and ``near_threshold_crop``, the same with the gradient
  of the cropped loss (mean over :data:`CROP_DRAWS` crop draws of the training
  set); for RMDA and RAMDA ``final_dual_ratios`` and ``near_threshold_dual``
  (:func:`dual_ratios`: the ratio their last prox thresholded); and the final
  point in ``<part>.final.npz``.
  ``meta`` is copied into the record; ``complete`` becomes True at the end.
  """
  acc_key = f"{train.eval_name}_accuracy"
  rec = dict(meta, seed=seed, epochs=epochs, device=device_name(), complete=False,
             support_changes=[], support_bits=[],
             nonzero_groups=[], group_sparsity=[], weighted_group_sparsity=[],
             train_loss=[], wall_s=[])
  rec[acc_key] = []
  prev, last_point = [None], [None]

  def on_epoch(r: EpochRecord):
    g = group_record(r.point, reg)
    rec["support_changes"].append(None if prev[0] is None
                                  else int(np.sum(g["support"] != prev[0])))
    prev[0] = g["support"]
    last_point[0] = r.point
    rec["support_bits"].append(pack_support(g["support"]))
    rec["groups"] = int(g["support"].size)
    rec["nonzero_groups"].append(int(g["support"].sum()))
    rec["group_sparsity"].append(g["group_sparsity"])
    rec["weighted_group_sparsity"].append(g["weighted_group_sparsity"])
    rec[acc_key].append(r.eval_accuracy)
    rec["train_loss"].append(r.train_loss)
    rec["wall_s"].append(round(r.wall_s, 2))
    if on_record is not None:
      on_record(rec)
    write_json(part, rec)

  out = train(seed, epochs, on_epoch)
  opt_state = out[1] if isinstance(out, tuple) else None  # make_trainer's (params, state)
  full_gradient = getattr(train, "full_gradient", None)
  if (ratios and full_gradient is not None and last_point[0] is not None
      and per_leaf_groups(reg)):
    point = last_point[0]
    ratios = threshold_ratios(point, full_gradient(point), reg)
    rec["final_ratios"] = [round(float(r), 5) for r in ratios]
    rec["near_threshold"] = near_threshold(rec)
    if getattr(train, "crop", 0):
      # The run minimizes the loss averaged over random crops: its gradient,
      # estimated over CROP_DRAWS draws of the whole training set.
      ratios = threshold_ratios(point, full_gradient(point, crops=CROP_DRAWS, seed=seed), reg)
      rec["final_ratios_crop"] = [round(float(r), 5) for r in ratios]
      rec["crop_draws"] = CROP_DRAWS
      rec["near_threshold_crop"] = near_threshold(rec, key="final_ratios_crop")
    # What RMDA's (RAMDA's) last prox thresholded: its dual average's ratio.
    dual = None if opt_state is None else dual_ratios(opt_state, reg)
    if dual is not None:
      rec["final_dual_ratios"] = [round(float(r), 5) for r in dual]
      rec["near_threshold_dual"] = near_threshold(rec, key="final_dual_ratios")
    # The final point itself, so that other questions can be asked of it later.
    final = part.with_suffix(".final.npz")
    tmp = final.with_name(f".{final.stem}.tmp.npz")
    np.savez_compressed(tmp, **{jax.tree_util.keystr(k): np.asarray(v) for k, v in
                                jax.tree_util.tree_leaves_with_path(point)})
    tmp.replace(final)
  rec["complete"] = True
  write_json(part, rec)
  return rec
