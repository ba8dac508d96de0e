"""Audio in rows: the 2-D layout the audio flows work in.

A waveform of T samples becomes G rows ("height") by W = T / G columns, column-major: column j holds the
G consecutive samples j*G .. j*G + G - 1. The flows are autoregressive along the rows and parallel across
the columns; each flow runs down the rows or up them (the official code flips the rows instead).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def to_rows(x: Array, n_groups: int) -> Array:
    """(B, T, ...) -> (B, G, T/G, ...) with x2d[b, i, j] = x[b, j*G + i]."""
    b, t = x.shape[:2]
    if t % n_groups:
        raise ValueError(f"length {t} is not a multiple of n_groups={n_groups}")
    x = x.reshape((b, t // n_groups, n_groups) + x.shape[2:])
    return jnp.swapaxes(x, 1, 2)


def from_rows(x2d: Array) -> Array:
    """Inverse of `to_rows`: (B, G, W, ...) -> (B, G*W, ...)."""
    b, g, w = x2d.shape[:3]
    return jnp.swapaxes(x2d, 1, 2).reshape((b, g * w) + x2d.shape[3:])


def flip_rows(x2d: Array) -> Array:
    """Reverse the order of the rows (axis 1)."""
    return jnp.flip(x2d, axis=1)


def shift_rows(x2d: Array, upward: Array | int) -> Array:
    """For `upward` = 0, row i receives row i-1 and row 0 a zero row, so an estimator that is causal down
    the rows sees only rows strictly above the one it parameterises; for 1 (may be a traced 0/1 scalar)
    the mirror image: row i receives row i+1 and the last row a zero row. Index arithmetic, no
    conditional."""
    pad = [(0, 0)] * x2d.ndim
    pad[1] = (1, 1)
    return jax.lax.dynamic_slice_in_dim(jnp.pad(x2d, pad), 2 * upward, x2d.shape[1], axis=1)
