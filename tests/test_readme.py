"""The README's "Use it" code runs as written (with params and grads defined)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import rmda_jax
from tests import reference
from tests._compat import cpu_devices_xla_flags

README = Path(__file__).resolve().parent.parent / "README.md"


def _first_block(heading: str) -> str:
  text = README.read_text()
  section = text.split(heading, 1)[1].split("\n## ", 1)[0]
  blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
  assert blocks, f"README's {heading!r} section has no python block"
  return blocks[0]


def _flat(tree):
  return {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(v, np.float64)
          for path, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _use_it_block() -> str:
  return _first_block("## Use it")


def test_use_it_section_runs(capsys):
  k1, k2 = jax.random.split(jax.random.key(0))
  params = {"conv": {"kernel": jax.random.normal(k1, (3, 3, 4, 8)), "bias": jnp.zeros(8)},
            "dense": {"kernel": jax.random.normal(k2, (8, 10)).at[3].set(1e-6),
                      "bias": jnp.zeros(10)}}
  grads = jax.tree.map(jnp.ones_like, params)
  grads["dense"]["kernel"] = grads["dense"]["kernel"].at[3].set(0.0)  # a group Z zeroes
  block = _use_it_block()
  # The settings the reference below is written for.
  for s in ("rj.group_lasso(1e-4)", "learning_rate=0.1, momentum=0.1",
            "optax.clip_by_global_norm(1.0)"):
    assert s in block, f"README's Use it block changed: {s!r} not found; update this test"
  namespace = {"params": params, "grads": grads}
  exec(compile(block, str(README), "exec"), namespace)
  # One clipped RMDA step from the equations (shared/docs/rmda.md, k = 0:
  # beta = 1, s = alpha = lr): Z = prox_{lr psi}(W0 - lr g), W = (1 - c) W0 + c Z.
  lr, c, lam = 0.1, 0.1, 1e-4
  flat, g = _flat(params), _flat(grads)
  norm = np.sqrt(sum(np.sum(v * v) for v in g.values()))
  g = {k: v / max(norm, 1.0) for k, v in g.items()}
  z = reference.make_prox("group_lasso", lam)({k: flat[k] - lr * g[k] for k in flat}, lr)
  w = {k: (1 - c) * flat[k] + c * z[k] for k in flat}
  got_w = _flat(namespace["params"])
  got_z = _flat(rmda_jax.structured_params(namespace["state"]))
  assert set(got_w) == set(w) and set(got_z) == set(z)
  for k in w:
    np.testing.assert_allclose(got_w[k], w[k], rtol=1e-5, atol=1e-7, err_msg=k)
    np.testing.assert_allclose(got_z[k], z[k], rtol=1e-5, atol=1e-7, err_msg=k)
  assert not np.any(got_z["dense/kernel"][3]) and np.all(got_w["dense/kernel"][3] > 0)
  # The printed per-layer table names both regularized kernels.
  table = capsys.readouterr().out
  assert "conv" in table and "dense" in table


def test_mesh_example_runs_on_eight_devices():
  code = _first_block("### Training on several devices and hosts") + (
      "\nassert state.dual_point['w'].sharding.spec == params['w'].sharding.spec"
      "\nassert len(params['w'].sharding.device_set) == 8\n")
  env = dict(os.environ, XLA_FLAGS=cpu_devices_xla_flags(8),
             JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", code], env=env,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
