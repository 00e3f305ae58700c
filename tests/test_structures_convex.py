"""End to end on a convex problem whose answer is known: low-rank matrix regression.

    min_W  F(W) = 1/(2n) ||X W - Y||_F^2 + lam ||W||_*,   Y = X W* + noise.

The optimum and its rank come from a full-batch solver written here (FISTA,
accelerated proximal gradient, in NumPy float64, to high accuracy); minibatch
RMDA (rj.rmda_multistep: a restart at the milestone, c = 0.1 -> 1) must end at
that rank and keep it over the last epochs.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rmda_jax as rj

N, D, P = 400, 20, 10
LAM = 0.3
BATCH = 20
EPOCHS, MILESTONE, LAST = 40, 20, 10


def np_svt(a, t):
  u, s, vt = np.linalg.svd(a, full_matrices=False)
  return (u * np.maximum(s - t, 0)) @ vt


def problem(seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(N, D))
  # W* of rank 4 with one weak direction; the noise adds small ones.
  u = np.linalg.qr(rng.normal(size=(D, 4)))[0]
  v = np.linalg.qr(rng.normal(size=(P, 4)))[0]
  w_star = u @ np.diag([3.0, 2.0, 1.0, 0.3]) @ v.T
  y = x @ w_star + rng.normal(size=(N, P))
  return x, y


def fista(x, y, lam, iters=6000):
  """Accelerated proximal gradient (Beck & Teboulle 2009) on F, full batch."""
  lip = np.linalg.norm(x, 2) ** 2 / N
  w = z = np.zeros((D, P))
  t = 1.0
  for _ in range(iters):
    grad = x.T @ (x @ z - y) / N
    w_new = np_svt(z - grad / lip, lam / lip)
    t_new = (1 + np.sqrt(1 + 4 * t * t)) / 2
    z = w_new + (t - 1) / t_new * (w_new - w)
    w, t = w_new, t_new
  return w


@pytest.fixture(scope="module")
def optimum():
  x, y = problem()
  w = fista(x, y, LAM)
  lip = np.linalg.norm(x, 2) ** 2 / N
  # Converged: W is a fixed point of the proximal-gradient map.
  w_next = np_svt(w - x.T @ (x @ w - y) / N / lip, LAM / lip)
  assert np.linalg.norm(w_next - w) <= 1e-10 * np.linalg.norm(w)
  s = np.linalg.svd(w, compute_uv=False)
  rank = int(np.sum(s > 1e-8 * s[0]))
  # A nondegenerate optimum (what identification needs, and what makes the
  # rank well defined): a clear gap after the kept singular values, and
  # -grad f / lam strictly inside the unit ball off the optimum's subspaces.
  assert 0 < rank < min(D, P) and s[rank - 1] > 0.05
  g = -x.T @ (x @ w - y) / N / LAM
  uu, _, vt = np.linalg.svd(w)
  proj_u = np.eye(D) - uu[:, :rank] @ uu[:, :rank].T
  proj_v = np.eye(P) - vt[:rank].T @ vt[:rank]
  assert np.linalg.norm(proj_u @ g @ proj_v, 2) < 0.95
  return x, y, w, rank


def run_rmda(x, y, seed=1):
  steps = N // BATCH
  reg = rj.nuclear_norm(LAM)
  tx = rj.rmda_multistep(0.5, 0.1, [MILESTONE * steps], gamma=0.1,
                         regularizer=reg)
  xj, yj = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
  params = {"w": jnp.zeros((D, P))}
  state = tx.init(params)

  def loss(params, idx):
    return 0.5 * jnp.mean(jnp.sum((xj[idx] @ params["w"] - yj[idx]) ** 2, -1))

  @jax.jit
  def epoch(params, state, order):
    def body(carry, idx):
      params, state = carry
      updates, state = tx.update(jax.grad(loss)(params, idx), state, params)
      return (optax.apply_updates(params, updates), state), None
    (params, state), _ = jax.lax.scan(body, (params, state), order)
    return params, state

  rng = np.random.default_rng(seed)
  ranks_w, ranks_z = [], []
  for _ in range(EPOCHS):
    order = jnp.asarray(rng.permutation(N).reshape(steps, BATCH))
    params, state = epoch(params, state, order)
    ranks_w.append(rj.rank_report(params, reg).rank)
    ranks_z.append(rj.rank_report(rj.structured_params(state, reg), reg).rank)
  return params, ranks_w, ranks_z


def test_minibatch_rmda_identifies_the_rank_of_the_optimum(optimum):
  x, y, w_opt, rank = optimum
  params, ranks_w, ranks_z = run_rmda(x, y)
  # The iterate W has full rank while c < 1 ...
  assert ranks_w[MILESTONE - 1] == min(D, P)
  # ... Z, and W once c = 1, end at the optimum's rank and keep it.
  assert ranks_z[-LAST:] == [rank] * LAST, ranks_z
  assert ranks_w[-LAST:] == [rank] * LAST, ranks_w
  # And near the optimum itself.
  err = np.linalg.norm(np.asarray(params["w"], np.float64) - w_opt)
  assert err <= 0.05 * np.linalg.norm(w_opt)
