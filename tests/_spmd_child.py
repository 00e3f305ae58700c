"""Child process of test_sharding.py: runs with 8 virtual CPU devices.

Started as ``python -m tests._spmd_child`` with XLA_FLAGS set before JAX
starts; prints one JSON line of measured facts for the parent to assert on.
"""

import json
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import rmda_jax as rj

SHAPES = {"conv": {"kernel": (3, 3, 16, 32), "bias": (32,)},
          "dense": {"kernel": (64, 16), "bias": (16,)}}
STEPS = 8

OPTIMIZERS = {
    "rmda": lambda reg: rj.rmda(0.5, 1.0, reg),
    "rmda_multistep": lambda reg: rj.rmda_multistep(0.5, 0.5, [3, 6], 0.5, reg),
    "prox_sgd": lambda reg: rj.prox_sgd(0.1, 0.9, reg),
    "prox_adam": lambda reg: rj.prox_adam(0.05, regularizer=reg),
    "prox_ssi": lambda reg: rj.prox_ssi(0.05, regularizer=reg),
}

# Where each leaf is split: "out" shards the kernels' last axis, so every
# input group's norm spans all shards; "in" shards the group axis itself
# (2-D mesh: data x fsdp, kernels split on axis -2 over fsdp).
LAYOUTS = {
    "out": ((8,), ("fsdp",), lambda nd: P(*([None] * (nd - 1) + ["fsdp"]))),
    "in": ((2, 4), ("data", "fsdp"),
           lambda nd: P(*([None] * (nd - 2) + ["fsdp", None])) if nd >= 2
           else P("fsdp")),
}


