"""The image flow's layers (Flax): ActNorm, the density estimators and the zero-initialised output convolution.

Glow: per step conv3x3 -> conv1x1, each with ActNorm and ReLU, then a zero-init 3x3 projection;
Glow-large: 6 x conv3x3; the NanoFlow variants share one stack per level and multiply each activation by
a per-step gate exp(g_i) before its ReLU.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from nanoflow_jax.flows import image as F
from nanoflow_jax.models.conv import same_conv2d
from nanoflow_jax.models.precision import precision_policy

Array = jax.Array


class ActNorm(nn.Module):
    """Per-channel affine, initialised at `init` so that its output on that batch has zero mean and
    `scale` standard deviation per channel. -> (output, its log-determinant (B,)); `reverse` inverts."""

    scale: float = 1.0

    @nn.compact
    def __call__(self, x: Array, reverse: bool = False) -> tuple[Array, Array]:
        stats = lambda: F.actnorm_stats(x, self.scale)  # noqa: E731  (only evaluated at init)
        p = {
            "bias": self.param("bias", lambda _: stats()["bias"]),
            "logs": self.param("logs", lambda _: stats()["logs"]),
        }
        return F.actnorm_inverse(x, p) if reverse else F.actnorm_forward(x, p)


class SameConv(nn.Module):
    """k x k "same" convolution without bias, N(0, 0.05) init."""

    features: int
    kernel: int
    precision: Any = "float32"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        k = self.kernel
        w = self.param("kernel", nn.initializers.normal(0.05), (k, k, x.shape[-1], self.features))
        return same_conv2d(x, w, precision_policy(self.precision))


class ConvStack(nn.Module):
    """Convs (no bias) each followed by ActNorm, an optional gate exp(g_i), and ReLU."""

    hidden: int
    kernels: tuple[int, ...]
    actnorm_scale: float = 1.0
    precision: Any = "float32"

    @nn.compact
    def __call__(self, x: Array, gates: Array | None = None) -> Array:
        for i, k in enumerate(self.kernels):
            x = SameConv(self.hidden, k, self.precision, name=f"Conv_{i}")(x)
            x, _ = ActNorm(self.actnorm_scale)(x)
            if gates is not None:
                x = x * jnp.exp(gates[i])
            x = nn.relu(x)
        return x


class ZeroConv(nn.Module):
    """k x k "same" convolution whose output starts at zero (`zero_conv`): the coupling's projection and
    the priors."""

    features: int
    kernel: int = 3

    @nn.compact
    def __call__(self, x: Array) -> Array:
        start = zero_conv_init(self.kernel, x.shape[-1], self.features)
        p = {name: self.param(name, nn.initializers.zeros, value.shape) for name, value in start.items()}
        return zero_conv(x, p)


def zero_conv_init(k: int, c_in: int, c_out: int) -> dict:
    """The zero-initialised output conv: (conv(x) + bias) * exp(3 * logs)."""
    return {"kernel": jnp.zeros((k, k, c_in, c_out)), "bias": jnp.zeros((c_out,)), "logs": jnp.zeros((c_out,))}


def zero_conv(x: Array, p: dict) -> Array:
    """Always true float32: it gives the coupling's shift and scale (and the priors' mean and std)."""
    y = jax.lax.conv_general_dilated(
        x,
        p["kernel"],
        (1, 1),
        "SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=jax.lax.Precision.HIGHEST,
    )
    return (y + p["bias"]) * jnp.exp(3.0 * p["logs"])
