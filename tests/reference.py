"""Independent NumPy transcriptions of the equations in shared/docs/rmda.md.

Written from the equations, not from rmda_jax's code: loops, float64, and
dicts of arrays instead of pytrees. ``run_on_quadratic`` is the one JAX
helper: it drives an optimizer on 1/2 ||W - T||^2 for tests that check the
structure it ends with.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax


def group_lasso_prox(x, t, axis):
  """prox of t * sum_g sqrt(|g|) ||x_g||, groups = indices of `axis`."""
  x = np.asarray(x, np.float64)
  axis = axis % x.ndim
  out = np.zeros_like(x)
  size = x.size // x.shape[axis]
  w = np.sqrt(size)
  for i in range(x.shape[axis]):
    idx = [slice(None)] * x.ndim
    idx[axis] = i
    g = x[tuple(idx)]
    n = np.sqrt(np.sum(g * g))
    if n > t * w:
      out[tuple(idx)] = g * (1.0 - t * w / n)
  return out


def group_lasso_value(x, lam, axis):
  x = np.asarray(x, np.float64)
  axis = axis % x.ndim
  size = x.size // x.shape[axis]
  moved = np.moveaxis(x, axis, 0).reshape(x.shape[axis], -1)
  return lam * np.sqrt(size) * np.sum(np.sqrt(np.sum(moved ** 2, axis=1)))


def l1_prox(x, t):
  x = np.asarray(x, np.float64)
  return np.sign(x) * np.maximum(np.abs(x) - t, 0.0)


def make_prox(kind, lam, axis=-2):
  """A prox over a dict of arrays; only ndim >= 2 leaves are regularized."""
  def prox(tree, scale):
    out = {}
    for name, x in tree.items():
      if kind is None or x.ndim < 2:
        out[name] = np.array(x, np.float64)
      elif kind == "l1":
        out[name] = l1_prox(x, scale * lam)
      elif kind == "group_lasso":
        out[name] = group_lasso_prox(x, scale * lam, axis)
      else:
        raise ValueError(kind)
    return out
  return prox


def rmda_reference(w_init, grad_fn, lr_fn, c_fn, prox, num_steps, restart_at=()):
  """Runs RMDA for num_steps; returns the iterates W and the points Z.

  grad_fn(W, t) gives the gradient at W for update t (0-based).
  """
  W = {k: np.array(v, np.float64) for k, v in w_init.items()}
  W0 = {k: v.copy() for k, v in W.items()}
  V = {k: np.zeros_like(v) for k, v in W.items()}
  alpha, k = 0.0, 0
  Ws, Zs = [], []
  for t in range(num_steps):
    if t in restart_at:
      k, alpha = 0, 0.0
      V = {n: np.zeros_like(v) for n, v in W.items()}
      W0 = {n: v.copy() for n, v in W.items()}
    g = grad_fn(W, t)
    beta = np.sqrt(k + 1.0)
    s = lr_fn(t) * beta
    alpha += s
    for n in V:
      V[n] = V[n] + s * g[n]
    Z = prox({n: W0[n] - V[n] / beta for n in W0}, alpha / beta)
    c = c_fn(t)
    W = {n: (1.0 - c) * W[n] + c * Z[n] for n in W}
    k += 1
    Ws.append(W)
    Zs.append(Z)
  return Ws, Zs


def run_on_quadratic(tx, params, target, steps):
  """``steps`` jitted updates of ``tx`` on f(W) = 1/2 ||W - target||^2."""
  def loss(p):
    return sum(jnp.sum((a - b) ** 2) for a, b in zip(
        jax.tree.leaves(p), jax.tree.leaves(target))) / 2

  @jax.jit
  def step(params, state):
    updates, state = tx.update(jax.grad(loss)(params), state, params)
    return optax.apply_updates(params, updates), state

  state = tx.init(params)
  for _ in range(steps):
    params, state = step(params, state)
  return params
