"""The precision policy: one place that says what every matmul and convolution computes in.

- float32: true float32 on every backend: float32 operands, HIGHEST precision (off CPU the default is
  TF32 on NVIDIA and one bfloat16 pass on TPU).
- tensorfloat32: float32 operands at HIGH precision (TF32 on NVIDIA, 3-pass bfloat16 on TPU): opt-in.
- bfloat16 / float16: operands rounded to that type, products accumulated and returned in float32
  (`preferred_element_type`); the backward matmuls and convolutions take reduced-precision operands
  too (JAX's own transposes would run them in float32). Everything else (residual stream, skip sum,
  gates, projection heads, coupling, log-det, loss) stays float32 in the models.

Training in float16 also needs loss scaling (`nanoflow_jax.train.step`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero

from nanoflow_jax.models.linear_op import linear_op

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class Precision:
    name: str
    operand_dtype: Any
    lax_precision: lax.Precision

    @property
    def reduced(self) -> bool:
        """Operands narrower than float32: the backward pass needs its own matmuls."""
        return jnp.dtype(self.operand_dtype) != jnp.float32

    def operand(self, x: Array) -> Array:
        return x.astype(self.operand_dtype)

    def dot(self, x: Array, w: Array) -> Array:
        """x (..., K) @ w (K, N) -> (..., N) float32."""
        if self.reduced:
            return _reduced_dot(x, w, self)
        return _dot(x, w, self)


POLICIES = {
    "float32": Precision("float32", jnp.float32, lax.Precision.HIGHEST),
    "tensorfloat32": Precision("tensorfloat32", jnp.float32, lax.Precision.HIGH),
    "bfloat16": Precision("bfloat16", jnp.bfloat16, lax.Precision.DEFAULT),
    "float16": Precision("float16", jnp.float16, lax.Precision.DEFAULT),
}


def precision_policy(dtype: Any) -> Precision:
    """A policy from its name ("float32", "tensorfloat32", "bfloat16", "float16"), a Precision, or the
    operand dtype (jnp.float32, jnp.bfloat16, jnp.float16)."""
    if isinstance(dtype, Precision):
        return dtype
    if isinstance(dtype, str):
        if dtype not in POLICIES:
            raise ValueError(f"precision must be one of {', '.join(POLICIES)}, got {dtype!r}")
        return POLICIES[dtype]
    name = jnp.dtype(dtype).name
    if name not in POLICIES:
        raise ValueError(f"compute dtype must be float32, bfloat16 or float16, got {name}")
    return POLICIES[name]


def _dot(x: Array, w: Array, p: Precision) -> Array:
    dims = (((x.ndim - 1,), (0,)), ((), ()))
    return lax.dot_general(
        p.operand(x), p.operand(w), dims, precision=p.lax_precision, preferred_element_type=jnp.float32
    )


def bilinear(
    f: Callable[[Array, Array], Array],
    x_cotangent: Callable[[Array, Array], Array],
    w_cotangent: Callable[[Array, Array], Array],
    keep: Callable[[Array], Array] = lambda a: a,
) -> Callable[[Array, Array], Array]:
    """`f(x, w)`, linear in x and linear in w (a matmul, a convolution), differentiable in forward and
    reverse mode, whose reverse-mode products are the given ones: `x_cotangent(w, g)` -> dx and
    `w_cotangent(x, g)` -> dw, with x and w as `keep` stores them for the backward pass (the narrow
    operands under reduced precision). Forward mode runs f on the tangents.

    Why not `jax.custom_vjp`: it has no forward mode. Here the tangent map is `f` on the tangents wrapped
    in `linear_op`, whose transpose is the explicit product, so JAX's own reverse mode (the transpose of
    the forward one) uses it, and `jax.jacfwd` batches it."""

    @jax.custom_jvp
    def call(x, w):
        return f(x, w)

    def jvp(primals, tangents):
        x, w = primals
        dx, dw = tangents
        y = call(x, w)  # (not f: a higher derivative goes through this rule again)
        dy = jnp.zeros(y.shape, y.dtype)
        if not isinstance(dx, SymbolicZero):
            to_x = lambda k, g: x_cotangent(k, g).astype(dx.dtype)  # noqa: E731
            dy = dy + linear_op(lambda k, d: f(d, k), to_x, [keep(w)], [dx])[0]
        if not isinstance(dw, SymbolicZero):
            to_w = lambda k, g: w_cotangent(k, g).astype(dw.dtype)  # noqa: E731
            dy = dy + linear_op(f, to_w, [keep(x)], [dw])[0]
        return y, dy

    call.defjvp(jvp, symbolic_zeros=True)
    return call


def _reduced_dot(x: Array, w: Array, p: Precision) -> Array:
    """`_dot` whose backward matmuls read the narrow operands and the narrow cotangent."""
    lead = tuple(range(x.ndim - 1))

    def dx(w, g):
        return _dot(g, w.T, p)

    def dw(x, g):
        return lax.dot_general(
            x, p.operand(g), ((lead, lead), ((), ())), precision=p.lax_precision, preferred_element_type=jnp.float32
        )

    return bilinear(lambda a, b: _dot(a, b, p), dx, dw, p.operand)(x, w)
