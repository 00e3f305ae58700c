"""The proximal baselines of the RMDA papers, as optax transformations.

* :func:`prox_sgd`: proximal SGD with heavy-ball momentum (Yang et al. 2020,
  as the RMDA authors run it).
* :func:`prox_adam`: ProxGen (Yun, Lozano & Yang 2021): Adam moments, then
  the Adam-preconditioned proximal subproblem, solved inexactly by proximal
  gradient (the follow-up code's "ProxAdamW").
* :func:`prox_ssi`: ProxSSI (Deleu & Bengio 2021): the same subproblem solved
  per group by Newton's method on a scalar secular equation.

Each takes the regularizers of :mod:`rmda_jax.regularizers`, needs ``params``
in ``update`` and returns ``new_params - params`` with the new point computed
first, so the exact zeros of the prox survive ``optax.apply_updates``. The
unregularized references are plain optax: ``optax.sgd(lr, momentum=0.9)``
(MSGD, with ``optax.add_decayed_weights`` for weight decay) and
``optax.contrib.madgrad``.
"""


from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from rmda_jax import _checks
from rmda_jax._sharding import scalar_like_params
from rmda_jax.regularizers import Regularizer

__all__ = [
    "ProxSGDState",
    "ProxAdamState",
    "prox_sgd",
    "prox_adam",
    "prox_ssi",
]


class ProxSGDState(NamedTuple):
  """State of :func:`prox_sgd`.

  Attributes:
    count: number of updates applied (schedules read it).
    trace: the heavy-ball momentum buffer ``m``.
  """

  count: jax.Array
  trace: optax.Updates


class ProxAdamState(NamedTuple):
  """State of :func:`prox_adam` and :func:`prox_ssi`.

  Attributes:
    count: number of updates applied (schedules and bias correction read it).
    mu: Adam's first moment (exponential moving average of the gradients).
    nu: Adam's second moment (of the squared gradients).
  """

  count: jax.Array
  mu: optax.Updates
  nu: optax.Updates


# ------------------------------------------------------------------ helpers
def _compute_dtype(dtype):
  """At least float32: bfloat16 leaves are updated in float32, then cast."""
  return jnp.promote_types(dtype, jnp.float32)


def _unzip(out, like, n):
  """A pytree of n-tuples (with the structure of ``like``) as n pytrees."""
  return tuple(jax.tree.map(lambda _, o: o[i], like, out) for i in range(n))


def _prox_step(regularizer, params, step, lr, *, warm=False, **prox_kwargs):
  """``new_params - params`` for ``new_params = prox_{lr psi}(params - step)``.

  ``step`` is in the compute dtype; with no regularizer the update is
  ``-step``. Extra arguments go to :meth:`Regularizer.prox` (the metric and
  its inner solver). With ``warm``, the metric prox runs the authors'
  warm-started solver, started at ``params - step`` with its objective
  measured from ``params``.
  """
  if regularizer is None:
    return jax.tree.map(lambda s, p: (-s).astype(p.dtype), step, params)
  y = jax.tree.map(lambda p, s: p.astype(s.dtype) - s, params, step)
  if warm:
    prox_kwargs.update(init=y, origin=jax.tree.map(
        lambda p, s: p.astype(s.dtype), params, step))
  z = regularizer.prox(y, lr, **prox_kwargs)
  return jax.tree.map(lambda z, p: (z - p.astype(z.dtype)).astype(p.dtype),
                      z, params)


def _init_checks(regularizer, params):
  _checks.check_float_leaves(params)
  if regularizer is not None:
    regularizer.check(params)


