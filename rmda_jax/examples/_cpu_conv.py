"""Fast paths for single-channel convolutions on XLA:CPU (private to the models).

XLA:CPU is slow at the forward pass of a convolution with one input channel
(MNIST's first layer). Here that forward is computed as a sum of shifted
images (exact, one fused loop), and LeNet's first ``conv -> relu -> 2x2
max-pool`` as one fused loop over the four pooling phases; the backward passes
use XLA's transposed convolutions. Both paths are taken only when JAX's
default backend is CPU (:func:`enabled`, read at trace time): on GPU and TPU
the library convolution is the fast one, and everything goes to
``jax.lax.conv_general_dilated`` unchanged.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = ["enabled", "conv_general_dilated", "fused_conv_relu_pool_applies",
           "conv_relu_pool"]

_NHWC = ("NHWC", "HWIO", "NHWC")


def enabled() -> bool:
  """Whether the fast paths may be taken: JAX's default backend is CPU."""
  return jax.default_backend() == "cpu"


def _pads(padding, in_hw, k_hw):
  if isinstance(padding, str):
    return tuple((p, q) for p, q in jax.lax.padtype_to_pads(in_hw, k_hw, (1, 1), padding))
  return tuple((int(p), int(q)) for p, q in padding)


def _lax_conv(x, k, pads):
  return jax.lax.conv_general_dilated(x, k, (1, 1), pads, dimension_numbers=_NHWC)


def _shift_sum_conv(x, k, pads):
  # out[n, i, j, o] = sum_{a, b} xpad[n, i + a, j + b, 0] * k[a, b, 0, o]: one fused loop.
  kh, kw = k.shape[:2]
  xp = jnp.pad(x, ((0, 0), *pads, (0, 0)))
  ho, wo = xp.shape[1] - kh + 1, xp.shape[2] - kw + 1
  out = None
  for a in range(kh):
    for b in range(kw):
      term = xp[:, a:a + ho, b:b + wo, :] * k[a, b, 0, :]
      out = term if out is None else out + term
  return out


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _single_channel_conv(x, k, pads):
  return _shift_sum_conv(x, k, pads)


def _single_channel_conv_fwd(x, k, pads):
  return _shift_sum_conv(x, k, pads), (x, k)


def _single_channel_conv_bwd(pads, res, g):
  x, k = res
  _, vjp = jax.vjp(lambda x, k: _lax_conv(x, k, pads), x, k)
  return vjp(g)


_single_channel_conv.defvjp(_single_channel_conv_fwd, _single_channel_conv_bwd)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                         **kwargs):
  """``jax.lax.conv_general_dilated``, with the shifted-sum forward for one input channel on CPU.

  Same arguments and result as ``jax.lax.conv_general_dilated`` (pass it as
  ``nnx.Conv(..., conv_general_dilated=conv_general_dilated)``). The fast path
  is taken for a stride-1, undilated, ungrouped NHWC/HWIO convolution of a
  single-channel input when :func:`enabled`; every other call goes straight
  to the library convolution.
  """
  simple = (
      enabled()
      and lhs.ndim == 4 and rhs.shape[2] == 1 and feature_group_count == 1
      and tuple(window_strides) == (1, 1)
      and all(d in (None, 1) or tuple(d) == (1, 1) for d in (lhs_dilation, rhs_dilation))
      and jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)
      == jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
      and not kwargs.get("preferred_element_type")
  )
  if simple:
    return _single_channel_conv(lhs, rhs, _pads(padding, lhs.shape[1:3], rhs.shape[:2]))
  kwargs = {k: v for k, v in kwargs.items() if v is not None}
  return jax.lax.conv_general_dilated(
      lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
      rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
      feature_group_count=feature_group_count, **kwargs)


def _phase_conv(xp, k, p, q, ho, wo):
  # The (p, q) phase of a stride-2 subsampling of the single-channel conv output.
  kh, kw = k.shape[:2]
  out = None
  for a in range(kh):
    for b in range(kw):
      term = xp[:, p + a: p + a + 2 * ho: 2, q + b: q + b + 2 * wo: 2, :] * k[a, b, 0, :]
      out = term if out is None else out + term
  return out


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _conv_relu_pool_1ch(x, k, bias, pads):
  return _conv_relu_pool_1ch_fwd(x, k, bias, pads)[0]


