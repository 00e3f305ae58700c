r"""The arithmetic of the proximal maps: closed forms and inner solvers.

One copy of each operation, used by the regularizers of
:mod:`rmda_jax.regularizers` (the optimizers never call this module):

* :func:`soft_threshold` and :func:`group_shrink`, the closed-form proxes of
  the L1 norm and of a sum of group norms;
* the prox in a diagonal metric :math:`D = \mathrm{diag}(d)`,

  .. math::

    \arg\min_U \tfrac12 (U - Y)^\top D (U - Y) + \tau \Phi(U),

  which ProxGen and ProxSSI solve every step: :func:`soft_threshold_metric`
  (L1, closed form), :func:`group_prox_pg` and :func:`group_prox_newton`
  (group norms) and :func:`prox_pg` (any :math:`\Phi` with a plain prox).

Every function works on one array (one pytree leaf); groups are given by the
axes one group spans (``()``: every entry is its own group).
"""

from __future__ import annotations

from typing import Callable

import jax.numpy as jnp
from jax import lax

__all__ = [
    "PG",
    "NEWTON",
    "SOLVERS",
    "group_reduce",
    "group_norm",
    "soft_threshold",
    "group_shrink",
    "soft_threshold_metric",
    "prox_pg",
    "group_prox_pg",
    "group_prox_newton",
]

PG = "pg"          # proximal gradient (ProxGen's inexact inner solver)
NEWTON = "newton"  # Newton's method on each group's secular equation (ProxSSI)
SOLVERS = (PG, NEWTON)

# Defaults of the inner solvers: (max_steps, tol). Proximal gradient stops on
# the largest change of an entry; Newton on the relative change of ||U_g||.
DEFAULTS = {PG: (100, 1e-8), NEWTON: (50, 1e-7)}


def group_reduce(fn, x, axes):
  """``fn`` over the group axes with the axes kept (identity if no axes)."""
  return fn(x, axis=axes, keepdims=True) if axes else x


def group_norm(x, axes):
  """Euclidean norm of each group, group axes kept with size 1."""
  return jnp.sqrt(group_reduce(jnp.sum, jnp.square(x), axes))


def soft_threshold(x, threshold):
  r"""``argmin_u 1/2 ||u - x||^2 + threshold ||u||_1``: ``x - clip(x, -t, t)``.

  ``threshold`` may be a scalar or an array broadcasting against ``x``; the
  result is an exact ``+0`` where :math:`|x_i| \le t_i`.
  """
  return x - jnp.clip(x, -threshold, threshold)


def group_shrink(x, threshold, axes):
  r"""``x_g * max(0, 1 - threshold / ||x_g||)`` for every group.

  The prox of ``threshold * sum_g ||u_g||``: an exact 0 for groups with
  :math:`\|x_g\| \le` ``threshold``, never NaN (the norm of a zero group is
  not divided by).
  """
  sq = group_reduce(jnp.sum, jnp.square(x), axes)
  keep = sq > jnp.square(threshold)
  return x * jnp.where(keep, 1 - threshold * lax.rsqrt(jnp.where(keep, sq, 1)),
                       0)


def soft_threshold_metric(y, d, tau):
  r"""``argmin_u 1/2 (u - y)^T diag(d) (u - y) + tau ||u||_1``, in closed form.

  Per coordinate: soft thresholding of ``y_i`` at ``tau / d_i``; an exact
  ``+0`` where :math:`|y_i| \le \tau / d_i`.
  """
  return soft_threshold(y, tau / d)


def prox_pg(prox: Callable, y, d, tau, *, max_steps=DEFAULTS[PG][0],
            tol=DEFAULTS[PG][1]):
  r"""The metric prox of any :math:`\Phi` with a plain prox, by proximal gradient.

  Solves :math:`\min_u \tfrac12 (u - y)^\top D (u - y) + \tau \Phi(u)` for the
  whole array by ``u <- prox(u - D (u - y) / L, tau / L)``, ``L = max d``,
  started at ``y``, inside one ``lax.while_loop`` that stops when the largest
  change of an entry is ``<= tol`` or after ``max_steps`` steps.

  Args:
    prox: ``prox(x, t) = argmin_u 1/2 ||u - x||^2 + t Phi(u)``.
    y: the centre of the subproblem.
    d: the positive diagonal of the metric (shape of ``y``).
    tau: the scale of :math:`\Phi` (a scalar >= 0).
    max_steps: bound on the iterations (may be a traced integer).
    tol: stopping tolerance on ``max |u_new - u|``.

  Returns:
    ``(u, steps)``: the solution and the number of iterations run.
  """
  lip = jnp.max(d)
  a = d / lip
  ay = a * y
  thr = tau / lip

  def step(u):
    return prox(u - a * u + ay, thr)

  return _iterate(step, y, max_steps, tol)


