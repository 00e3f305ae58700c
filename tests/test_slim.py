"""rmda_jax.slim: the slim model computes the same outputs with fewer parameters.

The expected shapes and parameter counts are computed here from each model's
architecture (which layers produce a channel, which read it) and from the
zeroed kernel slices, independently of slim's own tracing.
"""

import dataclasses
import doctest
import functools
import json
import math
import os
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("flax")
pytest.importorskip("orbax.checkpoint")

from flax import nnx  # noqa: E402

from rmda_jax import _slim_io as slim_io  # noqa: E402
from rmda_jax import _slim_rules as slim_rules  # noqa: E402
from rmda_jax import slim as slim_lib  # noqa: E402
from rmda_jax.examples import models  # noqa: E402
from rmda_jax.slim import SlimError  # noqa: E402
from rmda_jax.slim import slim  # noqa: E402

TOL = dict(rtol=2e-5, atol=2e-5)   # float32 rounding (sums of up to a few thousand terms)

# ----------------------------------------------------------------------------
# The architecture, seen from the test: channel spaces with their producers and readers.


@dataclasses.dataclass
class Space:
  """Channels produced by ``producers`` (layer, its BatchNorm or None) and read by ``readers``.

  A reader is (layer, spread, offset): channel c reaches the reader's input rows
  ``offset + p * size + c`` for p < spread (NHWC flatten puts the channel fastest;
  offset places a concatenated part).
  """
  size: int
  producers: list
  readers: list

  def rows(self, c, spread, offset):
    return [offset + p * self.size + c for p in range(spread)]


def get(model, path):
  for part in path.split("/"):
    model = model[int(part)] if part.isdigit() else getattr(model, part)
  return model


def kernel(model, path):
  return np.asarray(get(model, path).kernel[...])


def zero_rows(model, layer):
  """Which input rows (kernel axis -2) of a layer are exactly zero."""
  k = kernel(model, layer)
  return ~np.any(k.reshape(-1, k.shape[-2], k.shape[-1]) != 0, axis=(0, 2))


def removable(model, space):
  """Channels whose rows are zero in every reader."""
  zero = {layer: zero_rows(model, layer) for layer, _, _ in space.readers}
  return [c for c in range(space.size)
          if all(zero[layer][space.rows(c, spread, off)].all()
                 for layer, spread, off in space.readers)]


def expected_shapes(model, spaces, layers):
  """Kernel shape of every layer and feature count of every BatchNorm after slimming.

  A dense layer reading a flattened map (spread > 1) also gathers its input:
  of the rows of the channels kept, only the non-zero ones stay (at least one).
  """
  gone = [removable(model, s) for s in spaces]
  shapes = {}
  for layer in layers:
    k = list(kernel(model, layer).shape)
    for s, g in zip(spaces, gone):
      for l, spread, off in s.readers:
        if l == layer and spread > 1:
          rows = [r for c in range(s.size) if c not in g for r in s.rows(c, spread, off)]
          k[-2] = max(1, int(np.sum(~zero_rows(model, layer)[rows])))
        elif l == layer:
          k[-2] -= len(g)
      k[-1] -= len(g) * sum(1 for l, _ in s.producers if l == layer)
    shapes[layer] = tuple(k)
  for s, g in zip(spaces, gone):
    for _, bn in s.producers:
      if bn is not None:
        shapes[bn] = (s.size - len(g),)
  return shapes


def expected_params(model, shapes, layers):
  total = 0
  for layer in layers:
    k = shapes[layer]
    total += math.prod(k) + (k[-1] if get(model, layer).bias is not None else 0)
  total += sum(2 * v[0] for name, v in shapes.items() if name not in layers)  # BN scale, bias
  return total


def zero_groups(model, spaces, rng, p_all=0.35, p_some=0.4):
  """Zeroes channels in all their readers (removable) or only in some (kept).

  "Some" is a proper subset of the readers, or, for a single reader that sees
  the channel at several flattened positions, only part of those rows.
  Channel 0 is never removable, so that no space empties.
  """
  zeroed = {}
  for s in spaces:
    for c in range(1, s.size):
      u = rng.random()
      if u < p_all:
        cuts = [(layer, s.rows(c, spread, off)) for layer, spread, off in s.readers]
      elif u < p_all + p_some and len(s.readers) > 1:
        k = int(rng.integers(1, len(s.readers)))
        picked = rng.choice(len(s.readers), k, replace=False)
        cuts = [(s.readers[i][0], s.rows(c, *s.readers[i][1:])) for i in picked]
      elif u < p_all + p_some and s.readers[0][1] > 1:
        layer, spread, off = s.readers[0]
        cuts = [(layer, s.rows(c, spread, off)[: int(rng.integers(1, spread))])]
      else:
        continue
      for layer, rows in cuts:
        zeroed.setdefault(layer, []).extend(rows)
  for layer, rows in zeroed.items():
    set_rows(model, layer, rows, 0.0)


def set_rows(model, layer, rows, value):
  k = kernel(model, layer).copy()
  k[..., np.asarray(rows), :] = value
  get(model, layer).kernel[...] = jnp.asarray(k)


def build_random(constructor, rng):
  """``constructor()`` with random NumPy values (no XLA compilation to initialize it).

  Kernels ~ N(0, 1/fan_in), biases and BatchNorm offsets and means small and
  non-zero, BatchNorm scales and variances in [0.5, 1.5]: a channel kept or
  dropped by mistake changes the outputs.
  """
  abstract = nnx.eval_shape(constructor)
  graphdef, state = nnx.split(abstract)

  def draw(path, leaf):
    name, shape = str(path[-2].key), leaf.shape
    if name == "kernel":
      v = rng.normal(size=shape) / np.sqrt(math.prod(shape[:-1]))
    elif name in ("scale", "var"):
      v = rng.uniform(0.5, 1.5, shape)
    else:
      v = rng.normal(0.0, 0.1, shape)
    return jnp.asarray(v, leaf.dtype)

  return nnx.merge(graphdef, jax.tree_util.tree_map_with_path(draw, state))


