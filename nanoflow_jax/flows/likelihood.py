"""Likelihoods of a flow's output under its standard-normal base: the official audio loss and bits per
dimension."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

Array = jax.Array


def nll(z: Array, logdet: Array, sigma: float = 1.0) -> Array:
    """Mean negative log-likelihood per element in nats under N(0, sigma^2), including the
    0.5 * log(2 pi) constant: the official WaveFlow / NanoFlow loss (sigma = 1).

    z: (B, ...) latent; logdet: (B,) log|det dz/dx| per example (or their sum)."""
    z = z.astype(jnp.float32)
    return (jnp.sum(_gaussian_nll(z, sigma)) - jnp.sum(logdet)) / z.size


def _gaussian_nll(z: Array, sigma: float = 1.0) -> Array:
    """-log N(z; 0, sigma^2) element by element, in nats."""
    return 0.5 * (z / sigma) ** 2 + 0.5 * math.log(2.0 * math.pi) + math.log(sigma)


def nll_per_item(z: Array, logdet: Array, lengths: Array | None = None) -> Array:
    """(B,) negative log-likelihood per element of each item in nats under N(0, 1), the same arithmetic as
    `nll`; with `lengths` (B,), only each item's first lengths[b] elements of z (B, T) count (padding
    masked; its log-det must already leave the padding out)."""
    z = z.astype(jnp.float32).reshape(z.shape[0], -1)
    per_elem = _gaussian_nll(z)
    if lengths is None:
        return (jnp.sum(per_elem, axis=1) - logdet) / z.shape[1]
    valid = jnp.arange(z.shape[1])[None] < lengths[:, None]
    return (jnp.sum(jnp.where(valid, per_elem, 0.0), axis=1) - logdet) / jnp.maximum(lengths, 1)


def bits_per_dim(log_likelihood: Array, dims: int) -> Array:
    """Log-likelihood in nats of `dims` dimensions -> bits per dimension."""
    return -log_likelihood / (math.log(2.0) * dims)