def group_prox_pg(y, d, tau, axes, *, max_steps=DEFAULTS[PG][0],
                  tol=DEFAULTS[PG][1]):
  r"""Weighted group-norm prox by proximal gradient, per group (ProxGen's solver).

  Solves, for every group ``g`` (the entries spanned by ``axes``),

  .. math::

    \min_u \tfrac12 (u_g - y_g)^\top D_g (u_g - y_g) + \tau \|u_g\|_2,
    \quad D_g = \mathrm{diag}(d_g),

  by ``u <- group_shrink(u - D_g (u - y) / L_g, tau / L_g)`` with
  ``L_g = max_i d_i`` over the group, started at ``y``. Groups with
  :math:`\|D_g y_g\| \le \tau` are zero at the optimum: they are set to
  exactly 0 first and never iterated. All groups of the array iterate
  together in one ``lax.while_loop`` until the largest change of an entry is
  ``<= tol`` or after ``max_steps`` steps.

  Args:
    y: the centre of the subproblem.
    d: the positive diagonal of the metric (shape of ``y``).
    tau: the group threshold (a scalar >= 0, group weight included).
    axes: the axes one group spans (``()``: every entry is a group).
    max_steps: bound on the iterations (may be a traced integer).
    tol: stopping tolerance on ``max |u_new - u|``.

  Returns:
    ``(u, steps)``: the solution and the number of iterations run.
  """
  active = group_norm(d * y, axes) > tau
  lip = group_reduce(jnp.max, d, axes)
  a = d / lip                 # the step is u <- (1 - a) u + a y, then shrink
  ay = a * y
  thr = tau / lip

  def step(u):
    return jnp.where(active, group_shrink(u - a * u + ay, thr, axes), 0)

  return _iterate(step, jnp.where(active, y, 0), max_steps, tol)


def _iterate(step, u, max_steps, tol):
  """Fixed-point loop ``u <- step(u)`` until ``max |du| <= tol`` or ``max_steps``."""
  tol = jnp.asarray(tol, u.dtype)

  def body(carry):
    u, _, k = carry
    u_new = step(u)
    return u_new, jnp.max(jnp.abs(u_new - u), initial=0), k + 1

  def cond(carry):
    _, delta, k = carry
    return (k < max_steps) & (delta > tol)

  init = (u, jnp.asarray(jnp.inf, u.dtype), jnp.zeros([], jnp.int32))
  u, _, steps = lax.while_loop(cond, body, init)
  return u, steps


def group_prox_newton(y, d, tau, axes, *, max_steps=DEFAULTS[NEWTON][0],
                      tol=DEFAULTS[NEWTON][1]):
  r"""Weighted group-norm prox by Newton's method (ProxSSI's solver).

  Solves the same problem as :func:`group_prox_pg`. For a nonzero group the
  optimality condition ``D (u - y) + tau u / r = 0``, ``r = ||u||``, gives
  ``u_i = y_i r / (r + l_i)`` with ``l_i = tau / d_i``, and ``r > 0`` is the
  root of the secular equation

  .. math::

    \psi(r) = \Big(\sum_i \frac{y_i^2}{(r + l_i)^2}\Big)^{-1/2} - 1 = 0.

  ``psi`` is increasing and concave on ``r >= 0`` (as in Moré & Sorensen's
  trust-region equation) and exactly linear when ``d`` is constant over the
  group, so Newton's method started left of the root, at the lower bound
  ``(||D y|| - tau) / max d``, increases monotonically to it (one step when
  ``d`` is constant). Iterates are also clipped to the bracket
  ``[(||D y|| - tau) / max d, min(||y||, (||D y|| - tau) / min d)]``.
  Groups with ``||D y|| <= tau`` are exactly 0. A group is frozen once its
  Newton step is ``<= tol * r`` (this includes a step that does not increase
  ``r``: rounding noise, as the exact iterates increase); the loop stops when
  every group is frozen or after ``max_steps`` steps.

  Args:
    y: the centre of the subproblem.
    d: the positive diagonal of the metric (shape of ``y``).
    tau: the group threshold (a scalar >= 0, group weight included).
    axes: the axes one group spans (``()``: every entry is a group).
    max_steps: bound on the Newton iterations.
    tol: relative tolerance on ``r``.

  Returns:
    ``(u, steps)``: the solution and the number of iterations run.

  References:
    Moré & Sorensen, `Computing a Trust Region Step
    <https://doi.org/10.1137/0904038>`_, 1983.
  """
  dy_norm = group_norm(d * y, axes)
  active = dy_norm > tau
  excess = jnp.where(active, dy_norm - tau, 0)
  r_lo = excess / group_reduce(jnp.max, d, axes)
  r_hi = jnp.minimum(group_norm(y, axes),
                     excess / group_reduce(jnp.min, d, axes))
  r_hi = jnp.maximum(r_hi, r_lo)
  shift = tau / d
  y2 = jnp.square(y)
  tol = jnp.asarray(tol, y.dtype)

  def body(carry):
    r, done, k = carry
    inv = 1 / jnp.where(active, shift + r, 1)
    s = group_reduce(jnp.sum, y2 * jnp.square(inv), axes)
    t = group_reduce(jnp.sum, y2 * inv * jnp.square(inv), axes)
    # Newton on psi: r - psi / psi' = r + s (sqrt(s) - 1) / t.
    step = s * (jnp.sqrt(s) - 1) / jnp.where(active, t, 1)
    r_new = jnp.clip(r + step, r_lo, r_hi)
    # In exact arithmetic the iterates increase; a step that does not is
    # rounding noise: the group is converged to working precision.
    converged = (r_new - r <= tol * r_new)
    r = jnp.where(done | (r_new < r), r, r_new)
    return r, done | converged, k + 1

  def cond(carry):
    _, done, k = carry
    return (k < max_steps) & ~jnp.all(done)

  init = (r_lo, ~active, jnp.zeros([], jnp.int32))
  r, _, steps = lax.while_loop(cond, body, init)
  u = jnp.where(active, y * (r / jnp.where(active, r + shift, 1)), 0)
  return u, steps
