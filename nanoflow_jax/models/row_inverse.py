"""The audio flow's cached inverse: the exact row-by-row inverse with per-layer row caches, whose cost is
one forward pass (`AudioFlow.fast_inverse`; `synth.fast` compiles and batches it). Flows and rows are two
nested `lax.scan`s; nothing runs in Python per row.

Row i's coupling parameters come from the estimator (`wavenet2d`) applied to rows < i (in the flow's
direction). The estimator is causal along the rows, so layer j only needs its own input at rows i - 2*d_j,
i - d_j and i (d_j its height dilation). A 3x3 convolution of one row is one matmul: the live rows
concatenated on channels times the kernel laid out as (rows * C, taps * 2C), one output block per width
tap; the blocks are shifted along the width by the tap's dilation and summed. The weights come from the
modules that own them (`WaveNet2D.row_weights`, `heads.affine`); the gate and the residual update are the
estimator's own functions. tests/test_synth.py checks the row form against the full estimator layer by
layer.

Two things keep the CPU's matmuls doing real work (bench/RESULTS.md, the CPU profile):
- A row before the flow's first (i - lag < 0) is zero, so its block of the matmul is dropped. Which
  lags are live changes only at rows d_j and 2 * d_j, so the rows are run in a few phases
  (`phases`), each a loop with its own static matmul shapes.
- Each layer keeps its past input rows in a ring buffer (slots, B, W, C) written in place at slot
  i mod slots, instead of a cache shifted by concatenation every row.

Precision (`models.precision`): the matmul operands follow the policy; the running samples, the residual
stream, the gate non-linearities, the skip sum, the projection heads and the coupling stay float32.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from nanoflow_jax.flows import Coupling
from nanoflow_jax.models import row_kernel
from nanoflow_jax.models.audio_config import ModelConfig
from nanoflow_jax.models.heads import affine
from nanoflow_jax.models.precision import Precision
from nanoflow_jax.models.wavenet2d import gated_tanh, residual_update

Array = jax.Array
HIGHEST = jax.lax.Precision.HIGHEST  # folding weights: once per call, true float32


def _conv_as_matmul(kernel: Array) -> Array:
    """(..., kh, kw, Cin, Cout) -> (..., kh * Cin, kw * Cout): input rows on the left, width taps on
    the right."""
    *lead, kh, kw, cin, cout = kernel.shape
    k = jnp.moveaxis(kernel, -3, -2)  # (..., kh, Cin, kw, Cout)
    return k.reshape((*lead, kh * cin, kw * cout))


def _shift_width(y: Array, offset: int) -> Array:
    """out[:, w] = y[:, w + offset], zero outside: (B, W, C)."""
    width = y.shape[1]
    if offset > 0:
        return jnp.pad(y[:, offset:], ((0, 0), (0, offset), (0, 0)))
    return jnp.pad(y[:, : width + offset], ((0, 0), (-offset, 0), (0, 0)))


class RowEstimator:
    """The estimator on one row at a time, with per-layer ring buffers of the rows it needs."""

    def __init__(self, cfg: ModelConfig, width: int, precision: Precision):
        self.cfg, self.width, self.precision = cfg, width, precision
        self.dtype = precision.operand_dtype
        self.dilations = [cfg.height_dilation(j) for j in range(cfg.n_layers)]
        # width taps of layer j: offset -1, 0, +1 times 2**j; a tap wholly outside the row is dropped
        self.taps = [[t for t in (-1, 0, 1) if abs(t) * 2**j < width] for j in range(cfg.n_layers)]
        g = cfg.n_groups
        # past rows each layer reads (kernel rows 0, 1 read rows i - 2d, i - d); one that is always
        # before the flow's first row never is, and the ring holds as many slots as the longest lag read
        self.lags = [[lag for lag in (2 * d, d) if lag < g] for d in self.dilations]
        self.slots = [max(lags, default=0) for lags in self.lags]

    def phases(self) -> list[tuple[int, int]]:
        """Row ranges [start, end) over which every layer reads the same past rows (lag <= start)."""
        cuts = sorted({0, self.cfg.n_groups} | {lag for lags in self.lags for lag in lags})
        return list(zip(cuts[:-1], cuts[1:], strict=True))

    def live_lags(self, j: int, start: int) -> list[int]:
        """Layer j's past rows that exist in the phase starting at row `start`, oldest first."""
        return [lag for lag in self.lags[j] if lag <= start]

    def init_caches(self, batch: int) -> list[Array]:
        c = self.cfg.channels
        return [jnp.zeros((n, batch, self.width, c), self.dtype) for n in self.slots]

    def layer_weights(self, layer: dict, j: int) -> dict:
        """Layer j's `ResidualLayer.row_weights` -> the matmul form used per row: `conv` (3, C, taps * 2C),
        one block per kernel row (row i - 2d, i - d, i)."""
        c, c2 = self.cfg.channels, 2 * self.cfg.channels
        conv = _conv_as_matmul(layer["conv"])
        conv = conv.reshape(conv.shape[:-1] + (3, c2))[..., [t + 1 for t in self.taps[j]], :]
        conv = conv.reshape(conv.shape[:-3] + (3, c, -1))
        return dict(layer, conv=conv.astype(self.dtype))

    def fold_head(self, layers: list[dict], head: dict) -> tuple[list[dict], Array, Array]:
        """The coupling parameters are ((sum of skips) @ head kernel + head bias) * head scale
        (`heads.affine`): fold the head's kernel into each layer's skip half, so the res/skip matmul is
        C -> C + P (C -> P in the last layer, whose residual is unused). -> the layers with `out`
        kernels, the constant part of the projection and the scale it is multiplied by."""
        c = self.cfg.channels
        kernel, const, scale = affine(head)
        folded = []
        for j, w in enumerate(layers):
            skip_k = jnp.matmul(w["res_skip"][:, c:], kernel, precision=HIGHEST)
            const = const + jnp.matmul(w["res_skip_bias"][c:], kernel, precision=HIGHEST)
            if j < self.cfg.n_layers - 1:
                out = jnp.concatenate([w["res_skip"][:, :c], skip_k], axis=1)
                out_bias = jnp.concatenate([w["res_skip_bias"][:c], jnp.zeros(skip_k.shape[1:])])
            else:
                out, out_bias = skip_k, jnp.zeros(skip_k.shape[1:])
            folded.append(dict(w, out=out.astype(self.dtype), out_bias=out_bias))
        return folded, const, scale

    def step(self, i, start, x_prev, caches, layers, front, cond, flow, mask):
        """Row i (traced; in the phase that begins at row `start`) of the estimator and head: x_prev
        (B, W) the previous row of this flow's input (zeros for row 0), `front` the front conv's (kernel
        row, bias), `layers` per-layer weights with the head folded in, `cond` this row's conditioning
        terms and biases per layer, (B, W, 2C) each. -> the head's output less its constant part (B, W, P)
        in float32, and the updated caches."""
        h = x_prev[..., None] * front[0] + front[1]
        proj = 0.0
        new_caches = []
        for j, (w, cache) in enumerate(zip(layers, caches, strict=True)):
            gate = flow["gates"][j] if "gates" in flow else None
            h, skip, cache = self.layer_step(j, i, start, h, cache, w, cond[j], gate, mask)
            proj = proj + skip
            new_caches.append(cache)
        return proj, new_caches

    def layer_step(self, j, i, start, h, cache, w, cond, gate, mask):
        """Layer j on row i: h (B, W, C) its input -> (its output, its skip through the folded head, the
        layer's updated cache). The last layer's output is its input (its residual is unused)."""
        c = self.cfg.channels
        hm = h.astype(self.dtype)
        if mask is not None:  # zero beyond each item's own width, as the conv's "same" padding
            hm = jnp.where(mask, hm, 0)
        lags, slots = self.live_lags(j, start), self.slots[j]
        past = [jax.lax.dynamic_index_in_dim(cache, (i - lag) % slots, keepdims=False) for lag in lags]
        kernel = w["conv"][2 - len(past) :]  # the live lags are always the kernel's last rows
        rows = jnp.concatenate([*past, hm], axis=-1) if past else hm
        y = self.precision.dot(rows, kernel.reshape((-1, kernel.shape[-1])))
        if slots:
            cache = jax.lax.dynamic_update_index_in_dim(cache, hm, i % slots, 0)
        taps = self.taps[j]
        y = y.reshape(y.shape[:-1] + (len(taps), 2 * c))
        a = sum(_shift_width(y[..., n, :], t * 2**j) if t else y[..., n, :] for n, t in enumerate(taps))
        rs = self.precision.dot(gated_tanh(a + cond), w["out"]) + w["out_bias"]
        if j == self.cfg.n_layers - 1:
            return h, rs, cache
        return residual_update(h, rs[..., :c], gate, self.cfg.gate_form), rs[..., c:], cache


