"""Stride-1 2-D convolutions of the estimators (NHWC, HWIO kernels), each backend's fastest form, chosen
when the program is lowered (`platform.on_platform`).

- Accelerators (cuda, rocm, tpu): `lax.conv_general_dilated` with native dilation, forward and backward
  (cuDNN's own input- and weight-gradient convolutions): JAX's transposes in float32, and the same
  convolutions with narrow operands under reduced precision.
- CPU: a width dilation d becomes d interleaved phases moved to the batch axis (XLA's CPU convolution is
  slower dilated), and the gradient is written out: the input gradient as a forward-style convolution,
  the kernel gradient as one matmul per tap (XLA's CPU backend runs the derived convolutions far slower
  inside the flow scan). Figures: bench/RESULTS.md.

Each convolution is a `precision.bilinear`: forward mode (jax.jvp, jax.jacfwd) runs the convolution on
the tangents, and reverse mode uses the explicit products above.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from nanoflow_jax.models.platform import on_platform
from nanoflow_jax.models.precision import Precision, bilinear

Array = jax.Array
Padding = tuple[tuple[int, int], tuple[int, int]]
NHWC = ("NHWC", "HWIO", "NHWC")


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
    x_like = jax.ShapeDtypeStruct(x.shape, p.operand_dtype)
    w_like = jax.ShapeDtypeStruct(w.shape, p.operand_dtype)

    def forward(x, w):
        return on_platform(
            cpu=lambda x, w: [_cpu_forward(x, w, padding, dilation, p)],
            default=lambda x, w: [_conv(x, w, padding, dilation, p)],
        )(x, w)[0]

    def cpu_cotangent(x, w, g, argnum):  # the CPU form's own reverse mode (its explicit products)
        _, pullback = jax.vjp(lambda a, b: _cpu_forward(a, b, padding, dilation, p), x, w)
        return pullback(g)[argnum].astype(jnp.float32)

    def x_cotangent(w, g):
        return on_platform(
            cpu=lambda w, g: [cpu_cotangent(jnp.zeros(x_like.shape, x_like.dtype), w, g, 0)],
            default=lambda w, g: [_native_x_cotangent(x_like, w, g, padding, dilation, p)],
        )(w, g)[0]

    def w_cotangent(x, g):
        return on_platform(
            cpu=lambda x, g: [cpu_cotangent(x, jnp.zeros(w_like.shape, w_like.dtype), g, 1)],
            default=lambda x, g: [_native_w_cotangent(x, w_like, g, padding, dilation, p)],
        )(x, g)[0]

    return bilinear(forward, x_cotangent, w_cotangent, p.operand)(x, w)


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


# -- accelerators ----------------------------------------------------------------------------------------
def _native_x_cotangent(x_like, w, g, padding, dilation, p: Precision):
    """The input gradient of `_conv` (w as it was read: narrow under reduced precision)."""
    if not p.reduced:  # JAX's own transpose keeps the precision
        return jax.linear_transpose(lambda a: _conv(a, w, padding, dilation, p), x_like)(g)[0]
    # the convolution JAX's transpose runs, on narrow operands with a float32 result
    (top, bottom), (left, right) = padding
    (kh, kw), (dh, dwid) = w.shape[:2], dilation
    back_pad = ((dh * (kh - 1) - top, dh * (kh - 1) - bottom), (dwid * (kw - 1) - left, dwid * (kw - 1) - right))
    return lax.conv_general_dilated(
        p.operand(g),
        jnp.flip(w, (0, 1)),
        (1, 1),
        back_pad,
        rhs_dilation=dilation,
        dimension_numbers=("NHWC", "HWOI", "NHWC"),
        precision=p.lax_precision,
        preferred_element_type=jnp.float32,
    )


def _native_w_cotangent(x, w_like, g, padding, dilation, p: Precision):
    """The kernel gradient of `_conv` (x as it was read)."""
    if not p.reduced:
        return jax.linear_transpose(lambda b: _conv(x, b, padding, dilation, p), w_like)(g)[0]
    common = dict(precision=p.lax_precision, preferred_element_type=jnp.float32)
    return lax.conv_general_dilated(
        x, p.operand(g), dilation, padding, dimension_numbers=("CHWN", "IHWO", "HWNC"), **common
    )


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


def _explicit_conv(x, w, padding, dh, p: Precision):
    """`_conv` without width dilation, whose reverse mode is written out: the input gradient as the same
    convolution with the kernel flipped and transposed, padded the other way; the kernel gradient as one
    (rows, Cin)^T @ (rows, Cout) matmul per tap."""
    kh, kw = w.shape[:2]
    (top, bottom), (left, right) = padding
    reach = dh * (kh - 1)
    cin = x.shape[-1]

    def x_cotangent(w, g):
        back = ((reach - top, reach - bottom), (kw - 1 - left, kw - 1 - right))
        return _conv(p.operand(g), jnp.flip(w, (0, 1)).swapaxes(2, 3), back, (dh, 1), p)

    def w_cotangent(x, g):
        g = p.operand(g)
        h, width = g.shape[1], g.shape[2]
        xp = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
        g2 = g.reshape(-1, g.shape[-1])
        dims = (((0,), (0,)), ((), ()))

        def tap(i, j):
            xs = xp[:, i * dh : i * dh + h, j : j + width].reshape(-1, cin)
            return lax.dot_general(xs, g2, dims, precision=p.lax_precision, preferred_element_type=jnp.float32)

        return jnp.stack([jnp.stack([tap(i, j) for j in range(kw)]) for i in range(kh)])

    return bilinear(lambda a, b: _conv(a, b, padding, (dh, 1), p), x_cotangent, w_cotangent, p.operand)(x, w)
