"""Models of the RMDA paper's experiments, in flax.nnx.

Each model has the same parameter count as its PyTorch original (the
authors' code) for the canonical input shape; only the layouts differ:
convolution kernels are HWIO, dense kernels (in, out), activations NHWC.
So the input-unit groups of group LASSO sit on kernel axis -2 everywhere.

BatchNorm layers keep their running statistics in ``nnx.BatchStat``
variables (not ``nnx.Param``), so ``nnx.split(model, nnx.Param, nnx.BatchStat)``
separates what the optimizer trains from what the forward pass updates.
``model.train()`` / ``model.eval()`` switch BatchNorm between batch and
running statistics.

Only models live here; the CPU fast paths of LeNet's single-channel first
layer are in ``_cpu_conv`` (taken only when JAX's backend is CPU).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from rmda_jax.examples import _cpu_conv

__all__ = [
    "LogisticRegression",
    "MLP",
    "LeNet5Small",
    "LeNet5Large",
    "VGG19BN",
    "ResNet50",
    "ViTBlock",
    "ViTTiny",
    "MODELS",
    "get_model",
    "count_params",
]


def _bn(features: int, rngs: nnx.Rngs) -> nnx.BatchNorm:
  # torch BatchNorm2d defaults: momentum 0.1 (flax: 1 - 0.1), eps 1e-5.
  return nnx.BatchNorm(features, momentum=0.9, epsilon=1e-5, rngs=rngs)


def _pool(x: jax.Array) -> jax.Array:
  """2x2 max-pool, stride 2, floor mode (torch ``MaxPool2d(2)``).

  Written as reshape + max rather than ``reduce_window``: same values, and on
  CPU its gradient is cheaper than XLA's select-and-scatter.
  (On ties the gradient is shared among the maxima instead of going to the
  first one; after a ReLU ties are zeros, whose gradient is zero anyway.)
  """
  n, h, w, c = x.shape
  x = x[:, : h // 2 * 2, : w // 2 * 2]
  return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def conv_relu_pool(conv: nnx.Conv, x: jax.Array) -> jax.Array:
  """``_pool(relu(conv(x)))``: LeNet's first layer.

  On CPU, a single-channel ``conv`` (MNIST's first layer) takes the fused
  path of ``_cpu_conv.conv_relu_pool`` (same values); elsewhere, and for
  every other layer, the layers run unfused.
  """
  if _cpu_conv.fused_conv_relu_pool_applies(conv, x):
    return _cpu_conv.conv_relu_pool(conv, x)
  return _pool(jax.nn.relu(conv(x)))


def _conv(cin, cout, kernel, *, rngs, **kw) -> nnx.Conv:
  """A first-layer ``nnx.Conv``: on CPU, single-channel inputs take ``_cpu_conv``'s path."""
  return nnx.Conv(cin, cout, kernel, conv_general_dilated=_cpu_conv.conv_general_dilated,
                  rngs=rngs, **kw)


def _flatten(x: jax.Array) -> jax.Array:
  return x.reshape(x.shape[0], -1)


def _require(cond: bool, model: str, input_shape, minimum: str) -> None:
  if not cond:
    raise ValueError(
        f"{model} needs inputs of at least {minimum}; got input_shape={tuple(input_shape)}"
    )


class LogisticRegression(nnx.Module):
  """Multinomial logistic regression (Linear in -> classes), zero-initialised."""

  def __init__(self, num_classes: int = 10, *, rngs: nnx.Rngs, input_shape=(28, 28, 1)):
    self.fc = nnx.Linear(
        math.prod(input_shape), num_classes,
        kernel_init=nnx.initializers.zeros, rngs=rngs,
    )

  def __call__(self, x):
    return self.fc(_flatten(x))


class MLP(nnx.Module):
  """784-512-256-128-64-32-16-10 with ReLU (widths after the input configurable)."""

  def __init__(
      self, num_classes: int = 10, *, rngs: nnx.Rngs, input_shape=(28, 28, 1),
      widths: Sequence[int] = (512, 256, 128, 64, 32, 16),
  ):
    sizes = [math.prod(input_shape), *widths]
    self.hidden = nnx.List(
        [nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])]
    )
    self.out = nnx.Linear(sizes[-1], num_classes, rngs=rngs)

  def __call__(self, x):
    x = _flatten(x)
    for layer in self.hidden:
      x = jax.nn.relu(layer(x))
    return self.out(x)