def cached_inverse(
    cfg: ModelConfig,
    precision: Precision,
    coupling: Coupling,
    unroll: int,
    c: Array,
    z: Array,
    per_flow: dict,
    shared: list[dict],
    own_weights: Callable[[dict], tuple],
    cond_shared: Array | None = None,
    widths: Array | None = None,
    fused: bool = False,
    interpret: bool = False,
) -> Array:
    """c (B, G, W, bands) conditioning, z (B, G, W) -> x (B, G, W).

    per_flow: the model's per-flow inputs (`AudioFlow.per_flow_inputs(every_flow=True)`); shared: the
    shared layers' `ResidualLayer.row_weights`; own_weights(a flow's inputs) -> (the front conv's audio
    row and bias for that flow, its own layers' row weights); cond_shared: the shared layers'
    conditioning terms, rows first (G, n, B, W, 2C), when kept for all rows (else computed per row);
    widths (B,): each item's valid columns; unroll: rows per iteration of the row scan (G: the whole
    flow as straight-line code); fused: each layer-row one Pallas kernel (`row_kernel`, for programs
    lowered for CUDA; `interpret` runs it on CPU), where `fused_applies`."""
    b, g, width, _ = c.shape
    n = cfg.n_shared
    row = RowEstimator(cfg, width, precision)
    mask = None if widths is None else (jnp.arange(width)[None, :] < widths[:, None])[..., None]
    c = jnp.swapaxes(c, 0, 1)  # rows first: (G, B, W, bands)
    shared_layers = [row.layer_weights(w, j) for j, w in enumerate(shared)]
    if cond_shared is not None:  # (G, n, B, W, 2C): plus the convolutions' biases, kept narrow
        biases = jnp.stack([w["bias"] for w in shared_layers])
        cond_shared = precision.operand(cond_shared + biases[:, None, None])
    if fused:
        layout = FusedLayout(row, cond_shared, b, shared_layers, per_flow, own_weights)
        widths = jnp.full((b,), width, jnp.int32) if widths is None else widths.astype(jnp.int32)
        return jnp.swapaxes(layout.run(jnp.swapaxes(z, 0, 1), widths, coupling, unroll, interpret), 0, 1)

    def flow(z, xs):
        front, own = own_weights(xs)
        layers = shared_layers + [row.layer_weights(w, n + j) for j, w in enumerate(own)]
        layers, head_const, head_scale = row.fold_head(layers, xs["head"])
        first = 0 if cond_shared is None else n  # layers whose conditioning is computed per row
        wc = jnp.concatenate([w["cond"] for w in layers[first:]], axis=-1) if first < cfg.n_layers else None
        # the flow's bias, and the layer's own for those whose conditioning is computed per row
        own_bias = [0.0 * w["bias"] if j < first else w["bias"] + w["cond_bias"] for j, w in enumerate(layers)]
        bias = xs["bias"] + jnp.stack(own_bias)

        def one_row(start, carry, i):
            x_prev, caches = carry
            r = jnp.where(xs["upward"] == 1, g - 1 - i, i)  # rows in this flow's order
            cond = []
            if cond_shared is not None:
                cs = cond_shared[r]
                cond = [cs[j].astype(jnp.float32) for j in range(n)]
            if wc is not None:
                extra = precision.dot(c[r], wc)
                c2 = 2 * cfg.channels
                cond += [extra[..., m * c2 : (m + 1) * c2] for m in range(cfg.n_layers - first)]
            cond = [a + bias[j] for j, a in enumerate(cond)]
            proj, caches = row.step(i, start, x_prev, caches, layers, front, cond, xs, mask)
            x_row, _ = coupling.inverse(z[i], (proj + head_const) * head_scale)
            return (x_row, caches), x_row

        carry, x = (jnp.zeros((b, width), jnp.float32), row.init_caches(b)), []
        for start, end in row.phases():  # one loop per phase: each has its own static matmul shapes
            step = functools.partial(one_row, start)
            carry, x_phase = jax.lax.scan(step, carry, jnp.arange(start, end), unroll=min(unroll, end - start))
            x.append(x_phase)
        return jnp.flip(jnp.concatenate(x), 0), None  # (G, B, W); undo this flow's flip

    def flow_k(z, k):
        return flow(z, jax.tree.map(lambda a: select_flow(a, k), per_flow))

    x, _ = jax.lax.scan(flow_k, jnp.swapaxes(z, 0, 1), jnp.arange(cfg.n_flows), reverse=True)
    return jnp.swapaxes(x, 0, 1)


