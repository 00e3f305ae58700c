"""Optimizer states placed like the parameters (multi-device training).

Parameter-shaped buffers of every state follow the params: ``jnp.array(p,
copy=True)`` and ``jnp.zeros_like(p)`` keep a concrete array's sharding, and
under ``jax.jit`` with explicit mesh axes the sharding is part of the type.
Scalars (counters, RMDA's ``alpha``) have no parameter to follow: created
eagerly they would sit on one device while the first update returns them
replicated over the mesh, and that change of placement would make a jitted
step compile a second time. :func:`scalar_like_params` places them
replicated over the params' mesh from the start.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec


def scalar_like_params(value, dtype, params: Any) -> jax.Array:
  """``value`` as a 0-d array, replicated over the mesh the params live on.

  Args:
    value: the scalar.
    dtype: its dtype.
    params: the parameter pytree. If its first leaf is a concrete array with
      a :class:`jax.sharding.NamedSharding`, the scalar is put replicated on
      that mesh; otherwise (one device, or under ``jax.jit``) it is left
      where JAX puts it.

  Returns:
    A 0-d array.
  """
  x = jnp.asarray(value, dtype)
  leaves = jax.tree.leaves(params)
  if not leaves or isinstance(leaves[0], jax.core.Tracer):
    return x
  sharding = getattr(leaves[0], "sharding", None)
  if isinstance(sharding, NamedSharding):
    return jax.device_put(x, NamedSharding(sharding.mesh, PartitionSpec()))
  return x
