"""Element-wise coupling transforms: the invertible map a flow step applies to each sample, given the
parameters its estimator predicted from the samples before it.

Every coupling is a pair of pure functions over arrays whose last axis holds the per-element parameters:
``forward(x, p) -> (y, log|dy/dx|)`` and ``inverse(y, p) -> (x, log|dx/dy|)``, each with its own
log-derivative (the inverse's is the forward's negated); it is element-wise, so the flow sums it. The audio
flows use "affine" or "spline", the image flows Glow's "sigmoid_affine".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
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
    return (y - t) * jnp.exp(-log_s), -log_s


def _sigmoid_scale(p: Array) -> tuple[Array, Array]:
    """(shift, scale): Glow's scale is sigmoid(raw + 2), in (0, 1) and near 0.88 at zero parameters."""
    return p[..., 0], jax.nn.sigmoid(p[..., 1] + 2.0)


def sigmoid_affine_forward(x: Array, p: Array) -> tuple[Array, Array]:
    shift, scale = _sigmoid_scale(p)
    return (x + shift) * scale, jnp.log(scale)


def sigmoid_affine_inverse(y: Array, p: Array) -> tuple[Array, Array]:
    shift, scale = _sigmoid_scale(p)
    return y / scale - shift, -jnp.log(scale)


AFFINE = Coupling(2, affine_forward, affine_inverse)
SIGMOID_AFFINE = Coupling(2, sigmoid_affine_forward, sigmoid_affine_inverse)


def make_coupling(kind: str, bins: int = 32, tail_bound: float = 5.0) -> Coupling:
    """`kind` is "affine" (WaveFlow / NanoFlow), "spline" (rational-quadratic, linear tails) or
    "sigmoid_affine" (Glow: shift, then a sigmoid scale)."""
    if kind == "affine":
        return AFFINE
    if kind == "sigmoid_affine":
        return SIGMOID_AFFINE
    if kind == "spline":
        return Coupling(
            spline.n_params(bins),
            lambda x, p: spline.forward(x, p, tail_bound),
            lambda y, p: spline.inverse(y, p, tail_bound),
        )
    raise ValueError(f"unknown coupling {kind!r}; expected 'affine', 'spline' or 'sigmoid_affine'")
