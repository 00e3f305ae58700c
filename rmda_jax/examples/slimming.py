"""``rmda-train --slim``: the trained model, slimmed, saved and reported.

At the end of a run, :func:`slim_run` builds the model at the reported point
(RMDA: its structured point ``Z``; the other optimizers: the iterate) in eval
mode with its BatchNorm running statistics, removes every channel that all the
layers reading it have zeroed (``rmda_jax.slim.slim``), prints the report,
writes the slim model to ``OUTPUT_DIR/slim`` (``rmda_jax.slim.save``; read it
back with ``rmda_jax.slim.load``) and adds the report to ``summary.json``
under ``"slim"``.

The example batch that slim traces, checks and times is the first
``example_size`` images of the test set (``rmda-train`` passes its evaluation
batch, ``train.EVAL_BATCH``), normalised as the evaluation step does.

This module does not import ``train``: what it needs of the run (the trainer,
its state, the example batch's size) is passed in.

A slim failure (:class:`rmda_jax.slim.SlimError`: an operation slim cannot
follow, or a slim model whose outputs differ) or an unwritable slim directory
loses nothing of the run: the checkpoints, ``metrics.jsonl`` and
``summary.json`` are complete (the latter with ``"slim": {"error": ...}``),
and :class:`SlimFailed` is raised last, which ``rmda-train`` reports as one
line and exit status 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rmda_jax import slim as slim_lib
from rmda_jax.examples import data as data_lib
from rmda_jax.examples._files import write_json

__all__ = ["SlimFailed", "slim_run", "trained_model", "example_batch", "layer_channels",
           "CONSTRUCTOR"]

CONSTRUCTOR = "rmda_jax.examples.models:get_model"


class SlimFailed(RuntimeError):
  """``--slim`` failed after the run was written; the message is one line."""


def _one_line(e: BaseException) -> str:
  return " ".join(str(e).split()) or type(e).__name__


def trained_model(trainer, state) -> nnx.Module:
  """The model at the run's reported point, in eval mode (BatchNorm running statistics).

  Args:
    trainer: the run's ``train.Trainer``.
    state: its ``train.TrainState``.

  Returns:
    A new ``nnx.Module`` holding host copies of the values (single device,
    whatever the training state's sharding).
  """
  host = lambda tree: jax.tree.map(lambda a: jnp.asarray(np.asarray(a)), tree)
  return nnx.merge(trainer.parts.graphdef_eval, host(trainer.reported(state)),
                   host(state.batch_stats))


def example_batch(ds, size: int | None = None) -> jax.Array:
  """The first ``size`` test images (None: all), normalised as evaluation does."""
  x = ds.x_test if size is None else ds.x_test[:size]
  return data_lib.normalize(jnp.asarray(x), (ds.scale, ds.mean, ds.std))


def layer_channels(model: nnx.Module) -> dict[str, int]:
  """Output channels (features) of every layer with a kernel, by path: ``{"conv1": 6, ...}``."""
  out = {}
  for path, module in nnx.iter_modules(model):
    kernel = getattr(module, "kernel", None)
    if isinstance(kernel, nnx.Variable):
      out["/".join(map(str, path))] = int(kernel.shape[-1])
  return out


def _channels_line(before: dict[str, int], after: dict[str, int]) -> str:
  kept = ", ".join(f"{k} {after.get(k, 0)}/{v}" for k, v in before.items())
  gone = sum(v - after.get(k, 0) for k, v in before.items())
  return f"channels kept per layer: {kept} ({gone} of {sum(before.values())} removed)"


def slim_run(cfg, ds, trainer, state, out: Path, summary: dict, *,
             example_size: int | None = None, log: Callable[[str], Any] = print,
             timing_runs: int = 10) -> dict:
  """Slims the trained model, writes it to ``out/slim`` and its report into ``summary.json``.

  Args:
    cfg: the run's ``config.Config``.
    ds: the run's dataset (as trained: padded images for LeNet5 on digits).
    trainer: the run's ``train.Trainer``.
    state: the final ``train.TrainState``.
    out: the run's output directory.
    example_size: test images in the example batch slim traces, checks and
      times (``rmda-train`` passes its evaluation batch); None: all.
    summary: the run's summary; its ``"slim"`` entry is set and ``out /
      "summary.json"`` rewritten (atomically).
    log: where the report's lines go.
    timing_runs: timed calls per model for the report's inference times.

  Returns:
    ``summary["slim"]``: ``path``, ``constructor``, ``constructor_kwargs``,
    ``example_batch``, ``channels`` (``{layer: [before, after]}``) and
    ``report`` (``SlimReport.to_dict()``).

  Raises:
    SlimFailed: slim refused the model or the slim directory could not be
      written (``summary.json`` then holds ``"slim": {"error": ...}``), or the
      run has several processes (nothing is done; slim it with ``--resume
      --slim`` in one process).
  """
  out = Path(out)
  if jax.process_count() > 1:
    # The parameters are spread over hosts and Orbax's save is collective: slim on one.
    raise SlimFailed(f"--slim runs in one process, this run has {jax.process_count()} (the "
                     f"trained run is complete in {out}); slim it on one machine with "
                     "rmda-train --resume --slim and the run's flags")
  path = out / "slim"
  model = trained_model(trainer, state)
  x = example_batch(ds, example_size)
  kwargs = {"name": cfg.model, "num_classes": int(ds.num_classes),
            "input_shape": tuple(int(d) for d in ds.input_shape)}
  log("")
  log(f"slim: removing the channels every reader has zeroed, at the reported point "
      f"{summary.get('reported_point', '')}, BatchNorm in eval mode; example batch: "
      f"the first {x.shape[0]} test images")
  try:
    result = slim_lib.slim(model, x, timing_runs=timing_runs)
    before, after = layer_channels(model), layer_channels(result.model)
    for line in str(result.report).splitlines():
      log(line)
    log(_channels_line(before, after))
    slim_lib.save(path, result, constructor=CONSTRUCTOR, constructor_kwargs=kwargs,
                  overwrite=True)
  except (slim_lib.SlimError, OSError) as e:
    why = _one_line(e)
    summary["slim"] = {"error": why}
    _write_summary(out, summary)
    raise SlimFailed(f"--slim failed: {why} (the trained run is complete: checkpoints, "
                     f"metrics.jsonl and summary.json in {out})") from e
  summary["slim"] = {
      "path": str(path),
      "constructor": CONSTRUCTOR,
      "constructor_kwargs": {**kwargs, "input_shape": list(kwargs["input_shape"])},
      "example_batch": int(x.shape[0]),
      "channels": {k: [v, after.get(k, 0)] for k, v in before.items()},
      "report": result.report.to_dict(),
  }
  _write_summary(out, summary)
  log(f"wrote {path} (rmda_jax.slim.load reads it) and the report into "
      f"{out / 'summary.json'} (\"slim\")")
  return summary["slim"]


def _write_summary(out: Path, summary: dict) -> None:
  write_json(out / "summary.json", summary)
