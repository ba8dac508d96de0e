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
import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

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


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _reduced_dot(x: Array, w: Array, p: Precision) -> Array:
    return _dot(x, w, p)


def dtype_marker(x: Array) -> Array:
    """An empty array of x's dtype: a residual that remembers the type a cotangent must be returned in."""
    return jnp.zeros((0,), x.dtype)


def _reduced_dot_fwd(x, w, p):
    return _dot(x, w, p), (p.operand(x), p.operand(w), dtype_marker(x), dtype_marker(w))


def _reduced_dot_bwd(p, res, g):
    x, w, x_dtype, w_dtype = res
    x_dtype, w_dtype, g = x_dtype.dtype, w_dtype.dtype, p.operand(g)
    dx = _dot(g, w.T, p)
    lead = tuple(range(x.ndim - 1))
    dw = lax.dot_general(x, g, ((lead, lead), ((), ())), precision=p.lax_precision, preferred_element_type=jnp.float32)
    return dx.astype(x_dtype), dw.astype(w_dtype)


_reduced_dot.defvjp(_reduced_dot_fwd, _reduced_dot_bwd)
