"""One estimator layer on one row of the cached inverse as one GPU kernel (Pallas, Triton backend): the
3 x 3 convolution's live taps, the conditioning, the gate and the residual / skip matmuls, per tile of
TILE columns. `models.row_inverse` uses it in programs lowered for CUDA (`fused=True`); elsewhere, and
in interpret mode on CPU for the tests, it is the same arithmetic as the XLA row form.

Layout (why): Triton loads only power-of-two blocks, and a tile of output columns reads its input at
+-2**j columns (the layer's width dilation). The layer's input rows therefore live in a ring whose rows
have `margin` zero columns either side (margin >= the largest dilation, a multiple of TILE), so every
load is in bounds and no mask is needed; the conditioning is padded to whole tiles once per call. What
stays outside the kernel, in one XLA fusion per layer-row: writing the row into its ring, the residual
update (with the flow's gate) and the skip sum.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pl_triton

from nanoflow_jax.models.wavenet2d import gate_halves

Array = jax.Array
TILE = 64  # output columns per program: a power of two (Triton), 16 or more (its dot)
SKIP_WIDTH = 16  # the folded head's P outputs padded to a width Triton's dot accepts
# the kernel's call target in a lowered program: `jax.export` must be told to accept it (its Triton IR
# has no cross-version guarantee: load a CUDA export with the jaxlib that made it)
CUSTOM_CALL = "__gpu$xla.gpu.triton"


def supported(channels: int) -> bool:
    """Whether the kernel takes this channel count: a power of two, at least 16 (Triton's dot)."""
    return channels >= 16 and channels & (channels - 1) == 0


def round_up(n: int, step: int) -> int:
    return -(-n // step) * step


def conv_blocks(conv: Array, channels: int) -> Array:
    """The row form's conv (3, C, taps * 2C) -> (3, taps, 2, C, C): per kernel row and width tap, the
    filter and gate halves apart (Triton cannot slice a block in registers)."""
    k = conv.reshape(3, channels, -1, 2, channels)
    return jnp.transpose(k, (0, 2, 3, 1, 4))


def _kernel(index_ref, cache_ref, cond_ref, bias_ref, conv_ref, w_res_ref, w_skip_ref, *out_refs, spec):
    rows, taps, dilation, margin, layer, slots, precision = spec
    b, t = pl.program_id(0), pl.program_id(1)
    col = t * TILE
    i, r, k = index_ref[0], index_ref[1], index_ref[2]
    c = conv_ref.shape[-1]
    halves = []
    for half in (0, 1):
        acc = cond_ref[r, layer, b, pl.ds(col, TILE), pl.ds(half * c, c)].astype(jnp.float32)
        halves.append(acc + bias_ref[k, layer, pl.ds(half * c, c)][None, :])
    for kernel_row, lag in rows:
        slot = (i - lag) % slots
        for n, tap in enumerate(taps):
            x = cache_ref[slot, b, pl.ds(margin + col + tap * dilation, TILE), :]
            for half in (0, 1):
                w = conv_ref[kernel_row, n, half]
                halves[half] += jnp.dot(x, w, preferred_element_type=jnp.float32, precision=precision)
    gated = gate_halves(*halves).astype(conv_ref.dtype)
    skip_ref = out_refs[-1]
    skip_ref[b, pl.ds(col, TILE), :] = jnp.dot(
        gated, w_skip_ref[k, layer], preferred_element_type=jnp.float32, precision=precision
    )
    if len(out_refs) == 2:
        out_refs[0][b, pl.ds(col, TILE), :] = jnp.dot(
            gated, w_res_ref[...], preferred_element_type=jnp.float32, precision=precision
        )


def layer_row(
    index: Array,
    cache: Array,
    cond: Array,
    bias: Array,
    conv: Array,
    w_res: Array | None,
    w_skip: Array,
    *,
    rows: tuple[tuple[int, int], ...],
    taps: tuple[int, ...],
    dilation: int,
    margin: int,
    layer: int,
    precision: jax.lax.Precision | None,
    interpret: bool = False,
) -> tuple[Array | None, Array]:
    """index (3,) int32: (row i in loop order, row r in the conditioning's order, flow k); cache
    (slots, B, margin + Wt + margin, C) the layer's input rows, row i - lag at slot (i - lag) % slots;
    cond (G, n, B, Wt, 2C) every row's conditioning; bias (K, L, 2C) every flow's per-layer bias; conv
    (3, taps, 2, C, C) (`conv_blocks`); w_res (C, C) or None for the last layer; w_skip (K, L, C,
    SKIP_WIDTH) every flow's skip halves. rows: (kernel row, lag) of the rows read, the current one (lag
    0) included. -> (res (B, Wt, C) or None, skip (B, Wt, SKIP_WIDTH)), float32, before the res bias."""
    slots, batch, _, _ = cache.shape
    wt = cond.shape[3]
    spec = (rows, taps, dilation, margin, layer, slots, precision)
    outs = [jax.ShapeDtypeStruct((batch, wt, w_skip.shape[-1]), jnp.float32)]
    if w_res is not None:
        outs.insert(0, jax.ShapeDtypeStruct((batch, wt, w_res.shape[1]), jnp.float32))
    kernel = functools.partial(_kernel, spec=spec)
    if w_res is None:
        kernel = functools.partial(_no_res, kernel)
    call = pl.pallas_call(
        kernel,
        grid=(batch, wt // TILE),
        out_shape=outs,
        interpret=interpret,
        compiler_params=pl_triton.CompilerParams(num_warps=4, num_stages=1),
    )
    args = (index, cache, cond, bias, conv) + ((w_skip,) if w_res is None else (w_res, w_skip))
    out = call(*args)
    return (None, out[0]) if w_res is None else (out[0], out[1])


def _no_res(kernel, index_ref, cache_ref, cond_ref, bias_ref, conv_ref, w_skip_ref, skip_ref):
    kernel(index_ref, cache_ref, cond_ref, bias_ref, conv_ref, None, w_skip_ref, skip_ref)