class LeNet5Small(nnx.Module):
  """conv 1->6 5x5 pad 2, pool, conv 6->16 5x5, pool, fc 400-120-84-10."""

  def __init__(self, num_classes: int = 10, *, rngs: nnx.Rngs, input_shape=(28, 28, 1)):
    h, w, c = input_shape
    h2, w2 = (h // 2 - 4) // 2, (w // 2 - 4) // 2
    _require(h2 >= 1 and w2 >= 1, "lenet5_small", input_shape, "12x12")
    self.conv1 = _conv(c, 6, (5, 5), padding=((2, 2), (2, 2)), rngs=rngs)
    self.conv2 = nnx.Conv(6, 16, (5, 5), padding="VALID", rngs=rngs)
    self.fc1 = nnx.Linear(16 * h2 * w2, 120, rngs=rngs)
    self.fc2 = nnx.Linear(120, 84, rngs=rngs)
    self.fc3 = nnx.Linear(84, num_classes, rngs=rngs)

  def __call__(self, x):
    x = conv_relu_pool(self.conv1, x)
    x = _pool(jax.nn.relu(self.conv2(x)))
    x = _flatten(x)
    x = jax.nn.relu(self.fc1(x))
    x = jax.nn.relu(self.fc2(x))
    return self.fc3(x)


class LeNet5Large(nnx.Module):
  """conv 1->20 5x5, pool, conv 20->50 5x5, pool, fc 800-500-10."""

  def __init__(self, num_classes: int = 10, *, rngs: nnx.Rngs, input_shape=(28, 28, 1)):
    h, w, c = input_shape
    h2, w2 = ((h - 4) // 2 - 4) // 2, ((w - 4) // 2 - 4) // 2
    _require(h2 >= 1 and w2 >= 1, "lenet5_large", input_shape, "16x16")
    self.conv1 = _conv(c, 20, (5, 5), padding="VALID", rngs=rngs)
    self.conv2 = nnx.Conv(20, 50, (5, 5), padding="VALID", rngs=rngs)
    self.fc1 = nnx.Linear(50 * h2 * w2, 500, rngs=rngs)
    self.fc2 = nnx.Linear(500, num_classes, rngs=rngs)

  def __call__(self, x):
    x = conv_relu_pool(self.conv1, x)
    x = _pool(jax.nn.relu(self.conv2(x)))
    x = jax.nn.relu(self.fc1(_flatten(x)))
    return self.fc2(x)


VGG19_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
             512, 512, 512, 512, "M", 512, 512, 512, 512, "M")


class ConvBNReLU(nnx.Module):

  def __init__(self, cin: int, cout: int, *, rngs: nnx.Rngs):
    # torch: Conv2d(cin, cout, 3, padding=1) keeps its bias even before BN.
    self.conv = nnx.Conv(cin, cout, (3, 3), padding=((1, 1), (1, 1)), rngs=rngs)
    self.bn = _bn(cout, rngs)

  def __call__(self, x):
    return jax.nn.relu(self.bn(self.conv(x)))


class VGG19BN(nnx.Module):
  """VGG19 with BatchNorm for 32x32 inputs: 16 conv layers, classifier Linear(512, classes)."""

  def __init__(self, num_classes: int = 10, *, rngs: nnx.Rngs, input_shape=(32, 32, 3)):
    h, w, c = input_shape
    _require(h >= 32 and w >= 32, "vgg19_bn", input_shape, "32x32")
    layers = []
    for v in VGG19_CFG:
      if v == "M":
        layers.append("M")
      else:
        layers.append(ConvBNReLU(c, v, rngs=rngs))
        c = v
    self.features = nnx.List([l for l in layers if l != "M"])
    self._plan = tuple(l == "M" for l in layers)  # static: True = max-pool
    self.classifier = nnx.Linear(512 * (h // 32) * (w // 32), num_classes, rngs=rngs)

  def __call__(self, x):
    blocks = iter(self.features)
    for is_pool in self._plan:
      x = _pool(x) if is_pool else next(blocks)(x)
    return self.classifier(_flatten(x))


class Bottleneck(nnx.Module):
  expansion = 4

  def __init__(self, cin: int, planes: int, stride: int, *, rngs: nnx.Rngs):
    cout = planes * self.expansion
    self.conv1 = nnx.Conv(cin, planes, (1, 1), use_bias=False, rngs=rngs)
    self.bn1 = _bn(planes, rngs)
    self.conv2 = nnx.Conv(planes, planes, (3, 3), strides=stride,
                          padding=((1, 1), (1, 1)), use_bias=False, rngs=rngs)
    self.bn2 = _bn(planes, rngs)
    self.conv3 = nnx.Conv(planes, cout, (1, 1), use_bias=False, rngs=rngs)
    self.bn3 = _bn(cout, rngs)
    if stride != 1 or cin != cout:
      self.short_conv = nnx.Conv(cin, cout, (1, 1), strides=stride, use_bias=False, rngs=rngs)
      self.short_bn = _bn(cout, rngs)
    else:
      self.short_conv = None
      self.short_bn = None

  def __call__(self, x):
    y = jax.nn.relu(self.bn1(self.conv1(x)))
    y = jax.nn.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    s = x if self.short_conv is None else self.short_bn(self.short_conv(x))
    return jax.nn.relu(y + s)


class ResNet50(nnx.Module):
  """ResNet50 for CIFAR: 3x3 stride-1 stem, no max-pool, bottlenecks [3, 4, 6, 3]."""

  def __init__(self, num_classes: int = 10, *, rngs: nnx.Rngs, input_shape=(32, 32, 3),
               num_blocks: Sequence[int] = (3, 4, 6, 3)):
    c = input_shape[-1]
    self.conv1 = nnx.Conv(c, 64, (3, 3), padding=((1, 1), (1, 1)), use_bias=False, rngs=rngs)
    self.bn1 = _bn(64, rngs)
    blocks = []
    cin = 64
    for i, (planes, n) in enumerate(zip((64, 128, 256, 512), num_blocks)):
      for j in range(n):
        stride = 2 if (i > 0 and j == 0) else 1
        blocks.append(Bottleneck(cin, planes, stride, rngs=rngs))
        cin = planes * Bottleneck.expansion
    self.blocks = nnx.List(blocks)
    self.fc = nnx.Linear(cin, num_classes, rngs=rngs)

  def __call__(self, x):
    x = jax.nn.relu(self.bn1(self.conv1(x)))
    for b in self.blocks:
      x = b(x)
    x = jnp.mean(x, axis=(1, 2))  # = torch avg_pool2d(4) on 32x32 inputs
    return self.fc(x)


class ViTBlock(nnx.Module):
  """Pre-norm transformer block: ``x + attn(ln1(x))``, then ``x + fc2(gelu(fc1(ln2(x))))``.

  The attention is an ``nnx.MultiHeadAttention`` (kernels ``query``, ``key``,
  ``value``: ``(dim, heads, head_dim)``; ``out``: ``(heads, head_dim, dim)``),
  the MLP two ``nnx.Linear`` (``fc1``: ``(dim, mlp_dim)``, ``fc2``:
  ``(mlp_dim, dim)``): the layouts whose heads and hidden units
  ``rmda_jax.heads_and_neurons`` groups.
  """

  def __init__(self, dim: int, heads: int, mlp_dim: int, *, rngs: nnx.Rngs):
    self.norm1 = nnx.LayerNorm(dim, rngs=rngs)
    self.attn = nnx.MultiHeadAttention(
        num_heads=heads, in_features=dim, qkv_features=dim, out_features=dim,
        decode=False, deterministic=True, rngs=rngs)
    self.norm2 = nnx.LayerNorm(dim, rngs=rngs)
    self.fc1 = nnx.Linear(dim, mlp_dim, rngs=rngs)
    self.fc2 = nnx.Linear(mlp_dim, dim, rngs=rngs)

  def __call__(self, x):
    x = x + self.attn(self.norm1(x))
    return x + self.fc2(jax.nn.gelu(self.fc1(self.norm2(x))))


class ViTTiny(nnx.Module):
  """A tiny Vision Transformer: patches, class token, pre-norm blocks, linear head.

  The image is cut into ``patch x patch`` patches (by default
  ``min(h, w) // 4``: a 4x4 grid of 7x7 patches on MNIST's 28x28, of 2x2
  patches on digits' 8x8; rows and columns beyond the grid are dropped),
  each embedded by one ``nnx.Linear``; a learned class token and learned
  position embeddings are added, ``depth`` :class:`ViTBlock` s follow, and
  the class token (``pool="cls"``) or the mean of the patch tokens
  (``pool="mean"``), layer-normed, goes through the classifier ``head``.
  Defaults: dim 32, 4 heads of 8, MLP 64, 2 blocks (about 19k parameters
  on MNIST): it trains on a CPU in minutes.
  """

  def __init__(self, num_classes: int = 10, *, rngs: nnx.Rngs, input_shape=(28, 28, 1),
               dim: int = 32, depth: int = 2, heads: int = 4, mlp_dim: int = 64,
               patch: int | None = None, pool: str = "cls"):
    h, w, c = input_shape
    if pool not in ("cls", "mean"):
      raise ValueError(f"vit_tiny: pool must be 'cls' or 'mean', got {pool!r}")
    p = max(1, min(h, w) // 4) if patch is None else patch
    _require(p >= 1 and h >= p and w >= p, "vit_tiny", input_shape, f"{p}x{p} (one patch)")
    self.patch, self.grid, self.pool = p, (h // p, w // p), pool
    tokens = self.grid[0] * self.grid[1] + (pool == "cls")
    self.embed = nnx.Linear(p * p * c, dim, rngs=rngs)
    self.cls_token = nnx.Param(jnp.zeros((1, 1, dim))) if pool == "cls" else None
    self.pos_embed = nnx.Param(0.02 * jax.random.normal(rngs.params(), (1, tokens, dim)))
    self.blocks = nnx.List([ViTBlock(dim, heads, mlp_dim, rngs=rngs) for _ in range(depth)])
    self.norm = nnx.LayerNorm(dim, rngs=rngs)
    self.head = nnx.Linear(dim, num_classes, rngs=rngs)

  def patches(self, x: jax.Array) -> jax.Array:
    """NHWC images -> ``(n, grid_h * grid_w, patch * patch * c)`` flattened patches."""
    n, _, _, c = x.shape
    (gh, gw), p = self.grid, self.patch
    x = x[:, : gh * p, : gw * p]
    x = x.reshape(n, gh, p, gw, p, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(n, gh * gw, p * p * c)

  def __call__(self, x):
    x = self.embed(self.patches(x))
    if self.pool == "cls":
      cls = jnp.broadcast_to(self.cls_token[...], (x.shape[0], 1, x.shape[-1]))
      x = jnp.concatenate([cls.astype(x.dtype), x], axis=1)
    x = x + self.pos_embed[...]
    for block in self.blocks:
      x = block(x)
    x = x[:, 0] if self.pool == "cls" else jnp.mean(x, axis=1)
    return self.head(self.norm(x))


MODELS: dict[str, Callable[..., nnx.Module]] = {
    "logreg": LogisticRegression,
    "mlp": MLP,
    "lenet5_small": LeNet5Small,
    "lenet5_large": LeNet5Large,
    "vgg19_bn": VGG19BN,
    "resnet50": ResNet50,
    "vit_tiny": ViTTiny,
}

# The transformers: models whose attention heads and MLP units
# rj.head_and_neuron_lasso finds (rmda-train --regularizer heads_and_neurons).
TRANSFORMERS = {"vit_tiny"}

# Whether the model reads images (so small images must be padded up) or flat vectors.
CONVOLUTIONAL = {"lenet5_small", "lenet5_large", "vgg19_bn", "resnet50"}


def get_model(name: str, num_classes: int = 10, rngs: nnx.Rngs | None = None,
              input_shape: Sequence[int] = (28, 28, 1)) -> nnx.Module:
  """Builds a registered model: ``get_model("lenet5_small", 10, nnx.Rngs(0), (28, 28, 1))``."""
  try:
    cls = MODELS[name]
  except KeyError:
    raise ValueError(f"unknown model {name!r}; choose from {sorted(MODELS)}") from None
  if rngs is None:
    rngs = nnx.Rngs(0)
  return cls(num_classes, rngs=rngs, input_shape=tuple(input_shape))


def count_params(model: nnx.Module) -> int:
  """Number of trainable parameters (``nnx.Param``; BatchNorm running stats excluded)."""
  state = nnx.state(model, nnx.Param)
  return sum(int(x.size) for x in jax.tree.leaves(state))
