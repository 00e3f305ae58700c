"""RAMDA: Regularized Adaptive Momentum Dual Averaging, as an optax transformation."""

from typing import Any, Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import optax

from rmda_jax import _checks
from rmda_jax import _prox
from rmda_jax._rmda import _check_counts, _scalar_dtype, multistep_schedules, state_regularizer
from rmda_jax._sharding import scalar_like_params
from rmda_jax.regularizers import Regularizer

__all__ = [
    "RAMDAState",
    "ramda",
    "ramda_multistep",
]


class RAMDAState(NamedTuple):
  """State of :func:`ramda`.

  Attributes:
    count: global number of updates applied (never reset; schedules read it).
    stage_count: ``k``, updates since the last (re)start.
    alpha: sum of the step weights ``s_i = lr_i * sqrt(i)`` since the last
      (re)start.
    epsilon: the ``epsilon`` of the most recent update (``D = U^(1/3) +
      epsilon``; kept so that :func:`rmda_jax.structured_params` can rebuild
      that update's subproblem).
    inner_steps: mean number of inner iterations (proximal gradient, or
      Newton with ``inner_solver="newton"``) of the most recent update, over
      the leaves the regularizer acts on (0 with no regularizer; 0 for a leaf
      whose groups were all screened out, and for closed-form proxes such as
      L1).
    initial_params: ``W0``, the point of the last (re)start.
    grad_sum: ``V = sum_i s_i g_i`` since the last (re)start.
    grad_sum_sq: ``U = sum_i s_i g_i * g_i`` since the last (re)start.
    regularizer: the transformation's regularizer, its strengths as 0-d
      arrays (``None`` without one), as in :class:`rmda_jax.RMDAState`.
  """

  count: jax.Array
  stage_count: jax.Array
  alpha: jax.Array
  epsilon: jax.Array
  inner_steps: jax.Array
  initial_params: optax.Params
  grad_sum: optax.Params
  grad_sum_sq: optax.Params
  regularizer: Optional[Regularizer] = None


def cube_root(x):
  r""":math:`x^{1/3}` for ``x >= 0``, the fastest exact-enough form per backend.

  On XLA:CPU ``jnp.cbrt`` is a slow scalar routine (about 12x a copy of the
  array, against 1.7x for ``exp(log(x) / 3)``); on GPUs and TPUs ``cbrt`` is
  as fast as a copy. The backend is read at trace time. ``exp(log(x) / 3)``
  is exact at 0 (``exp(-inf) = 0``) and within ``|log x|`` ulps elsewhere.
  """
  if jax.default_backend() == "cpu":
    return jnp.exp(jnp.log(x) * jnp.asarray(1 / 3, x.dtype))
  return jnp.cbrt(x)


def _default_metric(u, k, eps):
  del k
  return cube_root(u) + eps


INNER_SOLVERS = (_prox.PG, _prox.NEWTON)


def _check_metric_prox(regularizer, inner_solver):
  if inner_solver not in INNER_SOLVERS:
    raise ValueError(
        f"inner_solver must be one of {', '.join(map(repr, INNER_SOLVERS))}, "
        f"got {inner_solver!r}.")
  if regularizer is None:
    return
  try:
    regularizer.check_solver(inner_solver)
  except ValueError as e:
    what = ("proximal gradient (inner_solver 'pg')" if inner_solver == _prox.PG
            else "Newton's method per group (inner_solver 'newton')")
    raise ValueError(
        "regularizer: RAMDA solves a prox in a diagonal metric by "
        f"{what}, which {regularizer!r} does not offer: {e}") from None


