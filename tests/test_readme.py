"""The README's "Use it" code runs as written (with params and grads defined)."""

import re
from pathlib import Path

import jax
import jax.numpy as jnp

README = Path(__file__).resolve().parent.parent / "README.md"


def _use_it_block() -> str:
  text = README.read_text()
  section = text.split("## Use it", 1)[1].split("\n## ", 1)[0]
  blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
  assert blocks, "README's 'Use it' section has no python block"
  return blocks[0]


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