def select_flow(stacked: Array, k: Array) -> Array:
    """stacked[k] as a masked sum over the flows, not a dynamic slice: exact (the other terms are zeros),
    and a kernel a CUDA graph can record (XLA 0.10 turns a lone dynamic slice of a loop input into a
    device copy at a runtime offset, which splits the loop out of the graph: bench/RESULTS.md)."""
    mask = (jnp.arange(stacked.shape[0]) == k).reshape((-1,) + (1,) * (stacked.ndim - 1))
    return jnp.sum(jnp.where(mask, stacked, jnp.zeros((), stacked.dtype)), axis=0, dtype=stacked.dtype)


def fused_applies(cfg: ModelConfig, cache_cond: bool) -> bool:
    """Whether `cached_inverse(fused=True)` can run this model: every layer shared with its conditioning
    kept for all rows (the paper's NanoFlow), channels a power of two >= 16. Otherwise the XLA form."""
    return cache_cond and cfg.n_shared == cfg.n_layers and row_kernel.supported(cfg.channels)


class FusedLayout:
    """The fused form of one call. Prepared once, before the flow loop, for every flow at once: the
    kernel's weight blocks (the shared layers' conv and residual halves; each flow's skip halves with its
    head folded in, `RowEstimator.fold_head`), each flow's front row and head constants. Buffers: per
    layer a ring of its last rows (the current one included) with `margin` zero columns either side; the
    conditioning padded to whole tiles. The kernel picks a flow's blocks by its index."""

    def __init__(self, row: RowEstimator, cond_shared: Array, batch: int, shared: list, per_flow: dict, own_weights):
        cfg, c = row.cfg, row.cfg.channels
        self.row, self.batch, self.channels, self.per_flow = row, batch, c, per_flow
        self.wt = row_kernel.round_up(row.width, row_kernel.TILE)
        widest = max([2**j for j, taps in enumerate(row.taps) if len(taps) > 1], default=0)
        self.margin = row_kernel.round_up(widest, row_kernel.TILE)
        self.cond = jnp.pad(cond_shared, ((0, 0),) * 3 + ((0, self.wt - row.width), (0, 0)))
        self.precision = None if row.precision.reduced else row.precision.lax_precision
        self.ring = [s + 1 for s in row.slots]
        self.conv = [row_kernel.conv_blocks(w["conv"], c) for w in shared]
        self.res = [w["res_skip"][:, :c].astype(row.dtype) for w in shared[:-1]] + [None]
        self.res_bias = [w["res_skip_bias"][:c] for w in shared[:-1]] + [None]
        folded, self.const, self.scale = jax.vmap(lambda head: row.fold_head(shared, head))(per_flow["head"])
        # the folded skip halves: (K, L, C, P) -> padded to the kernel's width; their biases are in const
        skip = jnp.stack([w["out"] if j == cfg.n_layers - 1 else w["out"][..., c:] for j, w in enumerate(folded)], 1)
        self.skip = jnp.pad(skip, ((0, 0),) * 3 + ((0, row_kernel.SKIP_WIDTH - skip.shape[-1]),))
        self.fronts = jax.vmap(lambda xs: own_weights(xs)[0])(per_flow)
        self.bias = per_flow["bias"].astype(jnp.float32)  # (K, L, 2C): every layer's conditioning is kept

    def run(self, z: Array, widths: Array, coupling, unroll: int, interpret: bool) -> Array:
        """z (G, B, W) -> x (G, B, W), the flows in reverse (`cached_inverse`'s scan). The rings are
        zeroed once: a flow never reads a row before its first (`RowEstimator.phases`), and the margins
        are never written."""
        row = self.row
        rings = [jnp.zeros((n, self.batch, 2 * self.margin + self.wt, self.channels), row.dtype) for n in self.ring]

        def flow_k(carry, k):
            z, rings = carry
            x, rings = self.flow_rows(z, k, rings, widths, coupling, unroll, interpret)
            return (x, rings), None

        (x, _), _ = jax.lax.scan(flow_k, (z, rings), jnp.arange(row.cfg.n_flows), reverse=True)
        return x

    def flow_rows(self, z, k, rings, widths, coupling, unroll, interpret):
        """Flow k's rows -> (x (G, B, W), rows in this flow's order undone; the rings)."""
        row, cfg, last = self.row, self.row.cfg, self.row.cfg.n_layers - 1
        g, width, p, wt = cfg.n_groups, row.width, self.const.shape[-1], self.wt
        pick = functools.partial(jax.tree.map, lambda a: select_flow(a, k))
        upward, front, const, scale = pick((self.per_flow["upward"], self.fronts, self.const, self.scale))
        gates = self.per_flow.get("gates")
        valid = (jnp.arange(wt)[None, :] < widths[:, None])[..., None]

        def one_row(start, carry, i):
            x_prev, rings = carry
            r = jnp.where(upward == 1, g - 1 - i, i)
            index = jnp.stack([i, r, k]).astype(jnp.int32)
            h = jnp.pad(x_prev, ((0, 0), (0, wt - width)))[..., None] * front[0] + front[1]
            first = jnp.where(valid, h, 0).astype(row.dtype)[None]
            rings = list(rings)
            rings[0] = jax.lax.dynamic_update_slice(rings[0], first, (i % self.ring[0], 0, self.margin, 0))
            proj = jnp.zeros((self.batch, wt, row_kernel.SKIP_WIDTH), jnp.float32)
            for j in range(cfg.n_layers):
                lags = row.live_lags(j, start)
                static = dict(
                    rows=tuple((2 - len(lags) + m, lag) for m, lag in enumerate(lags)) + ((2, 0),),
                    taps=tuple(row.taps[j]), dilation=2**j, margin=self.margin, layer=j, gate_form=cfg.gate_form,
                    precision=self.precision, interpret=interpret,
                )  # fmt: skip
                args = (index, widths, rings[j], self.cond, self.bias, self.conv[j], self.skip, proj)
                if j == last:
                    (proj,) = row_kernel.layer_row(*args, **static)
                else:
                    more = (h, self.res[j], self.res_bias[j], gates, rings[j + 1])
                    h, rings[j + 1], proj = row_kernel.layer_row(*args, *more, **static)
            x_row, _ = coupling.inverse(z[i], (proj[:, :width, :p] + const) * scale)
            return (x_row, rings), x_row

        carry, x = (jnp.zeros((self.batch, width), jnp.float32), rings), []
        for start, end in row.phases():
            step = functools.partial(one_row, start)
            carry, x_phase = jax.lax.scan(step, carry, jnp.arange(start, end), unroll=min(unroll, end - start))
            x.append(x_phase)
        return jnp.flip(jnp.concatenate(x), 0), carry[1]
