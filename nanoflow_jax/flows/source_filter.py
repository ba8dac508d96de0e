"""A time-varying all-pole source filter as an exact bijection between a waveform x and its excitation e.

Block b (samples b * hop .. b * hop + hop - 1) has a monic predictor A_b(z) = 1 + sum_k a_b[k] z^-k and a
gain g_b. The whitening direction is a causal FIR, parallel over samples:

    e[t] = (x[t] + sum_k a_b[k] x[t - k]) / g_b          (x before the start: the given state, or zero)

and its inverse the all-pole recurrence x[t] = g_b e[t] - sum_k a_b[k] x[t - k]. The Jacobian de/dx is
lower triangular with diagonal 1 / g_b, so log|de/dx| = -sum_t log g_b(t): the excitation's likelihood
minus that is the waveform's.

The recurrence runs blocked: within a block the coefficients are fixed, so its output is the response to
its input from a zero state plus a (hop, p) matrix times the state it starts in; both come from one scan
of `hop` steps over every block at once, and the states are then chained by a scan over the blocks. The
sequential depth is hop + blocks instead of T, on every backend; the arithmetic is the same recurrence.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def n_blocks(samples: int, hop: int) -> int:
    return -(-samples // hop)


def per_sample(v: Array, hop: int, samples: int) -> Array:
    """(B, blocks, ...) -> (B, samples, ...): each block's value repeated over its samples."""
    return jnp.repeat(v, hop, axis=1)[:, :samples]


def whiten(x: Array, a: Array, log_gain: Array, hop: int, state: Array | None = None) -> tuple[Array, Array]:
    """x (B, T), a (B, blocks, p), log_gain (B, blocks) with blocks >= ceil(T / hop); `state` (B, p) the
    samples before x, most recent first (default zeros) -> e (B, T), the per-sample log|de/dx| (B, T)."""
    b, t = x.shape
    p = a.shape[-1]
    past = jnp.zeros((b, p), x.dtype) if state is None else state
    padded = jnp.concatenate([jnp.flip(past, 1), x], axis=1)  # (B, p + T): x[t - k] = padded[p + t - k]
    a_t = per_sample(a, hop, t)
    pred = x
    for k in range(1, p + 1):
        pred = pred + a_t[..., k - 1] * padded[:, p - k : p - k + t]
    log_g = per_sample(log_gain, hop, t)
    return pred * jnp.exp(-log_g), -log_g


def colour(e: Array, a: Array, log_gain: Array, hop: int, state: Array | None = None) -> tuple[Array, Array]:
    """Inverse of `whiten`: e (B, T) -> x (B, T) and the state after it (B, p): x's last p samples, most
    recent first (to continue with the next samples). Needs hop >= p."""
    b, t = e.shape
    p = a.shape[-1]
    if hop < p:
        raise ValueError(f"the blocked recurrence needs hop >= the filter order, got hop {hop} < {p}")
    nb = n_blocks(t, hop)
    a = a[:, :nb]
    u = jnp.pad(e, ((0, 0), (0, nb * hop - t))).reshape(b, nb, hop) * jnp.exp(log_gain[:, :nb, None])
    # one scan over the hop positions of every block: column 0 is the zero-state response to u, columns
    # 1..p the zero-input responses to a unit state sample k (x[-k] = 1)
    hist0 = jnp.concatenate([jnp.zeros((b, nb, p, 1)), jnp.broadcast_to(jnp.eye(p), (b, nb, p, p))], axis=-1)

    def step(hist, u_n):  # hist (B, nb, p, 1 + p): the last p outputs, most recent first
        out = jnp.einsum("bnk,bnkc->bnc", -a, hist)
        out = out.at[..., 0].add(u_n)
        return jnp.concatenate([out[:, :, None], hist[:, :, :-1]], axis=2), out

    _, resp = jax.lax.scan(step, hist0.astype(e.dtype), jnp.moveaxis(u, 2, 0))  # (hop, B, nb, 1 + p)
    resp = jnp.moveaxis(resp, 0, 2)  # (B, nb, hop, 1 + p)
    zero_state, zero_input = resp[..., 0], resp[..., 1:]

    def chain(s, blk):  # s (B, p): the state a block starts in
        zs, zi = blk
        x_blk = zs + jnp.einsum("bhk,bk->bh", zi, s)
        return jnp.flip(x_blk[:, hop - p :], 1), s

    s0 = jnp.zeros((b, p), e.dtype) if state is None else state
    blocks = (jnp.moveaxis(zero_state, 1, 0), jnp.moveaxis(zero_input, 1, 0))
    _, starts = jax.lax.scan(chain, s0, blocks)
    x = zero_state + jnp.einsum("bnhk,bnk->bnh", zero_input, jnp.moveaxis(starts, 0, 1))
    x = x.reshape(b, nb * hop)
    full = jnp.concatenate([jnp.flip(s0, 1), x[:, :t]], axis=1)
    return x[:, :t], jnp.flip(full[:, -p:], 1)
