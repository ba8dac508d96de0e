"""Monotone rational-quadratic spline on [-B, B] with identity (linear) tails outside it.

Parameters per element: `bins` unnormalised widths, `bins` unnormalised heights and `bins - 1` unnormalised
interior knot derivatives. All-zero parameters give the identity map, so a zero-initialised projection
starts the flow at the identity, as the affine coupling does.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

Array = jnp.ndarray

MIN_BIN = 1e-3
MIN_DERIVATIVE = 1e-3
# softplus(_DERIV_SHIFT) + MIN_DERIVATIVE == 1: zero parameters give unit slopes (identity).
_DERIV_SHIFT = math.log(math.expm1(1.0 - MIN_DERIVATIVE))


def n_params(bins: int) -> int:
    return 3 * bins - 1


def _knots(p: Array, tail_bound: float):
    bins = (p.shape[-1] + 1) // 3
    uw, uh, ud = p[..., :bins], p[..., bins : 2 * bins], p[..., 2 * bins :]

    def edges(u):
        size = MIN_BIN + (1.0 - MIN_BIN * bins) * jax.nn.softmax(u, axis=-1)
        cum = jnp.cumsum(size, axis=-1)
        cum = jnp.concatenate([jnp.zeros_like(cum[..., :1]), cum], axis=-1)
        cum = 2.0 * tail_bound * cum - tail_bound
        # pin the ends exactly so that the tails join without a gap
        cum = cum.at[..., 0].set(-tail_bound).at[..., -1].set(tail_bound)
        return cum, cum[..., 1:] - cum[..., :-1]

    xk, w = edges(uw)
    yk, h = edges(uh)
    d = MIN_DERIVATIVE + jax.nn.softplus(ud + _DERIV_SHIFT)
    ones = jnp.ones_like(d[..., :1])
    d = jnp.concatenate([ones, d, ones], axis=-1)
    return xk, w, yk, h, d


def _gather(a: Array, idx: Array) -> Array:
    return jnp.take_along_axis(a, idx[..., None], axis=-1)[..., 0]


def _bin(knots: Array, v: Array) -> Array:
    inner = knots[..., 1:-1]
    return jnp.sum(v[..., None] >= inner, axis=-1)


def forward(x: Array, p: Array, tail_bound: float) -> tuple[Array, Array]:
    xk, w, yk, h, d = _knots(p, tail_bound)
    inside = jnp.abs(x) < tail_bound
    xc = jnp.clip(x, -tail_bound, tail_bound)
    k = _bin(xk, xc)
    x0, wk, y0, hk = _gather(xk, k), _gather(w, k), _gather(yk, k), _gather(h, k)
    d0, d1 = _gather(d, k), _gather(d[..., 1:], k)
    s = hk / wk
    th = (xc - x0) / wk
    tt = th * (1.0 - th)
    den = s + (d1 + d0 - 2.0 * s) * tt
    y = y0 + hk * (s * th**2 + d0 * tt) / den
    dnum = s**2 * (d1 * th**2 + 2.0 * s * tt + d0 * (1.0 - th) ** 2)
    logdet = jnp.log(dnum) - 2.0 * jnp.log(den)
    return jnp.where(inside, y, x), jnp.where(inside, logdet, 0.0)


def inverse(y: Array, p: Array, tail_bound: float) -> tuple[Array, Array]:
    """-> (x, log|dx/dy|), the inverse's own log-derivative."""
    xk, w, yk, h, d = _knots(p, tail_bound)
    inside = jnp.abs(y) < tail_bound
    yc = jnp.clip(y, -tail_bound, tail_bound)
    k = _bin(yk, yc)
    x0, wk, y0, hk = _gather(xk, k), _gather(w, k), _gather(yk, k), _gather(h, k)
    d0, d1 = _gather(d, k), _gather(d[..., 1:], k)
    s = hk / wk
    dy = yc - y0
    bend = d1 + d0 - 2.0 * s
    a = hk * (s - d0) + dy * bend
    b = hk * d0 - dy * bend
    c = -s * dy
    disc = jnp.maximum(b**2 - 4.0 * a * c, 0.0)
    th = (2.0 * c) / (-b - jnp.sqrt(disc))
    x = x0 + th * wk
    tt = th * (1.0 - th)
    den = s + bend * tt
    dnum = s**2 * (d1 * th**2 + 2.0 * s * tt + d0 * (1.0 - th) ** 2)
    log_dydx = jnp.log(dnum) - 2.0 * jnp.log(den)
    return jnp.where(inside, x, y), jnp.where(inside, -log_dydx, 0.0)
