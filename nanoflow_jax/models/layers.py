"""Dense and causal convolution layers with optional weight norm, in the forms the official checkpoints use.

A weight-normed kernel is stored as `v` and `g` (w = g * v / ||v||, the norm over every axis but the last,
output one); training keeps that form. `inference_params` folds it into a plain `kernel`, which these
modules pick up when present, so one module serves both forms. Matmuls and convolutions follow the
module's precision policy (`models.precision`) and return float32.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from nanoflow_jax.models.conv import causal_conv2d
from nanoflow_jax.models.precision import precision_policy

Array = jax.Array


def torch_uniform(fan_in: int):
    """PyTorch's default conv init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)
    return lambda rng, shape, dtype=jnp.float32: jax.random.uniform(rng, shape, dtype, -bound, bound)


def weight_norm(v: Array, g: Array) -> Array:
    axes = tuple(range(v.ndim - 1))
    return v * (g / jnp.sqrt(jnp.sum(v * v, axis=axes)))


def kernel_param(mdl: nn.Module, shape: tuple[int, ...], fan_in: int, use_weight_norm: bool) -> Array:
    """The module's kernel: a plain `kernel` param, or `v` and `g` of a weight-normed one."""
    if mdl.has_variable("params", "kernel") or not use_weight_norm:
        return mdl.param("kernel", torch_uniform(fan_in), shape)
    v = mdl.param("v", torch_uniform(fan_in), shape)
    g = mdl.param("g", lambda _: jnp.sqrt(jnp.sum(v * v, axis=tuple(range(v.ndim - 1)))))
    return weight_norm(v, g)


def stored_kernel(mdl: nn.Module) -> Array:
    """The kernel a bound module computes with, from whichever form its params hold (a plain `kernel`, or
    weight norm's `v` and `g`)."""
    p = mdl.variables["params"]
    return p["kernel"] if "kernel" in p else weight_norm(p["v"], p["g"])


class Dense(nn.Module):
    """1x1 convolution over the last axis (weight norm optional), PyTorch initialisation."""

    features: int
    use_weight_norm: bool = True
    use_bias: bool = True
    precision: Any = "float32"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        fan_in = x.shape[-1]
        w = kernel_param(self, (fan_in, self.features), fan_in, self.use_weight_norm)
        y = precision_policy(self.precision).dot(x, w)
        if self.use_bias:
            y = y + self.param("bias", torch_uniform(fan_in), (self.features,))
        return y

    def weights(self) -> tuple[Array, Array | None]:
        """(kernel (Cin, Cout), bias or None), as the call computes with them."""
        return stored_kernel(self), self.variables["params"].get("bias")


class CausalConv(nn.Module):
    """kh x kw convolution over (B, H, W, C), causal along H, "same" along W, weight-normed."""

    features: int
    kernel_size: Sequence[int] = (3, 3)
    dilation: Sequence[int] = (1, 1)
    precision: Any = "float32"

    @nn.compact
    def __call__(self, x: Array, upward: Array | int = 0) -> Array:
        """`upward` (0/1, may be traced): causal down the rows (0, padding on top) or up them (1)."""
        kh, kw = self.kernel_size
        c_in = x.shape[-1]
        fan_in = c_in * kh * kw
        w = kernel_param(self, (kh, kw, c_in, self.features), fan_in, True)
        y = causal_conv2d(x, w, tuple(self.dilation), precision_policy(self.precision), upward)
        return y + self.param("bias", torch_uniform(fan_in), (self.features,))

    def weights(self) -> tuple[Array, Array]:
        """(kernel (kh, kw, Cin, Cout), bias), as the call computes with them."""
        return stored_kernel(self), self.variables["params"]["bias"]
