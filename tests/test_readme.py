"""The README's "Use it" code runs as written (with params and grads defined)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp

README = Path(__file__).resolve().parent.parent / "README.md"


def _first_block(heading: str) -> str:
  text = README.read_text()
  section = text.split(heading, 1)[1].split("\n## ", 1)[0]
  blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
  assert blocks, f"README's {heading!r} section has no python block"
  return blocks[0]


def _use_it_block() -> str:
  return _first_block("## Use it")


def test_use_it_section_runs():
  k1, k2 = jax.random.split(jax.random.key(0))
  namespace = {
      "params": {"conv": {"kernel": jax.random.normal(k1, (3, 3, 4, 8)),
                          "bias": jnp.zeros(8)},
                 "dense": {"kernel": jax.random.normal(k2, (8, 10)),
                           "bias": jnp.zeros(10)}},
  }
  namespace["grads"] = jax.tree.map(jnp.ones_like, namespace["params"])
  exec(compile(_use_it_block(), str(README), "exec"), namespace)
  # The block ends with new params and a state holding the structured point.
  assert set(namespace["params"]) == {"conv", "dense"}
  assert "state" in namespace


def test_mesh_example_runs_on_eight_devices():
  code = _first_block("### Training on several devices and hosts") + (
      "\nassert state.dual_point['w'].sharding.spec == params['w'].sharding.spec"
      "\nassert len(params['w'].sharding.device_set) == 8\n")
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", code], env=env,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
