"""A float64 NumPy transcription of the RAMDA authors' experiment code.

Written from the equations of ``shared/docs/ramda.md`` (sections 1 and 2:
``ismoptgroup/ramda_exp``'s ``RAMDA.step``, ``pgd_solver_glasso``,
``pgd_solver_nuclear`` and ``multistep_param_scheduler``), independently of
``rmda_jax``: per-tensor state, the torch loop order, the warm start at the
current parameter and the relative-objective stop rule. Groups are given by
the axes one group spans (Flax layout: every axis but the input axis -2).
"""

from __future__ import annotations

import numpy as np


def _group_norm(x, axes):
  return np.sqrt(np.sum(x * x, axis=axes, keepdims=True))


def pgd_solver_glasso(p, p0, v, denom, lam_alpha, axes, max_iters, rtol):
  """``pgd_solver_glasso``: returns (p_tilde, iterations)."""
  size = int(np.prod([p.shape[a] for a in axes]))
  tau = lam_alpha * np.sqrt(size)
  active = _group_norm(denom * p0 - v, axes) > tau
  if not active.any():
    return np.zeros_like(p), 0
  eta = 1.0 / np.max(denom, axis=axes, keepdims=True)
  z = np.where(active, p, 0.0)

  def objective(z):
    diff = z - p0
    smooth = np.sum(np.where(active, diff * v + 0.5 * diff * denom * diff, 0.0))
    return smooth + tau * np.sum(np.where(active, _group_norm(z, axes), 0.0))

  previous = objective(z)
  iters = 0
  for i in range(max_iters):
    z = z - eta * (v + denom * (z - p0))
    r = np.maximum(_group_norm(z, axes) - eta * tau, 0.0)
    z = np.where(active, z * r / (r + eta * tau), 0.0)
    current = objective(z)
    iters = i + 1
    if (previous - current) / (abs(current) + 1.0) < rtol and i > 0:
      break
    previous = current
  return z, iters


def pgd_solver_nuclear(p, p0, v, denom, lam_alpha, max_iters, rtol):
  """``pgd_solver_nuclear`` on a 2-D tensor: returns (p_tilde, iterations)."""
  tau = lam_alpha
  eta = 1.0 / np.max(denom)

  def svt(x, t):
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    s = np.maximum(s - t, 0.0)
    return (u * s) @ vt, np.sum(s)

  def objective(z, nuc):
    diff = z - p0
    return np.sum(diff * v + 0.5 * diff * denom * diff) + tau * nuc

  z = p.copy()
  previous = objective(z, np.sum(np.linalg.svd(z, compute_uv=False)))
  iters = 0
  for i in range(max_iters):
    z, nuc = svt(z - eta * (v + denom * (z - p0)), eta * tau)
    current = objective(z, nuc)
    iters = i + 1
    if (previous - current) / (abs(current) + 1.0) < rtol and i > 0:
      break
    previous = current
  return z, iters


class NumpyRAMDA:
  """``RAMDA`` of the exp code, one state per tensor, float64.

  Args:
    params: dict name -> array (copied).
    lr, momentum, lambda_, epsilon: the hyperparameters.
    kind: ``"glasso"`` (groups: every axis but -2) or ``"nuclear"``
      (2-D tensors).
    regularized: names of the regularized tensors (default: ndim >= 2); the
      others are unregularized (``dim is None``).
  """

  def __init__(self, params, lr, momentum, lambda_, epsilon=1e-6,
               max_iters=100, rtol=1e-8, kind="glasso", regularized=None):
    self.params = {k: np.array(v, np.float64) for k, v in params.items()}
    self.regularized = (regularized if regularized is not None else
                        [k for k, v in self.params.items() if v.ndim >= 2])
    self.lr, self.momentum, self.lambda_, self.epsilon = (
        lr, momentum, lambda_, epsilon)
    self.max_iters, self.rtol, self.kind = max_iters, rtol, kind
    self.state = {}
    self.last_iters = {}
    self.reset_state()

  def reset_state(self):
    for k, p in self.params.items():
      self.state[k] = {"step": 0, "alpha": 0.0, "initial_point": p.copy(),
                       "grad_sum": np.zeros_like(p),
                       "grad_sum_sq": np.zeros_like(p)}

  def step(self, grads):
    for k, p in self.params.items():
      g, st = grads[k], self.state[k]
      st["step"] += 1
      step_size = self.lr * st["step"] ** 0.5
      st["alpha"] += step_size
      st["grad_sum"] += step_size * g
      st["grad_sum_sq"] += step_size * g * g
      denom = st["grad_sum_sq"] ** (1 / 3) + self.epsilon
      p0, v = st["initial_point"], st["grad_sum"]
      if self.lambda_ == 0 or k not in self.regularized:
        p_tilde, iters = p0 - v / denom, None
      elif self.kind == "glasso":
        axes = tuple(a for a in range(p.ndim) if a != p.ndim - 2)
        p_tilde, iters = pgd_solver_glasso(
            p, p0, v, denom, st["alpha"] * self.lambda_, axes,
            self.max_iters, self.rtol)
      else:
        p_tilde, iters = pgd_solver_nuclear(
            p, p0, v, denom, st["alpha"] * self.lambda_, self.max_iters,
            self.rtol)
      self.last_iters[k] = iters
      if self.momentum == 1:
        self.params[k] = p_tilde.copy()
      else:
        self.params[k] = (1 - self.momentum) * p + self.momentum * p_tilde


class MultistepScheduler:
  """``multistep_param_scheduler`` with the momentum ramp (pkg rule, ``>``).

  ``end_of_epoch(epoch)`` after each epoch (0-based): at a milestone, lr and
  epsilon times gamma and a restart. ``after_step(epoch)`` after every
  ``optimizer.step()``: once ``epoch + 1 > milestones[-1]``, the momentum is
  ``min(c0 * count ** 0.5, 1)`` with the counter incremented before use from 1.
  """

  def __init__(self, opt, milestones, gamma=0.1):
    self.opt, self.milestones, self.gamma = opt, list(milestones), gamma
    self.c0 = opt.momentum
    self.momentum_step_count = 1

  def after_step(self, epoch):
    if epoch + 1 > self.milestones[-1]:
      self.momentum_step_count += 1
      self.opt.momentum = min(self.c0 * self.momentum_step_count ** 0.5, 1.0)

  def end_of_epoch(self, epoch):
    if epoch + 1 in self.milestones:
      self.opt.lr *= self.gamma
      self.opt.epsilon *= self.gamma
      self.opt.reset_state()