def _problem():
  rng = np.random.default_rng(0)
  leaf = lambda s: jnp.asarray(rng.normal(size=s), jnp.float32)
  is_shape = lambda s: isinstance(s, tuple)
  target = jax.tree.map(leaf, SHAPES, is_leaf=is_shape)
  # Half the input groups of each kernel have a small target: they get cut.
  for layer in ("conv", "dense"):
    k = target[layer]["kernel"]
    target[layer]["kernel"] = k.at[..., : k.shape[-2] // 2, :].multiply(0.01)
  params = jax.tree.map(lambda t: t + 0.1 * leaf(t.shape), target)
  return params, target


def _noises(params):
  """Gradient noise of every step, drawn on the host (the same on any mesh)."""
  rng = np.random.default_rng(1)
  return [jax.tree.map(lambda p: np.float32(0.1) * rng.normal(
      size=p.shape).astype(np.float32), params) for _ in range(STEPS)]


def _step_fn(tx, target):
  def step(params, state, noise):
    grads = jax.tree.map(lambda p, c, n: p - c + n, params, target, noise)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state
  return step


def _mesh(shape, names, explicit):
  """A mesh with Auto axes (jax.sharding.Mesh, any JAX) or Explicit ones."""
  if explicit:
    return jax.make_mesh(shape, names, axis_types=(
        (jax.sharding.AxisType.Explicit,) * len(names)))
  return Mesh(np.array(jax.devices()).reshape(shape), names)


def _run(tx, params, target, shardings=None):
  params = jax.tree.map(jnp.copy, params)  # the step donates its inputs
  noises = _noises(params)
  if shardings is not None:
    params = jax.device_put(params, shardings)
    noises = [jax.device_put(n, shardings) for n in noises]
  # Eagerly, as nnx.Optimizer does; under explicit mesh axes also jitted.
  explicit = shardings is not None and any(
      t == jax.sharding.AxisType.Explicit for t in getattr(
          jax.tree.leaves(shardings)[0].mesh, "axis_types", ()))
  state = jax.jit(tx.init)(params) if explicit else tx.init(params)
  init_state = state
  hlo = jax.jit(_step_fn(tx, target), donate_argnums=(0, 1)).lower(
      params, state, noises[0]).compile().as_text()
  chex.clear_trace_counter()
  step = jax.jit(chex.assert_max_traces(_step_fn(tx, target), n=1),
                 donate_argnums=(0, 1))
  for noise in noises:  # a second trace (a recompile) raises in chex
    params, state = step(params, state, noise)
  return params, state, init_state, hlo


def _same_sharding_as_params(state, params):
  """Paths of param-shaped state leaves whose sharding differs from the param's."""
  bad = []
  p_by_shape = {}
  for path, p in jax.tree_util.tree_leaves_with_path(params):
    p_by_shape.setdefault(p.shape, []).append(p.sharding)
  for path, x in jax.tree_util.tree_leaves_with_path(state):
    if x.ndim == 0:
      continue
    if not any(x.sharding.is_equivalent_to(s, x.ndim)
               for s in p_by_shape.get(x.shape, [])):
      bad.append(jax.tree_util.keystr(path))
  return bad


def _param_sized_collectives(hlo, params):
  """Collectives in the compiled step whose result is as large as a parameter."""
  sizes = {int(np.prod(p.shape)) for p in jax.tree.leaves(params)
           if p.ndim >= 2}
  found = []
  for line in hlo.splitlines():
    m = re.search(r"= \w+\[([\d,]*)\][^ ]* (all-gather|all-to-all|"
                  r"collective-permute|all-reduce)\(", line)
    if m:
      n = int(np.prod([int(d) for d in m.group(1).split(",") if d] or [1]))
      if n in sizes:
        found.append(line.strip()[:160])
  return found


# (layout, explicit mesh axes, optimizers): every optimizer once, each
# layout and mode at least twice; compiles dominate the time.
RUNS = [
    ("out", False, ("rmda", "rmda_multistep", "prox_sgd", "prox_adam",
                    "prox_ssi")),
    ("in", False, ("rmda", "prox_adam")),
    ("out", True, ("rmda", "prox_sgd")),
]


def main():
  params, target = _problem()
  facts = {"devices": jax.device_count(), "runs": {}}
  refs = {}
  for layout, explicit, names in RUNS:
    if explicit and not hasattr(jax, "set_mesh"):
      continue  # explicit mesh axes came with newer JAX releases
    mesh_shape, axis_names, spec = LAYOUTS[layout]
    mesh = _mesh(mesh_shape, axis_names, explicit)
    shardings = jax.tree.map(lambda p: NamedSharding(mesh, spec(p.ndim)),
                             params)
    for name in names:
      reg = rj.group_lasso(0.2)
      tx = OPTIMIZERS[name](reg)
      if name not in refs:
        refs[name] = _run(tx, params, target)[0]
      ref = refs[name]
      if explicit:
        with jax.set_mesh(mesh):
          got, state, init_state, hlo = _run(tx, params, target, shardings)
      else:
        got, state, init_state, hlo = _run(tx, params, target, shardings)
      layout_name = layout + ("/explicit" if explicit else "")
      zero = lambda t: [np.asarray(x) == 0 for x in jax.tree.leaves(t)]
      facts["runs"][f"{layout_name}/{name}"] = {
          "max_abs_diff": max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                              for a, b in zip(jax.tree.leaves(got),
                                              jax.tree.leaves(ref))),
          "same_zeros": all(np.array_equal(a, b)
                            for a, b in zip(zero(got), zero(ref))),
          "zero_groups": rj.group_sparsity(jax.device_get(got), reg),
          "params_keep_sharding": all(g.sharding.is_equivalent_to(s, g.ndim)
                                      for g, s in zip(jax.tree.leaves(got),
                                                      jax.tree.leaves(shardings))),
          "init_state_mismatch": _same_sharding_as_params(
              init_state, jax.device_put(params, shardings)),
          "state_mismatch": _same_sharding_as_params(
              state, jax.device_put(params, shardings)),
          "param_sized_collectives": _param_sized_collectives(hlo, params),
      }
  print(json.dumps(facts))


if __name__ == "__main__":
  main()
