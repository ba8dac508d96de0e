"""The density estimator every audio variant uses: a 2-D WaveNet, causal down the rows.

Layer i: a = conv3x3(h) (+ cond_i) (+ flow bias_i) -> tanh(a[:C]) * sigmoid(a[C:]) -> 1x1 conv to
(res, skip); h <- (h + res) * sqrt(1/2), or h + res * gate_i with NanoFlow's multiplicative gating.
The output is the plain sum of the skips.

An estimator covers a range of layers so that NanoFlow with partial sharing can split it into a shared
bottom and per-flow top. The conditioning projections (`condition`) and flow-embedding projections
(`embed`) are separate methods because a shared estimator computes them once for all K flows.

Each call runs down the rows (`upward` = 0) or up them (1, may be traced: the flow scan alternates).
Matmuls and convolutions follow the precision policy; activations, the residual stream and the skip sum
are float32.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from nanoflow_jax.models.audio_config import ModelConfig
from nanoflow_jax.models.layers import CausalConv, Dense, kernel_param, stored_kernel, torch_uniform

Array = jax.Array


def gated_tanh(a: Array) -> Array:
    """WaveNet's gate on (..., 2C): tanh(a[:C]) * sigmoid(a[C:]). The sigmoid is written through tanh
    (sigmoid(x) = (1 + tanh(x / 2)) / 2, equal to rounding): XLA's CPU backend runs tanh about 3x faster
    than its logistic (bench/RESULTS.md, the CPU profile)."""
    n = a.shape[-1] // 2
    return gate_halves(a[..., :n], a[..., n:])


def gate_halves(filt: Array, gate: Array) -> Array:
    """`gated_tanh` on its two halves given apart (the fused row kernel keeps them in two accumulators)."""
    return jnp.tanh(filt) * (0.5 + 0.5 * jnp.tanh(0.5 * gate))


def residual_update(h: Array, res: Array, gate: Array | None, gate_form: str) -> Array:
    """The residual stream after a layer: (h + res) sqrt(1/2), or h + res * gate with NanoFlow's
    multiplicative flow gate (official "ones" form: the gate itself; "exp": exp(gate))."""
    if gate is None:
        return (h + res) * math.sqrt(0.5)
    return h + res * (jnp.exp(gate) if gate_form == "exp" else gate)


class ResidualLayer(nn.Module):
    config: ModelConfig
    index: int
    precision: Any = "float32"

    def setup(self):
        cfg, c2, prec = self.config, 2 * self.config.channels, self.precision
        self.conv = CausalConv(c2, (3, 3), (cfg.height_dilation(self.index), 2**self.index), precision=prec)
        self.cond_proj = Dense(c2, precision=prec)
        if cfg.injects("additive"):
            self.embed_proj = Dense(c2, use_weight_norm=cfg.embed_weight_norm, precision=prec)
        self.res_skip = Dense(c2, precision=prec)

    def condition(self, c: Array) -> Array:
        return self.cond_proj(c)

    def row_weights(self) -> dict:
        """The layer's kernels and biases as its one-row form reads them (`models.row_inverse`): conv
        (3, 3, C, 2C) and bias, cond (bands, 2C) and cond_bias, res_skip (C, 2C) and res_skip_bias."""
        names = {"conv": self.conv, "cond": self.cond_proj, "res_skip": self.res_skip}
        weights = {}
        for name, layer in names.items():
            weights[name], weights["bias" if name == "conv" else f"{name}_bias"] = layer.weights()
        return weights

    def embed(self, e: Array) -> Array:
        return self.embed_proj(e)

    def __call__(
        self,
        h: Array,
        cond: Array,
        bias: Array | None,
        gate: Array | None,
        upward: Array | int = 0,
        mask: Array | None = None,
    ):
        """`mask` (B, 1, W, 1): columns past each item's width are zeroed where the convolution reads
        them, as its "same" padding would be."""
        n = self.config.channels
        a = self.conv(h if mask is None else h * mask, upward) + cond
        if bias is not None:
            a = a + bias
        acts = gated_tanh(a)
        rs = self.res_skip(acts)
        res, skip = rs[..., :n], rs[..., n:]
        return residual_update(h, res, gate, self.config.gate_form), skip


class FrontConv(nn.Module):
    """1x1 conv from the (shifted) audio row to C channels; with concatenative injection the flow
    embedding is a second input (computed as a per-flow bias, never broadcast in memory)."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x: Array, e: Array | None) -> Array:
        cfg = self.config
        n_in = 1 + (cfg.embed_dim if cfg.injects("concat") else 0)
        w = kernel_param(self, (n_in, cfg.channels), n_in, True)
        b = self.param("bias", torch_uniform(n_in), (cfg.channels,))
        w0, b = fold_embedding(w, b, e)
        return x[..., None] * w0 + (b if n_in == 1 else b[..., None, None, :])

    def row_weights(self) -> tuple[Array, Array]:
        """(kernel (1 [+ D], C), bias (C,)): `fold_embedding` turns them into one flow's row form."""
        return stored_kernel(self), self.variables["params"]["bias"]


