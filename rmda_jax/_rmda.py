"""RMDA: Regularized Modernized Dual Averaging, as an optax transformation."""

import numbers
from typing import Any, Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rmda_jax import _checks
from rmda_jax._sharding import scalar_like_params
from rmda_jax.regularizers import Regularizer

__all__ = [
    "RMDAState",
    "rmda",
    "rmda_multistep",
    "check_same_regularizer",
    "state_regularizer",
]


class RMDAState(NamedTuple):
  """State of :func:`rmda`.

  Attributes:
    count: global number of updates applied (never reset; schedules read it).
    stage_count: ``k``, updates since the last (re)start.
    alpha: sum of the step weights ``s_i = lr_i * sqrt(i + 1)`` since the last
      (re)start.
    initial_params: ``W0``, the point of the last (re)start.
    dual_point: ``Y = W0 - V / sqrt(k)``, the point the prox is applied to,
      with ``V = sum_i s_i g_i`` the weighted gradient sum of the stage
      (``V = sqrt(k) * (W0 - Y)``). Keeping ``Y`` rather than ``V`` lets the
      prox read a buffer that is written anyway, with no parameter-sized
      temporary.
    regularizer: the transformation's regularizer, its strengths as 0-d
      arrays (``None`` without one), so that :func:`structured_params`
      computes ``Z`` with the regularizer that produced the state.
  """

  count: jax.Array
  stage_count: jax.Array
  alpha: jax.Array
  initial_params: optax.Params
  dual_point: optax.Params
  regularizer: Optional[Regularizer] = None


def _check_counts(name: str, value, minimum: int) -> tuple[int, ...]:
  """``value`` as a tuple of integer update counts >= ``minimum``."""
  try:
    counts = tuple(value)
  except TypeError:
    raise TypeError(
        f"{name} must be a sequence of update counts, got {value!r}.") from None
  for t in counts:
    if isinstance(t, bool) or not isinstance(t, numbers.Integral) or t < minimum:
      raise ValueError(
          f"{name} must hold integer update counts >= {minimum}, got {t!r}.")
  return tuple(int(t) for t in counts)


def _scalar_dtype():
  return jnp.result_type(float)  # float64 under jax_enable_x64, else float32


def state_regularizer(regularizer: Optional[Regularizer], params):
  """``regularizer`` with its strengths as 0-d arrays placed like the scalars.

  What an optimizer state keeps of its regularizer (see
  :func:`structured_params`): the strengths become arrays, so that the state
  has a fixed dtype and placement and jitted steps do not recompile.
  """
  if regularizer is None:
    return None
  return jax.tree.map(
      lambda v: (v if isinstance(v, jax.core.Tracer)
                 else scalar_like_params(v, _scalar_dtype(), params)),
      regularizer)


