"""Models of rmda_jax.examples: shapes, parameter counts equal to the PyTorch originals."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rmda_jax.examples import models

# ----------------------------------------------------------------------------
# PyTorch parameter counts, by hand (torch.nn.Conv2d / Linear / BatchNorm2d):
# Conv2d: cin*cout*k*k (+ cout bias); Linear: i*o + o; BatchNorm2d: 2*c
# (weight and bias; running_mean/var are buffers, not parameters).


def t_conv(cin, cout, k, bias=True):
  return cin * cout * k * k + (cout if bias else 0)


def t_linear(i, o):
  return i * o + o


def t_bn(c):
  return 2 * c


def torch_logreg(classes=10):
  return t_linear(784, classes)


def torch_mlp(classes=10):
  sizes = [784, 512, 256, 128, 64, 32, 16, classes]
  return sum(t_linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))


def torch_lenet5_small(classes=10):
  return (t_conv(1, 6, 5) + t_conv(6, 16, 5) + t_linear(16 * 5 * 5, 120)
          + t_linear(120, 84) + t_linear(84, classes))


def torch_lenet5_large(classes=10):
  return t_conv(1, 20, 5) + t_conv(20, 50, 5) + t_linear(50 * 4 * 4, 500) + t_linear(500, classes)


def torch_vgg19_bn(classes=10):
  cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
         512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]
  total, cin = 0, 3
  for v in cfg:
    if v != "M":
      total += t_conv(cin, v, 3) + t_bn(v)
      cin = v
  return total + t_linear(512, classes)


def torch_resnet50(classes=10):
  total = t_conv(3, 64, 3, bias=False) + t_bn(64)
  cin = 64
  for i, (planes, n) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3))):
    for j in range(n):
      stride = 2 if (i > 0 and j == 0) else 1
      out = 4 * planes
      total += (t_conv(cin, planes, 1, False) + t_bn(planes)
                + t_conv(planes, planes, 3, False) + t_bn(planes)
                + t_conv(planes, out, 1, False) + t_bn(out))
      if stride != 1 or cin != out:
        total += t_conv(cin, out, 1, False) + t_bn(out)
      cin = out
  return total + t_linear(2048, classes)


CASES = [
    ("logreg", (28, 28, 1), torch_logreg),
    ("mlp", (28, 28, 1), torch_mlp),
    ("lenet5_small", (28, 28, 1), torch_lenet5_small),
    ("lenet5_large", (28, 28, 1), torch_lenet5_large),
    ("vgg19_bn", (32, 32, 3), torch_vgg19_bn),
    ("resnet50", (32, 32, 3), torch_resnet50),
]


def test_torch_formulas_match_published_counts():
  # Cross-check of the formulas above against counts published elsewhere:
  # logistic regression on MNIST 7,850; LeNet-5 (6/16 filters, 120/84 units)
  # 61,706; Caffe's LeNet (20/50 filters, 500 units; "LeNet-5" in Han et al.,
  # Deep Compression, 2016) 431,080; kuangliu/pytorch-cifar's VGG19 and
  # ResNet50 for CIFAR-10.
  assert torch_logreg() == 7_850
  assert torch_lenet5_small() == 61_706
  assert torch_lenet5_large() == 431_080
  assert torch_vgg19_bn(10) == 20_040_522
  assert torch_resnet50(10) == 23_520_842


def abstract_model(name, classes, shape):
  return nnx.eval_shape(lambda: models.get_model(name, classes, nnx.Rngs(0), shape))


def abstract_logits(model, shape, batch=3):
  graphdef, state = nnx.split(model)

  def f(state, x):
    return nnx.merge(graphdef, state)(x)

  return jax.eval_shape(f, state, jax.ShapeDtypeStruct((batch, *shape), jnp.float32))


@pytest.mark.parametrize("name,shape,torch_count", CASES)
@pytest.mark.parametrize("classes", [10, 100])
def test_param_count_equals_pytorch(name, shape, torch_count, classes):
  model = abstract_model(name, classes, shape)
  assert models.count_params(model) == torch_count(classes)


@pytest.mark.parametrize("name,shape,_", CASES)
def test_output_shape(name, shape, _):
  model = abstract_model(name, 7, shape)
  out = abstract_logits(model, shape, batch=3)
  assert out.shape == (3, 7)


@pytest.mark.parametrize("name", ["logreg", "mlp", "lenet5_small", "lenet5_large"])
def test_small_models_run(name):
  model = models.get_model(name, 10, nnx.Rngs(0), (28, 28, 1))
  x = jax.random.normal(jax.random.key(1), (4, 28, 28, 1))
  y = nnx.jit(lambda m, x: m(x))(model, x)
  assert y.shape == (4, 10)
  assert bool(jnp.all(jnp.isfinite(y)))


def test_logreg_zero_init():
  model = models.get_model("logreg", 10, nnx.Rngs(0), (28, 28, 1))
  assert not np.any(np.asarray(model.fc.kernel[...]))
  assert model.fc.kernel.shape == (784, 10)


def test_kernel_layouts_put_input_units_on_axis_minus_2():
  m = abstract_model("lenet5_small", 10, (28, 28, 1))
  assert m.conv1.kernel.shape == (5, 5, 1, 6)     # HWIO
  assert m.conv2.kernel.shape == (5, 5, 6, 16)
  assert m.fc1.kernel.shape == (400, 120)         # (in, out)
  r = abstract_model("resnet50", 10, (32, 32, 3))
  assert r.conv1.kernel.shape == (3, 3, 3, 64)
  assert r.fc.kernel.shape == (2048, 10)


def test_batchnorm_stats_are_not_params():
  model = abstract_model("vgg19_bn", 10, (32, 32, 3))
  stats = nnx.state(model, nnx.BatchStat)
  n_stats = sum(x.size for x in jax.tree.leaves(stats))
  conv_channels = sum(v for v in models.VGG19_CFG if v != "M")
  assert n_stats == 2 * conv_channels   # running mean and var per channel
  params = nnx.state(model, nnx.Param)
  paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
  assert not any("mean" in p or "var" in p for p in paths)


def test_batchnorm_train_and_eval_modes():
  block = models.Bottleneck(8, 4, 2, rngs=nnx.Rngs(0))   # projection shortcut
  x = 3.0 + jax.random.normal(jax.random.key(0), (5, 6, 6, 8))
  before = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(block, nnx.BatchStat)))
  block.eval()
  y_eval = block(x)
  after_eval = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(block, nnx.BatchStat)))
  jax.tree.map(np.testing.assert_array_equal, before, after_eval)   # eval: stats untouched
  block.train()
  y_train = block(x)
  after_train = nnx.to_pure_dict(nnx.state(block, nnx.BatchStat))
  changed = jax.tree.leaves(jax.tree.map(lambda a, b: bool(np.any(a != np.asarray(b))),
                                         before, after_train))
  assert all(changed)                                                # train: stats updated
  assert y_train.shape == y_eval.shape == (5, 3, 3, 16)
  assert not np.allclose(y_train, y_eval)


def test_get_model_errors():
  with pytest.raises(ValueError, match="unknown model"):
    models.get_model("alexnet", 10, nnx.Rngs(0))
  with pytest.raises(ValueError, match="at least"):
    models.get_model("lenet5_large", 10, nnx.Rngs(0), (8, 8, 1))
  with pytest.raises(ValueError, match="at least"):
    models.get_model("vgg19_bn", 10, nnx.Rngs(0), (28, 28, 1))


def test_lenet_adapts_to_other_input_sizes():
  m = abstract_model("lenet5_small", 10, (16, 16, 1))
  assert m.fc1.kernel.shape == (16 * 2 * 2, 120)
  assert abstract_logits(m, (16, 16, 1)).shape == (3, 10)


# ----------------------------------------------------------------------------
# The pooling layer (the CPU convolution paths: test_examples_cpu_conv.py)


@pytest.mark.parametrize("hw", [(8, 8), (7, 9)])
def test_pool_matches_reduce_window(hw):
  x = jax.random.normal(jax.random.key(2), (2, *hw, 3))
  ref = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
  np.testing.assert_array_equal(models._pool(x), ref)
  # gradient of relu -> pool, as used in the models, matches too
  g = jax.random.normal(jax.random.key(3), ref.shape)
  f = lambda p: (lambda x: jnp.sum(p(jax.nn.relu(x)) * g))
  rw = lambda x: jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
  np.testing.assert_allclose(jax.grad(f(models._pool))(x), jax.grad(f(rw))(x), rtol=1e-6)
