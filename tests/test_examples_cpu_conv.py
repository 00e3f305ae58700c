"""The CPU convolution fast paths: exact, and taken only when JAX's backend is CPU."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rmda_jax.examples import _cpu_conv
from rmda_jax.examples import models

pytestmark = pytest.mark.skipif(jax.default_backend() != "cpu",
                                reason="compares the CPU fast paths with the plain ones")

NHWC = ("NHWC", "HWIO", "NHWC")


def primitives(jaxpr) -> list[str]:
  """Names of every primitive in ``jaxpr``, sub-jaxprs (jit, custom_vjp, ...) included."""
  names = []
  for eqn in jaxpr.eqns:
    names.append(eqn.primitive.name)
    for param in eqn.params.values():
      for sub in (param if isinstance(param, (tuple, list)) else (param,)):
        if isinstance(sub, jax.extend.core.ClosedJaxpr):
          names += primitives(sub.jaxpr)
        elif isinstance(sub, jax.extend.core.Jaxpr):
          names += primitives(sub)
  return names


def n_custom_vjp(names):
  return sum(n.startswith("custom_vjp_call") for n in names)


@pytest.fixture
def backend_named(monkeypatch):
  """Makes ``jax.default_backend()`` answer ``name`` (what the fast paths' gate reads)."""

  def set_name(name):
    monkeypatch.setattr(jax, "default_backend", lambda: name)

  return set_name


def lenet_forward():
  model = models.get_model("lenet5_small", 10, nnx.Rngs(0), (28, 28, 1))
  graphdef, state = nnx.split(model)
  x = jax.random.normal(jax.random.key(1), (4, 28, 28, 1))
  return (lambda state, x: nnx.merge(graphdef, state)(x)), state, x


def test_gate_reads_the_backend_name(backend_named):
  assert _cpu_conv.enabled()
  for name in ("gpu", "tpu", "cuda", "rocm"):
    backend_named(name)
    assert not _cpu_conv.enabled()


@pytest.mark.parametrize("backend", ["gpu", "tpu"])
def test_plain_convolutions_are_traced_off_cpu(backend, backend_named):
  f, state, x = lenet_forward()
  backend_named(backend)
  names = primitives(jax.make_jaxpr(f)(state, x).jaxpr)
  assert n_custom_vjp(names) == 0
  assert names.count("conv_general_dilated") == 2     # conv1 and conv2, both lax's


def test_fast_path_is_traced_on_cpu():
  f, state, x = lenet_forward()
  names = primitives(jax.make_jaxpr(f)(state, x).jaxpr)
  assert n_custom_vjp(names) == 1                      # conv1 + relu + pool, fused
  assert names.count("conv_general_dilated") == 1      # conv2 only


@pytest.mark.parametrize("backend", ["gpu", "tpu"])
def test_single_channel_conv_is_plain_off_cpu(backend, backend_named):
  x, k = jnp.ones((2, 9, 9, 1)), jnp.ones((3, 3, 1, 4))
  # A new function per trace: make_jaxpr caches traces by function.
  trace = lambda: primitives(jax.make_jaxpr(
      lambda x, k: _cpu_conv.conv_general_dilated(x, k, (1, 1), "SAME",
                                                  dimension_numbers=NHWC))(x, k).jaxpr)
  assert n_custom_vjp(trace()) == 1
  backend_named(backend)
  names = trace()
  assert n_custom_vjp(names) == 0 and names == ["conv_general_dilated"]


def test_both_paths_agree_on_cpu(backend_named):
  model = models.get_model("lenet5_small", 10, nnx.Rngs(0), (28, 28, 1))
  graphdef, params = nnx.split(model)
  x = jax.random.normal(jax.random.key(1), (2, 28, 28, 1))

  def run():
    # Fresh functions: each is traced under the current backend name.
    loss = lambda params: jnp.sum(nnx.merge(graphdef, params)(x) ** 2)
    fused = n_custom_vjp(primitives(jax.make_jaxpr(loss)(params).jaxpr))
    value_and_grad = jax.jit(lambda params: (nnx.merge(graphdef, params)(x),
                                             jax.grad(loss)(params)))
    return fused, value_and_grad(params)

  fused_fast, fast = run()
  backend_named("gpu")
  fused_plain, plain = run()
  assert (fused_fast, fused_plain) == (1, 0)
  chex.assert_trees_all_close(fast, plain, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------
# The fast paths compute what the plain lax ops compute.


@pytest.mark.parametrize("padding", [((2, 2), (2, 2)), "VALID", "SAME", ((1, 0), (0, 3))])
def test_single_channel_conv_matches_lax(padding):
  kx, kk, kg = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(kx, (3, 12, 11, 1))
  k = jax.random.normal(kk, (5, 5, 1, 4))
  fast = lambda x, k: _cpu_conv.conv_general_dilated(x, k, (1, 1), padding,
                                                     dimension_numbers=NHWC)
  ref = lambda x, k: jax.lax.conv_general_dilated(x, k, (1, 1), padding, dimension_numbers=NHWC)
  assert n_custom_vjp(primitives(jax.make_jaxpr(fast)(x, k).jaxpr)) == 1
  chex.assert_trees_all_close(fast(x, k), ref(x, k), rtol=1e-5, atol=1e-5)
  g = jax.random.normal(kg, ref(x, k).shape)
  grads = lambda f: jax.grad(lambda x, k: jnp.sum(f(x, k) * g), (0, 1))(x, k)
  chex.assert_trees_all_close(grads(fast), grads(ref), rtol=1e-4, atol=1e-4)


def test_multi_channel_conv_goes_to_lax():
  x = jax.random.normal(jax.random.key(0), (2, 9, 9, 3))
  k = jax.random.normal(jax.random.key(1), (3, 3, 3, 5))
  for strides in [(1, 1), (2, 2)]:
    a = _cpu_conv.conv_general_dilated(x, k, strides, "SAME", dimension_numbers=NHWC)
    b = jax.lax.conv_general_dilated(x, k, strides, "SAME", dimension_numbers=NHWC)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("padding,hw", [(((2, 2), (2, 2)), (28, 28)), ("VALID", (28, 28)),
                                        ("SAME", (9, 11))])
def test_fused_conv_relu_pool_matches_unfused(padding, hw):
  conv = nnx.Conv(1, 4, (5, 5), padding=padding, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(1), (3, *hw, 1))
  assert _cpu_conv.fused_conv_relu_pool_applies(conv, x)
  graphdef, state = nnx.split(conv)

  def fused(state, x):
    return _cpu_conv.conv_relu_pool(nnx.merge(graphdef, state), x)

  def unfused(state, x):
    y = jax.nn.relu(nnx.merge(graphdef, state)(x))
    return jax.lax.reduce_window(y, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")

  a, b = fused(state, x), unfused(state, x)
  chex.assert_equal_shape((a, b))
  chex.assert_trees_all_close(a, b, rtol=1e-5, atol=1e-5)
  g = jax.random.normal(jax.random.key(2), a.shape)
  grad = lambda f: jax.grad(lambda s, x: jnp.sum(f(s, x) * g), argnums=(0, 1))(state, x)
  chex.assert_trees_all_close(grad(fused), grad(unfused), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("make", [
    lambda: nnx.Conv(3, 4, (3, 3), rngs=nnx.Rngs(0)),                    # three channels
    lambda: nnx.Conv(1, 4, (3, 3), strides=2, rngs=nnx.Rngs(0)),         # strided
    lambda: nnx.Conv(1, 4, (3, 3), kernel_dilation=2, rngs=nnx.Rngs(0)),  # dilated
])
def test_fused_path_refuses_other_layers(make):
  conv = make()
  x = jnp.ones((2, 12, 12, conv.in_features))
  assert not _cpu_conv.fused_conv_relu_pool_applies(conv, x)


def test_fused_pool_gradient_goes_to_first_maximum_on_ties():
  # A constant image: every window is a tie; torch sends the gradient to its first element.
  conv = nnx.Conv(1, 1, (1, 1), padding="VALID", rngs=nnx.Rngs(0))
  conv.kernel[...] = jnp.ones((1, 1, 1, 1))
  x = jnp.ones((1, 4, 4, 1))
  graphdef, state = nnx.split(conv)
  dx = jax.grad(lambda x: jnp.sum(_cpu_conv.conv_relu_pool(nnx.merge(graphdef, state), x)))(x)
  expected = np.zeros((4, 4))
  expected[::2, ::2] = 1.0
  np.testing.assert_array_equal(dx[0, :, :, 0], expected)
