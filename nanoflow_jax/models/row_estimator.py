"""The estimator (`wavenet2d`) of one flow, one row at a time: the form the cached inverse
(`synth.fast`) runs. It reads the same params and shares the gate and the residual update with the
full estimator; tests/test_synth.py checks it against the full estimator layer by layer.

Row i's coupling parameters come from the estimator applied to rows < i (in the flow's direction). The
estimator is causal along the rows, so layer j only needs its own input at rows i - 2*d_j, i - d_j and i
(d_j its height dilation). A 3x3 convolution of one row is one matmul: the live rows concatenated on
channels times the kernel laid out as (rows * C, taps * 2C), one output block per width tap; the blocks
are shifted along the width by the tap's dilation and summed.

Two things keep the CPU's matmuls doing real work (bench/RESULTS.md, the CPU profile):
- A row before the flow's first (i - lag < 0) is zero, so its block of the matmul is dropped. Which
  lags are live changes only at rows d_j and 2 * d_j, so the rows are run in a few phases
  (`phases`), each a loop with its own static matmul shapes.
- Each layer keeps its past input rows in a ring buffer (slots, B, W, C) written in place at slot
  i mod slots, instead of a cache shifted by concatenation every row.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from nanoflow_jax.models.audio_config import ModelConfig
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

    def estimator_weights(self, estimator: dict, layers: range) -> list[dict]:
        """`layer_weights` of `layers` of an estimator's params (inference form: `layer_{j}` entries)."""
        return [self.layer_weights(estimator[f"layer_{j}"], j) for j in layers]

    def front_weights(self, estimator: dict, embedding: Array | None = None) -> dict:
        """The front 1x1 convolution's kernel and bias; a concatenated flow embedding becomes a bias."""
        front = dict(estimator["front_conv"])
        if embedding is not None:
            front["bias"] = front["bias"] + jnp.matmul(embedding, front["kernel"][1:], precision=HIGHEST)
        return front

    def layer_weights(self, layer: dict, j: int) -> dict:
        """One layer's params (inference form) -> the matmul form used per row: `conv` (3, C, taps * 2C),
        one block per kernel row (row i - 2d, i - d, i)."""
        c, c2 = self.cfg.channels, 2 * self.cfg.channels
        conv = _conv_as_matmul(layer["conv"]["kernel"])
        conv = conv.reshape(conv.shape[:-1] + (3, c2))[..., [t + 1 for t in self.taps[j]], :]
        conv = conv.reshape(conv.shape[:-3] + (3, c, -1))
        return {
            "conv": conv.astype(self.dtype),
            "bias": layer["conv"]["bias"] + layer["cond_proj"]["bias"],
            "cond": layer["cond_proj"]["kernel"],
            "res_skip": layer["res_skip"]["kernel"],
            "res_skip_bias": layer["res_skip"]["bias"],
        }

    def fold_head(self, layers: list[dict], head: dict) -> tuple[list[dict], Array]:
        """The coupling parameters are (sum of skips) @ head: fold the head into each layer's skip half,
        so the res/skip matmul is C -> C + P (C -> P in the last layer, whose residual is unused).
        -> the layers with `out` kernels and the constant part of the projection."""
        c = self.cfg.channels
        folded, const = [], head["bias"]
        for j, w in enumerate(layers):
            skip_k = jnp.matmul(w["res_skip"][:, c:], head["kernel"], precision=HIGHEST)
            const = const + jnp.matmul(w["res_skip_bias"][c:], head["kernel"], precision=HIGHEST)
            if j < self.cfg.n_layers - 1:
                out = jnp.concatenate([w["res_skip"][:, :c], skip_k], axis=1)
                out_bias = jnp.concatenate([w["res_skip_bias"][:c], jnp.zeros(skip_k.shape[1:])])
            else:
                out, out_bias = skip_k, jnp.zeros(skip_k.shape[1:])
            folded.append(dict(w, out=out.astype(self.dtype), out_bias=out_bias))
        return folded, const

    def step(self, i, start, x_prev, caches, layers, front, cond, flow, mask):
        """Row i (traced; in the phase that begins at row `start`) of the estimator and head: x_prev
        (B, W) the previous row of this flow's input (zeros for row 0), `layers` per-layer weights with
        the head folded in, `cond` this row's conditioning terms and biases per layer, (B, W, 2C) each.
        -> the head's output less its constant part (B, W, P) in float32, and the updated caches."""
        h = x_prev[..., None] * front["kernel"][0] + front["bias"]
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
