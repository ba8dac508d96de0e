"""WaveFlow and the NanoFlow family as one Flax module.

Every flow step k: flip the rows of x and c, shift x down one row, run the estimator, project to the
coupling parameters with head k, transform x; the log-determinant is the sum of the log-derivatives.
The K steps run under `nn.scan`: the shared estimator's params are broadcast to every step and the
per-flow parts (projection heads, gates, embedding biases, WaveFlow's own estimators) are stacked
(K, ...) arrays scanned over, so the traced program is one step whatever K is.

Params accepted: the training form (weight norm as v/g, flow embedding and its projections) and the
inference form from `inference_params` (plain kernels, the embedding folded into `flow_bias_table`).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from nanoflow_jax.config import ModelConfig
from nanoflow_jax.flows import flip_rows, make_coupling, shift_down, squeeze, unsqueeze
from nanoflow_jax.models.conditioner import Conditioner
from nanoflow_jax.models.heads import ProjHeads, project
from nanoflow_jax.models.wavenet2d import WaveNet2D

Array = jnp.ndarray
HOP = 256
# compute types of the estimator by name (training's compute_dtype, synthesis' dtype)
DTYPES = {"float32": jnp.float32, "float16": jnp.float16, "bfloat16": jnp.bfloat16}

_SCAN = dict(variable_broadcast="params", split_rngs={"params": False})


class AudioFlow(nn.Module):
    """Options beyond the architecture:
    remat: recompute each flow step's activations in the backward pass (jax.checkpoint), keeping only
        its input (remat per estimator layer on top measured 1.3x slower for 7% less memory on CPU).
    dtype: compute type of the estimator (e.g. jnp.bfloat16); params, coupling, log-det stay float32.
    unroll: run the flow step in a Python loop instead of `nn.scan` (a check of the scan; its program
        grows with K).
    fast_conv_grad: the estimator's convolutions use an explicit gradient that XLA runs much faster
        inside the flow scan on CPU; it supports reverse mode only. False allows jax.jvp / jacfwd."""

    config: ModelConfig
    remat: bool = False
    dtype: Any = jnp.float32
    unroll: bool = False
    fast_conv_grad: bool = True

    def setup(self):
        cfg = self.config
        self.coupling = make_coupling(cfg.coupling, cfg.spline_bins, cfg.spline_tail_bound)
        self.conditioner = Conditioner()
        if cfg.n_shared:
            self.estimator = WaveNet2D(cfg, 0, cfg.n_shared, has_front=True, fast_conv_grad=self.fast_conv_grad)
        if cfg.n_shared < cfg.n_layers:
            # read, not declared, when present: the inference form's tree (folded kernels) differs from
            # what the initialiser would build, and Flax would reject it as a shape mismatch
            if self.has_variable("params", "per_flow_estimator"):
                self.per_flow_estimator = self.get_variable("params", "per_flow_estimator")
            else:
                self.per_flow_estimator = self.param("per_flow_estimator", self._init_per_flow)
        self.proj_heads = ProjHeads(cfg.n_heads, cfg.channels, self.coupling.n_params)
        if cfg.variant == "nanoflow":
            folded = self.has_variable("params", "flow_bias_table")
            if folded:
                self.flow_bias_table = self.param(
                    "flow_bias_table", nn.initializers.zeros, (cfg.n_flows, cfg.n_layers, 2 * cfg.channels)
                )
            if not folded or cfg.injects("concat"):
                self.flow_embedding = self.param(
                    "flow_embedding", nn.initializers.orthogonal(), (cfg.n_flows, cfg.embed_dim)
                )
            if cfg.injects("multiplicative"):
                init = nn.initializers.ones if cfg.gate_form == "ones" else nn.initializers.zeros
                self.flow_gates = self.param("flow_gates", init, (cfg.n_flows, cfg.n_layers, cfg.channels))

    # -- parts -----------------------------------------------------------------------------------
    def _top(self) -> WaveNet2D:
        """The per-flow top of the estimator (all of it for WaveFlow), applied functionally."""
        cfg = self.config
        return WaveNet2D(
            cfg,
            cfg.n_shared,
            cfg.n_layers,
            has_front=cfg.n_shared == 0,
            fast_conv_grad=self.fast_conv_grad,
            parent=None,
        )

    def _init_per_flow(self, rng):
        cfg = self.config
        top = self._top()
        g = cfg.n_groups
        x = jnp.zeros((1, g, 1) if top.has_front else (1, g, 1, cfg.channels))
        c = jnp.zeros((1, g, 1, cfg.cond_channels))
        e = jnp.zeros((cfg.embed_dim,)) if cfg.variant == "nanoflow" else None
        n_top = cfg.n_layers - cfg.n_shared
        gates = jnp.ones((n_top, cfg.channels)) if cfg.injects("multiplicative") else None
        init_one = lambda r: top.init(r, x, c, e, None, gates, method=WaveNet2D.run)["params"]  # noqa: E731
        return jax.vmap(init_one)(jax.random.split(rng, cfg.n_flows))

    def condition(self, mel: Array, length: int) -> Array:
        """Upsampled mel trimmed to `length` samples, in the 2-D layout: (B, G, W, bands)."""
        cfg = self.config
        if mel.ndim != 3 or mel.shape[1] != cfg.cond_channels:
            raise ValueError(f"mel must be (batch, {cfg.cond_channels}, frames), got shape {mel.shape}")
        if length > HOP * mel.shape[2]:
            raise ValueError(f"{mel.shape[2]} mel frames condition at most {HOP * mel.shape[2]} samples, got {length}")
        c = self.conditioner(mel.astype(jnp.float32))[:, :length]
        return squeeze(c, cfg.n_groups)

    def _per_flow(self) -> dict:
        """The stacked (K, ...) inputs of the flow scan."""
        cfg = self.config
        k = cfg.n_flows
        xs = {"flipped": (jnp.arange(k) + 1) % 2}  # flow k sees c flipped k+1 times
        heads = self.proj_heads()
        if cfg.n_heads == k:
            xs["head"] = heads
        if cfg.variant == "nanoflow":
            if hasattr(self, "flow_embedding"):
                xs["embedding"] = self.flow_embedding
            if cfg.injects("additive"):
                if hasattr(self, "flow_bias_table"):
                    xs["bias"] = self.flow_bias_table
                elif cfg.n_shared:
                    xs["bias"] = self.estimator.embed(self.flow_embedding)  # (K, n_shared, 2C)
            if cfg.injects("multiplicative"):
                xs["gates"] = self.flow_gates
        if cfg.n_shared < cfg.n_layers:
            xs["estimator"] = self.per_flow_estimator
        return xs

    def flow_bias(self) -> Array:
        """(K, L, 2C) additive bias of every flow and layer, from the embedding (training form): the
        table `inference_params` stores in place of the embedding and its projections."""
        cfg = self.config
        parts = []
        if cfg.n_shared:
            parts.append(self.estimator.embed(self.flow_embedding))
        if cfg.n_shared < cfg.n_layers:
            embed = lambda p, e: self._top().apply({"params": p}, e, method=WaveNet2D.embed)  # noqa: E731
            parts.append(jax.vmap(embed)(self.per_flow_estimator, self.flow_embedding))
        return jnp.concatenate(parts, axis=1)

    def _head(self, xs: dict) -> dict:
        return xs["head"] if "head" in xs else jax.tree.map(lambda a: a[0], self.proj_heads())

    def _features(self, x_in: Array, xs: dict, cond: Array | None, c: Array) -> Array:
        """Estimator output (B, G', W, C) for one flow; `cond` is the shared layers' precomputed
        conditioning term and `c` the conditioner output, both already in this flow's orientation."""
        cfg = self.config
        n = cfg.n_shared
        e, gates, bias = xs.get("embedding"), xs.get("gates"), xs.get("bias")
        x_in = x_in.astype(self.dtype)
        skip, h = 0.0, x_in
        if n:
            h = self.estimator.front(x_in, e)
            h, skip = self.estimator(
                h,
                cond,
                None if bias is None else bias[:n],
                None if gates is None else gates[:n],
            )
        if n < cfg.n_layers:
            top_bias = bias[n:] if bias is not None and bias.shape[0] == cfg.n_layers else None
            _, s = self._top().apply(
                {"params": xs["estimator"]},
                h,
                c,
                e,
                top_bias,
                None if gates is None else gates[n:],
                method=WaveNet2D.run,
            )
            skip = skip + s
        return skip

    def _conditioning(self, mel: Array, length: int):
        """-> get(mdl, flipped) giving one flow's (shared layers' conditioning term, conditioner output)
        in that flow's orientation. The conditioning term is computed once for all flows (recomputing it
        inside each remat step measured slower and no smaller on CPU)."""
        c = self.condition(mel, length).astype(self.dtype)
        cond = self.estimator.condition(c) if self.config.n_shared else None

        def oriented(a, o):  # a flipped copy only for the flows that need one; one gradient buffer
            return None if a is None else jax.lax.cond(o == 1, flip_rows, lambda v: v, a)

        return lambda mdl, o: (oriented(cond, o), oriented(c, o))

    def _check_audio(self, x: Array, what: str):
        if x.ndim != 2:
            raise ValueError(f"{what} must be (batch, samples), got shape {x.shape}")
        if x.shape[1] % self.config.n_groups:
            raise ValueError(f"{what} length {x.shape[1]} is not a multiple of n_groups={self.config.n_groups}")

    # -- the flow --------------------------------------------------------------------------------
    def __call__(self, audio: Array, mel: Array, return_coupling_params: bool = False):
        """audio (B, T), mel (B, bands, F) -> z (B, T), logdet (B,); with `return_coupling_params`
        also the (K, B, G, W, P) coupling parameters of every flow (affine: P = 2, log_s and t)."""
        self._check_audio(audio, "audio")
        x = squeeze(audio.astype(jnp.float32), self.config.n_groups)
        conditioning = self._conditioning(mel, audio.shape[1])

        def step(mdl, carry, xs):
            x, logdet = carry
            x = flip_rows(x)
            feat = mdl._features(shift_down(x), xs, *conditioning(mdl, xs["flipped"]))
            p = project(feat, mdl._head(xs))
            x, log_det = mdl.coupling.forward(x, p)
            return (x, logdet + jnp.sum(log_det, axis=(1, 2))), (p if return_coupling_params else None)

        carry0 = (x, jnp.zeros((x.shape[0],), jnp.float32))
        (z, logdet), ps = self._scan(step, carry0, self._per_flow())
        z = unsqueeze(z)
        return (z, logdet, ps) if return_coupling_params else (z, logdet)

    def inverse(self, z: Array, mel: Array) -> Array:
        """Exact inverse, row by row: z (B, T), mel (B, bands, F) -> audio (B, T).

        Each row is recomputed from the full estimator (cost G x a forward pass); `nf.synthesize` is
        the cached fast path."""
        self._check_audio(z, "z")
        cfg = self.config
        x = squeeze(z.astype(jnp.float32), cfg.n_groups)
        conditioning = self._conditioning(mel, z.shape[1])

        def flow(mdl, x, xs):
            o = xs["flipped"]
            cond, c = conditioning(mdl, o)
            head = mdl._head(xs)

            def row(mdl, x, i):
                # rows >= i of the carry still hold z; the causal estimator's row i ignores them
                feat = mdl._features(shift_down(x), xs, cond, c)
                p = project(jax.lax.dynamic_index_in_dim(feat, i, 1, keepdims=False), head)
                xi, _ = mdl.coupling.inverse(jax.lax.dynamic_index_in_dim(x, i, 1, keepdims=False), p)
                return jax.lax.dynamic_update_index_in_dim(x, xi, i, 1), None

            x, _ = nn.scan(row, length=cfg.n_groups, **_SCAN)(mdl, x, jnp.arange(cfg.n_groups))
            return flip_rows(x), None

        x, _ = self._scan(flow, x, self._per_flow(), reverse=True)
        return unsqueeze(x)

    def _scan(self, step, carry, xs, reverse: bool = False):
        """Run `step` over the K flows: `nn.scan` with broadcast params, or a Python loop if unrolled."""
        k = self.config.n_flows
        if self.remat:
            step = nn.remat(step, prevent_cse=False)  # inside a scan CSE prevention is not needed
        if not self.unroll:
            return nn.scan(step, length=k, reverse=reverse, **_SCAN)(self, carry, xs)
        ys = [None] * k
        for i in reversed(range(k)) if reverse else range(k):
            carry, ys[i] = step(self, carry, jax.tree.map(lambda a, i=i: a[i], xs))
        return carry, (None if ys[0] is None else jax.tree.map(lambda *a: jnp.stack(a), *ys))
