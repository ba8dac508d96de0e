"""Stride-1 2-D convolutions of the estimators (NHWC, HWIO kernels), each backend's fastest form, chosen
when the program is lowered (`platform.on_platform`).

- Accelerators (cuda, rocm, tpu): `lax.conv_general_dilated` with native dilation, forward and backward
  (cuDNN's own input- and weight-gradient convolutions): JAX's transposes in float32, and the same
  convolutions with narrow operands under reduced precision.
- CPU: a width dilation d becomes d interleaved phases moved to the batch axis (XLA's CPU convolution is
  slower dilated), and the gradient is written out: the input gradient as a forward-style convolution,
  the kernel gradient as one matmul per tap (XLA's CPU backend runs the derived convolutions far slower
  inside the flow scan). Figures: bench/RESULTS.md.

The convolution is a `jax.custom_vjp`, so it has reverse mode only; `autodiff_convs()` switches to the
plain differentiable form for forward-mode checks (jax.jacfwd in the tests).
"""

from __future__ import annotations

import contextlib
import functools
import threading

import jax
import jax.numpy as jnp
from jax import lax

from nanoflow_jax.models.platform import on_platform
from nanoflow_jax.models.precision import Precision, dtype_marker

Array = jax.Array
Padding = tuple[tuple[int, int], tuple[int, int]]
NHWC = ("NHWC", "HWIO", "NHWC")
_state = threading.local()


@contextlib.contextmanager
def autodiff_convs():
    """Within this context the convolutions are plain JAX ops (forward and reverse mode on every
    backend, slower gradients on CPU): for jax.jvp / jax.jacfwd."""
    before = getattr(_state, "autodiff", False)
    _state.autodiff = True
    try:
        yield
    finally:
        _state.autodiff = before


def _conv(x: Array, w: Array, padding: Padding, dilation: tuple[int, int], p: Precision) -> Array:
    return lax.conv_general_dilated(
        p.operand(x),
        p.operand(w),
        (1, 1),
        padding,
        rhs_dilation=dilation,
        dimension_numbers=NHWC,
        precision=p.lax_precision,
        preferred_element_type=jnp.float32,
    )


def conv2d(x: Array, w: Array, padding: Padding, dilation: tuple[int, int], p: Precision) -> Array:
    """x (B, H, W, Cin) * w (kh, kw, Cin, Cout) with static `padding` ((top, bottom), (left, right)) that
    keeps H and W, kernel `dilation` (dh, dw) -> (B, H, W, Cout) float32."""
    if getattr(_state, "autodiff", False):
        return _conv(x, w, padding, dilation, p)
    return _conv2d(x, w, padding, dilation, p)


