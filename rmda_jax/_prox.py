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

:func:`warm_group_prox_pg` and :func:`warm_prox_pg` are the inexact solver
of RAMDA's code (Huang & Lee 2024): proximal gradient warm-started at a
given point (the current parameters), stopped on the relative decrease of
the subproblem's objective.
"""

from __future__ import annotations

from typing import Callable, Optional

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
    "warm_group_prox_pg",
    "warm_prox_pg",
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


def _warm_loop(step, objective, u0, run, max_steps, tol):
  r"""The authors' loop: ``u <- step(u)`` until the objective stops decreasing.

  With :math:`o_i` the objective after step ``i = 0, 1, ...``, stops after
  step ``i`` when :math:`(o_{i-1} - o_i) / (|o_i| + 1) <` ``tol`` and
  ``i > 0``, or after ``max_steps`` steps (the objective at ``u0``, the
  authors' :math:`o_{-1}`, is never compared: it is not computed). Runs no
  step when ``run`` is False.

  ``step(u)`` returns ``(u_new, aux)`` and ``objective(u_new, aux)`` the
  scalar objective (``aux`` lets the objective reuse the step's reductions).
  Returns ``(u, steps)``.
  """
  obj0 = jnp.zeros([], u0.dtype)
  tol = jnp.asarray(tol, obj0.dtype)

  def body(carry):
    u, prev, _, i = carry
    u, aux = step(u)
    cur = objective(u, aux)
    stop = ((prev - cur) / (jnp.abs(cur) + 1) < tol) & (i > 0)
    return u, cur, stop, i + 1

  def cond(carry):
    _, _, stop, i = carry
    return run & (i < max_steps) & ~stop

  init = (u0, obj0, jnp.asarray(False), jnp.zeros([], jnp.int32))
  u, _, _, steps = lax.while_loop(cond, body, init)
  return u, steps


def _smooth_terms(u, y, d, origin):
  r"""``<u - o, V> + 1/2 <u - o, D (u - o)>`` per entry, ``V = D (o - y)``.

  Written as ``(u - o) d ((u + o) / 2 - y)`` (no cancellation of two large
  sums): the authors' objective, measured from ``origin``, without forming
  ``V``.
  """
  return (u - origin) * d * (0.5 * (u + origin) - y)


def warm_group_prox_pg(y, d, tau, axes, *, init, origin=None,
                       max_steps=DEFAULTS[PG][0], tol=DEFAULTS[PG][1]):
  r"""Weighted group-norm prox by warm-started proximal gradient (RAMDA's solver).

  Solves the problem of :func:`group_prox_pg`,

  .. math::

    \min_u \tfrac12 (u - y)^\top D (u - y) + \tau \sum_g \|u_g\|_2,

  as the RAMDA authors' code does (``pgd_solver_glasso``):

  1. *screening*: groups with :math:`\|D_g y_g\| \le \tau` are exactly 0
     at the optimum; they are set to 0 and never iterated (exact: this is
     the group's first-order zero test);
  2. the other groups start from ``init`` (the current parameters);
  3. ``u <- group_shrink(u - D_g (u - y) / L_g, tau / L_g)`` with
     ``L_g = max_{i in g} d_i``;
  4. the objective, summed over the active groups of the array,

     .. math::

       O(u) = \langle u - o, V \rangle + \tfrac12 (u - o)^\top D (u - o)
         + \tau \sum_g \|u_g\|, \qquad V = D (o - y),

     with :math:`o` = ``origin`` (it differs from the subproblem's objective
     by a constant, which the relative stop rule reads), is evaluated after
     every step; the loop stops after step ``i`` when
     :math:`(O_{i-1} - O_i) / (|O_i| + 1) <` ``tol`` and ``i > 0`` (so at
     least 2 steps), or after ``max_steps`` steps. All groups of the array
     stop together, in one ``lax.while_loop``.

  With ``tau == 0`` the solution is ``y`` exactly (no step is run), and so
  when no group is active the result is 0 with no step run.

  Args:
    y: the centre of the subproblem.
    d: the positive diagonal of the metric (shape of ``y``).
    tau: the group threshold (a scalar >= 0, group weight included).
    axes: the axes one group spans (``()``: every entry is a group).
    init: the warm start (shape of ``y``).
    origin: the point :math:`o` the objective is measured from (RAMDA: the
      point of the last restart, :math:`W^0`); ``None``: ``y``.
    max_steps: bound on the iterations (may be a traced integer).
    tol: relative decrease of the objective under which the loop stops.

  Returns:
    ``(u, steps)``: the solution and the number of iterations run.

  References:
    Huang & Lee, `Regularized Adaptive Momentum Dual Averaging with an
    Efficient Inexact Subproblem Solver for Training Structured Neural
    Network <https://arxiv.org/abs/2403.14398>`_, NeurIPS 2024.

    Deleu & Bengio, `Structured Sparsity Inducing Adaptive Optimizers for
    Deep Learning <https://arxiv.org/abs/2102.03869>`_, 2021 (the screening).
  """
  tau = jnp.asarray(tau, y.dtype)
  origin = y if origin is None else origin

  def gsum(x):
    return group_reduce(jnp.sum, x, axes)

  # XLA:CPU runs every group reduction as its own pass over its inputs (it
  # fuses no two reductions, and a product shared by two is written out), so
  # the passes are counted here. D Y is formed once (3 passes) and read by
  # the screening, the constant and every step's objective.
  dy = d * y
  active = jnp.sqrt(gsum(dy * dy)) > tau
  lip = group_reduce(jnp.max, d, axes)
  thr = tau / lip

  # The iterate is u = s * x with one scale s per group (the shrink), so one
  # pass over x per step: x' = (1 - a) s x + a y, with a = d / L, and its
  # group sums ||x'||^2, sum d x'^2, sum d y x', from which the shrink and
  # the objective of u' follow:
  #   O(u) = sum_g [s^2 sum d x^2 / 2 - s sum d y x + C_g] + tau sum ||u_g||,
  #   C_g = sum_g d o (y - o / 2)    (the terms that do not depend on u).
  const = jnp.sum(jnp.where(active, gsum(d * origin * (y - 0.5 * origin)), 0))

  def objective(s, norm, dsq, dyx):
    smooth = jnp.where(active, (0.5 * s) * s * dsq - s * dyx, 0)
    return (jnp.sum(smooth) + const
            + tau * jnp.sum(jnp.where(active, s * norm, 0)))

  def step(x, s):
    u = s * x
    x = jnp.where(active, u - (d / lip) * (u - y), 0)
    norm = jnp.sqrt(gsum(x * x))
    keep = norm > thr
    s = jnp.where(keep, 1 - thr / jnp.where(keep, norm, 1), 0)
    return x, s, objective(s, norm, gsum(d * x * x), gsum(dy * x))

  def body(carry):
    x, s, prev, _, i = carry
    x, s, cur = step(x, s)
    stop = ((prev - cur) / (jnp.abs(cur) + 1) < tol) & (i > 0)
    return x, s, cur, stop, i + 1

  def cond(carry):
    *_, stop, i = carry
    return run & (i < max_steps) & ~stop

  # Start: u = s0 * x0, s0 = 0 on the screened-out groups. With tau == 0 no
  # step runs and the start is y itself (s0 = 1, x0 = y), so the result is
  # s * x with no branch after the loop (a lax.cond there copies the array).
  # The objective at the start is only compared after step 0, which never
  # stops the loop (i > 0): it is not computed.
  pos = tau > 0
  s0 = jnp.where(pos, active.astype(lip.dtype), 1)
  x0 = jnp.where(pos, init.astype(y.dtype), y)
  prev0 = jnp.zeros([], const.dtype)
  tol = jnp.asarray(tol, const.dtype)
  run = jnp.any(active) & pos
  x, s, _, _, steps = lax.while_loop(
      cond, body, (x0, s0, prev0, jnp.asarray(False),
                   jnp.zeros([], jnp.int32)))
  return s * x, steps


def warm_prox_pg(prox: Callable, value: Callable, y, d, tau, *, init,
                 origin=None, max_steps=DEFAULTS[PG][0], tol=DEFAULTS[PG][1],
                 prox_value: Optional[Callable] = None):
  r"""The metric prox of any :math:`\Phi`, by warm-started proximal gradient.

  Solves :math:`\min_u \tfrac12 (u - y)^\top D (u - y) + \tau \Phi(u)` for
  the whole array as the RAMDA authors do for the nuclear norm
  (``pgd_solver_nuclear``): no screening, one scalar step ``1 / max d``,
  ``u <- prox(u - D (u - y) / L, tau / L)`` started at ``init``, and the
  stop rule of :func:`warm_group_prox_pg` on
  :math:`O(u) = \langle u - o, D (o - y) \rangle + \tfrac12 (u - o)^\top D
  (u - o) + \tau \Phi(u)`. With ``tau == 0`` the result is ``y`` (no step).

  Args:
    prox: ``prox(x, t) = argmin_u 1/2 ||u - x||^2 + t Phi(u)``.
    value: ``value(u) = Phi(u)`` (a scalar).
    y, d, tau, init, origin, max_steps, tol: as in :func:`warm_group_prox_pg`.
    prox_value: optional ``prox_value(x, t) = (prox(x, t), Phi(prox(x, t)))``
      when the value comes cheaply with the prox (the nuclear norm: the sum
      of the thresholded singular values, one SVD per step instead of two).

  Returns:
    ``(u, steps)``: the solution and the number of iterations run.
  """
  tau = jnp.asarray(tau, y.dtype)
  origin = y if origin is None else origin
  lip = jnp.max(d)
  a = d / lip
  thr = tau / lip

  def step(u):
    if prox_value is not None:
      return prox_value(u - a * (u - y), thr)
    return prox(u - a * (u - y), thr), None

  def objective(u, phi):
    smooth = jnp.sum(_smooth_terms(u, y, d, origin))
    phi = value(u) if phi is None else phi
    return smooth + tau * jnp.asarray(phi, smooth.dtype)

  u, steps = _warm_loop(step, objective, init.astype(y.dtype), tau > 0,
                        max_steps, tol)
  return jnp.where(tau > 0, u, y), steps
