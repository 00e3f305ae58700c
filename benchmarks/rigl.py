"""RigL (Evci et al. 2020, "Rigging the Lottery") as an optax transformation.

jaxpruner is not installable in this environment (no distribution of it on the
package index this machine reaches), so this is our own transcription of the
algorithm, for ``bench_rigl``:

* sparsity per layer (the ``ndim >= 2`` leaves; biases stay dense) from
  :func:`erk_densities` (Erdos-Renyi-Kernel, dense layers capped at density 1)
  or uniform; random initial masks with the exact count per layer;
* the wrapped optimizer sees the masked gradients, and weights outside the
  mask stay 0 (:func:`apply_masks` masks the initial weights, :func:`reseed`
  draws the masks of another seed);
* every ``delta_t`` updates until ``t_end`` (a fraction of training), in each
  sparse layer: drop the ``k = f(t) * n_active`` active weights of smallest
  magnitude and grow the ``k`` inactive ones (just-dropped ones included) of
  largest dense-gradient magnitude (the current batch), new weights set to 0;
  ``f(t) = alpha / 2 * (1 + cos(pi t / t_end))``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax


def erk_densities(shapes: dict, sparsity: float, power: float = 1.0) -> dict:
  """ERK densities per layer (Evci et al. 2020, as in the rigl code).

  Each layer's density is ``eps * (sum(shape) / prod(shape)) ** power``, with
  ``eps`` chosen so that the overall density is ``1 - sparsity``; layers whose
  density would exceed 1 are made dense and ``eps`` is recomputed.
  """
  dense = set()
  while True:
    divisor = rhs = 0.0
    raw = {}
    for name, shape in shapes.items():
      n = float(np.prod(shape))
      if name in dense:
        rhs -= n * sparsity
      else:
        rhs += n * (1 - sparsity)
        raw[name] = (sum(shape) / n) ** power
        divisor += raw[name] * n
    eps = rhs / divisor
    max_raw = max(raw.values())
    if max_raw * eps > 1:
      dense |= {k for k, v in raw.items() if v == max_raw}
    else:
      break
  return {name: (1.0 if name in dense else eps * raw[name]) for name in shapes}


def layer_densities(params, sparsity: float, distribution: str = "erk") -> dict:
  """{leaf path: density} of the kernels (``ndim >= 2`` leaves) of ``params``."""
  shapes = {jax.tree_util.keystr(p): tuple(x.shape)
            for p, x in jax.tree_util.tree_leaves_with_path(params) if jnp.ndim(x) >= 2}
  if distribution == "erk":
    return erk_densities(shapes, sparsity)
  if distribution == "uniform":
    return {k: 1 - sparsity for k in shapes}
  raise ValueError(f"unknown distribution {distribution!r}; choose erk or uniform")


def apply_masks(masks, params):
  """``params`` with the weights outside ``masks`` set to 0."""
  return jax.tree.map(lambda p, m: jnp.where(m, p, 0).astype(p.dtype), params, masks)


class RigLState(NamedTuple):
  count: jax.Array          # updates so far
  mask_updates: jax.Array   # drop/grow rounds so far
  masks: Any                # bool, like the params (all True on dense leaves)
  inner_state: Any


def _draw_masks(params, counts, seed: int):
  """Random masks with ``counts[i]`` entries on in leaf ``i``, drawn from ``seed``."""
  key = jax.random.PRNGKey(10_000 + seed)
  masks = []
  for i, (x, n_on) in enumerate(zip(jax.tree.leaves(params), counts)):
    if n_on == x.size:
      masks.append(jnp.ones(x.shape, bool))
      continue
    score = jax.random.uniform(jax.random.fold_in(key, i), (x.size,))
    rank = jnp.zeros(x.size, jnp.int32).at[jnp.argsort(score)].set(
        jnp.arange(x.size, dtype=jnp.int32))
    masks.append((rank < n_on).reshape(x.shape))
  return jax.tree.unflatten(jax.tree.structure(params), masks)


def reseed(params, state: RigLState, seed: int):
  """(masked params, state) of a start from ``seed``: masks drawn again, same count per leaf.

  What a run from another seed starts from, without building (and compiling)
  another transformation: ``params, state = reseed(params, tx.init(params), seed)``.
  """
  counts = [int(jnp.sum(m)) for m in jax.tree.leaves(state.masks)]
  masks = _draw_masks(params, counts, seed)
  return apply_masks(masks, params), state._replace(masks=masks)


def _drop_grow(m, w, g, frac):
  """One layer's new mask and the entries of ``w`` kept (not dropped, not grown)."""
  shape, m, w, g = m.shape, m.ravel(), w.ravel(), g.ravel()
  n = m.size
  k = jnp.floor(frac * jnp.sum(m)).astype(jnp.int32)
  arange = jnp.arange(n, dtype=jnp.int32)
  # Drop: the k active weights of smallest magnitude.
  score_drop = jnp.where(m, jnp.abs(w), jnp.inf)
  rank = jnp.zeros(n, jnp.int32).at[jnp.argsort(score_drop)].set(arange)
  kept = m & (rank >= k)
  # Grow: the k weights outside `kept` of largest gradient magnitude.
  score_grow = jnp.where(kept, -jnp.inf, jnp.abs(g))
  rank = jnp.zeros(n, jnp.int32).at[jnp.argsort(-score_grow)].set(arange)
  grow = (~kept) & (rank < k)
  return (kept | grow).reshape(shape), kept.reshape(shape)