def causal_conv2d(x: Array, w: Array, dilation: tuple[int, int], p: Precision, upward: Array | int = 0) -> Array:
    """Causal along H, "same" along W: down the rows (all padding on top) for `upward` = 0, up the rows
    for 1. `upward` may be traced (each flow of a scan runs its own way): the input is padded on both
    sides and the window picked by index arithmetic, the kernel's rows reversed by a select; no
    conditional, and the same convolution either way."""
    (kh, kw), (dh, dw) = w.shape[:2], dilation
    reach, width_pad = dh * (kh - 1), (dw * (kw - 1) // 2,) * 2
    if isinstance(upward, int):
        w = jnp.flip(w, 0) if upward else w
        return conv2d(x, w, ((0, reach) if upward else (reach, 0), width_pad), dilation, p)
    padded = jnp.pad(x, ((0, 0), (reach, reach), (0, 0), (0, 0)))
    window = lax.dynamic_slice_in_dim(padded, upward * reach, x.shape[1] + reach, axis=1)
    w = jnp.where(upward == 1, jnp.flip(w, 0), w)
    return conv2d(window, w, ((0, 0), width_pad), dilation, p)


def same_conv2d(x: Array, w: Array, p: Precision) -> Array:
    """Odd square kernel, "same" padding, no dilation."""
    k = w.shape[0]
    return conv2d(x, w, ((k // 2, k // 2),) * 2, (1, 1), p)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv2d(x, w, padding, dilation, p):
    return on_platform(
        cpu=lambda x, w: [_cpu_forward(x, w, padding, dilation, p)],
        default=lambda x, w: [_conv(x, w, padding, dilation, p)],
    )(x, w)[0]


def _conv2d_fwd(x, w, padding, dilation, p):
    # the operands are kept as the convolution reads them (narrow under reduced precision)
    return _conv2d(x, w, padding, dilation, p), (p.operand(x), p.operand(w), dtype_marker(x), dtype_marker(w))


def _conv2d_bwd(padding, dilation, p, res, g):
    x, w, x_dtype, w_dtype = res
    dx, dw = on_platform(
        cpu=lambda x, w, g: [
            d.astype(jnp.float32) for d in jax.vjp(lambda a, b: _cpu_forward(a, b, padding, dilation, p), x, w)[1](g)
        ],
        default=lambda x, w, g: _native_backward(x, w, g, padding, dilation, p),
    )(x, w, g)
    return dx.astype(x_dtype.dtype), dw.astype(w_dtype.dtype)


_conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)


# -- accelerators ----------------------------------------------------------------------------------------
def _native_backward(x, w, g, padding, dilation, p: Precision):
    """Gradients of `_conv` with respect to x and w (as they were read: narrow under reduced precision)."""
    if not p.reduced:  # JAX's own transposes keep the precision
        (dx,) = jax.linear_transpose(lambda a: _conv(a, w, padding, dilation, p), x)(g)
        (dw,) = jax.linear_transpose(lambda b: _conv(x, b, padding, dilation, p), w)(g)
        return dx, dw
    # the same convolutions as JAX's transposes, but on narrow operands with float32 results
    (top, bottom), (left, right) = padding
    (kh, kw), (dh, dwid) = w.shape[:2], dilation
    xc, wc, gc = x, w, p.operand(g)
    common = dict(precision=p.lax_precision, preferred_element_type=jnp.float32)
    back_pad = ((dh * (kh - 1) - top, dh * (kh - 1) - bottom), (dwid * (kw - 1) - left, dwid * (kw - 1) - right))
    flipped = jnp.flip(wc, (0, 1))
    dx = lax.conv_general_dilated(
        gc, flipped, (1, 1), back_pad, rhs_dilation=dilation, dimension_numbers=("NHWC", "HWOI", "NHWC"), **common
    )
    dk = lax.conv_general_dilated(xc, gc, dilation, padding, dimension_numbers=("CHWN", "IHWO", "HWNC"), **common)
    return dx, dk


# -- CPU -----------------------------------------------------------------------------------------------
def _cpu_forward(x, w, padding, dilation, p: Precision):
    """Width dilation as phases on the batch axis, then an undilated-width convolution whose gradient is
    `_explicit_conv`'s."""
    (dh, dw), kw = dilation, w.shape[1]
    if dw == 1:
        return _explicit_conv(x, w, padding, dh, p)
    (top, bottom), (left, right) = padding
    assert left == right == dw * (kw - 1) // 2, "phases need 'same' padding along the width"
    inner = ((top, bottom), ((kw - 1) // 2,) * 2)
    b, h, width, c = x.shape
    padded = -(-width // dw) * dw
    x = jnp.pad(x, ((0, 0), (0, 0), (0, padded - width), (0, 0)))
    x = x.reshape(b, h, padded // dw, dw, c).transpose(0, 3, 1, 2, 4).reshape(b * dw, h, padded // dw, c)
    y = _explicit_conv(x, w, inner, dh, p)
    h_out = y.shape[1]
    y = y.reshape(b, dw, h_out, padded // dw, -1).transpose(0, 2, 3, 1, 4).reshape(b, h_out, padded, -1)
    return y[:, :, :width]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _explicit_conv(x, w, padding, dh, p):
    return _conv(x, w, padding, (dh, 1), p)


def _explicit_conv_fwd(x, w, padding, dh, p):
    return _explicit_conv(x, w, padding, dh, p), (p.operand(x), p.operand(w), dtype_marker(x), dtype_marker(w))


def _explicit_conv_bwd(padding, dh, p, res, g):
    x, w, x_dtype, w_dtype = res
    kh, kw = w.shape[:2]
    (top, bottom), (left, right) = padding
    g = p.operand(g)
    # input gradient: the same convolution with the kernel flipped and transposed, padded the other way
    reach = dh * (kh - 1)
    back = ((reach - top, reach - bottom), (kw - 1 - left, kw - 1 - right))
    dx = _conv(g, jnp.flip(w, (0, 1)).swapaxes(2, 3), back, (dh, 1), p)
    h, width = g.shape[1], g.shape[2]
    xp = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    g2 = g.reshape(-1, g.shape[-1])

    def tap(i, j):  # kernel gradient of one tap: (rows, Cin)^T @ (rows, Cout)
        xs = xp[:, i * dh : i * dh + h, j : j + width].reshape(-1, x.shape[-1])
        dims = (((0,), (0,)), ((), ()))
        return lax.dot_general(xs, g2, dims, precision=p.lax_precision, preferred_element_type=jnp.float32)

    dw = jnp.stack([jnp.stack([tap(i, j) for j in range(kw)]) for i in range(kh)])
    return dx.astype(x_dtype.dtype), dw.astype(w_dtype.dtype)


_explicit_conv.defvjp(_explicit_conv_fwd, _explicit_conv_bwd)