def forward(model, x):
  return nnx.jit(lambda m, x: m(x))(model, x)


def chain(model, layers, bns=None, spread=None):
  """Spaces of a sequential model: each layer's output is read by the next one."""
  bns, spread = bns or {}, spread or {}
  return [Space(kernel(model, a).shape[-1], [(a, bns.get(a))], [(b, spread.get(b, 1), 0)])
          for a, b in zip(layers[:-1], layers[1:])]


# ----------------------------------------------------------------------------
# The zoo.

SMALL_VGG = (8, 8, "M", 16, 16, "M", 16, 16, 16, 16, "M", 16, 16, 16, 16, "M",
             16, 16, 16, 512, "M")  # 16 convs, 5 pools; the classifier reads 512 channels


def zoo(name, shape, rng, **kw):
  return build_random(lambda: models.MODELS[name](10, rngs=nnx.Rngs(0), input_shape=shape, **kw),
                      rng)


def build_lenet5_small(rng):
  m = zoo("lenet5_small", (28, 28, 1), rng)
  layers = ["conv1", "conv2", "fc1", "fc2", "fc3"]
  return m, (4, 28, 28, 1), layers, chain(m, layers, spread={"fc1": 25})


def build_lenet5_large(rng):
  m = zoo("lenet5_large", (28, 28, 1), rng)
  layers = ["conv1", "conv2", "fc1", "fc2"]
  return m, (4, 28, 28, 1), layers, chain(m, layers, spread={"fc1": 16})


def build_mlp(rng):
  m = zoo("mlp", (28, 28, 1), rng)
  layers = [f"hidden/{i}" for i in range(6)] + ["out"]
  return m, (4, 28, 28, 1), layers, chain(m, layers)


def build_vgg19_bn(rng, monkeypatch):
  # VGG19BN's widths are a module constant: patched to a narrow VGG19 of the same depth.
  monkeypatch.setattr(models, "VGG19_CFG", SMALL_VGG)
  m = zoo("vgg19_bn", (32, 32, 3), rng)
  convs = [f"features/{i}/conv" for i in range(16)]
  layers = convs + ["classifier"]
  bns = {c: c.replace("conv", "bn") for c in convs}
  return m, (2, 32, 32, 3), layers, chain(m, layers, bns)


def build_resnet50(rng):
  # ResNet50's widths are fixed; its first two stages with (2, 1) bottlenecks and 8x8
  # inputs keep it small (num_blocks is zipped with the stage widths). Block 1 keeps an
  # identity shortcut, so its conv3 joins the stage's residual stream.
  m = zoo("resnet50", (8, 8, 3), rng, num_blocks=(2, 1))
  blocks = [f"blocks/{i}" for i in range(len(m.blocks))]
  layers, spaces = ["conv1"], []
  stream = Space(64, [("conv1", "bn1")], [])
  for i, b in enumerate(blocks):
    block = m.blocks[i]
    layers += [f"{b}/conv1", f"{b}/conv2", f"{b}/conv3"]
    spaces += [Space(block.conv1.out_features, [(f"{b}/conv1", f"{b}/bn1")], [(f"{b}/conv2", 1, 0)]),
               Space(block.conv2.out_features, [(f"{b}/conv2", f"{b}/bn2")], [(f"{b}/conv3", 1, 0)])]
    stream.readers.append((f"{b}/conv1", 1, 0))
    if block.short_conv is not None:
      layers.append(f"{b}/short_conv")
      stream.readers.append((f"{b}/short_conv", 1, 0))
      spaces.append(stream)
      stream = Space(block.conv3.out_features,
                     [(f"{b}/conv3", f"{b}/bn3"), (f"{b}/short_conv", f"{b}/short_bn")], [])
    else:
      stream.producers.append((f"{b}/conv3", f"{b}/bn3"))
  stream.readers.append(("fc", 1, 0))
  spaces.append(stream)
  return m, (2, 8, 8, 3), layers + ["fc"], spaces


class ResCat(nnx.Module):
  """A residual addition and a concatenation: stem -> (a + stem, b) -> concat -> head -> fc."""

  def __init__(self, *, rngs: nnx.Rngs, width: int = 8):
    self.stem = nnx.Conv(3, width, (3, 3), rngs=rngs)
    self.bn = nnx.BatchNorm(width, rngs=rngs)
    self.a = nnx.Conv(width, width, (3, 3), rngs=rngs)
    self.b = nnx.Conv(width, 6, (1, 1), rngs=rngs)
    self.head = nnx.Conv(width + 6, 10, (1, 1), rngs=rngs)
    self.fc = nnx.Linear(10, 5, rngs=rngs)

  def __call__(self, x):
    h = jax.nn.relu(self.bn(self.stem(x)))
    r = jax.nn.relu(self.a(h)) + h
    c = jnp.concatenate([r, self.b(h)], axis=-1)
    y = nnx.avg_pool(jax.nn.relu(self.head(c)), (2, 2), (2, 2))
    return self.fc(jnp.mean(y, axis=(1, 2)))


def build_rescat(rng):
  m = build_random(lambda: ResCat(rngs=nnx.Rngs(0)), rng)
  spaces = [Space(8, [("stem", "bn"), ("a", None)], [("a", 1, 0), ("b", 1, 0), ("head", 1, 0)]),
            Space(6, [("b", None)], [("head", 1, 8)]),
            Space(10, [("head", None)], [("fc", 1, 0)])]
  return m, (2, 8, 8, 3), ["stem", "a", "b", "head", "fc"], spaces