# ------------------------------------------------------------------ prox_sgd
def prox_sgd(
    learning_rate: optax.ScalarOrSchedule,
    momentum: float = 0.9,
    regularizer: Optional[Regularizer] = None,
    *,
    nesterov: bool = False,
    accumulator_dtype: Optional[Any] = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Proximal SGD with heavy-ball momentum.

  With :math:`g_k` the gradient at :math:`W_k`, :math:`\eta_k` the
  learning rate and :math:`\mu` the momentum, as in :func:`optax.sgd`:

  .. math::

    \begin{align*}
      m_k &= \mu m_{k-1} + g_k, \quad m_{-1} = 0 \\
      d_k &= m_k \quad (\text{nesterov: } d_k = g_k + \mu m_k) \\
      W_{k+1} &= \mathrm{prox}_{\eta_k \psi}(W_k - \eta_k d_k).
    \end{align*}

  Leaves the regularizer does not act on take the plain step
  :math:`-\eta_k d_k`; with ``regularizer=None`` this is ``optax.sgd``.

  .. note:: **The RMDA authors' form.** Their ProxSGD keeps an exponential
    moving average :math:`\bar m_k = (1 - \rho) \bar m_{k-1} + \rho g_k`
    (``rho = 0.1``, initialised with :math:`\rho g_0`, which is the same as
    :math:`\bar m_{-1} = 0`) and sets
    :math:`W_{k+1} = \mathrm{prox}_{\bar\eta \psi}(W_k - \bar\eta \bar m_k)`.
    With :math:`\mu = 1 - \rho`, :math:`\bar m_k = \rho m_k` for every k
    (induction: :math:`\bar m_k = (1 - \rho) \rho m_{k-1} + \rho g_k =
    \rho (\mu m_{k-1} + g_k)`), so :math:`\bar\eta \bar m_k =
    (\rho \bar\eta) m_k`. Their run with learning rate :math:`\bar\eta` and
    strength :math:`\lambda` is therefore exactly this function with
    ``learning_rate = rho * lr_bar``, ``momentum = 1 - rho`` and strength
    ``lambda / rho`` (the prox threshold :math:`\bar\eta \lambda` must not
    change). The follow-up's setting (lr 0.1, rho 0.1, lambda) is
    ``rj.prox_sgd(0.01, 0.9, rj.group_lasso(10 * lambda))``.

  .. warning::
    At a fixed point :math:`m = g / (1 - \mu)`, so this iteration is
    stationary for :math:`f + (1 - \mu) \psi`, not :math:`f + \psi`: with
    ``momentum=0.9`` the regularizer acts ten times more weakly than its
    strength says. To solve ``min f + lambda * psi``, pass the strength
    ``lambda / (1 - momentum)`` (the mapping above does exactly that).

  Args:
    learning_rate: :math:`\eta`, a float >= 0 or an optax schedule of the
      update count. It scales both the step and the prox threshold.
    momentum: :math:`\mu` in [0, 1) (0: no momentum).
    regularizer: an :mod:`rmda_jax.regularizers` object such as
      ``rj.group_lasso(1e-4)`` or ``rj.l1(1e-5)``, or ``None``. With
      ``optax.inject_hyperparams``, pass ``static_args="regularizer"``.
    nesterov: use Nesterov's form of the momentum.
    accumulator_dtype: dtype of the momentum buffer; ``None`` keeps each
      parameter's dtype.

  Returns:
    The corresponding :class:`optax.GradientTransformationExtraArgs`.

  Examples:
    >>> import jax.numpy as jnp, optax, rmda_jax as rj
    >>> params = {"w": jnp.array([[1.0, 1.0], [0.1, 0.1]])}
    >>> tx = rj.prox_sgd(0.1, momentum=0.9, regularizer=rj.group_lasso(1.0))
    >>> state = tx.init(params)
    >>> grads = {"w": jnp.zeros((2, 2))}
    >>> updates, state = tx.update(grads, state, params)
    >>> optax.apply_updates(params, updates)["w"]  # row 1 is removed exactly
    Array([[0.9, 0.9],
           [0. , 0. ]], dtype=float32)

  References:
    Yang, Yuan, Chatzimichailidis & van Sloun, `ProxSGD: Training Structured
    Neural Networks under Regularization and Constraints
    <https://openreview.net/forum?id=HygpthEtvr>`_, ICLR 2020.

    Huang & Lee, `Training Structured Neural Networks Through Manifold
    Identification and Variance Reduction <https://arxiv.org/abs/2112.02612>`_,
    ICLR 2022.
  """
  _checks.check_nonnegative("learning_rate", learning_rate)
  _checks.check_no_schedule("momentum", momentum)
  _checks.check_no_schedule("nesterov", nesterov)
  _checks.check_fraction("momentum", momentum)
  _checks.check_regularizer(regularizer)
  accumulator_dtype = _checks.check_dtype("accumulator_dtype", accumulator_dtype)

  def init_fn(params):
    _init_checks(regularizer, params)
    return ProxSGDState(
        count=scalar_like_params(0, jnp.int32, params),
        trace=jax.tree.map(
            lambda p: jnp.zeros_like(p, dtype=accumulator_dtype or p.dtype),
            params),
    )

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    _checks.check_update_args(updates, params)
    lr = _checks.value_at(learning_rate, state.count)

    def leaf(g, t, p):
      new_t = g + momentum * t
      direction = g + momentum * new_t if nesterov else new_t
      cdtype = _compute_dtype(p.dtype)
      return (jnp.asarray(lr, cdtype) * direction.astype(cdtype),
              new_t.astype(t.dtype))

    step, new_trace = _unzip(
        jax.tree.map(leaf, updates, state.trace, params), params, 2)
    new_updates = _prox_step(regularizer, params, step, lr)
    return new_updates, ProxSGDState(
        count=optax.safe_increment(state.count), trace=new_trace)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# ------------------------------------------------------ prox_adam / prox_ssi
def _preconditioned_adam(learning_rate, b1, b2, eps, regularizer, solver,
                         max_inner_steps=None, inner_tol=None, warm=False):
  """Adam moments, then the prox in Adam's metric by the inner ``solver``."""
  if regularizer is not None:
    regularizer.check_solver(solver)

  def init_fn(params):
    _init_checks(regularizer, params)
    return ProxAdamState(
        count=scalar_like_params(0, jnp.int32, params),
        mu=jax.tree.map(jnp.zeros_like, params),
        nu=jax.tree.map(jnp.zeros_like, params),
    )

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    _checks.check_update_args(updates, params)
    count = optax.safe_increment(state.count)
    lr = _checks.value_at(learning_rate, state.count)

    def leaf(g, mu, nu, p):
      mu = (1 - b1) * g + b1 * mu
      nu = (1 - b2) * jnp.square(g) + b2 * nu
      cdtype = _compute_dtype(p.dtype)
      # Bias corrections in at least float32 (b2 ** count in bfloat16 is 1).
      c1 = 1 - jnp.asarray(b1, cdtype) ** count
      c2 = 1 - jnp.asarray(b2, cdtype) ** count
      d = jnp.sqrt(nu.astype(cdtype) / c2) + jnp.asarray(eps, cdtype)
      step = jnp.asarray(lr, cdtype) * ((mu.astype(cdtype) / c1) / d)
      return step, d, mu.astype(p.dtype), nu.astype(p.dtype)

    step, d, mu, nu = _unzip(
        jax.tree.map(leaf, updates, state.mu, state.nu, params), params, 4)
    new_updates = _prox_step(regularizer, params, step, lr, metric=d,
                             solver=solver, max_steps=max_inner_steps,
                             tol=inner_tol, warm=warm)
    return new_updates, ProxAdamState(count=count, mu=mu, nu=nu)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def prox_adam(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    regularizer: Optional[Regularizer] = None,
    *,
    max_inner_steps: int = 100,
    inner_tol: float = 1e-8,
    inner_stop: str = "change",
) -> optax.GradientTransformationExtraArgs:
  r"""ProxGen: Adam with an exactly regularized, preconditioned step.

  Adam's moments with bias correction, then the preconditioned subproblem

  .. math::

    \begin{align*}
      W_{k+1} &= \arg\min_U \langle \eta_k \hat m_k, U - W_k \rangle
        + \tfrac12 (U - W_k)^\top D_k (U - W_k) + \eta_k \psi(U) \\
      &= \arg\min_U \tfrac12 (U - Y_k)^\top D_k (U - Y_k) + \eta_k \psi(U),
      \quad Y_k = W_k - \eta_k D_k^{-1} \hat m_k,
    \end{align*}

  with :math:`D_k = \mathrm{diag}(\sqrt{\hat v_k} + \epsilon)`. ``Y`` is the
  Adam step; the subproblem is the prox of :math:`\eta_k \psi` in the metric
  :math:`D_k`.

  * L1: closed form, soft thresholding of :math:`Y_i` at
    :math:`\eta_k \lambda / D_i`.
  * Group LASSO: groups with :math:`\|D_g Y_g\| \le \eta_k \lambda w_g` are
    set to exactly 0 (0 is optimal exactly then); the others are solved by
    proximal gradient started at the Adam step :math:`Y_k`, step
    :math:`1 / \max_{i \in g} D_i` per group, inside one ``lax.while_loop``
    per leaf that stops when the largest change of an entry is
    ``<= inner_tol`` or after ``max_inner_steps`` steps: an inexact solve,
    which in float32 runs to ``max_inner_steps``. With
    ``inner_stop="objective"`` it stops instead as the authors' code (the
    solver of :func:`rmda_jax.ramda`,
    :func:`rmda_jax._prox.warm_group_prox_pg`): when the relative decrease
    of the objective above (measured from :math:`W_k`) is under
    ``inner_tol`` (at least 2 steps), about 8x faster per step on a
    ResNet50 pytree. That rule reads a float32 objective near its rounding
    level, so the iteration it stops at (hence the result, within the
    solve's inexactness) can change with the order of the sums, e.g. from
    one device to a sharded run. Entry ``i`` moves by a
    fraction :math:`D_i / \max_g D` of its distance per step, so when Adam's
    denominators span orders of magnitude inside a group, 100 steps leave the
    small-:math:`D` entries near the start. Starting at :math:`Y_k` makes
    them take the Adam step (the exact solution as :math:`\lambda \to 0`);
    the authors' code starts at :math:`W_k`, where they would barely move.
    Use :func:`prox_ssi` for an accurate solve of the same subproblem.
  * Unregularized leaves (and ``regularizer=None``): the plain Adam step.

  Args:
    learning_rate: :math:`\eta`, a float >= 0 or an optax schedule of the
      update count (authors' setting: 1e-3).
    b1: decay of the first moment, in [0, 1).
    b2: decay of the second moment, in [0, 1).
    eps: :math:`\epsilon > 0`, added to :math:`\sqrt{\hat v}`.
    regularizer: any :class:`rmda_jax.Regularizer` (e.g.
      ``rj.group_lasso(...)``, ``rj.l1(...)``) or ``None``. The subproblem
      is ``regularizer.prox(Y, lr, metric=D, solver="pg")``: closed form for
      L1, per-group proximal gradient for group regularizers, proximal
      gradient with step ``1 / max D`` over the leaf for any other. With
      ``optax.inject_hyperparams``, pass ``static_args="regularizer"``.
    max_inner_steps: bound on the proximal-gradient iterations (>= 1).
    inner_tol: stopping tolerance of the inner loop (see ``inner_stop``).
    inner_stop: ``"change"`` (largest change of an entry) or
      ``"objective"`` (relative decrease of the objective, the authors'
      rule, shared with :func:`rmda_jax.ramda`).

  Returns:
    The corresponding :class:`optax.GradientTransformationExtraArgs`.

  Examples:
    >>> import jax.numpy as jnp, optax, rmda_jax as rj
    >>> params = {"w": jnp.array([[1.0, 1.0], [1e-4, -1e-4]])}
    >>> tx = rj.prox_adam(1e-3, regularizer=rj.group_lasso(2.0))
    >>> state = tx.init(params)
    >>> updates, state = tx.update({"w": jnp.ones((2, 2))}, state, params)
    >>> w = optax.apply_updates(params, updates)["w"]
    >>> bool((w[1] == 0).all()), bool((w[0] != 0).all())
    (True, True)

  References:
    Yun, Lozano & Yang, `Adaptive Proximal Gradient Methods for Structured
    Neural Networks <https://openreview.net/forum?id=TjsNjS4_sz>`_,
    NeurIPS 2021.

    Huang & Lee, `Regularized Adaptive Momentum Dual Averaging with an
    Efficient Inexact Subproblem Solver for Training Structured Neural
    Network <https://arxiv.org/abs/2403.14398>`_, NeurIPS 2024.
  """
  _checks.check_nonnegative("learning_rate", learning_rate)
  for name, value in (("b1", b1), ("b2", b2), ("eps", eps), ("inner_tol", inner_tol)):
    _checks.check_no_schedule(name, value)
  _checks.check_fraction("b1", b1)
  _checks.check_fraction("b2", b2)
  _checks.check_positive("eps", eps)
  _checks.check_max_steps("max_inner_steps", max_inner_steps)
  _checks.check_nonnegative("inner_tol", inner_tol)
  if inner_stop not in ("objective", "change"):
    raise ValueError(
        f"inner_stop must be 'objective' or 'change', got {inner_stop!r}.")
  _checks.check_regularizer(regularizer)
  return _preconditioned_adam(learning_rate, b1, b2, eps, regularizer, "pg",
                              max_inner_steps, inner_tol,
                              warm=inner_stop == "objective")


def prox_ssi(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
    regularizer: Optional[Regularizer] = None,
) -> optax.GradientTransformationExtraArgs:
  r"""ProxSSI: Adam with a group-LASSO prox weighted by Adam's denominator.

  The Adam step :math:`Y_k = W_k - \eta_k D_k^{-1} \hat m_k`,
  :math:`D_k = \mathrm{diag}(\sqrt{\hat v_k} + \epsilon)`, then

  .. math::

    W_{k+1} = \arg\min_U \tfrac12 (U - Y_k)^\top D_k (U - Y_k)
      + \eta_k \psi(U),

  the same subproblem as :func:`prox_adam`, solved per group to high
  accuracy instead of by proximal gradient. For group LASSO a group is 0 iff
  :math:`\|D_g Y_g\| \le \tau = \eta_k \lambda w_g`; otherwise
  :math:`U_i = D_i Y_i / (D_i + \tau / r)` where :math:`r = \|U_g\|` is the
  root of the scalar secular equation

  .. math::

    \Big(\sum_{i \in g} \frac{Y_i^2}{(r + \tau / D_i)^2}\Big)^{-1/2} = 1,

  whose left side is increasing and concave in ``r``: Newton's method from
  the lower bound :math:`(\|D_g Y_g\| - \tau) / \max_g D` increases
  monotonically to the root (one step when ``D`` is constant on the group),
  kept inside a bisection bracket; at most 50 iterations in a
  ``lax.while_loop``, relative tolerance 1e-7. L1 uses the closed form of
  :func:`prox_adam`; unregularized leaves take the plain Adam step.

  Args:
    learning_rate: :math:`\eta`, a float >= 0 or an optax schedule of the
      update count (authors' setting: 1e-3).
    b1: decay of the first moment, in [0, 1).
    b2: decay of the second moment, in [0, 1).
    eps: :math:`\epsilon > 0`, added to :math:`\sqrt{\hat v}`.
    regularizer: a regularizer whose metric prox offers the ``"newton"``
      solver (the group regularizers: ``rj.group_lasso(...)``,
      ``rj.l1(...)``) or ``None``; any other raises ``ValueError``. The
      subproblem is ``regularizer.prox(Y, lr, metric=D, solver="newton")``.
      With ``optax.inject_hyperparams``, pass
      ``static_args="regularizer"``.

  Returns:
    The corresponding :class:`optax.GradientTransformationExtraArgs`.

  Examples:
    >>> import jax.numpy as jnp, optax, rmda_jax as rj
    >>> params = {"w": jnp.array([[1.0, 1.0], [1e-4, -1e-4]])}
    >>> tx = rj.prox_ssi(1e-3, regularizer=rj.group_lasso(2.0))
    >>> state = tx.init(params)
    >>> updates, state = tx.update({"w": jnp.ones((2, 2))}, state, params)
    >>> w = optax.apply_updates(params, updates)["w"]
    >>> bool((w[1] == 0).all()), bool((w[0] != 0).all())
    (True, True)

  References:
    Deleu & Bengio, `Structured Sparsity Inducing Adaptive Optimizers for
    Deep Learning <https://arxiv.org/abs/2102.03869>`_, 2021.

    Moré & Sorensen, `Computing a Trust Region Step
    <https://doi.org/10.1137/0904038>`_, 1983.
  """
  _checks.check_nonnegative("learning_rate", learning_rate)
  for name, value in (("b1", b1), ("b2", b2), ("eps", eps)):
    _checks.check_no_schedule(name, value)
  _checks.check_fraction("b1", b1)
  _checks.check_fraction("b2", b2)
  _checks.check_positive("eps", eps)
  _checks.check_regularizer(regularizer)
  return _preconditioned_adam(learning_rate, b1, b2, eps, regularizer, "newton")