def _conv_relu_pool_1ch_fwd(x, k, bias, pads):
  kh, kw = k.shape[:2]
  xp = jnp.pad(x, ((0, 0), *pads, (0, 0)))
  ho, wo = (xp.shape[1] - kh + 1) // 2, (xp.shape[2] - kw + 1) // 2
  best = win = None
  for i, (p, q) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
    y = _phase_conv(xp, k, p, q, ho, wo)
    if best is None:
      best, win = y, jnp.zeros(y.shape, jnp.int8)
    else:
      better = y > best  # strict: the first maximum of the window wins, as in torch
      best, win = jnp.where(better, y, best), jnp.where(better, jnp.int8(i), win)
  out = jax.nn.relu(best + bias)
  return out, (x, k, win, out > 0)


def _conv_relu_pool_1ch_bwd(pads, res, g):
  x, k, win, positive = res
  kh, kw = k.shape[:2]
  h = x.shape[1] + sum(pads[0]) - kh + 1
  w = x.shape[2] + sum(pads[1]) - kw + 1
  ho, wo = g.shape[1:3]
  g = jnp.where(positive, g, 0.0)
  up = lambda z: jnp.repeat(jnp.repeat(z, 2, axis=1), 2, axis=2)
  phase = 2 * (jnp.arange(2 * ho) % 2)[:, None] + (jnp.arange(2 * wo) % 2)[None, :]
  dy = jnp.where(up(win) == phase.astype(jnp.int8)[None, :, :, None], up(g), 0.0)
  dy = jnp.pad(dy, ((0, 0), (0, h - 2 * ho), (0, w - 2 * wo), (0, 0)))
  _, vjp = jax.vjp(lambda x, k: _lax_conv(x, k, pads), x, k)
  dx, dk = vjp(dy)
  return dx, dk, jnp.sum(g, axis=(0, 1, 2))


_conv_relu_pool_1ch.defvjp(_conv_relu_pool_1ch_fwd, _conv_relu_pool_1ch_bwd)


def _tuple(v):
  if v is None:
    return (1,)
  return tuple(v) if isinstance(v, (tuple, list)) else (v,)


def fused_conv_relu_pool_applies(conv: nnx.Conv, x: jax.Array) -> bool:
  """Whether :func:`conv_relu_pool` can compute ``pool(relu(conv(x)))`` for this layer.

  True on CPU (:func:`enabled`) for a stride-1, undilated, ungrouped, unmasked
  ``conv`` reading one input channel of NHWC ``x`` with explicit, SAME or
  VALID padding.
  """
  return (enabled() and conv.in_features == 1 and conv.mask is None
          and conv.feature_group_count == 1 and x.ndim == 4
          and all(s == 1 for s in _tuple(conv.strides))
          and all(d == 1 for d in _tuple(conv.kernel_dilation))
          and all(d == 1 for d in _tuple(conv.input_dilation))
          and (not isinstance(conv.padding, str) or conv.padding in ("SAME", "VALID")))


def conv_relu_pool(conv: nnx.Conv, x: jax.Array) -> jax.Array:
  """``max_pool_2x2(relu(conv(x)))`` in one fused loop (check :func:`fused_conv_relu_pool_applies`).

  The forward pass computes the four 2x2 pooling phases of the convolution
  directly (the full-resolution map is never stored) and remembers which
  phase won; the backward pass routes the gradient through that winner (the
  first maximum of each window, as torch's MaxPool2d) and uses XLA's
  transposed convolution for the kernel. Same values as the unfused layers.
  """
  k = conv.kernel[...]
  bias = conv.bias[...] if conv.bias is not None else jnp.zeros((k.shape[-1],), k.dtype)
  x = x.astype(k.dtype)
  return _conv_relu_pool_1ch(x, k, bias, _pads(conv.padding, x.shape[1:3], k.shape[:2]))
