"""Per-flow projection heads (the official ZeroConv2d): feat @ kernel + bias, scaled by exp(3 * scale),
with kernel and bias ~ U(-1e-3, 1e-3) and scale = 0, so every flow starts close to the identity. Stored
stacked (n_heads, ...) so a scan over flows takes one slice per step."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from nanoflow_jax.models.precision import POLICIES

Array = jax.Array


def _small_uniform(rng, shape, dtype=jnp.float32):
    return jax.random.uniform(rng, shape, dtype, -1e-3, 1e-3)


class ProjHeads(nn.Module):
    n_heads: int
    channels: int
    n_out: int

    @nn.compact
    def __call__(self) -> dict:
        return {
            "kernel": self.param("kernel", _small_uniform, (self.n_heads, self.channels, self.n_out)),
            "bias": self.param("bias", _small_uniform, (self.n_heads, self.n_out)),
            "scale": self.param("scale", nn.initializers.zeros, (self.n_heads, self.n_out)),
        }


def affine(head: dict) -> tuple[Array, Array, Array]:
    """One head's params as the map it computes: (kernel (C, n_out), bias (n_out,), scale (n_out,)), the
    output being (feat @ kernel + bias) * scale, scale = exp(3 * scale param)."""
    return head["kernel"], head["bias"], jnp.exp(3.0 * head["scale"])


def project(feat: Array, head: dict) -> Array:
    """(..., C) features and one head's params -> (..., n_out) coupling parameters. Always true float32
    (C -> 2 is cheap, and log_s feeds the log-determinant)."""
    kernel, bias, scale = affine(head)
    return (POLICIES["float32"].dot(feat, kernel) + bias) * scale