BUILDERS = {
    "lenet5_small": build_lenet5_small,
    "lenet5_large": build_lenet5_large,
    "mlp": build_mlp,
    "vgg19_bn": build_vgg19_bn,
    "resnet50": build_resnet50,
    "residual_concat": build_rescat,
}


def build(name, rng, monkeypatch):
  fn = BUILDERS[name]
  return fn(rng, monkeypatch) if name == "vgg19_bn" else fn(rng)


def snapshot(model):
  return jax.tree.map(np.array, nnx.state(model))


@pytest.mark.parametrize("name", list(BUILDERS))
def test_slim_model_has_same_outputs_and_drops_exactly_the_removed_channels(name, monkeypatch):
  rng = np.random.default_rng(sum(map(ord, name)))
  model, shape, layers, spaces = build(name, rng, monkeypatch)
  zero_groups(model, spaces, rng)
  n_in = kernel(model, layers[0]).shape[-2]
  if n_in > 1:   # zero input rows of the first layer: kept, since prune_inputs is off
    set_rows(model, layers[0], rng.choice(n_in, n_in // 3, replace=False), 0.0)
  model.eval()
  x = jnp.asarray(rng.normal(size=shape), jnp.float32)
  before = snapshot(model)
  shapes = expected_shapes(model, spaces, layers)
  assert any(shapes[l] != kernel(model, l).shape for l in layers), "the draw removed nothing"

  result = slim(model, x, timing_runs=0)

  chex.assert_trees_all_close(forward(result.model, x), forward(model, x), **TOL)
  for name_, s in shapes.items():
    got = get(result.model, name_)
    assert (got.kernel.shape if name_ in layers else got.scale.shape) == s, name_
  n_before, n_after = models.count_params(model), models.count_params(result.model)
  assert n_before - n_after == n_before - expected_params(model, shapes, layers)
  assert result.report.params_before == n_before
  assert result.report.params_after == n_after
  assert result.report.macs_after < result.report.macs_before
  assert not result.report.nothing_removed
  chex.assert_trees_all_equal(snapshot(model), before)    # the original is untouched
  assert kernel(model, layers[0]).shape[-2] == kernel(result.model, layers[0]).shape[-2]


def test_first_layer_inputs_are_kept_unless_asked():
  rng = np.random.default_rng(0)
  model, _, _, _ = build_mlp(rng)
  gone = np.sort(rng.choice(784, 300, replace=False))
  set_rows(model, "hidden/0", gone, 0.0)
  x = jnp.asarray(rng.normal(size=(4, 28, 28, 1)), jnp.float32)

  kept = slim(model, x, timing_runs=0)
  assert kept.model.hidden[0].kernel.shape == (784, 512)
  assert kept.report.nothing_removed and kept.input_index is None
  assert any("prune_inputs=True" in n for n in kept.report.notes)

  pruned = slim(model, x, prune_inputs=True, timing_runs=0)
  np.testing.assert_array_equal(pruned.input_index, np.setdiff1d(np.arange(784), gone))
  assert pruned.input_axis is None                 # pixels: indices into the flattened image
  assert pruned.model.hidden[0].kernel.shape == (784 - 300, 512)
  assert pruned.model.hidden[0].in_features == 784 - 300
  assert (pruned.report.input_features_before, pruned.report.input_features_after) == (784, 484)
  x_slim = pruned.select_input(x)
  chex.assert_trees_all_equal(x_slim, x.reshape(4, -1)[:, pruned.input_index])
  chex.assert_trees_all_close(forward(pruned.model, x_slim), forward(model, x), **TOL)
  assert models.count_params(model) - models.count_params(pruned.model) == 300 * 512


def test_prune_inputs_removes_image_channels_along_their_axis():
  model, _, _, _ = build_rescat(np.random.default_rng(5))
  set_rows(model, "stem", [1], 0.0)
  model.eval()
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
  result = slim(model, x, prune_inputs=True, timing_runs=0)
  assert result.input_axis == 3
  np.testing.assert_array_equal(result.input_index, [0, 2])
  chex.assert_trees_all_equal(result.select_input(x), x[..., jnp.array([0, 2])])
  assert result.model.stem.kernel.shape == (3, 3, 2, 8)
  chex.assert_trees_all_close(forward(result.model, result.select_input(x)), forward(model, x),
                              **TOL)


def test_logistic_regression_keeps_its_outputs_and_prunes_only_inputs():
  rng = np.random.default_rng(1)
  model = zoo("logreg", (28, 28, 1), rng)   # zero-initialized in the zoo: random here
  set_rows(model, "fc", rng.choice(784, 100, replace=False), 0.0)
  x = jnp.asarray(rng.normal(size=(3, 28, 28, 1)), jnp.float32)
  assert slim(model, x, timing_runs=0).report.nothing_removed
  result = slim(model, x, prune_inputs=True, timing_runs=0)
  assert result.model.fc.kernel.shape == (684, 10)
  chex.assert_trees_all_close(forward(result.model, result.select_input(x)), forward(model, x),
                              **TOL)


def test_no_zero_groups_returns_an_equal_model():
  model, shape, _, _ = build_lenet5_small(np.random.default_rng(6))
  x = jax.random.normal(jax.random.key(0), shape)
  result = slim(model, x, timing_runs=0)
  chex.assert_trees_all_equal_shapes(nnx.state(result.model), nnx.state(model))
  chex.assert_trees_all_equal(snapshot(result.model), snapshot(model))
  chex.assert_trees_all_close(forward(result.model, x), forward(model, x), **TOL)
  assert result.report.nothing_removed
  assert result.report.params_after == result.report.params_before
  assert "nothing removed" in str(result.report)


class WithSort(nnx.Module):

  def __init__(self, *, rngs):
    self.conv = nnx.Conv(3, 4, (3, 3), rngs=rngs)
    self.fc = nnx.Linear(4, 2, rngs=rngs)

  def __call__(self, x):
    return self.fc(jnp.sort(self.conv(x), axis=-1).mean(axis=(1, 2)))


_scramble_p = jax.extend.core.Primitive("scramble_channels")
_scramble_p.def_impl(lambda x: x[..., ::-1])
_scramble_p.def_abstract_eval(lambda x: jax.core.ShapedArray(x.shape, x.dtype))


class WithCustomPrimitive(WithSort):

  def __call__(self, x):
    return self.fc(_scramble_p.bind(self.conv(x)).mean(axis=(1, 2)))


@pytest.mark.parametrize("cls,primitive", [(WithSort, "sort"),
                                           (WithCustomPrimitive, "scramble_channels")])
def test_unknown_operation_is_refused_naming_it_and_the_layer(cls, primitive):
  model = build_random(lambda: cls(rngs=nnx.Rngs(0)), np.random.default_rng(7))
  set_rows(model, "fc", [1], 0.0)
  with pytest.raises(SlimError, match=rf"'{primitive}'.*layer 'conv'.*test_slim\.py"):
    slim(model, jnp.ones((2, 6, 6, 3)), timing_runs=0)


class MixesChannels(nnx.Module):
  """Channels are normalized together (LayerNorm) and half of them are sliced off."""

  def __init__(self, *, rngs):
    self.conv = nnx.Conv(3, 8, (3, 3), rngs=rngs)
    self.norm = nnx.LayerNorm(8, rngs=rngs)
    self.conv2 = nnx.Conv(8, 6, (3, 3), rngs=rngs)
    self.fc = nnx.Linear(3, 2, rngs=rngs)

  def __call__(self, x):
    y = self.conv2(self.norm(self.conv(x)))
    return self.fc(y[..., :3].mean(axis=(1, 2)))


def test_operations_that_mix_channels_keep_them_and_say_why():
  model = build_random(lambda: MixesChannels(rngs=nnx.Rngs(0)), np.random.default_rng(8))
  set_rows(model, "conv2", [2], 0.0)   # reads a channel that LayerNorm mixes
  set_rows(model, "fc", [1], 0.0)      # reads a channel that was sliced
  x = jax.random.normal(jax.random.key(0), (2, 6, 6, 3))
  result = slim(model, x, timing_runs=0)
  assert result.report.nothing_removed
  chex.assert_trees_all_close(forward(result.model, x), forward(model, x), **TOL)
  notes = " ".join(result.report.notes)
  assert "'reduce_sum' along the channel axis" in notes     # LayerNorm's mean
  assert "input of 'fc' not produced by a tracked channel" in notes


@jax.custom_vjp
def _clipped_relu(x):
  return jnp.clip(x, 0.0, 6.0)


_clipped_relu.defvjp(lambda x: (_clipped_relu(x), x),
                     lambda x, g: (jnp.where((x > 0) & (x < 6), g, 0.0),))


class WithCustomDerivatives(nnx.Module):

  def __init__(self, *, rngs):
    self.conv = nnx.Conv(3, 8, (3, 3), rngs=rngs)
    self.fc = nnx.Linear(8, 2, rngs=rngs)

  def __call__(self, x):
    y = jax.nn.relu(_clipped_relu(self.conv(x)) - 1.0)   # custom_vjp, then custom_jvp (relu)
    return self.fc(jax.jit(jnp.mean, static_argnums=1)(y, (1, 2)))


def test_custom_vjp_custom_jvp_and_jit_are_followed():
  model = build_random(lambda: WithCustomDerivatives(rngs=nnx.Rngs(0)), np.random.default_rng(9))
  set_rows(model, "fc", [2, 5], 0.0)
  x = jax.random.normal(jax.random.key(0), (2, 6, 6, 3))
  result = slim(model, x, timing_runs=0)
  assert result.model.conv.kernel.shape == (3, 3, 3, 6)
  assert result.model.conv.out_features == 6 and result.model.fc.in_features == 6
  chex.assert_trees_all_close(forward(result.model, x), forward(model, x), **TOL)


def test_bad_arguments_are_refused_clearly():
  model, shape, _, _ = build_lenet5_small(np.random.default_rng(10))
  with pytest.raises(TypeError, match="flax.nnx.Module"):
    slim(lambda x: x, jnp.ones(shape))
  with pytest.raises(ValueError, match=r"shape \(4, 28, 28, 3\)"):
    slim(model, jnp.ones((4, 28, 28, 3)), timing_runs=0)
  with pytest.raises(ValueError, match="leading batch axis"):
    slim(model, jnp.float32(1.0))
  with pytest.raises(TypeError, match="example_input"):
    slim(model, "not an array")


def test_report_is_a_readable_table():
  rng = np.random.default_rng(3)
  model, shape, layers, spaces = build_lenet5_small(rng)
  zero_groups(model, spaces, rng)
  x = jax.random.normal(jax.random.key(0), shape)
  report = slim(model, x, timing_runs=2).report
  text = str(report)
  lines = text.splitlines()
  assert lines[0].split()[:3] == ["layer", "params", "before"]
  for layer in layers:
    row = next(l for l in lines if l.split()[0] == layer)
    item = next(r for r in report.layers if r.name == layer)
    assert f"{item.params_before:,}" in row and f"{item.macs_after:,}" in row
  assert f"{report.params_before:,} -> {report.params_after:,}" in text
  assert "inference time per batch of 4" in text
  assert report.seconds_before > 0 and report.seconds_after > 0
  # MACs of dense layers: inputs x outputs per example, before and after.
  fc2 = next(r for r in report.layers if r.name == "fc2")
  assert fc2.macs_before == 120 * 84
  json.dumps(report.to_dict())


def test_save_load_round_trip(tmp_path):
  rng = np.random.default_rng(4)
  model, shape, _, spaces = build_lenet5_small(rng)
  zero_groups(model, spaces, rng)
  x = jax.random.normal(jax.random.key(0), shape)
  result = slim(model, x, timing_runs=0)
  kwargs = {"name": "lenet5_small", "num_classes": 10, "input_shape": (28, 28, 1)}
  path = slim_lib.save(tmp_path / "lenet", result, constructor=models.get_model,
                       constructor_kwargs=kwargs)
  assert sorted(os.listdir(tmp_path)) == ["lenet"]          # no temporary left behind
  loaded = slim_lib.load(path)
  chex.assert_trees_all_equal(snapshot(loaded), snapshot(result.model))
  chex.assert_trees_all_close(forward(loaded, x), forward(result.model, x), **TOL)
  assert loaded.fc1.in_features == result.model.fc1.in_features
  spec = json.loads((path / "slim.json").read_text())
  assert spec["constructor"] == "rmda_jax.examples.models:get_model"


def test_save_load_round_trip_of_a_user_model_with_pruned_inputs(tmp_path):
  model, _, _, _ = build_rescat(np.random.default_rng(11))
  for layer, rows in [("stem", [0]), ("a", [3]), ("b", [3]), ("head", [3, 9])]:
    set_rows(model, layer, rows, 0.0)
  model.eval()
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
  result = slim(model, x, prune_inputs=True, timing_runs=0)
  path = slim_lib.save(tmp_path / "m", result, constructor=f"{__name__}:ResCat",
                       constructor_kwargs={"width": 8})
  loaded = slim_lib.load(path)
  assert loaded.bn.use_running_average                      # saved in eval mode, loads so
  chex.assert_trees_all_close(forward(loaded, result.select_input(x)), forward(model, x), **TOL)
  spec = json.loads((path / "slim.json").read_text())
  assert spec["input"] == {"axis": 3, "index": [1, 2]}


def test_save_refuses_what_load_could_not_rebuild(tmp_path):
  model, shape, _, _ = build_lenet5_small(np.random.default_rng(12))
  result = slim(model, jnp.ones(shape), timing_runs=0)
  with pytest.raises(ValueError, match="module-level"):
    slim_lib.save(tmp_path / "a", result, constructor=lambda **kw: model)
  with pytest.raises(ValueError, match="other variables"):
    slim_lib.save(tmp_path / "b", result, constructor=models.get_model,
                  constructor_kwargs={"name": "mlp"})
  with pytest.raises(TypeError, match=r"constructor_kwargs\['dtype'\]"):
    slim_lib.save(tmp_path / "c", result, constructor=models.get_model,
                  constructor_kwargs={"name": "lenet5_small", "dtype": jnp.float32})
  assert not os.listdir(tmp_path)


def test_save_is_atomic(tmp_path, monkeypatch):
  model, shape, _, _ = build_lenet5_small(np.random.default_rng(13))
  result = slim(model, jnp.ones(shape), timing_runs=0)
  kwargs = {"name": "lenet5_small"}
  path = slim_lib.save(tmp_path / "m", result, constructor=models.get_model,
                       constructor_kwargs=kwargs)
  first = (path / "slim.json").read_text()
  with pytest.raises(FileExistsError, match="overwrite=True"):
    slim_lib.save(path, result, constructor=models.get_model, constructor_kwargs=kwargs)

  def broken(*args, **kwargs):
    raise OSError("disk full")

  monkeypatch.setattr(slim_lib.ocp.StandardCheckpointer, "save", broken)
  with pytest.raises(OSError, match="disk full"):
    slim_lib.save(tmp_path / "n", result, constructor=models.get_model, constructor_kwargs=kwargs)
  with pytest.raises(OSError, match="disk full"):
    slim_lib.save(path, result, constructor=models.get_model, constructor_kwargs=kwargs,
                  overwrite=True)
  assert sorted(os.listdir(tmp_path)) == ["m"]
  assert (path / "slim.json").read_text() == first
  monkeypatch.undo()
  slim_lib.save(path, result, constructor=models.get_model, constructor_kwargs=kwargs,
                overwrite=True)
  assert sorted(os.listdir(tmp_path)) == ["m"]
  chex.assert_trees_all_close(forward(slim_lib.load(path), jnp.ones(shape)),
                              forward(model, jnp.ones(shape)), **TOL)


def _saved_lenet(tmp_path):
  model, shape, _, _ = build_lenet5_small(np.random.default_rng(13))
  result = slim(model, jnp.ones(shape), timing_runs=0)
  kwargs = {"name": "lenet5_small"}
  path = slim_lib.save(tmp_path / "m", result, constructor=models.get_model,
                       constructor_kwargs=kwargs)
  return model, shape, result, kwargs, path


def _failing_rename_onto(path, monkeypatch, *, also_the_restore=False):
  """os.replace fails when it would put the new model (or, optionally, anything) at path."""
  real = os.replace

  def replace(src, dst):
    if os.fspath(dst) == os.fspath(path) and (also_the_restore or ".m.tmp-" in os.fspath(src)):
      raise OSError("rename failed")
    return real(src, dst)

  monkeypatch.setattr(slim_io, "_exchange", lambda a, b: False)   # no atomic exchange here
  monkeypatch.setattr(os, "replace", replace)


def test_save_over_a_model_keeps_the_old_one_when_the_second_rename_fails(tmp_path, monkeypatch):
  model, shape, result, kwargs, path = _saved_lenet(tmp_path)
  first = (path / "slim.json").read_text()
  _failing_rename_onto(path, monkeypatch)
  with pytest.raises(OSError, match="rename failed"):
    slim_lib.save(path, result, constructor=models.get_model, constructor_kwargs=kwargs,
                  overwrite=True)
  monkeypatch.undo()
  assert sorted(os.listdir(tmp_path)) == ["m"]               # restored, nothing left aside
  assert (path / "slim.json").read_text() == first
  chex.assert_trees_all_close(forward(slim_lib.load(path), jnp.ones(shape)),
                              forward(model, jnp.ones(shape)), **TOL)


def test_a_save_that_died_between_its_renames_is_recovered(tmp_path, monkeypatch):
  model, shape, result, kwargs, path = _saved_lenet(tmp_path)
  _failing_rename_onto(path, monkeypatch, also_the_restore=True)
  with pytest.raises(OSError, match="rename failed"):
    slim_lib.save(path, result, constructor=models.get_model, constructor_kwargs=kwargs,
                  overwrite=True)
  monkeypatch.undo()
  aside = os.listdir(tmp_path)
  assert not path.exists() and len(aside) == 1 and aside[0].startswith(".m.old-")
  chex.assert_trees_all_close(forward(slim_lib.load(path), jnp.ones(shape)),
                              forward(model, jnp.ones(shape)), **TOL)
  assert sorted(os.listdir(tmp_path)) == ["m"]


def test_save_over_a_model_exchanges_the_directories_in_one_step(tmp_path, monkeypatch):
  if not slim_io._exchange(tmp_path, tmp_path):
    pytest.skip("no atomic exchange of directories on this system")
  model, shape, result, kwargs, path = _saved_lenet(tmp_path)
  calls = []
  real = os.replace
  monkeypatch.setattr(os, "replace", lambda a, b: calls.append((a, b)) or real(a, b))
  slim_lib.save(path, result, constructor=models.get_model, constructor_kwargs=kwargs,
                overwrite=True)
  monkeypatch.undo()
  assert not [c for c in calls if os.fspath(c[1]) == os.fspath(path)]   # never renamed onto
  assert sorted(os.listdir(tmp_path)) == ["m"]
  chex.assert_trees_all_close(forward(slim_lib.load(path), jnp.ones(shape)),
                              forward(model, jnp.ones(shape)), **TOL)


def test_a_bug_in_the_tracer_is_not_reported_as_the_models_failure(monkeypatch):
  model, shape, _, _ = build_lenet5_small(np.random.default_rng(14))

  def broken(it, eqn, ins):
    raise KeyError("a bug in a rule")

  monkeypatch.setitem(slim_rules.RULES, "dot_general", slim_rules.Rule(broken))
  with pytest.raises(KeyError, match="a bug in a rule"):
    slim(model, jnp.ones(shape), timing_runs=0)
  monkeypatch.undo()
  with pytest.raises(ValueError, match="does not run on example_input.*ModelBug") as info:
    slim(FailingModel(rngs=nnx.Rngs(0)), jnp.ones((2, 3)), timing_runs=0)
  assert isinstance(info.value.__cause__, ModelBug)          # the model's own error, kept


class ModelBug(Exception):
  pass


class FailingModel(nnx.Module):

  def __init__(self, *, rngs):
    self.fc = nnx.Linear(3, 2, rngs=rngs)

  def __call__(self, x):
    raise ModelBug("the model's own code fails")


def test_load_refuses_a_directory_that_is_not_a_slim_checkpoint(tmp_path):
  with pytest.raises(FileNotFoundError, match="not a slim checkpoint"):
    slim_lib.load(tmp_path)


def test_import_without_flax_names_the_extra():
  code = ("import sys; sys.modules['flax'] = None\n"
          "try:\n  import rmda_jax.slim\nexcept ImportError as e:\n  print(e)\n")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert "rmda_jax[examples]" in out.stdout


@pytest.mark.parametrize("module", [slim_lib, slim_io])
def test_docstring_examples(module):
  result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
  assert result.attempted > 0 and result.failed == 0


# ----------------------------------------------------------------------------
# Transformers: attention heads and MLP hidden units.


class ViTBlock(nnx.Module):
  """Pre-norm block: x + attn(norm(x)) (optionally attending to a context), x + mlp(norm(x))."""

  def __init__(self, d, heads, head_dim, hidden, *, use_bias=True, kv_features=None, rngs):
    self.norm1 = nnx.LayerNorm(d, rngs=rngs)
    self.attn = nnx.MultiHeadAttention(heads, d, qkv_features=heads * head_dim, out_features=d,
                                       in_kv_features=kv_features, use_bias=use_bias,
                                       decode=False, rngs=rngs)
    self.norm2 = nnx.LayerNorm(d, rngs=rngs)
    self.fc1 = nnx.Linear(d, hidden, use_bias=use_bias, rngs=rngs)
    self.fc2 = nnx.Linear(hidden, d, use_bias=use_bias, rngs=rngs)

  def __call__(self, x, context=None):
    h = self.norm1(x)
    x = x + self.attn(h, context if context is not None else h)
    return x + self.fc2(jax.nn.gelu(self.fc1(self.norm2(x))))


class TinyViT(nnx.Module):
  """Patch embedding, two blocks, mean pooling; with ``cross``, block 1 attends to a context."""

  def __init__(self, heads=(4, 4), head_dim=4, hidden=12, d=16, *, use_bias=True, cross=False,
               rngs):
    self.cross = cross
    self.embed = nnx.Linear(6, d, rngs=rngs)
    self.context = nnx.Linear(6, 5, rngs=rngs) if cross else None
    self.blocks = nnx.List([
        ViTBlock(d, h, head_dim, hidden, use_bias=use_bias,
                 kv_features=5 if cross and i == 1 else None, rngs=rngs)
        for i, h in enumerate(heads)])
    self.head = nnx.Linear(d, 3, rngs=rngs)

  def __call__(self, x):
    context = jnp.tanh(self.context(x[:, ::2])) if self.cross else None
    y = self.embed(x)
    for i, block in enumerate(self.blocks):
      y = block(y, context if i == 1 else None)
    return self.head(y.mean(axis=1))


def zero_heads_and_units(model, rng, blocks):
  """Zeroes random heads (all their q/k/v/out slices, or only their out rows) and MLP units."""
  for b in blocks:
    attn, heads = b.attn, b.attn.num_heads
    for h in rng.choice(heads, rng.integers(1, heads + 1), replace=False):
      attn.out.kernel[...] = attn.out.kernel[...].at[h].set(0.0)
      if rng.random() < 0.5:      # the coupled group, as the heads regularizer zeroes it
        for proj in (attn.query, attn.key, attn.value):
          proj.kernel[...] = proj.kernel[...].at[:, h].set(0.0)
          if proj.use_bias:
            proj.bias[...] = proj.bias[...].at[h].set(0.0)
    hidden = b.fc1.kernel.shape[1]
    units = rng.choice(hidden, rng.integers(1, hidden), replace=False)
    b.fc2.kernel[...] = b.fc2.kernel[...].at[units].set(0.0)
    b.fc1.kernel[...] = b.fc1.kernel[...].at[:, units[::2]].set(0.0)


def kept_or_first(nonzero):
  kept = np.flatnonzero(nonzero)
  return kept if len(kept) else np.array([0])


@pytest.mark.parametrize("heads,use_bias,cross", [((4, 2), True, False), ((1, 3), False, False),
                                                  ((3, 4), True, True)])
def test_heads_and_mlp_units_that_are_zero_go_and_the_outputs_stay(heads, use_bias, cross):
  rng = np.random.default_rng(sum(heads) + 10 * use_bias + 100 * cross)
  model = build_random(lambda: TinyViT(heads, use_bias=use_bias, cross=cross, rngs=nnx.Rngs(0)),
                       rng)
  zero_heads_and_units(model, rng, model.blocks)
  x = jnp.asarray(rng.normal(size=(2, 6, 6)), jnp.float32)
  before = snapshot(model)

  result = slim(model, x, timing_runs=0)

  chex.assert_trees_all_close(forward(result.model, x), forward(model, x), **TOL)
  chex.assert_trees_all_equal(snapshot(model), before)          # the model is untouched
  L, d, hd = x.shape[1], 16, 4
  for i, (b, s) in enumerate(zip(model.blocks, result.model.blocks)):
    kept = kept_or_first(np.any(np.asarray(b.attn.out.kernel[...]) != 0, axis=(1, 2)))
    assert s.attn.num_heads == len(kept), i
    for name in ("query", "key", "value"):
      chex.assert_trees_all_equal(getattr(s.attn, name).kernel[...],
                                  getattr(b.attn, name).kernel[...][:, kept])
      if use_bias:
        chex.assert_trees_all_equal(getattr(s.attn, name).bias[...],
                                    getattr(b.attn, name).bias[...][kept])
    chex.assert_trees_all_equal(s.attn.out.kernel[...], b.attn.out.kernel[...][kept])
    units = kept_or_first(np.any(np.asarray(b.fc2.kernel[...]) != 0, axis=1))
    chex.assert_trees_all_equal(s.fc1.kernel[...], b.fc1.kernel[...][:, units])
    chex.assert_trees_all_equal(s.fc2.kernel[...], b.fc2.kernel[...][units])
    if use_bias:
      chex.assert_trees_all_equal(s.fc1.bias[...], b.fc1.bias[...][units])
    assert s.norm1.scale.shape == (d,)                  # the residual stream keeps its width
    # Multiply-adds per example, from the shapes: projections and the MLP.
    rows = {r.name: r for r in result.report.layers}
    Lkv = (L + 1) // 2 if cross and i == 1 else L
    assert rows[f"blocks/{i}/attn/query"].macs_after == L * d * len(kept) * hd
    assert rows[f"blocks/{i}/attn/value"].macs_after == Lkv * (5 if cross and i == 1 else d) \
        * len(kept) * hd
    assert rows[f"blocks/{i}/attn/out"].macs_after == L * len(kept) * hd * d
    assert rows[f"blocks/{i}/fc1"].macs_after == L * d * len(units)
  notes = " ".join(result.report.notes)
  assert "'blocks/0/norm1'" in notes and "keeps its width" in notes


def test_a_vit_with_half_an_mlp_and_a_head_zeroed_slims():
  """The case of issue 21: slim used to cut the head's channels but not the head count."""
  model = build_random(lambda: TinyViT((4, 4), hidden=16, rngs=nnx.Rngs(1)),
                       np.random.default_rng(21))
  b = model.blocks[0]
  b.fc2.kernel[...] = b.fc2.kernel[...].at[:8].set(0.0)
  b.attn.out.kernel[...] = b.attn.out.kernel[...].at[1].set(0.0)
  x = jax.random.normal(jax.random.key(0), (2, 5, 6))
  result = slim(model, x, timing_runs=0)
  s = result.model.blocks[0]
  assert (s.attn.num_heads, s.attn.qkv_features, s.fc1.out_features) == (3, 12, 8)
  assert s.attn.query.kernel.shape == (16, 3, 4) and s.attn.out.kernel.shape == (3, 4, 16)
  assert result.model.blocks[1].attn.num_heads == 4
  chex.assert_trees_all_close(forward(result.model, x), forward(model, x), **TOL)
  assert "'blocks/0/attn': 3 of 4 attention heads kept" in result.report.notes


def test_a_partly_zero_head_is_kept_and_the_report_says_so():
  model = build_random(lambda: TinyViT((4, 4), rngs=nnx.Rngs(2)), np.random.default_rng(22))
  out = model.blocks[0].attn.out
  out.kernel[...] = out.kernel[...].at[2, :3].set(0.0)     # 3 of the head's 4 rows
  out.kernel[...] = out.kernel[...].at[0].set(0.0)         # the whole head
  x = jax.random.normal(jax.random.key(0), (2, 5, 6))
  result = slim(model, x, timing_runs=0)
  s = result.model.blocks[0].attn
  assert s.num_heads == 3
  chex.assert_trees_all_equal(s.out.kernel[...], out.kernel[...][1:])
  chex.assert_trees_all_close(forward(result.model, x), forward(model, x), **TOL)
  notes = "\n".join(result.report.notes)
  assert "'blocks/0/attn/out' head 2 is partly zero (3 of 4 of its rows are zero)" in notes


class EinsumAttention(nnx.Module):
  """Attention written by hand: per-head kernels (in, heads, head_dim), jnp.einsum."""

  def __init__(self, d, heads, head_dim, *, rngs):
    init = nnx.initializers.lecun_normal()
    self.wq = nnx.Param(init(rngs.params(), (d, heads, head_dim)))
    self.wk = nnx.Param(init(rngs.params(), (d, heads, head_dim)))
    self.wv = nnx.Param(init(rngs.params(), (d, heads, head_dim)))
    self.bq = nnx.Param(jnp.zeros((heads, head_dim)))
    self.wo = nnx.Param(init(rngs.params(), (heads, head_dim, d)))

  def __call__(self, x):
    q = jnp.einsum("bld,dhk->blhk", x, self.wq[...]) + self.bq[...]
    k = jnp.einsum("bld,dhk->blhk", x, self.wk[...])
    v = jnp.einsum("bld,dhk->blhk", x, self.wv[...])
    w = jax.nn.softmax(jnp.einsum("blhk,bmhk->bhlm", q, k) / np.sqrt(q.shape[-1]), axis=-1)
    return jnp.einsum("bhlm,bmhk->blhk", w, v).reshape(*x.shape[:2], -1) @ \
        self.wo[...].reshape(-1, x.shape[-1])


class EinsumModel(nnx.Module):

  def __init__(self, *, rngs):
    self.embed = nnx.Linear(6, 8, rngs=rngs)
    self.attn = EinsumAttention(8, 5, 3, rngs=rngs)
    self.head = nnx.Linear(8, 2, rngs=rngs)

  def __call__(self, x):
    y = self.embed(x)
    return self.head((y + self.attn(y)).mean(axis=1))


def test_heads_of_attention_written_with_einsum_go():
  model = build_random(lambda: EinsumModel(rngs=nnx.Rngs(3)), np.random.default_rng(23))
  wo = model.attn.wo
  wo[...] = wo[...].at[np.array([1, 4])].set(0.0)
  x = jax.random.normal(jax.random.key(0), (2, 4, 6))
  result = slim(model, x, timing_runs=0)
  s = result.model.attn
  assert s.wq.shape == s.wk.shape == s.wv.shape == (8, 3, 3)
  assert s.bq.shape == (3, 3) and s.wo.shape == (3, 3, 8)
  chex.assert_trees_all_equal(s.wv[...], model.attn.wv[...][:, [0, 2, 3]])
  chex.assert_trees_all_close(forward(result.model, x), forward(model, x), **TOL)


# ----------------------------------------------------------------------------
# Zeros after a flatten: the dense layer gathers the features it still reads.


def lenet_with_scattered_zero_rows(seed):
  """LeNet5 whose fc1 (reading conv2's 5x5x16 map flattened) has zero rows in every channel."""
  rng = np.random.default_rng(seed)
  model, shape, _, _ = build_lenet5_small(rng)
  rows = np.arange(400).reshape(25, 16)                    # (position, channel), NHWC
  zero = rng.random((25, 16)) < 0.6
  zero[:, [3, 7]] = True                                   # two whole channels
  set_rows(model, "fc1", rows[zero], 0.0)
  return model, shape, ~np.any(kernel(model, "fc1") != 0, axis=1)


def test_zero_rows_after_a_flatten_go_by_a_gather_with_equal_outputs():
  model, shape, zero = lenet_with_scattered_zero_rows(31)
  x = jax.random.normal(jax.random.key(0), shape)
  result = slim(model, x, timing_runs=0)
  fc1 = result.model.fc1
  assert isinstance(fc1, slim_lib.GatheredLinear)
  chex.assert_trees_all_equal(fc1.kernel[...], model.fc1.kernel[...][~zero])
  assert fc1.in_features == int((~zero).sum())
  assert result.model.conv2.kernel.shape[-1] == 14         # the two whole channels
  chex.assert_trees_all_close(forward(result.model, x), forward(model, x), **TOL)
  row = next(r for r in result.report.layers if r.name == "fc1")
  assert row.macs_after == int((~zero).sum()) * 120 and row.macs_before == 400 * 120
  assert "gathered" in row.change
  assert any(n.startswith("'fc1' gathers") for n in result.report.notes)


def test_a_gathered_model_saves_and_loads(tmp_path):
  model, shape, zero = lenet_with_scattered_zero_rows(32)
  x = jax.random.normal(jax.random.key(0), shape)
  result = slim(model, x, timing_runs=0)
  path = slim_lib.save(tmp_path / "m", result, constructor=models.get_model,
                       constructor_kwargs={"name": "lenet5_small"})
  loaded = slim_lib.load(path)
  assert isinstance(loaded.fc1, slim_lib.GatheredLinear)
  chex.assert_trees_all_equal(snapshot(loaded), snapshot(result.model))
  chex.assert_trees_all_close(forward(loaded, x), forward(model, x), **TOL)
