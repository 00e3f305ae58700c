"""Meshes for ``rmda-train``: data-parallel and fully-sharded training on JAX's SPMD engine.

``--mesh data=N`` shards every batch over the ``data`` axis of a
``jax.sharding.Mesh``; ``--mesh data=N,fsdp=M`` also shards the parameters,
the BatchNorm statistics and the optimizer state along the ``fsdp`` axis (each
kernel on its largest axis divisible by ``M``; leaves without one, biases and
scales are replicated), and the batch over both axes (as FSDP does: every
device computes on its own rows, gathering the kernels it needs). Without
``--mesh`` the batch is sharded over all devices (``data`` = the device count). The step is ``rmda-train``'s own
(``train.make_train_step``) jitted with these shardings: XLA's SPMD partitioner
inserts the collectives (the gradient all-reduce of data parallelism, FSDP's
parameter all-gathers and gradient reduce-scatters); there is no hand-written
communication. A mesh of one device in one process is not a mesh at all:
:func:`layout_for` returns None and ``rmda-train`` runs its single-device
path unchanged.

What makes a sharded run equal to the one-device run (to float32 rounding,
with the same zero pattern): the sample order is drawn on the host from the
seed alone, the augmentation keys are ``fold_in(key, step)`` of the whole
global batch (JAX's partitionable threefry draws the same numbers however the
batch is split), and BatchNorm statistics are means over the global batch.

Batches. Each epoch, every process gathers *its* rows of every batch of the
epoch from its copy of the training set (the rows its devices hold, found
from the sharding: :meth:`Layout.local_rows`) and hands them to
``jax.make_array_from_process_local_data``: the epoch becomes one global
``(steps, batch, ...)`` array sharded over the devices, and step ``i`` reads
its row ``i`` (``make_train_step`` with ``perm = arange(steps)``). The test
set is replicated and evaluated in batches split over the devices.

Many hosts: ``--coordinator host:port --num-processes P --process-id i`` (or
``JAX_COORDINATOR_ADDRESS`` and a cluster environment ``jax.distributed``
understands: Slurm, Open MPI, TPU, Kubernetes) start ``jax.distributed``
(:func:`initialize_distributed`, before any JAX computation); the mesh then
spans the devices of all processes.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from rmda_jax.examples.config import Config, UsageError

__all__ = ["AXES", "MeshSpec", "Layout", "parse_mesh", "fsdp_axis", "make_mesh",
           "layout_for", "mesh_name", "initialize_distributed", "collectives"]

AXES = ("data", "fsdp")
COORDINATOR_ENV = "JAX_COORDINATOR_ADDRESS"


@dataclasses.dataclass(frozen=True)
class MeshSpec:
  """The sizes asked for: ``data`` (None: all devices left by ``fsdp``) and ``fsdp``."""
  data: int | None = None
  fsdp: int = 1


def parse_mesh(text: str | None) -> MeshSpec:
  """``"data=8"``, ``"data=2,fsdp=4"`` or ``"fsdp=4"`` -> :class:`MeshSpec`; None -> the default.

  Raises:
    UsageError: a malformed string (one line, names the flag).
  """
  if text is None:
    return MeshSpec()
  sizes = {}
  for part in text.replace(" ", "").split(","):
    m = re.fullmatch(r"(\w+)=(\d+)", part)
    if not m or m.group(1) not in AXES or m.group(1) in sizes or int(m.group(2)) < 1:
      raise UsageError(f"--mesh {text!r}: expected data=N or data=N,fsdp=M "
                       f"(positive sizes, each axis once)")
    sizes[m.group(1)] = int(m.group(2))
  return MeshSpec(sizes.get("data"), sizes.get("fsdp", 1))


def fsdp_axis(shape: tuple[int, ...], fsdp: int) -> int | None:
  """The axis a leaf of ``shape`` is split along over ``fsdp`` devices, or None (replicated).

  Kernels (two axes or more) are split on their largest axis whose size
  ``fsdp`` divides (the last of equal ones); vectors and scalars are replicated.
  """
  if fsdp <= 1 or len(shape) < 2:
    return None
  fits = [a for a, n in enumerate(shape) if n % fsdp == 0]
  return max(fits, key=lambda a: (shape[a], a)) if fits else None


def make_mesh(spec: MeshSpec, devices=None) -> Mesh:
  """A ``(data, fsdp)`` mesh over ``devices`` (default: every device of every process).

  One process may use fewer devices than it has (the first ``data * fsdp``);
  with several processes the mesh must use them all.

  Raises:
    UsageError: the sizes do not fit the devices.
  """
  devices = list(jax.devices() if devices is None else devices)
  n = len(devices)
  fsdp = spec.fsdp
  if spec.data is None:
    if n % fsdp:
      raise UsageError(f"--mesh fsdp={fsdp}: does not divide the {n} devices")
    data = n // fsdp
  else:
    data = spec.data
  want = data * fsdp
  if want > n:
    raise UsageError(f"--mesh data={data},fsdp={fsdp} needs {want} devices; "
                     f"there are {n} ({jax.default_backend()})")
  if want < n and jax.process_count() > 1:
    raise UsageError(f"--mesh data={data},fsdp={fsdp} uses {want} of the {n} devices; "
                     f"with {jax.process_count()} processes the mesh must use them all")
  # Process-major device order with fsdp innermost: FSDP traffic stays within
  # a host where it can, data parallelism spans the hosts.
  return Mesh(np.array(devices[:want], dtype=object).reshape(data, fsdp), AXES)


def initialize_distributed(coordinator: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None, *, environ=None,
                           timeout_s: int = 300) -> bool:
  """Starts ``jax.distributed`` when asked to; call it before any JAX computation.

  Asked to: any of the three arguments is given, or ``JAX_COORDINATOR_ADDRESS``
  is set (then ``jax.distributed.initialize`` reads the rest from the cluster's
  environment: Slurm, Open MPI, TPU, Kubernetes).

  Returns:
    Whether it runs (started now, or earlier in this process).

  Raises:
    UsageError: inconsistent flags, or ``jax.distributed.initialize`` failed
      (its message on one line).
  """
  environ = os.environ if environ is None else environ
  if jax.distributed.is_initialized():
    return True
  if coordinator is None and num_processes is None and process_id is None \
      and not environ.get(COORDINATOR_ENV):
    return False
  if coordinator is not None and not re.fullmatch(r"\[?[\w.:-]+\]?:\d+", coordinator):
    raise UsageError(f"--coordinator {coordinator!r}: expected host:port")
  if num_processes is not None and process_id is not None and process_id >= num_processes:
    raise UsageError(f"--process-id {process_id} must be below --num-processes {num_processes}")
  try:
    jax.distributed.initialize(coordinator, num_processes, process_id,
                               initialization_timeout=timeout_s)
  except (RuntimeError, ValueError) as e:
    why = " ".join(str(e).split())[:300] or type(e).__name__
    raise UsageError(f"jax.distributed.initialize failed: {why}") from None
  return True


class Layout:
  """Where ``rmda-train``'s arrays live on a ``(data, fsdp)`` mesh, and its jitted functions.

  Args:
    mesh: a mesh with axes :data:`AXES`.
  """

  def __init__(self, mesh: Mesh):
    self.mesh = mesh
    self.data = mesh.shape["data"]
    self.fsdp = mesh.shape["fsdp"]
    self.replicated = NamedSharding(mesh, P())
    self.batch_devices = self.data * self.fsdp  # a batch is split over both axes
    self.batches = NamedSharding(mesh, P(None, AXES))  # an epoch: (steps, batch, ...)
    self.rows = NamedSharding(mesh, P(AXES))           # one batch of indices
    # XLA:CPU's collectives hang when executions are in flight on several
    # devices: across processes (gloo; jax 0.10.2, 2 processes x 4 CPU
    # devices: the loop stopped within a few steps, at random; waiting for
    # each step ran it to the end every time) and within one process of 8
    # virtual devices on 2 cores (2026-12-05, three such processes at once:
    # gdb showed 7 device programs in an AllReduce rendezvous holding the
    # worker threads while the 8th device's launch waited for its previous
    # execution's slot). So on a CPU mesh of more than one device every jitted
    # function of the run waits for its result. Other backends pipeline.
    self.serial = mesh.devices.flat[0].platform == "cpu" and mesh.devices.size > 1

  # ------------------------------------------------------------ shardings
  def spec(self, shape: tuple[int, ...]) -> P:
    """The partition of a parameter or state leaf of ``shape`` (a function of the shape only)."""
    axis = fsdp_axis(tuple(shape), self.fsdp)
    if axis is None:
      return P()
    return P(*([None] * axis + ["fsdp"]))

  def shardings(self, tree) -> Any:
    """``NamedSharding`` of every leaf of ``tree`` (arrays or ShapeDtypeStructs), by shape.

    Optimizer states hold parameter-shaped buffers: shaped alike, placed alike.
    """
    return jax.tree.map(lambda x: NamedSharding(self.mesh, self.spec(np.shape(x))), tree)

  def describe(self) -> dict:
    """The mesh as ``summary.json`` records it."""
    return {"data": self.data, "fsdp": self.fsdp, "devices": int(self.mesh.size),
            "processes": jax.process_count(), "platform": self.mesh.devices.flat[0].platform}

  # ------------------------------------------------------------ placement
  def put(self, tree, shardings=None) -> Any:
    """Global arrays of host (or one-device) values that every process holds in full."""
    shardings = self.shardings(tree) if shardings is None else shardings

    def one(x, s):
      x = np.asarray(x)
      return jax.make_array_from_callback(x.shape, s, lambda idx: x[idx])

    return jax.tree.map(one, tree, shardings)

  def init_opt_state(self, tx, params) -> Any:
    """``tx.init(params)`` placed like the params (fresh buffers: a step donates them)."""
    state = jax.jit(tx.init, out_shardings=self.shardings(jax.eval_shape(tx.init, params)))(
        params)
    # jit hands back an input that an output merely forwards (rmda's W0 is the
    # params): copy, so that no buffer is donated twice.
    return jax.tree.map(lambda x: jnp.array(x, copy=True), state)

  def local_rows(self, batch: int) -> tuple[int, int]:
    """The rows ``[lo, hi)`` of a global batch this process's devices hold."""
    index_map = self.rows.addressable_devices_indices_map((batch,))
    starts = [ix[0].start or 0 for ix in index_map.values()]
    stops = [batch if ix[0].stop is None else ix[0].stop for ix in index_map.values()]
    return min(starts), max(stops)

  def place_data(self, ds) -> tuple:
    """(x_train, y_train, x_test, y_test): the training set stays on the host (each
    epoch is placed by :meth:`epoch_inputs`), the test set is replicated."""
    x_test, y_test = self.put((ds.x_test, ds.y_test), (self.replicated, self.replicated))
    return ds.x_train, ds.y_train, x_test, y_test

  def epoch_inputs(self, x_train: np.ndarray, y_train: np.ndarray,
                   perm: np.ndarray) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(xs, ys, rows)`` of one epoch for ``make_train_step``'s ``(x_all, y_all, perm)``.

    ``xs, ys`` are the epoch's batches, ``(steps, batch, ...)`` split over the
    devices: this process gathers only its rows of each batch (from ``perm``,
    the same on every process). ``rows = arange(steps)``: step ``i`` takes
    batch ``i`` whole.
    """
    steps, batch = perm.shape
    lo, hi = self.local_rows(batch)
    local = perm[:, lo:hi]
    xs = jax.make_array_from_process_local_data(
        self.batches, x_train[local], (steps, batch) + x_train.shape[1:])
    ys = jax.make_array_from_process_local_data(
        self.batches, y_train[local], (steps, batch) + y_train.shape[1:])
    rows = self.put(np.arange(steps, dtype=np.int32), self.replicated)
    return xs, ys, rows

  def fetch(self, tree) -> Any:
    """Host copies (NumPy) of global arrays, on every process (for metrics and reports)."""

    def one(x):
      if not isinstance(x, jax.Array) or x.is_fully_addressable or x.is_fully_replicated:
        return np.asarray(x)
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))

    return jax.tree.map(one, tree)

  def eval_batch(self, batch: int) -> int:
    """``batch`` rounded up to a multiple of :attr:`batch_devices` (evaluation batches are
    split too)."""
    return -(-batch // self.batch_devices) * self.batch_devices

  @property
  def gather(self) -> Callable | None:
    """What ``make_train_step`` applies to the params before the forward pass: with
    ``fsdp > 1``, each split leaf is gathered whole (FSDP: the kernels move, the
    activations stay split by batch rows; left to itself, XLA's partitioner may
    move activations instead, far more bytes); None without ``fsdp``."""
    if self.fsdp == 1:
      return None
    replicated = self.replicated
    return lambda params: jax.tree.map(
        lambda p: jax.lax.with_sharding_constraint(p, replicated), params)

  # ------------------------------------------------------------ jitted functions
  def jit_train_step(self, train_step: Callable, abstract_state) -> Callable:
    """``make_train_step``'s step, jitted with the state's shardings in and out (donated).

    The loss accumulator an epoch starts from (``jnp.zeros(())``, on one
    device) is first put on the mesh: jit keys its executables on where the
    arguments are, and the step's own output (on the mesh) would otherwise
    compile the same step a second time. The jitted function is the
    returned callable's ``jitted``.
    """
    state = self.shardings(abstract_state)
    r = self.replicated
    jitted = jax.jit(train_step, in_shardings=(state, r, self.batches, self.batches, r, r, r),
                     out_shardings=(state, r), donate_argnums=(0, 1))

    def step(state, loss_sum, *args):
      if not isinstance(getattr(loss_sum, "sharding", None), NamedSharding):
        loss_sum = self.put(np.asarray(loss_sum, np.float32), r)
      out = jitted(state, loss_sum, *args)
      return jax.block_until_ready(out) if self.serial else out

    step.jitted = jitted
    return step

  def _waited(self, jitted: Callable) -> Callable:
    """``jitted`` itself, or (:attr:`serial`) a function that waits for its result."""
    if not self.serial:
      return jitted

    def waited(*args):
      return jax.block_until_ready(jitted(*args))

    waited.jitted = jitted
    return waited

  def jit_eval_step(self, eval_step: Callable, abstract_params, abstract_stats) -> Callable:
    """``make_eval_step``'s step with its batch of sample indices split over the devices."""
    rows = self.rows

    def sharded_eval_step(params, batch_stats, x_all, y_all, idx, weight):
      idx = jax.lax.with_sharding_constraint(idx, rows)
      weight = jax.lax.with_sharding_constraint(weight, rows)
      return eval_step(params, batch_stats, x_all, y_all, idx, weight)

    r = self.replicated
    return self._waited(jax.jit(sharded_eval_step,
                                in_shardings=(self.shardings(abstract_params),
                                              self.shardings(abstract_stats), r, r, r, r),
                                out_shardings=(r, r)))

  def jit_params_fn(self, fn: Callable, abstract_state, abstract_params) -> Callable:
    """``fn(state) -> params`` jitted to return the params' shardings (e.g. RMDA's Z)."""
    return self._waited(jax.jit(fn, in_shardings=(self.shardings(abstract_state),),
                                out_shardings=self.shardings(abstract_params)))