def _ramda(learning_rate, momentum, regularizer, *, epsilon, max_inner_steps,
           inner_tol, restart_at, accumulator_dtype, inner_solver=_prox.PG,
           metric: Callable = _default_metric):
  """:func:`ramda`, with the metric ``D = metric(U, k, epsilon)`` as a hook (tests)."""
  _checks.check_nonnegative("learning_rate", learning_rate)
  _checks.check_unit_interval("momentum", momentum)
  _checks.check_positive("epsilon", epsilon)
  for name, value in (("max_inner_steps", max_inner_steps),
                      ("inner_tol", inner_tol)):
    _checks.check_no_schedule(name, value,
                              "learning_rate, momentum and epsilon")
  _checks.check_max_steps("max_inner_steps", max_inner_steps)
  _checks.check_positive("inner_tol", inner_tol)
  _checks.check_regularizer(regularizer)
  _check_metric_prox(regularizer, inner_solver)
  restarts = tuple(sorted(set(_check_counts("restart_at", restart_at, 0))))
  _checks.check_dtype("accumulator_dtype", accumulator_dtype)

  def acc_dtype(p):
    return p.dtype if accumulator_dtype is None else jnp.dtype(accumulator_dtype)

  def init_fn(params):
    _checks.check_float_leaves(params)
    if regularizer is not None:
      regularizer.check(params)
    return RAMDAState(
        count=scalar_like_params(0, jnp.int32, params),
        stage_count=scalar_like_params(0, jnp.int32, params),
        alpha=scalar_like_params(0, _scalar_dtype(), params),
        epsilon=scalar_like_params(
            _checks.value_at(epsilon, jnp.zeros([], jnp.int32)),
            _scalar_dtype(), params),
        inner_steps=scalar_like_params(0, jnp.float32, params),
        initial_params=jax.tree.map(
            lambda p: jnp.array(p, dtype=acc_dtype(p), copy=True), params),
        grad_sum=jax.tree.map(
            lambda p: jnp.zeros_like(p, dtype=acc_dtype(p)), params),
        grad_sum_sq=jax.tree.map(
            lambda p: jnp.zeros_like(p, dtype=acc_dtype(p)), params),
        regularizer=state_regularizer(regularizer, params),
    )

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    _checks.check_update_args(updates, params)
    count = state.count
    lr = _checks.value_at(learning_rate, count)
    c = _checks.value_at(momentum, count)
    eps = jnp.asarray(_checks.value_at(epsilon, count), state.alpha.dtype)

    k, alpha = state.stage_count, state.alpha
    w0, v, u = state.initial_params, state.grad_sum, state.grad_sum_sq
    if restarts:
      restart = jnp.any(count == jnp.asarray(restarts, count.dtype))
      k = jnp.where(restart, 0, k)
      alpha = jnp.where(restart, 0, alpha)
      # lax.cond keeps the common no-restart path free of extra writes.
      w0, v, u = jax.lax.cond(
          restart,
          lambda w0, v, u, p: (
              jax.tree.map(lambda a, b: b.astype(a.dtype), w0, p),
              jax.tree.map(jnp.zeros_like, v),
              jax.tree.map(jnp.zeros_like, u)),
          lambda w0, v, u, p: (w0, v, u),
          w0, v, u, params)

    k = optax.safe_increment(k)
    k_float = k.astype(alpha.dtype)
    s = jnp.asarray(lr, alpha.dtype) * jnp.sqrt(k_float)
    alpha = alpha + s
    v = jax.tree.map(lambda v, g: v + s.astype(v.dtype) * g.astype(v.dtype),
                     v, updates)
    u = jax.tree.map(
        lambda u, g: u + s.astype(u.dtype) * jnp.square(g.astype(u.dtype)),
        u, updates)
    d = jax.tree.map(lambda u: metric(u, k_float.astype(u.dtype),
                                      eps.astype(u.dtype)), u)
    y = jax.tree.map(lambda w0, v, d: w0 - v / d, w0, v, d)
    if regularizer is None:
      z, inner = y, jnp.zeros([], jnp.float32)
    else:
      warm = (dict(init=params, origin=w0) if inner_solver == _prox.PG
              else {})  # Newton's method solves exactly: no warm start
      z, steps = regularizer.prox(
          y, alpha, metric=d, solver=inner_solver, max_steps=max_inner_steps,
          tol=inner_tol, return_steps=True, **warm)
      inner = _mean_steps(steps, regularizer.mask_tree(params))
    new_updates = jax.tree.map(
        lambda z, p: (jnp.asarray(c, z.dtype) * (z - p.astype(z.dtype))
                      ).astype(p.dtype),
        z, params)
    new_state = RAMDAState(
        count=optax.safe_increment(count),
        stage_count=k,
        alpha=alpha,
        epsilon=eps,
        inner_steps=inner,
        initial_params=w0,
        grad_sum=v,
        grad_sum_sq=u,
        regularizer=state.regularizer,
    )
    return new_updates, new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _mean_steps(steps, mask):
  counts = [jnp.asarray(s, jnp.float32) for m, s in
            zip(jax.tree.leaves(mask), jax.tree.leaves(steps)) if m]
  if not counts:
    return jnp.zeros([], jnp.float32)
  return sum(counts) / len(counts)