def fold_embedding(w: Array, b: Array, e: Array | None) -> tuple[Array, Array]:
    """A front kernel (1 [+ D], C) and bias -> the audio's kernel row and the bias with a concatenated
    embedding's part (e @ w[1:]) added: the embedding is constant over a flow, so it is a bias."""
    if w.shape[0] > 1:
        b = b + jnp.dot(e, w[1:], precision=jax.lax.Precision.HIGHEST)
    return w[0], b


class WaveNet2D(nn.Module):
    """Layers [first, last) of the estimator; `has_front` if it starts from the audio."""

    config: ModelConfig
    first: int = 0
    last: int = -1
    has_front: bool = True
    precision: Any = "float32"

    def setup(self):
        last = self.config.n_layers if self.last < 0 else self.last
        if self.has_front:
            self.front_conv = FrontConv(self.config)
        self.layers = [
            ResidualLayer(self.config, i, self.precision, name=f"layer_{i}") for i in range(self.first, last)
        ]

    def condition(self, c: Array, axis: int = -2) -> Array:
        """(B, G, W, bands) -> (B, G, W, n_layers, 2C) conditioning term of every layer (the layers on
        `axis`)."""
        return jnp.stack([layer.condition(c) for layer in self.layers], axis=axis)

    def embed(self, e: Array) -> Array:
        """(..., D) flow embedding(s) -> (..., n_layers, 2C) per-layer additive bias."""
        return jnp.stack([layer.embed(e) for layer in self.layers], axis=-2)

    def front(self, x_in: Array, e: Array | None = None) -> Array:
        return self.front_conv(x_in, e)

    def row_weights(self) -> tuple[tuple[Array, Array] | None, list[dict]]:
        """(the front conv's `FrontConv.row_weights` or None, each layer's `ResidualLayer.row_weights`)."""
        front = self.front_conv.row_weights() if self.has_front else None
        return front, [layer.row_weights() for layer in self.layers]

    def __call__(
        self,
        h: Array,
        cond: Array,
        bias: Array | None = None,
        gates: Array | None = None,
        upward: Array | int = 0,
        mask: Array | None = None,
    ):
        """h (B, G, W, C) (or the front conv's output) -> (h, skip sum) after these layers."""
        skip = 0.0
        for j, layer in enumerate(self.layers):
            h, s = layer(
                h,
                cond[..., j, :],
                None if bias is None else bias[j],
                None if gates is None else gates[j],
                upward,
                mask,
            )
            skip = skip + s
        return h, skip

    def run(
        self,
        x: Array,
        c: Array,
        e: Array | None = None,
        bias: Array | None = None,
        gates: Array | None = None,
        upward: Array | int = 0,
        mask: Array | None = None,
    ):
        """Everything at once from raw inputs: used by per-flow estimators, applied functionally with
        one flow's slice of stacked params, and to create all params at init. `bias` overrides the
        embedding projection (inference form, where it is folded into a table)."""
        h = self.front(x, e) if self.has_front else x
        if bias is None and self.config.injects("additive"):
            bias = self.embed(e)
        return self(h, self.condition(c), bias, gates, upward, mask)
