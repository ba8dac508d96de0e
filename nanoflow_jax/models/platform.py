"""Code chosen per backend when a program is lowered, not when Python runs. `on_platform(cpu=f,
default=g)(*args)` computes `f(*args)` in programs lowered for CPU and `g(*args)` in programs lowered for
anything else (cuda, rocm, tpu; `cuda=h` gives NVIDIA GPUs their own form), so `jax.export(...,
platforms=("cuda",))` on a CPU host gets the accelerator form. It is a primitive with one lowering rule per
platform: a program lowered for one platform holds only that platform's code, with no conditional
(`lax.platform_dependent` leaves a `stablehlo.case` on a constant in it); only a multi-platform export
selects at run time.

Both functions take and return flat sequences of arrays of the same shapes and dtypes. The primitive has
no derivative of its own: differentiate around it with `jax.custom_vjp` (the forward and backward
computations each pick their platform form).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from jax.extend.core import Primitive
from jax.interpreters import batching, mlir

_select_p = Primitive("nanoflow_on_platform")
_select_p.multiple_results = True


def _abstract_eval(*avals, cpu, default, cuda=None):
    outs = [(o.shape, o.dtype) for o in jax.eval_shape(default, *avals)]
    if outs != [(o.shape, o.dtype) for o in jax.eval_shape(cpu, *avals)]:
        raise TypeError(f"on_platform: the CPU and default forms disagree on their outputs ({outs} for default)")
    return [jax.core.ShapedArray(shape, dtype) for shape, dtype in outs]


def _lowering(which: str):
    def rule(ctx, *args, cpu, default, cuda=None):
        fn = {"cpu": cpu, "cuda": cuda or default}.get(which, default)
        return mlir.lower_fun(fn, multiple_results=True)(ctx, *args)

    return rule


def _batch(args, dims, *, cpu, default, cuda=None):
    args = [a if d is None else jnp.moveaxis(a, d, 0) for a, d in zip(args, dims, strict=True)]
    axes = [None if d is None else 0 for d in dims]
    vmapped = lambda f: None if f is None else (lambda *a: jax.vmap(f, in_axes=axes)(*a))  # noqa: E731
    outs = _select_p.bind(*args, cpu=vmapped(cpu), default=vmapped(default), cuda=vmapped(cuda))
    return outs, [0] * len(outs)


_select_p.def_abstract_eval(_abstract_eval)
_select_p.def_impl(
    lambda *args, cpu, default, cuda=None: jax.jit(lambda *a: _select_p.bind(*a, cpu=cpu, default=default, cuda=cuda))(
        *args
    )
)
mlir.register_lowering(_select_p, _lowering("default"))
mlir.register_lowering(_select_p, _lowering("cpu"), platform="cpu")
mlir.register_lowering(_select_p, _lowering("cuda"), platform="cuda")
batching.primitive_batchers[_select_p] = _batch


def on_platform(cpu: Callable, default: Callable, cuda: Callable | None = None) -> Callable[..., list]:
    """-> `fn(*arrays) -> list of arrays`: `cpu` lowered for CPU, `cuda` (if given) for NVIDIA GPUs,
    `default` for every other platform."""

    def as_list(f: Callable | None) -> Callable | None:
        return None if f is None else (lambda *a: list(f(*a)))

    def fn(*args: jax.Array) -> Sequence[jax.Array]:
        return _select_p.bind(*args, cpu=as_list(cpu), default=as_list(default), cuda=as_list(cuda))

    return fn