def ramda(
    learning_rate: optax.ScalarOrSchedule,
    momentum: optax.ScalarOrSchedule,
    regularizer: Optional[Regularizer] = None,
    *,
    epsilon: optax.ScalarOrSchedule = 1e-6,
    max_inner_steps: int = 100,
    inner_tol: float = 1e-8,
    restart_at: Sequence[int] = (),
    accumulator_dtype: Optional[Any] = None,
    inner_solver: str = "pg",
) -> optax.GradientTransformationExtraArgs:
  r"""Regularized Adaptive Momentum Dual Averaging (RAMDA).

  RMDA's dual averaging (see :func:`rmda_jax.rmda`) with MADGRAD's diagonal
  preconditioner. With the stochastic gradient :math:`g_k` taken at the
  current iterate :math:`W_{k-1}` and :math:`k = 1, 2, \dots` counting the
  updates since the last (re)start:

  .. math::

    \begin{align*}
      s_k &= \eta_k \sqrt{k}, \quad \alpha_k = \alpha_{k-1} + s_k, \quad
      V_k = V_{k-1} + s_k g_k, \quad U_k = U_{k-1} + s_k g_k \odot g_k \\
      D_k &= U_k^{1/3} + \epsilon \quad \text{(elementwise)} \\
      \tilde W_k &\approx \arg\min_W \langle V_k, W - W^0 \rangle
        + \tfrac12 (W - W^0)^\top D_k (W - W^0) + \alpha_k \psi(W) \\
      &= \arg\min_W \tfrac12 \|W - Y_k\|_{D_k}^2 + \alpha_k \psi(W),
      \quad Y_k = W^0 - V_k / D_k \\
      W_k &= (1 - c_k) W_{k-1} + c_k \tilde W_k
    \end{align*}

  where :math:`\eta_k` is ``learning_rate``, :math:`c_k` is ``momentum`` and
  :math:`W^0` the point of the last (re)start. :math:`\tilde W_k` is the prox
  of :math:`\alpha_k \psi` in the metric :math:`D_k`,
  ``regularizer.prox(Y, alpha, metric=D, init=W, origin=W0)``, solved
  inexactly as in the authors' code (see
  :func:`rmda_jax._prox.warm_group_prox_pg`): groups with
  :math:`\|D_g Y_g\| \le \alpha_k \lambda w_g` are set to exactly 0 (an
  exact test), the others run proximal gradient with step
  :math:`1 / \max_{i \in g} D_i` from the current point :math:`W_{k-1}` until
  the relative decrease of the objective above is under ``inner_tol`` (at
  least 2 steps) or ``max_inner_steps`` steps, one ``lax.while_loop`` per
  leaf. In float32 the stop rule reads the objective near its rounding
  level, so the iteration it stops at (hence :math:`\tilde W`, within the
  solve's inexactness) can change with the order of the sums, e.g. between
  one device and a sharded run. L1 has a closed form (soft thresholding at :math:`\alpha_k\lambda /
  D_i`); the nuclear norm runs the same loop over the whole kernel with step
  :math:`1 / \max D` and one SVD per iteration.

  ``inner_solver="newton"`` solves the subproblem exactly instead, for the
  group regularizers (group LASSO, sparse group LASSO, L1, the coupled
  groups): the same screening, then for every remaining group the root
  :math:`r = \|\tilde W_g\|` of its secular equation by Newton's method
  (:func:`rmda_jax._prox.group_prox_newton`, ProxSSI's solver), stopped when
  :math:`r` changes by less than ``inner_tol`` relative (or at float
  rounding) or after ``max_inner_steps`` iterations. The zero groups are the
  same as the authors' solver's (the screening is exact in both); the
  nonzero values are the exact minimiser, where the authors' solver stops
  early. It is not what the authors run, and is cheaper on large models: a
  Newton iteration reads two parameter-sized arrays and writes none, and
  it converges in a few iterations (see ``benchmarks/README.md``, cost).

  With no regularizer (or on leaves it does not act on)
  :math:`\tilde W = Y` and RAMDA is MADGRAD: ``optax.contrib.madgrad(
  learning_rate - epsilon, momentum=1 - c, eps=epsilon)`` (optax adds
  ``eps`` back to the learning rate).

  .. warning::
    ``momentum`` is the averaging weight :math:`c \in (0, 1]` given to the
    *new* point, as in :func:`rmda_jax.rmda`: ``1`` means no averaging. The
    authors use 0.01 to 0.1, ramped to 1 after the last restart (see
    :func:`ramda_multistep`). :math:`W` has exact zero groups once
    :math:`c = 1`; :math:`\tilde W` always does (see
    :func:`rmda_jax.structured_params`).

  A restart sets ``k = 0``, ``alpha = 0``, ``V = U = 0`` and ``W0`` to the
  current parameters; the update whose global count (updates applied before
  it) is in ``restart_at`` first restarts, then runs as the first update of
  the new stage. The test is traced: a restart never recompiles.

  RAMDA needs the current parameters (``update(grads, state, params)``) and
  returns ``new_params - params``: place it last in an ``optax.chain``. It
  keeps three parameter-sized buffers (``W0``, ``V``, ``U``), as the
  authors' code.

  Args:
    learning_rate: :math:`\eta`, a float >= 0 or an optax schedule of the
      global update count (authors: 1e-2).
    momentum: :math:`c` in (0, 1], a float or a schedule of the global update
      count (authors: 1e-2). Not heavy-ball momentum.
    regularizer: an :mod:`rmda_jax.regularizers` object with a metric prox
      (``rj.group_lasso``, ``rj.l1``, ``rj.sparse_group_lasso``,
      ``rj.nuclear_norm``, or any :class:`rmda_jax.Regularizer` with
      ``value_leaf`` and ``prox_leaf``), or ``None``. With
      ``optax.inject_hyperparams`` pass ``static_args="regularizer"``.
    epsilon: :math:`\epsilon > 0` added to the cube root, a float or a
      schedule (authors: 1e-6, times ``gamma`` at every restart).
    max_inner_steps: bound on the inner iterations per leaf and update (an
      integer >= 1; authors: 100, 5 for the nuclear norm).
    inner_tol: relative objective decrease under which the inner loop stops
      (> 0; authors: 1e-8, 1e-3 for the nuclear norm); with
      ``inner_solver="newton"``, the relative change of each group's norm.
    restart_at: global update counts at which to restart (see above).
    accumulator_dtype: dtype of ``W0``, ``V`` and ``U`` (e.g. ``jnp.float32``
      for bfloat16 params); ``None`` keeps each parameter's dtype.
    inner_solver: ``"pg"`` (default): the authors' warm-started proximal
      gradient; ``"newton"``: the exact per-group solve described above
      (regularizers whose :attr:`~rmda_jax.Regularizer.solvers` include
      ``"newton"``).

  Returns:
    The corresponding :class:`optax.GradientTransformationExtraArgs`.

  Raises:
    ValueError: for a negative or zero ``epsilon``, ``max_inner_steps`` < 1,
      ``inner_tol`` <= 0, an unknown ``inner_solver``, or a regularizer
      whose metric prox does not offer ``inner_solver``; each message names
      the argument.

  Examples:
    >>> import jax.numpy as jnp, optax, rmda_jax as rj
    >>> params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
    >>> reg = rj.group_lasso(1.0)  # groups: the rows of a (in, out) kernel
    >>> tx = rj.ramda(learning_rate=1.0, momentum=1.0, regularizer=reg)
    >>> state = tx.init(params)
    >>> grads = {"w": jnp.array([[8., 8.], [0., 0.], [0., 0.]]), "b": jnp.ones(2)}
    >>> updates, state = tx.update(grads, state, params)
    >>> params = optax.apply_updates(params, updates)
    >>> # D = |g|^(2/3) + epsilon: the rows with no gradient have D = epsilon,
    >>> # Y = W0 and ||D Y|| <= alpha * lambda * sqrt(2): removed exactly.
    >>> params["w"].round(4)
    Array([[-0.75, -0.75],
           [ 0.  ,  0.  ],
           [ 0.  ,  0.  ]], dtype=float32)
    >>> rj.group_sparsity(params, reg)
    0.6666666666666666

  References:
    Huang & Lee, `Regularized Adaptive Momentum Dual Averaging with an
    Efficient Inexact Subproblem Solver for Training Structured Neural
    Network <https://arxiv.org/abs/2403.14398>`_, NeurIPS 2024.

    Defazio & Jelassi, `A Momentumized, Adaptive, Dual Averaged Gradient
    Method <https://jmlr.org/papers/v23/21-0226.html>`_, JMLR 2022 (MADGRAD).
  """
  return _ramda(learning_rate, momentum, regularizer, epsilon=epsilon,
                max_inner_steps=max_inner_steps, inner_tol=inner_tol,
                restart_at=restart_at, accumulator_dtype=accumulator_dtype,
                inner_solver=inner_solver)