_COLLECTIVE = re.compile(
    r"= (\(.*?\)|\S+) (all-reduce|all-gather|reduce-scatter|all-to-all|collective-permute|"
    r"collective-broadcast|ragged-all-to-all)(-done)?\(")
_ARRAY = re.compile(r"\b([a-z]+\d*)\[([\d,]*)\]")
_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "f8e4m3fn": 1, "f8e5m2": 1, "s16": 2, "u16": 2,
                "f16": 2, "bf16": 2, "s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8,
                "f64": 8, "c64": 8, "c128": 16}


def collectives(hlo_text: str) -> list[tuple[str, int]]:
  """``(op, result bytes)`` of every collective of a compiled module (per device).

  Reads ``jit(f).lower(...).compile().as_text()``: the SPMD program each
  device runs, with the collectives XLA's partitioner inserted. An
  asynchronous pair (``all-gather-start``/``-done``) counts once, by the
  ``-done``'s result; a tuple result (a combined all-reduce) counts all its
  arrays. A collective inside a loop body counts once, not per iteration.
  """
  out = []
  for line in hlo_text.splitlines():
    m = _COLLECTIVE.search(line)
    if not m:
      continue
    nbytes = 0
    for dtype, dims in _ARRAY.findall(m.group(1)):
      size = int(np.prod([int(d) for d in dims.split(",") if d] or [1]))
      nbytes += size * _DTYPE_BYTES.get(dtype, 4)
    out.append((m.group(2), nbytes))
  return out


