"""The image flow algebra (multi-scale Glow), as pure functions over NHWC arrays.

Each transform returns its output and its own log-determinant per example, (B,): the inverse's is the
forward's negated. Channel conventions follow the official code: a 2x2 squeeze puts pixel (i, j) of each
2x2 patch at channel c * 4 + i * 2 + j; the coupling's shift and raw scale are the even and odd channels
of the estimator's output ("cross", `coupling_pairs`); a split prior's mean and log-std too. The coupling
itself is `flows.coupling`'s "sigmoid_affine", shared with the audio flows' protocol.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

Array = jnp.ndarray
LOG_2PI = math.log(2 * math.pi)
HIGHEST = jax.lax.Precision.HIGHEST  # the 1x1 convolutions are small: true float32 on every backend


def squeeze2x2(x: Array) -> Array:
    """(B, H, W, C) -> (B, H/2, W/2, 4C)."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 5, 2, 4)
    return x.reshape(b, h // 2, w // 2, c * 4)


def unsqueeze2x2(x: Array) -> Array:
    """Inverse of `squeeze2x2`."""
    b, h, w, c4 = x.shape
    c = c4 // 4
    x = x.reshape(b, h, w, c, 2, 2).transpose(0, 1, 4, 2, 5, 3)
    return x.reshape(b, h * 2, w * 2, c)


def _pixels(x: Array) -> int:
    return x.shape[1] * x.shape[2]


# -- ActNorm: per-channel affine, initialised from data --------------------------------------------
def actnorm_stats(x: Array, scale: float = 1.0) -> dict:
    """The data-dependent initialisation: output zero mean and `scale` std per channel on `x`."""
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(x, axis=axes)
    std = jnp.sqrt(jnp.mean((x - mean) ** 2, axis=axes))
    return {"bias": -mean, "logs": jnp.log(scale / (std + 1e-6))}


def actnorm_forward(x: Array, p: dict) -> tuple[Array, Array]:
    y = (x + p["bias"]) * jnp.exp(p["logs"])
    return y, jnp.full((x.shape[0],), _pixels(x) * jnp.sum(p["logs"]))


def actnorm_inverse(y: Array, p: dict) -> tuple[Array, Array]:
    x = y * jnp.exp(-p["logs"]) - p["bias"]
    return x, jnp.full((y.shape[0],), -_pixels(y) * jnp.sum(p["logs"]))


# -- invertible 1x1 convolution ----------------------------------------------------------------------
def lu_init(rng: jax.Array, c: int) -> tuple[dict, dict]:
    """A random rotation in LU form: (trainable {lower, upper, log_s}, fixed {perm, sign_s})."""
    w = jnp.linalg.qr(jax.random.normal(rng, (c, c)))[0]
    perm, lower, upper = jax.scipy.linalg.lu(w)
    s = jnp.diag(upper)
    params = {"lower": lower, "upper": jnp.triu(upper, 1), "log_s": jnp.log(jnp.abs(s))}
    return params, {"perm": perm, "sign_s": jnp.sign(s)}


def lu_weight(p: dict, fixed: dict) -> Array:
    """W = P (L + I) (U + diag(sign * exp(log_s))), with L, U strictly triangular."""
    c = p["log_s"].shape[-1]
    lower = jnp.tril(p["lower"], -1) + jnp.eye(c)
    upper = jnp.triu(p["upper"], 1) + jnp.diag(fixed["sign_s"] * jnp.exp(p["log_s"]))
    return jnp.matmul(jnp.matmul(fixed["perm"], lower, precision=HIGHEST), upper, precision=HIGHEST)


def invconv_weight(p: dict, fixed: dict | None) -> tuple[Array, Array]:
    """-> (W, log|det W|) for the LU form (`fixed` given) or a plain matrix {"weight"}."""
    if "weight" in p:
        return p["weight"], jnp.linalg.slogdet(p["weight"])[1]
    return lu_weight(p, fixed), jnp.sum(p["log_s"])


def invconv_forward(x: Array, w: Array, logdet_w: Array) -> tuple[Array, Array]:
    return jnp.matmul(x, w.T, precision=HIGHEST), jnp.full((x.shape[0],), _pixels(x) * logdet_w)


def invconv_inverse(y: Array, w: Array, logdet_w: Array) -> tuple[Array, Array]:
    return jnp.matmul(y, jnp.linalg.inv(w).T, precision=HIGHEST), jnp.full((y.shape[0],), -_pixels(y) * logdet_w)


def coupling_pairs(h: Array) -> Array:
    """Estimator output (..., 2c) -> the coupling's (..., c, 2) parameters: (shift, raw scale) are its
    even and odd channels."""
    return h.reshape(h.shape[:-1] + (h.shape[-1] // 2, 2))


# -- priors ------------------------------------------------------------------------------------------
def gaussian_logp(x: Array, mean: Array, logs: Array) -> Array:
    """Sum over all but the batch axis of log N(x; mean, exp(logs)^2)."""
    lp = -0.5 * (LOG_2PI + 2.0 * logs + (x - mean) ** 2 * jnp.exp(-2.0 * logs))
    return jnp.sum(lp, axis=tuple(range(1, x.ndim)))


def bin_floor(images: Any, n_bits: int = 8) -> Any:
    """uint8-valued images -> the lower edge of each value's bin in [-0.5, 0.5), float32. Operators only,
    so NumPy arrays stay NumPy (the host-side loader) and JAX arrays stay JAX."""
    return (images.astype("float32") // 2 ** (8 - n_bits)) / 2**n_bits - 0.5


def dequantize(images: Array, rng: jax.Array, n_bits: int = 8) -> Array:
    """uint8-valued images (B, H, W, C) -> x in [-0.5, 0.5): each value's bin plus uniform noise over it
    (the objective's -log(n_bins) per dimension is in `ImageFlow.bits_per_dim`)."""
    x = bin_floor(images, n_bits)
    return x + jax.random.uniform(rng, x.shape, jnp.float32, 0.0, 1.0 / 2**n_bits)
