"""A linear map with a transpose of our choosing, as a primitive every JAX transformation understands.

`linear_op(fn, transpose, residuals, linear)` computes `fn(*residuals, *linear)`, a function linear in
`linear`; reverse mode transposes it with `transpose(*residuals, *cotangents)` -> the cotangents of
`linear`. Why not `jax.custom_derivatives.linear_call`: it has no batching rule in jax 0.10, so
`jax.jacfwd` (a vmap of forward mode) fails through it. Batching here vmaps both functions, with the
linear inputs moved to (or broadcast on) axis 0, so the transpose of the batched map is the batched
transpose. Forward mode applies the map to the tangents of `linear`; `residuals` take no tangent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

Array = jax.Array
_linear_p = Primitive("nanoflow_linear")
_linear_p.multiple_results = True


def linear_op(fn: Callable, transpose: Callable, residuals: Sequence[Array], linear: Sequence[Array]) -> list[Array]:
    """-> fn(*residuals, *linear) as a list of arrays (see the module docstring)."""
    return _linear_p.bind(*residuals, *linear, fn=_as_list(fn), transpose=_as_list(transpose), n_res=len(residuals))


def _as_list(f: Callable) -> Callable:
    def g(*a):
        out = f(*a)
        return list(out) if isinstance(out, (list, tuple)) else [out]

    return g


def _abstract_eval(*avals, fn, transpose, n_res):
    return [jax.core.ShapedArray(o.shape, o.dtype) for o in jax.eval_shape(fn, *avals)]


def _jvp(primals, tangents, *, fn, transpose, n_res):
    if any(type(t) is not ad.Zero for t in tangents[:n_res]):
        raise NotImplementedError("linear_op: the residuals of a linear map take no tangent")
    res, lin = primals[:n_res], primals[n_res:]
    outs = _linear_p.bind(*res, *lin, fn=fn, transpose=transpose, n_res=n_res)
    lin_t = [ad.instantiate_zeros(t) for t in tangents[n_res:]]
    return outs, _linear_p.bind(*res, *lin_t, fn=fn, transpose=transpose, n_res=n_res)


def _transpose(cts, *args, fn, transpose, n_res):
    res = args[:n_res]
    assert not any(ad.is_undefined_primal(r) for r in res), "linear_op: a residual cannot be transposed"
    outs = jax.eval_shape(fn, *res, *[a.aval for a in args[n_res:]])
    cts = [jnp.zeros(o.shape, o.dtype) if type(c) is ad.Zero else c for c, o in zip(cts, outs, strict=True)]
    return [None] * n_res + _linear_p.bind(*res, *cts, fn=transpose, transpose=fn, n_res=n_res)


def _batch(args, dims, *, fn, transpose, n_res):
    size = next(a.shape[d] for a, d in zip(args, dims, strict=True) if d is not None)
    res = [a if d is None else jnp.moveaxis(a, d, 0) for a, d in zip(args[:n_res], dims[:n_res], strict=True)]
    lin = [
        jnp.broadcast_to(a, (size, *a.shape)) if d is None else jnp.moveaxis(a, d, 0)
        for a, d in zip(args[n_res:], dims[n_res:], strict=True)
    ]
    axes = [None if d is None else 0 for d in dims[:n_res]] + [0] * len(lin)
    outs = _linear_p.bind(
        *res,
        *lin,
        fn=lambda *a: jax.vmap(fn, in_axes=axes)(*a),
        transpose=lambda *a: jax.vmap(transpose, in_axes=axes[:n_res] + [0] * (len(a) - n_res))(*a),
        n_res=n_res,
    )
    return outs, [0] * len(outs)


_linear_p.def_abstract_eval(_abstract_eval)
_linear_p.def_impl(lambda *args, **params: jax.jit(lambda *a: _linear_p.bind(*a, **params))(*args))
mlir.register_lowering(
    _linear_p, lambda ctx, *args, fn, transpose, n_res: mlir.lower_fun(fn, multiple_results=True)(ctx, *args)
)
ad.primitive_jvps[_linear_p] = _jvp
ad.primitive_transposes[_linear_p] = _transpose
batching.primitive_batchers[_linear_p] = _batch
