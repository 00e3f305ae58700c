"""Checkpoints of ``rmda-train``: one Orbax checkpoint per epoch, and resume checks.

A checkpoint holds the training state (parameters, BatchNorm statistics,
optimizer state), the data-order key and, as JSON, the configuration's
fingerprint. :meth:`Checkpointer.resume_epoch` refuses a checkpoint written
under another configuration, or checkpoints the user did not ask to resume,
with a :class:`ResumeError` whose message is one line.

Sharded state (``rmda-train --mesh``, several processes): Orbax writes each
array's shards from the processes that hold them (every process calls
:meth:`Checkpointer.save`, the JSON and the data key are written once), and
:meth:`Checkpointer.restore` reads each array into the sharding of the
template's leaf, whatever mesh wrote it: a run saved on 8 devices resumes on
one, and the other way round.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
import orbax.checkpoint as ocp

__all__ = ["Checkpointer", "ResumeError"]

# What Orbax raises on a damaged checkpoint: OSError, or ValueError (tensorstore's
# read errors, JSON that does not parse, a tree or shape that does not match).
# Not TypeError or KeyError: those are bugs of the code reading it, and stay
# what they are. A missing item (Orbax: KeyError) is checked for beforehand.
_READ_ERRORS = (OSError, ValueError)


def _why(e: BaseException) -> str:
  """The first sentence of an error, on one line (tensorstore appends its whole spec)."""
  text = " ".join(str(e).split()).split(" [tensorstore_spec")[0]
  return (text[:200] + "...") if len(text) > 200 else (text or type(e).__name__)


class ResumeError(RuntimeError):
  """The checkpoints in the output directory cannot be used by this run."""


class Checkpointer:
  """Orbax checkpoints in ``directory``, one per epoch (the last two kept).

  Args:
    directory: where the checkpoints live (created if missing).
  """

  def __init__(self, directory: str | Path):
    self.directory = Path(directory).absolute()
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True,
                                             enable_async_checkpointing=False))

  def latest_epoch(self) -> int | None:
    """The epoch of the newest checkpoint, or None if there is none."""
    return self.manager.latest_step()

  def save(self, epoch: int, state: NamedTuple, data_key, meta: dict) -> None:
    """Writes ``state`` (a NamedTuple of pytrees), the data key and ``meta`` (JSON)."""
    tree = {"state": state._asdict(), "data_key": np.asarray(data_key)}
    self.manager.save(epoch, args=ocp.args.Composite(
        arrays=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta)))
    self.manager.wait_until_finished()

  def _unreadable(self, epoch: int, why: str) -> ResumeError:
    return ResumeError(f"{self.directory / str(epoch)}: unreadable checkpoint ({why}); "
                       f"use another --output-dir")

  def _check_item(self, epoch: int, item: str) -> None:
    """Refuses a checkpoint without ``item`` (Orbax would raise a KeyError)."""
    if not (self.directory / str(epoch) / item).is_dir():
      raise self._unreadable(epoch, f"it has no {item!r} item")

  def read_meta(self, epoch: int) -> dict:
    """The JSON ``meta`` saved with ``epoch``.

    Raises:
      ResumeError: the checkpoint has no meta or it does not parse (the
        error's cause is Orbax's).
    """
    self._check_item(epoch, "meta")
    try:
      return self.manager.restore(
          epoch, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    except _READ_ERRORS as e:
      raise self._unreadable(epoch, _why(e)) from e

  def restore(self, epoch: int, template: NamedTuple, data_key) -> tuple[Any, np.ndarray]:
    """(state, data key) of ``epoch``, with the structure, shapes and dtypes of the templates.

    Args:
      epoch: which checkpoint.
      template: a state of the same NamedTuple type, shapes and dtypes; each
        array is restored with the sharding of its template leaf (the mesh of
        this run, not necessarily the one that saved it).
      data_key: an array shaped like the saved data key.

    Returns:
      The restored state (the type of ``template``) and the data key.

    Raises:
      ResumeError: the checkpoint is damaged or holds no state shaped like
        ``template`` (the error's cause is Orbax's).
    """
    tree = {"state": template._asdict(), "data_key": np.asarray(data_key)}
    # ShapeDtypeStructs carrying the template's shardings: the restore targets.
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
    self._check_item(epoch, "arrays")
    try:
      out = self.manager.restore(epoch, args=ocp.args.Composite(
          arrays=ocp.args.StandardRestore(abstract)))["arrays"]
    except _READ_ERRORS as e:
      raise self._unreadable(epoch, _why(e)) from e
    return type(template)(**out["state"]), np.asarray(out["data_key"])

  def resume_epoch(self, meta: dict, resume: bool) -> int | None:
    """The epoch to continue from, or None to start from scratch.

    Args:
      meta: this run's ``{"fingerprint": ..., "config": {...}}``.
      resume: whether the user asked to continue (``--resume``).

    Returns:
      The latest epoch when ``resume`` and a checkpoint exists, else None.

    Raises:
      ResumeError: checkpoints exist but ``resume`` is False, or they were
        written under another configuration (the message names the fields
        that differ), or the last one's meta is unreadable.
    """
    last = self.latest_epoch()
    if last is None:
      return None
    if not resume:
      raise ResumeError(f"{self.directory} already holds checkpoints: pass --resume "
                        f"to continue that run, or choose another --output-dir")
    saved = self.read_meta(last)
    if not isinstance(saved, dict) or saved.get("fingerprint") != meta["fingerprint"]:
      saved_cfg = saved.get("config", {}) if isinstance(saved, dict) else {}
      diff = {k: (saved_cfg.get(k), v) for k, v in meta["config"].items()
              if saved_cfg.get(k) != v}
      raise ResumeError(
          f"checkpoint in {self.directory} is from a different configuration "
          f"(saved vs now: {diff}); use another --output-dir or the same flags")
    return last

  def close(self) -> None:
    self.manager.close()
