"""Convolutions with optional weight norm, in the forms the official checkpoints use.

A weight-normed kernel is stored as `v` and `g` (w = g * v / ||v||, the norm over every axis but the last,
output one); training keeps that form. `inference_params` folds it into a plain `kernel`, which these
modules pick up when present, so one module serves both forms.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jnp.ndarray


def torch_uniform(fan_in: int):
    """PyTorch's default conv init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)
    return lambda rng, shape, dtype=jnp.float32: jax.random.uniform(rng, shape, dtype, -bound, bound)


def weight_norm(v: Array, g: Array) -> Array:
    axes = tuple(range(v.ndim - 1))
    return v * (g / jnp.sqrt(jnp.sum(v * v, axis=axes)))


def _kernel(mdl: nn.Module, shape: tuple[int, ...], fan_in: int, use_weight_norm: bool) -> Array:
    if mdl.has_variable("params", "kernel") or not use_weight_norm:
        return mdl.param("kernel", torch_uniform(fan_in), shape)
    v = mdl.param("v", torch_uniform(fan_in), shape)
    g = mdl.param("g", lambda _: jnp.sqrt(jnp.sum(v * v, axis=tuple(range(v.ndim - 1)))))
    return weight_norm(v, g)


class Dense(nn.Module):
    """1x1 convolution over the last axis (weight norm optional), PyTorch initialisation."""

    features: int
    use_weight_norm: bool = True
    use_bias: bool = True

    @nn.compact
    def __call__(self, x: Array) -> Array:
        fan_in = x.shape[-1]
        w = _kernel(self, (fan_in, self.features), fan_in, self.use_weight_norm)
        y = jnp.dot(x, w.astype(x.dtype))
        if self.use_bias:
            y = y + self.param("bias", torch_uniform(fan_in), (self.features,)).astype(x.dtype)
        return y


def _conv(x: Array, w: Array, padding, dilation) -> Array:
    return jax.lax.conv_general_dilated(
        x,
        w,
        window_strides=(1, 1),
        padding=padding,
        rhs_dilation=dilation,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )


def causal_conv2d(x: Array, w: Array, dilation: tuple[int, int], fast_grad: bool = True) -> Array:
    """(B, H, W, Cin) * (kh, kw, Cin, Cout) kernel, causal down H (padding on top), "same" along W.

    A width dilation d is turned into d interleaved phases moved to the batch axis, so the convolution
    itself is undilated along W (XLA's CPU convolution is ~2x slower when dilated). `fast_grad` uses the
    explicit reverse-mode gradient below; it has no forward mode (jax.jvp / jacfwd): pass False for that."""
    dh, dw = dilation
    if not fast_grad:
        kh, kw = w.shape[:2]
        return _conv(x, w, ((dh * (kh - 1), 0), (dw * (kw - 1) // 2,) * 2), (dh, dw))
    causal = ((dh * (w.shape[0] - 1), 0), ((w.shape[1] - 1) // 2,) * 2)
    if dw == 1:
        return conv2d(x, w, causal, dh)
    b, h, width, c = x.shape
    padded = -(-width // dw) * dw
    x = jnp.pad(x, ((0, 0), (0, 0), (0, padded - width), (0, 0)))
    x = x.reshape(b, h, padded // dw, dw, c).transpose(0, 3, 1, 2, 4).reshape(b * dw, h, padded // dw, c)
    y = conv2d(x, w, causal, dh)
    y = y.reshape(b, dw, h, padded // dw, -1).transpose(0, 2, 3, 1, 4).reshape(b, h, padded, -1)
    return y[:, :, :width]


@partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv2d(x: Array, w: Array, padding: tuple, dh: int = 1) -> Array:
    """Stride-1 NHWC convolution with static `padding` ((top, bottom), (left, right)) and height dilation
    `dh`, whose output has the input's height and width (causal or "same" padding).

    The gradient is written out: XLA on CPU runs the convolutions JAX derives for the backward pass
    20-60x slower inside a scan (the flow loop) than outside; as a forward-style convolution (input
    gradient) and kh*kw matmuls (kernel gradient) it is fast everywhere. Reverse mode only."""
    return _conv(x, w, padding, (dh, 1))


def _conv2d_fwd(x, w, padding, dh):
    return conv2d(x, w, padding, dh), (x, w)


def _conv2d_bwd(padding, dh, res, g):
    x, w = res
    kh, kw = w.shape[:2]
    (top, bottom), (left, right) = padding
    # input gradient: the same convolution with the kernel flipped and transposed, padded the other way
    dx = _conv(g, jnp.flip(w, (0, 1)).swapaxes(2, 3), ((bottom, top), (right, left)), (dh, 1))
    h, width = x.shape[1], x.shape[2]
    xp = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    g2 = g.reshape(-1, g.shape[-1])

    def tap(i, j):  # kernel gradient of one tap: (rows, Cin)^T @ (rows, Cout)
        xs = xp[:, i * dh : i * dh + h, j : j + width].reshape(-1, x.shape[-1])
        return jax.lax.dot_general(xs, g2, (((0,), (0,)), ((), ())))

    dw = jnp.stack([jnp.stack([tap(i, j) for j in range(kw)]) for i in range(kh)])
    return dx, dw.astype(w.dtype)


conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)


class CausalConv(nn.Module):
    """kh x kw convolution over (B, H, W, C), causal down H (all padding on top), "same" along W."""

    features: int
    kernel_size: Sequence[int] = (3, 3)
    dilation: Sequence[int] = (1, 1)
    use_weight_norm: bool = True
    fast_grad: bool = True

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kh, kw = self.kernel_size
        dh, dw = self.dilation
        c_in = x.shape[-1]
        fan_in = c_in * kh * kw
        w = _kernel(self, (kh, kw, c_in, self.features), fan_in, self.use_weight_norm)
        y = causal_conv2d(x, w.astype(x.dtype), (dh, dw), self.fast_grad)
        return y + self.param("bias", torch_uniform(fan_in), (self.features,)).astype(x.dtype)
