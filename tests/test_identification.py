"""RMDA identifies the exact group support of a convex problem's optimum.

Multinomial logistic regression with group LASSO over input features, zero
initialisation. The optimum is computed by a full-batch accelerated proximal
gradient solver written here (not rmda_jax's code), to an optimality residual
near machine precision; minibatch RMDA must then end on exactly its support
and keep it over the last epochs.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

import rmda_jax as rj
from tests._compat import enable_x64

N, D, C, BATCH = 2000, 40, 5, 128
LAM = 0.02


def _data():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(N, D))
  w_true = np.zeros((D, C))
  # 16 informative features of decaying strength; the weak ones are cut by
  # the regularizer, so the optimum's support is not the generating one.
  w_true[:16] = rng.normal(size=(16, C)) * np.linspace(1.0, 0.05, 16)[:, None]
  logits = x @ w_true
  p = np.exp(logits - logits.max(1, keepdims=True))
  p /= p.sum(1, keepdims=True)
  y = np.array([rng.choice(C, p=row) for row in p])
  return jnp.asarray(x), jnp.asarray(y)


def _loss(params, x, y):
  logits = x @ params["w"] + params["b"]
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def _prox(params, t):
  """Group soft-thresholding of the rows of w (sqrt(C) weights); b free."""
  norm = jnp.linalg.norm(params["w"], axis=1, keepdims=True)
  thr = t * np.sqrt(C)
  factor = jnp.where(norm > thr, 1 - thr / jnp.where(norm > 0, norm, 1), 0)
  return {"w": params["w"] * factor, "b": params["b"]}


def _full_batch_optimum(x, y, iters=5000):
  """FISTA with a fixed step 1 / L, L = ||X||_2^2 / (2 N) >= Lipschitz const."""
  lip = 0.5 * float(jnp.linalg.norm(x, 2)) ** 2 / N

  def body(_, carry):
    p, p_mom, t = carry
    g = jax.grad(_loss)(p_mom, x, y)
    p_new = _prox(jax.tree.map(lambda a, b: a - b / lip, p_mom, g), LAM / lip)
    t_new = (1 + jnp.sqrt(1 + 4 * t * t)) / 2
    p_mom = jax.tree.map(lambda a, b: a + (t - 1) / t_new * (a - b), p_new, p)
    return p_new, p_mom, t_new

  p0 = {"w": jnp.zeros((D, C)), "b": jnp.zeros(C)}
  opt, _, _ = jax.jit(lambda p: jax.lax.fori_loop(0, iters, body, (p, p, 1.0)))(p0)
  g = jax.grad(_loss)(opt, x, y)
  residual = max(
      float(jnp.abs(opt["w"] - _prox(jax.tree.map(jnp.subtract, opt, g), LAM)["w"]).max()),
      float(jnp.abs(g["b"]).max()))
  return opt, g, residual


def test_rmda_identifies_the_optimal_group_support():
  with enable_x64(True):
    x, y = _data()
    opt, grad_at_opt, residual = _full_batch_optimum(x, y)
    assert residual < 1e-12
    support = np.asarray(jnp.linalg.norm(opt["w"], axis=1) > 0)
    # A non-degenerate instance: some groups in, some out, with margins.
    assert 4 <= support.sum() <= 14
    ratio = np.asarray(jnp.linalg.norm(grad_at_opt["w"], axis=1)) / (LAM * np.sqrt(C))
    assert ratio[~support].max() < 0.9
    assert support[:16].sum() < 16  # weak generating features were cut

    steps_per_epoch, epochs = N // BATCH, 40
    reg = rj.group_lasso(LAM)
    tx = rj.rmda_multistep(0.5, 0.1, [10 * steps_per_epoch, 20 * steps_per_epoch],
                           gamma=0.1, regularizer=reg)

    @jax.jit
    def epoch(params, state, key):
      order = jax.random.permutation(key, N)[: steps_per_epoch * BATCH]

      def step(carry, idx):
        params, state = carry
        g = jax.grad(_loss)(params, x[idx], y[idx])
        updates, state = tx.update(g, state, params)
        return (optax.apply_updates(params, updates), state), None

      (params, state), _ = jax.lax.scan(
          step, (params, state), order.reshape(steps_per_epoch, BATCH))
      return params, state

    params = {"w": jnp.zeros((D, C)), "b": jnp.zeros(C)}
    state = tx.init(params)
    history = []
    for e in range(epochs):
      params, state = epoch(params, state, jax.random.fold_in(jax.random.key(0), e))
      w_support = np.asarray(jnp.any(params["w"] != 0, axis=1))
      z_support = np.asarray(
          jnp.any(rj.structured_params(state, reg)["w"] != 0, axis=1))
      history.append((w_support, z_support))

    # c = 0.1 * 10 = 1 in the last stage: W = Z, exactly structured.
    for e, (w_support, z_support) in enumerate(history[-10:], start=epochs - 10):
      np.testing.assert_array_equal(z_support, support, err_msg=f"Z, epoch {e}")
      np.testing.assert_array_equal(w_support, support, err_msg=f"W, epoch {e}")
    # While c < 1 the averaged iterate is dense although Z is already right.
    assert history[5][0].sum() > support.sum()
    assert float(jnp.linalg.norm(params["w"] - opt["w"])) < 0.5 * float(
        jnp.linalg.norm(opt["w"]))