def rigl(inner: optax.GradientTransformation, sparsity: float, total_steps: int, *,
         delta_t: int, alpha: float = 0.3, t_end_fraction: float = 0.75,
         distribution: str = "erk", seed: int = 0) -> optax.GradientTransformation:
  """RigL's masks around ``inner`` (see the module docstring).

  Args:
    inner: the optimizer of the active weights (it sees masked gradients).
    sparsity: the fraction of kernel entries held at 0.
    total_steps: the length of training, in updates.
    delta_t: updates between two drop/grow rounds.
    alpha: the fraction of active weights the first round drops (cosine decay).
    t_end_fraction: no round after this fraction of ``total_steps``.
    distribution: ``"erk"`` or ``"uniform"`` densities per layer.
    seed: draws the initial masks; start from ``apply_masks(state.masks, params)``
      (or from :func:`reseed`, for another seed).

  Returns:
    An optax transformation whose state is a :class:`RigLState`.
  """
  t_end = int(t_end_fraction * total_steps)

  def init_fn(params):
    dens = layer_densities(params, sparsity, distribution)
    counts = [int(round(dens.get(jax.tree_util.keystr(p), 1.0) * x.size))
              for p, x in jax.tree_util.tree_leaves_with_path(params)]
    masks = _draw_masks(params, counts, seed)
    zero = jnp.zeros([], jnp.int32)
    return RigLState(zero, zero, masks, inner.init(params))

  def update_fn(updates, state, params):
    dense = layer_densities(params, sparsity, distribution)
    sparse = [dense.get(jax.tree_util.keystr(p), 1.0) < 1
              for p, _ in jax.tree_util.tree_leaves_with_path(params)]
    grads = updates
    inner_updates, inner_state = inner.update(apply_masks(state.masks, grads),
                                              state.inner_state, params)
    count = optax.safe_increment(state.count)

    def drop_grow(masks):
      t = count.astype(jnp.float32)
      frac = alpha / 2 * (1 + jnp.cos(jnp.pi * t / t_end))
      new_params = jax.tree.map(lambda p, u, m: p + jnp.where(m, u, 0),
                                params, inner_updates, masks)
      out = [_drop_grow(m, w, g, frac) if s else (m, m) for s, m, w, g in zip(
          sparse, jax.tree.leaves(masks), jax.tree.leaves(new_params), jax.tree.leaves(grads))]
      treedef = jax.tree.structure(masks)
      return (jax.tree.unflatten(treedef, [o[0] for o in out]),
              jax.tree.unflatten(treedef, [o[1] for o in out]))

    due = (count % delta_t == 0) & (count < t_end)
    masks, keep = jax.lax.cond(due, drop_grow, lambda m: (m, m), state.masks)
    # Kept weights take the inner update; all others go to exactly 0.
    new_updates = jax.tree.map(lambda u, p, k: jnp.where(k, u, -p).astype(u.dtype),
                               inner_updates, params, keep)
    return new_updates, RigLState(count, state.mask_updates + due.astype(jnp.int32),
                                  masks, inner_state)

  return optax.GradientTransformation(init_fn, update_fn)