def ramda_multistep(
    learning_rate: optax.ScalarOrSchedule,
    momentum: float,
    milestones: Sequence[int],
    gamma: float = 0.1,
    regularizer: Optional[Regularizer] = None,
    *,
    epsilon: float = 1e-6,
    max_inner_steps: int = 100,
    inner_tol: float = 1e-8,
    accumulator_dtype: Optional[Any] = None,
    inner_solver: str = "pg",
) -> optax.GradientTransformationExtraArgs:
  r"""RAMDA with the authors' stage-wise schedule, restarts and momentum ramp.

  At each milestone (a global update count) the learning rate and
  ``epsilon`` are multiplied by ``gamma`` and RAMDA restarts from the
  current point (see :func:`ramda`), as the authors'
  ``multistep_param_scheduler``. The averaging weight stays at ``momentum``
  through the milestones; after the last one it grows every update as
  :math:`\min(c_0 \sqrt{j}, 1)`, ``j`` counting the updates of the last stage
  from 1 (so :math:`c = 1` from :math:`j \ge 1 / c_0^2`), exactly as
  ``rj.rmda_multistep(momentum_rule="ramp")``. With no milestones the ramp
  starts at the first update.

  Args:
    learning_rate: the initial learning rate (a float >= 0) or a schedule,
      multiplied by ``gamma ** (number of milestones passed)``.
    momentum: the initial ``c`` in (0, 1] (a float, or a traced scalar inside
      ``jax.jit`` / ``jax.vmap``, as in ``rmda-train``'s sweeps; not
      heavy-ball momentum).
    milestones: strictly increasing global update counts (> 0) at which a new
      stage starts. Convert epochs with ``epoch * steps_per_epoch``.
    gamma: the factor of the learning rate and ``epsilon`` per milestone, > 0.
    regularizer: as in :func:`ramda`.
    epsilon: the initial :math:`\epsilon` (a float > 0).
    max_inner_steps: as in :func:`ramda`.
    inner_tol: as in :func:`ramda`.
    accumulator_dtype: as in :func:`ramda`.
    inner_solver: as in :func:`ramda`.

  Returns:
    The corresponding :class:`optax.GradientTransformationExtraArgs`.

  Examples:
    >>> import rmda_jax as rj
    >>> steps_per_epoch = 391
    >>> tx = rj.ramda_multistep(1e-2, 1e-2, [200 * steps_per_epoch,
    ...                                      400 * steps_per_epoch],
    ...                         regularizer=rj.group_lasso(1e-6))

  References:
    Huang & Lee, `Regularized Adaptive Momentum Dual Averaging with an
    Efficient Inexact Subproblem Solver for Training Structured Neural
    Network <https://arxiv.org/abs/2403.14398>`_, NeurIPS 2024.
  """
  if callable(epsilon) or not _checks.is_static_number(epsilon):
    raise TypeError("ramda_multistep: epsilon must be a float > 0; for a "
                    "custom schedule use rj.ramda(..., restart_at=...).")
  _checks.check_positive("epsilon", epsilon)
  ms, stage, lr_schedule, momentum_schedule = multistep_schedules(
      "ramda_multistep", "ramda", learning_rate, momentum, milestones, gamma,
      momentum_rule="ramp")
  gamma, eps0 = float(gamma), float(epsilon)

  def epsilon_schedule(count):
    return eps0 * jnp.power(gamma, stage(count))

  return ramda(lr_schedule, momentum_schedule, regularizer,
               epsilon=epsilon_schedule, max_inner_steps=max_inner_steps,
               inner_tol=inner_tol, restart_at=ms,
               accumulator_dtype=accumulator_dtype, inner_solver=inner_solver)


def _structured_point(state: RAMDAState):
  r""":math:`\tilde W` of the most recent update, rebuilt from ``state``.

  The subproblem of that update (``Y = W0 - V / D``, ``D = U^(1/3) + eps``,
  scale ``alpha``) is solved again, started at ``Y`` and to a tighter
  tolerance than the update's (nothing parameter-sized is stored for it).
  Its zero groups are exactly those of the update's :math:`\tilde W` (the
  screening reads only the state); nonzero values agree to the inner
  solver's accuracy. Before the first update it is ``W0``.
  """
  eps = state.epsilon
  d = jax.tree.map(lambda u: _default_metric(u, None, eps.astype(u.dtype)),
                   state.grad_sum_sq)
  y = jax.tree.map(lambda w0, v, d: w0 - v / d, state.initial_params,
                   state.grad_sum, d)
  if state.regularizer is None:
    return y
  return state.regularizer.prox(y, state.alpha, metric=d, solver=_prox.PG,
                          max_steps=1000, tol=1e-12, init=y,
                          origin=state.initial_params)
