"""Child process of test_examples_mesh.py: ``rmda-train`` runs on virtual CPU devices.

Started as ``python -m tests._mesh_child RUNS_JSON`` with XLA_FLAGS (device
count) set before JAX starts. ``RUNS_JSON`` is a list of argument lists; each
is run through ``rmda_jax.examples.train.main`` in this process, one after the
other. An entry starting with ``"--check-step"`` instead runs a few steps of
that configuration and records facts on its compiled step. Prints one JSON
line: per run its exit status and its stderr and stdout lines (or the facts),
then the device and process counts.
"""

import contextlib
import io
import json
import sys

import jax
import numpy as np

from rmda_jax.examples import config, sharding, train


def check_step(argv):
  """Two epochs of two steps of a mesh run's jitted step, as rmda-train's loop calls it:
  shardings kept, one compilation, the collectives of the compiled step."""
  cfg = config.parse_args(argv)
  layout = sharding.layout_for(cfg)
  ds = train.prepare_data(cfg)
  n = len(ds.y_train)
  trainer = train.Trainer(cfg, ds, n // cfg.batch_size, layout)
  state = trainer.init_state()
  want = layout.shardings(state)
  x_train, y_train, _, _ = trainer.place_data(ds)
  key = jax.random.key(1)
  for epoch in range(2):
    inputs = trainer.epoch_inputs(x_train, y_train, train.epoch_permutation(
        np.zeros(2, np.uint32), epoch, n, cfg.batch_size))
    loss = jax.numpy.zeros((), jax.numpy.float32)
    for i in range(2):
      state, loss = trainer.train_step(state, loss, *inputs, np.int32(i),
                                       jax.random.fold_in(key, epoch))
  step = trainer.train_step.jitted
  # The executable the calls compiled (lower/compile finds it in JAX's cache).
  hlo = step.lower(state, loss, *inputs, np.int32(0), key).compile().as_text()
  kept = all(a.sharding.is_equivalent_to(s, a.ndim)
             for a, s in zip(jax.tree.leaves(state), jax.tree.leaves(want)))
  return {"state_keeps_shardings": kept, "compilations": step._cache_size(),
          "param_specs": sorted({str(a.sharding.spec) for a in jax.tree.leaves(state.params)}),
          "collectives": sharding.collectives(hlo),
          "batch_bytes": int(np.prod(inputs[0].shape[1:])) * inputs[0].dtype.itemsize}


def main():
  runs = json.loads(sys.argv[1])
  facts = {"runs": []}  # no JAX work before the first run: it may start jax.distributed
  for argv in runs:
    if argv[0] == "--check-step":
      facts["runs"].append(check_step(argv[1:]))
      continue
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
      rc = train.main(argv)
    facts["runs"].append({"rc": rc, "stdout": out.getvalue().splitlines(),
                          "stderr": err.getvalue().splitlines()})
  facts.update(devices=jax.device_count(), local_devices=jax.local_device_count(),
               processes=jax.process_count())
  print(json.dumps(facts))


if __name__ == "__main__":
  main()
