"""The exactly structured point of RMDA's and RAMDA's states.

RMDA's :math:`Z` is one prox of its dual point; RAMDA's solves its last
subproblem again (the same screened zero groups). Kept apart from both
optimizers, so that the imports run one way: ``_rmda`` <- ``_ramda`` <- here.
"""

from typing import Any, Optional

import jax
import jax.numpy as jnp
import optax

from rmda_jax import _ramda
from rmda_jax._rmda import RMDAState, check_same_regularizer

__all__ = ["structured_params"]


def _is_rmda_state(x) -> bool:
  return isinstance(x, (RMDAState, _ramda.RAMDAState))


def _z_of(state):
  if isinstance(state, _ramda.RAMDAState):  # its subproblem is solved again
    return _ramda._structured_point(state)  # pylint: disable=protected-access
  beta = jnp.sqrt(jnp.maximum(state.stage_count, 1).astype(state.alpha.dtype))
  if state.regularizer is None:
    return state.dual_point
  return state.regularizer.prox(state.dual_point, state.alpha / beta)


_FROM_STATE = object()


def structured_params(opt_state: Any, regularizer: Any = _FROM_STATE,
                      params: Optional[optax.Params] = None) -> optax.Params:
  r"""The point :math:`Z` of the most recent RMDA or RAMDA update (exactly structured).

  While ``momentum < 1`` the iterate :math:`W` only approaches the structure
  geometrically; :math:`Z = \mathrm{prox}_{(\alpha/\beta)\psi}(W^0 - V/\beta)`
  has it exactly. ``Z`` is recomputed from the state (nothing extra is
  stored), with the regularizer the state was built with, wherever RMDA
  sits: alone, in ``optax.chain``, under ``optax.inject_hyperparams``,
  ``optax.MultiSteps``, ``optax.apply_if_finite`` or in one or more branches
  of ``optax.partition``. Before the first update ``Z`` is the initial point.

  Args:
    opt_state: an optimizer state that contains one or more
      :class:`RMDAState` or :class:`rmda_jax.RAMDAState`.
    regularizer: optional; if given, it must equal (by value) the
      regularizer given to :func:`rmda` (``None`` if none), else ValueError:
      a check, since ``Z`` is always computed with the state's own.
    params: optional current parameters. Required when RMDA owns only part of
      the parameters (``optax.partition``) or sits there more than once: the
      leaves RMDA owns are replaced by ``Z``, the others kept. The result then
      has the dtypes of ``params``.

  Returns:
    A pytree like the parameters holding ``Z``.

  Raises:
    ValueError: if ``opt_state`` holds no RMDA state, or several without
      ``params``, or if ``regularizer`` is not the state's.

  Examples:
    >>> import jax.numpy as jnp, rmda_jax as rj
    >>> reg = rj.group_lasso(1.0)
    >>> tx = rj.rmda(0.1, 0.1, reg)
    >>> params = {"w": jnp.array([[3.0, 4.0], [0.1, 0.1]])}
    >>> state = tx.init(params)
    >>> _, state = tx.update({"w": jnp.zeros((2, 2))}, state, params)
    >>> rj.structured_params(state)["w"][1]  # row 1 is removed in Z
    Array([0., 0.], dtype=float32)
    >>> rj.structured_params(state, rj.l1(1.0))
    Traceback (most recent call last):
    ...
    ValueError: structured_params: the regularizer given (L1(strength=1.0)) is not the one the optimizer was built with (GroupLasso(strength=1.0, groups='input')); omit it to use the optimizer's own.
  """
  states = [s for s in jax.tree.leaves(opt_state, is_leaf=_is_rmda_state)
            if _is_rmda_state(s)]
  if not states:
    raise ValueError("structured_params: no RMDAState or RAMDAState found in "
                     "opt_state (was the optimizer built with rj.rmda or rj.ramda?).")
  if regularizer is not _FROM_STATE:
    for s in states:
      check_same_regularizer(regularizer, s.regularizer)
  zs = [_z_of(s) for s in states]
  if params is None:
    if len(zs) > 1:
      raise ValueError("structured_params: opt_state holds several RMDA states; "
                       "pass params= to merge them.")
    return zs[0]

  is_masked = lambda x: isinstance(x, optax.MaskedNode)
  # Leaf-wise, so that containers of another node type (e.g. flax.nnx's
  # OptVariable in the optimizer state vs Param in the model) still line up.
  p_leaves, treedef = jax.tree.flatten(params, is_leaf=is_masked)
  z_leaves = [jax.tree.leaves(z, is_leaf=is_masked) for z in zs]
  for zl in z_leaves:
    if len(zl) != len(p_leaves):
      raise ValueError(
          f"structured_params: params have {len(p_leaves)} leaves but the "
          f"RMDA state holds {len(zl)}; pass the params the optimizer updates.")
  out = []
  for i, p in enumerate(p_leaves):
    owned = [zl[i] for zl in z_leaves if not is_masked(zl[i])]
    out.append(p if not owned or is_masked(p)
               else jnp.asarray(owned[0]).astype(p.dtype))
  return jax.tree.unflatten(treedef, out)
