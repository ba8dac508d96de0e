"""Convolutions with optional weight norm, in the forms the official checkpoints use.

A weight-normed kernel is stored as `v` and `g` (w = g * v / ||v||, the norm over every axis but the last,
output one); training keeps that form. `inference_params` folds it into a plain `kernel`, which these
modules pick up when present, so one module serves both forms.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

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


class CausalConv(nn.Module):
    """kh x kw convolution over (B, H, W, C), causal down H (all padding on top), "same" along W."""

    features: int
    kernel_size: Sequence[int] = (3, 3)
    dilation: Sequence[int] = (1, 1)
    use_weight_norm: bool = True

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kh, kw = self.kernel_size
        dh, dw = self.dilation
        c_in = x.shape[-1]
        fan_in = c_in * kh * kw
        w = _kernel(self, (kh, kw, c_in, self.features), fan_in, self.use_weight_norm)
        y = jax.lax.conv_general_dilated(
            x,
            w.astype(x.dtype),
            window_strides=(1, 1),
            padding=((dh * (kh - 1), 0), (dw * (kw - 1) // 2, dw * (kw - 1) // 2)),
            rhs_dilation=(dh, dw),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        return y + self.param("bias", torch_uniform(fan_in), (self.features,)).astype(x.dtype)
