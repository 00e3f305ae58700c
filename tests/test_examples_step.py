"""The step builders of rmda_jax.examples.train, against hand-written gradient steps."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import rmda_jax as rj
from rmda_jax.examples import data
from rmda_jax.examples import models
from rmda_jax.examples import train

N, BATCH, CLASSES = 12, 4, 3


def logreg():
  """A logistic regression with random weights, its parts and a small dataset."""
  model = models.get_model("logreg", CLASSES, nnx.Rngs(0), (2, 2, 1))
  parts = train.split_model(model)
  params = jax.tree.map(lambda p: jax.random.normal(jax.random.key(5), p.shape), parts.params)
  parts = parts._replace(params=params)
  x = jax.random.uniform(jax.random.key(1), (N, 2, 2, 1))
  y = jax.random.randint(jax.random.key(2), (N,), 0, CLASSES)
  perm = jnp.asarray(np.random.default_rng(0).permutation(N).reshape(-1, BATCH), jnp.int32)
  return parts, x, y, perm


def hand_loss(params, x, y, norm=None):
  """Mean cross-entropy of the logistic regression, written out."""
  if norm is not None:
    scale, mean, std = norm
    x = (x * scale - mean[0]) / std[0]
  logits = x.reshape(len(x), -1) @ params["fc"]["kernel"] + params["fc"]["bias"]
  logp = jax.nn.log_softmax(logits)
  return -jnp.mean(logp[jnp.arange(len(y)), y])


@pytest.mark.parametrize("jit", [True, False])
def test_train_step_is_one_sgd_step_on_the_batch_of_row_i(jit):
  parts, x, y, perm = logreg()
  norm = (2.0, (0.5,), (0.25,))
  tx = optax.sgd(0.1)
  step = train.make_train_step(parts.graphdef_train, tx, norm_stats=norm)
  state = train.init_train_state(parts, tx)
  i = 1
  new_state, loss_sum = (jax.jit(step) if jit else step)(
      state, jnp.float32(1.0), x, y, perm, jnp.int32(i), None)
  xb, yb = x[perm[i]], y[perm[i]]
  g = jax.grad(hand_loss)(parts.params, xb, yb, norm)
  expected = jax.tree.map(lambda p, g: p - 0.1 * g, parts.params, g)
  chex.assert_trees_all_close(new_state.params, expected, rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(loss_sum, 1.0 + hand_loss(parts.params, xb, yb, norm), rtol=1e-5)


def test_regularizer_in_loss_adds_its_gradient_not_its_value():
  parts, x, y, perm = logreg()
  reg = rj.l1(0.01)
  tx = optax.sgd(0.1)
  step = jax.jit(train.make_train_step(parts.graphdef_train, tx, regularizer_in_loss=reg.value))
  state, loss_sum = step(train.init_train_state(parts, tx), jnp.float32(0), x, y, perm,
                         jnp.int32(0), None)
  xb, yb = x[perm[0]], y[perm[0]]
  # L1 on the kernel only (ndim >= 2): its subgradient 0.01 * sign(w).
  g = jax.grad(hand_loss)(parts.params, xb, yb)
  g["fc"]["kernel"] = g["fc"]["kernel"] + 0.01 * jnp.sign(parts.params["fc"]["kernel"])
  expected = jax.tree.map(lambda p, g: p - 0.1 * g, parts.params, g)
  chex.assert_trees_all_close(state.params, expected, rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(loss_sum, hand_loss(parts.params, xb, yb), rtol=1e-5)


def test_augment_uses_the_key_of_step_i():
  parts, x, y, perm = logreg()
  tx = optax.sgd(0.1)
  x8 = jnp.pad(x, ((0, 0), (3, 3), (3, 3), (0, 0)))          # 8x8 images
  parts8 = train.split_model(models.get_model("logreg", CLASSES, nnx.Rngs(0), (8, 8, 1)))
  step = jax.jit(train.make_train_step(parts8.graphdef_train, tx, augment=True))
  key = jax.random.key(3)
  state, _ = step(train.init_train_state(parts8, tx), jnp.float32(0), x8, y, perm,
                  jnp.int32(1), key)
  xb = data.augment(jax.random.fold_in(key, 1), x8[perm[1]])
  logits = lambda p: xb.reshape(BATCH, -1) @ p["fc"]["kernel"] + p["fc"]["bias"]
  loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(logits(p), y[perm[1]]).mean()
  expected = jax.tree.map(lambda p, g: p - 0.1 * g, parts8.params, jax.grad(loss)(parts8.params))
  chex.assert_trees_all_close(state.params, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("batch_size", [5, 12, 100])
def test_evaluate_counts_every_sample_once(batch_size):
  parts, x, y, _ = logreg()
  eval_step = jax.jit(train.make_eval_step(parts.graphdef_eval))
  loss, acc = train.evaluate(eval_step, parts.params, parts.batch_stats, x, y, batch_size)
  logits = x.reshape(N, -1) @ parts.params["fc"]["kernel"] + parts.params["fc"]["bias"]
  chex.assert_trees_all_close(loss, hand_loss(parts.params, x, y), rtol=1e-5)
  assert acc == pytest.approx(float(jnp.mean(jnp.argmax(logits, -1) == y)))


def test_the_step_is_traced_once_per_run():
  parts, x, y, perm = logreg()
  tx = optax.sgd(0.1)
  step = jax.jit(chex.assert_max_traces(train.make_train_step(parts.graphdef_train, tx), n=1))
  state, loss_sum = train.init_train_state(parts, tx), jnp.float32(0)
  for epoch in range(2):
    for i in range(len(perm)):
      state, loss_sum = step(state, loss_sum, x, y, perm, np.int32(i), None)


def test_batchnorm_statistics_update_in_train_mode_only():
  model = models.ConvBNReLU(1, 2, rngs=nnx.Rngs(0))
  parts = train.split_model(model)
  x = 3.0 + jax.random.normal(jax.random.key(0), (4, 5, 5, 1))
  _, stats_train = train.forward(parts.graphdef_train, parts.params, parts.batch_stats, x)
  _, stats_eval = train.forward(parts.graphdef_eval, parts.params, parts.batch_stats, x)
  chex.assert_trees_all_equal(stats_eval, parts.batch_stats)
  assert not np.allclose(stats_train["bn"]["mean"], parts.batch_stats["bn"]["mean"])
