"""One estimator layer on one row of the cached inverse as one GPU kernel (Pallas, Triton backend), per
tile of TILE columns: the 3 x 3 convolution's live taps, the conditioning, the gate, the residual / skip
matmuls, the residual update, the skip sum and the next layer's input row. `models.row_inverse` uses it
in programs lowered for CUDA (`fused=True`); in interpret mode on CPU (the tests) it is the same
arithmetic as the XLA row form.

Layout (why): Triton loads only power-of-two blocks, and a tile of output columns reads its input at
+-2**j columns (the layer's width dilation). The layer's input rows therefore live in a ring whose rows
have `margin` zero columns either side (margin >= the largest dilation, a multiple of TILE), so every
load is in bounds and no mask is needed; the conditioning is padded to whole tiles once per call. The
residual stream, the next layer's ring and the skip sum are updated in place (aliased); what stays
outside, once per row: the first layer's input row and the coupling.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pl_triton

from nanoflow_jax.models.wavenet2d import gate_halves, residual_update

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


def _kernel(*refs, spec):
    rows, taps, dilation, margin, layer, slots, next_slots, precision, has_gate, gate_form, last = spec
    refs = list(refs)
    index_ref, widths_ref, cache_ref, cond_ref, bias_ref, conv_ref, w_skip_ref = refs[:7]
    rest = refs[7:]
    if not last:
        h_ref, w_res_ref, res_bias_ref = rest[:3]
        rest = rest[3:]
        gate_ref = rest.pop(0) if has_gate else None
        ring_ref = rest.pop(0)
    proj_ref = rest.pop(0)
    outs = rest  # aliased: (h, next ring, proj) or (proj,)
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
                halves[half] += jnp.dot(x, conv_ref[kernel_row, n, half], preferred_element_type=jnp.float32,
                                        precision=precision)  # fmt: skip
    gated = gate_halves(*halves).astype(conv_ref.dtype)
    skip = jnp.dot(gated, w_skip_ref[k, layer], preferred_element_type=jnp.float32, precision=precision)
    outs[-1][b, pl.ds(col, TILE), :] = proj_ref[b, pl.ds(col, TILE), :] + skip
    if last:
        return
    res = jnp.dot(gated, w_res_ref[...], preferred_element_type=jnp.float32, precision=precision)
    gate = None if gate_ref is None else gate_ref[k, layer, :][None, :]
    h = residual_update(h_ref[b, pl.ds(col, TILE), :], res + res_bias_ref[...][None, :], gate, gate_form)
    outs[0][b, pl.ds(col, TILE), :] = h
    # the next layer's input row, zero beyond the item's width (its "same" padding)
    valid = (col + jnp.arange(TILE)) < widths_ref[b]
    ring_row = jnp.where(valid[:, None], h, 0.0).astype(ring_ref.dtype)
    outs[1][i % next_slots, b, pl.ds(margin + col, TILE), :] = ring_row


def layer_row(
    index: Array,
    widths: Array,
    cache: Array,
    cond: Array,
    bias: Array,
    conv: Array,
    w_skip: Array,
    proj: Array,
    h: Array | None = None,
    w_res: Array | None = None,
    res_bias: Array | None = None,
    gates: Array | None = None,
    next_ring: Array | None = None,
    *,
    rows: tuple[tuple[int, int], ...],
    taps: tuple[int, ...],
    dilation: int,
    margin: int,
    layer: int,
    gate_form: str,
    precision: jax.lax.Precision | None,
    interpret: bool = False,
) -> tuple[Array, ...]:
    """Layer `layer` on one row, all of it: index (3,) int32 (row i in loop order, row r in the
    conditioning's order, flow k); widths (B,) int32 valid columns; cache (slots, B, margin + Wt +
    margin, C) the layer's input rows, row i - lag at slot (i - lag) % slots; cond (G, n, B, Wt, 2C)
    every row's conditioning; bias (K, L, 2C) every flow's per-layer bias; conv (3, taps, 2, C, C)
    (`conv_blocks`); w_skip (K, L, C, SKIP_WIDTH) every flow's skip halves; proj (B, Wt, SKIP_WIDTH) the
    skip sum so far. Not for the last layer: h (B, Wt, C) its residual input, w_res (C, C), res_bias
    (C,), gates (K, L, C) or None, next_ring (the next layer's ring). rows: (kernel row, lag) of the
    rows read, the current one (lag 0) included. -> (proj,) for the last layer, else (h after the
    layer, next_ring with row i written, proj), float32 but the ring; the arrays given are updated in
    place (aliased)."""
    slots, batch, _, _ = cache.shape
    last = h is None
    next_slots = 0 if last else next_ring.shape[0]
    spec = (rows, taps, dilation, margin, layer, slots, next_slots, precision, gates is not None, gate_form, last)
    args = [index, widths, cache, cond, bias, conv, w_skip]
    outs = []
    if not last:
        args += [h, w_res, res_bias] + ([] if gates is None else [gates]) + [next_ring]
        outs += [h, next_ring]
    args.append(proj)
    outs.append(proj)
    n_in = len(args)
    aliases = {n_in - 1: len(outs) - 1}  # proj
    if not last:
        aliases.update({7: 0, n_in - 2: 1})  # h, the next ring
    call = pl.pallas_call(
        functools.partial(_kernel, spec=spec),
        grid=(batch, cond.shape[3] // TILE),
        out_shape=[jax.ShapeDtypeStruct(o.shape, o.dtype) for o in outs],
        input_output_aliases=aliases,
        interpret=interpret,
        compiler_params=pl_triton.CompilerParams(num_warps=4, num_stages=1),
    )
    return tuple(call(*args))
