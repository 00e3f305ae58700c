"""rmda-train's checkpoints: a damaged one is refused with its cause kept; a bug stays a bug."""

import shutil
from typing import Any, NamedTuple

import chex
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("orbax.checkpoint")

from rmda_jax.examples.checkpoint import Checkpointer, ResumeError  # noqa: E402

META = {"fingerprint": "abc", "config": {"lr": 0.1}}


class State(NamedTuple):
  params: Any
  batch_stats: Any


STATE = State({"w": np.arange(6, dtype=np.float32).reshape(2, 3)}, {})
KEY = np.array([3, 4], np.uint32)


@pytest.fixture
def saved(tmp_path):
  """A directory with one checkpoint (epoch 1) of STATE; yields (directory, its step dir)."""
  ckpt = Checkpointer(tmp_path / "ck")
  ckpt.save(1, State({"w": jnp.asarray(STATE.params["w"])}, {}), KEY, META)
  ckpt.close()
  return tmp_path / "ck", tmp_path / "ck" / "1"


def restore(directory, template=STATE):
  ckpt = Checkpointer(directory)
  try:
    return ckpt.restore(1, template, np.zeros(2, np.uint32))
  finally:
    ckpt.close()


def resume_epoch(directory):
  ckpt = Checkpointer(directory)
  try:
    return ckpt.resume_epoch(META, True)
  finally:
    ckpt.close()


def test_round_trip(saved):
  directory, _ = saved
  assert resume_epoch(directory) == 1
  state, key = restore(directory)
  chex.assert_trees_all_equal(state.params, STATE.params)
  np.testing.assert_array_equal(key, KEY)


def test_damaged_arrays_are_refused_with_the_cause_kept(saved):
  directory, step = saved
  for f in (step / "arrays").rglob("*"):
    if f.is_file() and f.parent.name == "d":
      f.write_bytes(b"")
  with pytest.raises(ResumeError, match="unreadable checkpoint") as e:
    restore(directory)
  assert str(step) in str(e.value)
  assert isinstance(e.value.__cause__, ValueError)   # Orbax's (tensorstore's) error, kept


def test_a_state_of_another_shape_is_refused_with_the_cause_kept(saved):
  directory, _ = saved
  with pytest.raises(ResumeError, match="unreadable checkpoint") as e:
    restore(directory, State({"w": np.zeros((2, 4), np.float32)}, {}))
  assert isinstance(e.value.__cause__, ValueError)


def test_damaged_meta_is_refused_with_the_cause_kept(saved):
  directory, step = saved
  (step / "meta" / "metadata").write_text("{not json")
  with pytest.raises(ResumeError, match="unreadable checkpoint") as e:
    resume_epoch(directory)
  assert isinstance(e.value.__cause__, ValueError)


@pytest.mark.parametrize("item", ["arrays", "meta"])
def test_a_missing_item_is_refused(saved, item):
  directory, step = saved
  shutil.rmtree(step / item)
  with pytest.raises(ResumeError, match=f"unreadable checkpoint .*no '{item}' item"):
    restore(directory) if item == "arrays" else resume_epoch(directory)


@pytest.mark.parametrize("error", [TypeError("a bug"), KeyError("a bug")])
@pytest.mark.parametrize("what", ["restore", "meta"])
def test_a_bug_is_not_reported_as_an_unreadable_checkpoint(saved, monkeypatch, error, what):
  directory, _ = saved

  def broken(self, *args, **kwargs):
    raise error

  import orbax.checkpoint as ocp
  monkeypatch.setattr(ocp.CheckpointManager, "restore", broken)
  with pytest.raises(type(error), match="a bug"):
    restore(directory) if what == "restore" else resume_epoch(directory)