def rmda(
    learning_rate: optax.ScalarOrSchedule,
    momentum: optax.ScalarOrSchedule = 0.1,
    regularizer: Optional[Regularizer] = None,
    *,
    restart_at: Sequence[int] = (),
    accumulator_dtype: Optional[Any] = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Regularized Modernized Dual Averaging (RMDA).

  RMDA minimizes ``E[f(W; xi)] + psi(W)`` for a regularizer ``psi`` with a
  cheap proximal operator, and finds the *structure* (for group LASSO, the
  set of all-zero channels) of the point it converges to. With the
  stochastic gradient :math:`g_k` taken at the current iterate :math:`W_k`,
  one update reads

  .. math::

    \begin{align*}
      \beta_k &= \sqrt{k + 1}, \quad s_k = \eta_k \beta_k, \quad
      \alpha_k = \alpha_{k-1} + s_k, \quad V_k = V_{k-1} + s_k g_k \\
      Z_k &= \mathrm{prox}_{(\alpha_k / \beta_k) \psi}(W^0 - V_k / \beta_k) \\
      W_{k+1} &= (1 - c_k) W_k + c_k Z_k
    \end{align*}

  where :math:`\eta_k` is ``learning_rate``, :math:`c_k` is ``momentum`` and
  :math:`W^0` the point of the last (re)start. :math:`V_k / \alpha_k` is a
  weighted average of all past gradients: this variance reduction is what
  lets RMDA identify the structure of the limit point. Every :math:`Z_k` is
  exactly structured (see :func:`structured_params`); :math:`W_k` is exactly
  structured once :math:`c_k = 1`.

  .. warning::
    ``momentum`` is the paper's averaging weight :math:`c \in (0, 1]`, the
    weight given to the *new* point :math:`Z_k`: ``momentum=1`` means no
    averaging (:math:`W = Z`), and small values mean heavy averaging. It is
    **not** optax's heavy-ball momentum (where 0.9 is the usual value and 0
    means none). Typical RMDA values are 0.01 to 0.1, raised towards 1 at the
    end of training (see :func:`rmda_multistep`).

  A restart sets ``k = 0``, ``alpha = 0``, ``V = 0`` and ``W0`` to the current
  parameters. The update whose global count ``t`` (the number of updates
  applied before it) is in ``restart_at`` first restarts, then runs as the
  first update of the new stage; the test is a traced comparison, so a
  restart never recompiles.

  RMDA needs the current parameters (``update(grads, state, params)``) and
  returns ``new_params - params``, so place it last in an ``optax.chain``.
  Leaves the regularizer does not act on are updated by the same dual
  averaging, unshrunk. Exact zeros produced by the prox survive
  ``optax.apply_updates`` whenever ``momentum`` is 1.

  Args:
    learning_rate: ``eta``, a float >= 0 or an optax schedule of the global
      update count. RMDA's effective step is ``eta`` (``V`` is rescaled by
      ``1 / beta``), so useful values are large: 0.1 to 1 for vision.
    momentum: ``c`` in (0, 1], a float or a schedule of the global update
      count. Not heavy-ball momentum (see the warning above).
    regularizer: an :mod:`rmda_jax.regularizers` object such as
      ``rj.group_lasso(1e-4)``, or ``None`` (``psi = 0``). With
      ``optax.inject_hyperparams``, pass ``static_args="regularizer"``
      (optax would otherwise take the callable regularizer for a schedule).
    restart_at: global update counts at which to restart (see above).
    accumulator_dtype: dtype of ``W0`` and ``V`` (e.g. ``jnp.float32`` for
      bfloat16 params); ``None`` keeps each parameter's dtype.

  Returns:
    The corresponding :class:`optax.GradientTransformationExtraArgs`.

  Examples:
    >>> import jax, jax.numpy as jnp, optax, rmda_jax as rj
    >>> params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
    >>> reg = rj.group_lasso(5.0)  # groups: the rows of a (in, out) kernel
    >>> tx = rj.rmda(learning_rate=0.1, momentum=1.0, regularizer=reg)
    >>> state = tx.init(params)
    >>> grads = {"w": jnp.array([[6., 6.], [0., 0.], [0., 0.]]), "b": jnp.ones(2)}
    >>> updates, state = tx.update(grads, state, params)
    >>> params = optax.apply_updates(params, updates)
    >>> params["w"]  # input row 0 is removed exactly, the others shrink
    Array([[0. , 0. ],
           [0.5, 0.5],
           [0.5, 0.5]], dtype=float32)
    >>> rj.group_sparsity(params, reg)
    0.3333333333333333

  References:
    Huang & Lee, `Training Structured Neural Networks Through Manifold
    Identification and Variance Reduction <https://arxiv.org/abs/2112.02612>`_,
    ICLR 2022.

    Jelassi & Defazio, `Dual Averaging is Surprisingly Effective for Deep
    Learning Optimization <https://arxiv.org/abs/2010.10502>`_, 2020.
  """
  _checks.check_nonnegative("learning_rate", learning_rate)
  _checks.check_unit_interval("momentum", momentum)
  _checks.check_regularizer(regularizer)
  restarts = tuple(sorted(set(_check_counts("restart_at", restart_at, 0))))
  _checks.check_dtype("accumulator_dtype", accumulator_dtype)

  def acc_dtype(p):
    return p.dtype if accumulator_dtype is None else jnp.dtype(accumulator_dtype)

  def init_fn(params):
    _checks.check_float_leaves(params)
    if regularizer is not None:
      regularizer.check(params)
    return RMDAState(
        count=scalar_like_params(0, jnp.int32, params),
        stage_count=scalar_like_params(0, jnp.int32, params),
        alpha=scalar_like_params(0, _scalar_dtype(), params),
        initial_params=jax.tree.map(
            lambda p: jnp.array(p, dtype=acc_dtype(p), copy=True), params),
        dual_point=jax.tree.map(
            lambda p: jnp.array(p, dtype=acc_dtype(p), copy=True), params),
        regularizer=state_regularizer(regularizer, params),
    )

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    _checks.check_update_args(updates, params)
    count = state.count
    lr = _checks.value_at(learning_rate, count)
    c = _checks.value_at(momentum, count)

    k, alpha = state.stage_count, state.alpha
    w0, y = state.initial_params, state.dual_point
    if restarts:
      restart = jnp.any(count == jnp.asarray(restarts, count.dtype))
      k = jnp.where(restart, 0, k)
      alpha = jnp.where(restart, 0, alpha)
      # lax.cond keeps the common no-restart path free of extra writes.
      w0, y = jax.lax.cond(
          restart,
          lambda w0, y, p: (jax.tree.map(lambda a, b: b.astype(a.dtype), w0, p),
                            jax.tree.map(lambda a, b: b.astype(a.dtype), y, p)),
          lambda w0, y, p: (w0, y),
          w0, y, params)

    # With beta = sqrt(k + 1) and s = lr * beta:
    #   V' = V + s g,  Y' = W0 - V' / beta = r Y + (1 - r) W0 - lr g,
    # where r = sqrt(k) / sqrt(k + 1) and V = sqrt(k) (W0 - Y).
    k_float = k.astype(alpha.dtype)
    beta = jnp.sqrt(k_float + 1)
    lr = jnp.asarray(lr, alpha.dtype)
    alpha = alpha + lr * beta
    r = jnp.sqrt(k_float) / beta
    y = jax.tree.map(
        lambda y, w0, g: (r.astype(y.dtype) * y + (1 - r).astype(y.dtype) * w0
                          - lr.astype(y.dtype) * g.astype(y.dtype)),
        y, w0, updates)
    z = y if regularizer is None else regularizer.prox(y, alpha / beta)
    new_updates = jax.tree.map(
        lambda z, p: (jnp.asarray(c, z.dtype) * (z - p.astype(z.dtype))
                      ).astype(p.dtype),
        z, params)
    new_state = RMDAState(
        count=optax.safe_increment(count),
        stage_count=optax.safe_increment(k),
        alpha=alpha,
        initial_params=w0,
        dual_point=y,
        regularizer=state.regularizer,
    )
    return new_updates, new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


class _Multistep(NamedTuple):
  milestones: tuple
  stage: Callable
  learning_rate: Callable
  momentum: Callable


def multistep_schedules(fn: str, base: str, learning_rate, momentum, milestones,
                        gamma, momentum_rule: str = "divide") -> _Multistep:
  """The checked milestones and the stage-wise schedules of ``fn`` (``rmda_multistep``,
  ``ramda_multistep``): ``stage(count)`` (milestones passed), the learning
  rate times ``gamma ** stage`` and ``c`` by ``momentum_rule`` (see
  :func:`rmda_multistep`). ``momentum`` may be traced (one run of a
  ``jax.vmap`` sweep); it is checked when concrete.
  """
  _checks.check_nonnegative("learning_rate", learning_rate)
  if callable(momentum) or not (_checks.is_static_number(momentum) or (
      isinstance(momentum, jax.core.Tracer) and jnp.ndim(momentum) == 0)):
    raise TypeError(f"{fn}: momentum must be a float in (0, 1]; "
                    f"for a custom schedule use rj.{base}(..., restart_at=...).")
  _checks.check_unit_interval("momentum", momentum)
  if not _checks.is_static_number(gamma) or not float(gamma) > 0:
    raise ValueError(f"gamma must be a number > 0, got {gamma!r}.")
  if momentum_rule not in ("divide", "ramp"):
    raise ValueError(
        f"momentum_rule must be 'divide' or 'ramp', got {momentum_rule!r}.")
  ms = _check_counts("milestones", milestones, 1)
  if list(ms) != sorted(set(ms)):
    raise ValueError(f"milestones must be strictly increasing, got {ms}.")
  gamma = float(gamma)
  c0 = float(momentum) if _checks.is_static_number(momentum) else momentum
  bounds = jnp.asarray(ms, jnp.int32)

  def stage(count):
    return jnp.sum(count >= bounds) if ms else jnp.zeros([], jnp.int32)

  def lr_schedule(count):
    base_lr = _checks.value_at(learning_rate, count)
    return base_lr * jnp.power(gamma, stage(count))

  def momentum_schedule(count):
    if momentum_rule == "divide":
      return jnp.minimum(c0 / jnp.power(gamma, stage(count)), 1.0)
    if not ms:
      return jnp.minimum(c0 * jnp.sqrt(count + 1.0), 1.0)
    j = count - ms[-1] + 1
    return jnp.where(j >= 1, jnp.minimum(c0 * jnp.sqrt(jnp.maximum(j, 1.0)), 1.0),
                     c0)

  return _Multistep(ms, stage, lr_schedule, momentum_schedule)


def rmda_multistep(
    learning_rate: optax.ScalarOrSchedule,
    momentum: float,
    milestones: Sequence[int],
    gamma: float = 0.1,
    regularizer: Optional[Regularizer] = None,
    *,
    momentum_rule: str = "divide",
    accumulator_dtype: Optional[Any] = None,
) -> optax.GradientTransformationExtraArgs:
  r"""RMDA with the authors' stage-wise schedule and restarts.

  At each milestone (a global update count) the learning rate is multiplied
  by ``gamma``, the averaging weight ``c`` is updated, and RMDA restarts from
  the current point (see :func:`rmda`). Two rules for ``c``:

  * ``"divide"`` (the ICLR 2022 code): ``c <- min(c / gamma, 1)`` at each
    milestone, so that with ``gamma = 0.1`` and ``c = 0.01`` the last stages
    run with ``c = 1`` and the iterate itself becomes exactly structured.
  * ``"ramp"`` (the NeurIPS 2024 follow-up): ``c`` stays at its initial value
    through the milestones; after the last one it grows every update as
    ``min(c0 * sqrt(j), 1)``, ``j`` counting the updates of the last stage
    from 1.

  Args:
    learning_rate: the initial learning rate (a float >= 0) or a schedule,
      multiplied by ``gamma ** (number of milestones passed)``.
    momentum: the initial ``c`` in (0, 1] (a float, or a traced scalar inside
      ``jax.jit`` / ``jax.vmap``; not heavy-ball momentum).
    milestones: strictly increasing global update counts (> 0) at which a new
      stage starts. Convert epochs with ``epoch * steps_per_epoch``.
    gamma: the learning-rate factor per milestone, > 0.
    regularizer: as in :func:`rmda`.
    momentum_rule: ``"divide"`` or ``"ramp"``, see above.
    accumulator_dtype: as in :func:`rmda`.

  Returns:
    The corresponding :class:`optax.GradientTransformationExtraArgs`.

  Examples:
    >>> import rmda_jax as rj
    >>> steps_per_epoch = 469
    >>> tx = rj.rmda_multistep(0.1, 0.01, [50 * steps_per_epoch,
    ...                                    100 * steps_per_epoch],
    ...                        regularizer=rj.group_lasso(1e-3))

  References:
    Huang & Lee, `Training Structured Neural Networks Through Manifold
    Identification and Variance Reduction <https://arxiv.org/abs/2112.02612>`_,
    ICLR 2022.

    Huang & Lee, `Regularized Adaptive Momentum Dual Averaging with an
    Efficient Inexact Subproblem Solver for Training Structured Neural
    Network <https://arxiv.org/abs/2403.14398>`_, NeurIPS 2024.
  """
  ms, stage, lr_schedule, momentum_schedule = multistep_schedules(
      "rmda_multistep", "rmda", learning_rate, momentum, milestones, gamma,
      momentum_rule)
  return rmda(lr_schedule, momentum_schedule, regularizer, restart_at=ms,
              accumulator_dtype=accumulator_dtype)


def check_same_regularizer(given: Any, stored: Optional[Regularizer],
                           fn: str = "structured_params") -> None:
  """Raises ValueError unless ``given`` is the regularizer held in a state.

  Compared by value: the same class, groups and mask, and strengths equal
  after rounding ``given``'s to the state's dtype (traced strengths are not
  compared).
  """
  def describe(r):
    return "None" if r is None else repr(r)
  if given is None or stored is None:
    if given is not stored:
      raise ValueError(
          f"{fn}: the regularizer given ({describe(given)}) is not the one the "
          f"optimizer was built with ({describe(stored)}); omit it to use the "
          "optimizer's own.")
    return
  _checks.check_regularizer(given)
  same = (type(given) is type(stored)
          and given._static_items() == stored._static_items())
  if same:
    for a, b in zip(jax.tree.leaves(given), jax.tree.leaves(stored)):
      if isinstance(a, jax.core.Tracer) or isinstance(b, jax.core.Tracer):
        continue
      b = np.asarray(b)
      if np.asarray(a, b.dtype) != b:
        same = False
  if not same:
    raise ValueError(
        f"{fn}: the regularizer given ({describe(given)}) is not the one the "
        f"optimizer was built with ({describe(stored)}); omit it to use the "
        "optimizer's own.")
