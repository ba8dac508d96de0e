"""Element-wise coupling transforms: the invertible map a flow step applies to each sample, given the
parameters its estimator predicted from the samples before it.

Every coupling is a pair of pure functions over arrays whose last axis holds the per-element parameters:
``forward(x, p) -> (y, log|dy/dx|)`` and ``inverse(y, p) -> (x, log|dy/dx|)``; the log-derivative is
element-wise, so the flow sums it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax.numpy as jnp

from nanoflow_jax.flows import spline

Array = jnp.ndarray


@dataclasses.dataclass(frozen=True)
class Coupling:
    """An element-wise bijection with `n_params` parameters per element."""

    n_params: int
    forward: Callable[[Array, Array], tuple[Array, Array]]
    inverse: Callable[[Array, Array], tuple[Array, Array]]


def affine_forward(x: Array, p: Array) -> tuple[Array, Array]:
    log_s, t = p[..., 0], p[..., 1]
    return x * jnp.exp(log_s) + t, log_s


def affine_inverse(y: Array, p: Array) -> tuple[Array, Array]:
    log_s, t = p[..., 0], p[..., 1]
    return (y - t) * jnp.exp(-log_s), log_s


AFFINE = Coupling(2, affine_forward, affine_inverse)


def make_coupling(kind: str, bins: int = 32, tail_bound: float = 5.0) -> Coupling:
    """`kind` is "affine" (WaveFlow / NanoFlow) or "spline" (rational-quadratic, linear tails)."""
    if kind == "affine":
        return AFFINE
    if kind == "spline":
        return Coupling(
            spline.n_params(bins),
            lambda x, p: spline.forward(x, p, tail_bound),
            lambda y, p: spline.inverse(y, p, tail_bound),
        )
    raise ValueError(f"unknown coupling {kind!r}; expected 'affine' or 'spline'")