def layout_for(cfg: Config) -> Layout | None:
  """The layout of ``cfg.mesh`` (default: data parallelism over all devices), or
  None for one device in one process (``rmda-train``'s single-device path).

  Raises:
    UsageError: a malformed ``--mesh``, sizes that do not fit the devices, or a
      global batch that the mesh's devices do not divide.
  """
  spec = parse_mesh(cfg.mesh)
  mesh = make_mesh(spec)
  if mesh.size == 1 and jax.process_count() == 1:
    return None
  n = mesh.size  # the batch is split over data x fsdp
  if cfg.batch_size % n:
    lower = cfg.batch_size - cfg.batch_size % n
    raise UsageError(f"--batch-size {cfg.batch_size} does not split over the mesh's {n} "
                     f"devices (data x fsdp): use a multiple of {n} (e.g. {lower or n})")
  return Layout(mesh)


def mesh_name(layout: Layout | None) -> str:
  """``"data=8,fsdp=1 (8 cpu devices, 1 process)"`` for logs; ``"one device"`` for None."""
  if layout is None:
    return "one device"
  d = layout.describe()
  procs = d["processes"]
  return (f"data={d['data']},fsdp={d['fsdp']} ({d['devices']} {d['platform']} devices, "
          f"{procs} process{'es' if procs > 1 else ''})")

