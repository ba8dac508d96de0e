"""WaveFlow and the NanoFlow family as one Flax module.

The official flow step k flips the rows of x and c, shifts x down one row, runs the estimator (causal
down the rows), projects to the coupling parameters with head k and transforms x. Here x and c stay in
their own row order and flow k runs up the rows when it would have seen them flipped (k even): the shift
and the causal convolutions take their direction from an index, so the program holds no conditional and
no flipped copy of the conditioning. After an odd number of flows z is flipped once, to the official
layout. The K steps run under `nn.scan`: the shared estimator's params are broadcast to every step and
the per-flow parts (projection heads, gates, embedding biases, WaveFlow's own estimators, directions) are
stacked (K, ...) arrays scanned over, so the traced program is one step whatever K is.

With `source_filter` (off by default) the flow runs on the excitation of the mel's own all-pole envelope
(`flows.source_filter`, `models.source_filter`): forward whitens the audio first, inverse colours last,
and the log-dets include the filter's.

Params accepted: the training form (weight norm as v/g, flow embedding and its projections) and the
inference form from `inference_params` (plain kernels, the embedding folded into `flow_bias_table`).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from nanoflow_jax.flows import flip_rows, from_rows, make_coupling, shift_rows, to_rows
from nanoflow_jax.flows import source_filter as sf
from nanoflow_jax.models import row_inverse, source_filter
from nanoflow_jax.models.audio_config import ModelConfig
from nanoflow_jax.models.conditioner import Conditioner
from nanoflow_jax.models.heads import ProjHeads, project
from nanoflow_jax.models.precision import precision_policy
from nanoflow_jax.models.wavenet2d import WaveNet2D, fold_embedding

Array = jax.Array

_SCAN = dict(variable_broadcast="params", split_rngs={"params": False})


class AudioFlow(nn.Module):
    """Options beyond the architecture:
    remat: recompute each flow step's activations in the backward pass (jax.checkpoint), keeping only
        its input (remat per estimator layer on top costs more time than it saves memory on CPU:
        bench/RESULTS.md).
    dtype: the precision policy of the estimator's matmuls and convolutions (`models.precision`): a
        name ("float32", "tensorfloat32", "bfloat16", "float16") or jnp.float32 / bfloat16 / float16;
        params, activations, coupling and log-det stay float32.
    unroll_flows: the K flow steps as straight-line code, not a loop: the backward pass reads each
        step's activations where they were made instead of from stacked loop buffers (a GPU training
        step of the paper's model: 3,274 -> 1,800 kernel launches, 33.8 -> 23.6 GB; compiling takes
        ~4x longer: bench/RESULTS.md). The same numbers either way. `for_platform` chooses it."""

    config: ModelConfig
    remat: bool = False
    dtype: Any = jnp.float32
    unroll_flows: bool = False

    def for_platform(self, platform: str) -> AudioFlow:
        """This model as a training step compiled for `platform` (a mesh's devices: "cpu", "cuda", ...)
        runs it: on accelerators, without remat, the flows are unrolled (launches, not compile time, are
        what costs there); with remat the loop stays (its memory is remat's point: 5.4 GB against 14.3
        unrolled at batch 8 on an H200 target); on CPU the loop stays (compile time)."""
        return self.clone(unroll_flows=platform != "cpu" and not self.remat)

    def setup(self):
        cfg = self.config
        self.coupling = make_coupling(cfg.coupling, cfg.spline_bins, cfg.spline_tail_bound)
        self.conditioner = Conditioner(cfg.strides)
        if cfg.n_shared:
            self.estimator = WaveNet2D(cfg, 0, cfg.n_shared, has_front=True, precision=self.precision)
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
    @property
    def precision(self):
        return precision_policy(self.dtype)

    def _top(self) -> WaveNet2D:
        """The per-flow top of the estimator (all of it for WaveFlow), applied functionally."""
        cfg = self.config
        return WaveNet2D(
            cfg, cfg.n_shared, cfg.n_layers, has_front=cfg.n_shared == 0, precision=self.precision, parent=None
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

    def condition(self, mel: Array, length: int, valid_frames: Array | None = None) -> Array:
        """Upsampled mel trimmed to `length` samples, in the 2-D layout: (B, G, W, bands);
        `valid_frames` (B,) for padded mels (see `Conditioner`)."""
        cfg = self.config
        if mel.ndim != 3 or mel.shape[1] != cfg.cond_channels:
            raise ValueError(f"mel must be (batch, {cfg.cond_channels}, frames), got shape {mel.shape}")
        if length > cfg.hop_length * mel.shape[2]:
            most = cfg.hop_length * mel.shape[2]
            raise ValueError(f"{mel.shape[2]} mel frames condition at most {most} samples, got {length}")
        c = self.conditioner(mel.astype(jnp.float32), valid_frames)[:, :length]
        return to_rows(c, cfg.n_groups)

    def per_flow_inputs(self, every_flow: bool = False) -> dict:
        """The stacked (K, ...) inputs of the flow scan: each flow's direction, head, embedding bias,
        gates and own estimator layers. `every_flow`: also a head for each flow where all share one, and
        a zero bias table where the variant has none (the form the row-by-row inverse scans)."""
        cfg = self.config
        k = cfg.n_flows
        xs = {"upward": (jnp.arange(k) + 1) % 2}  # flow k sees the rows flipped k + 1 times officially
        heads = self.proj_heads()
        if cfg.n_heads == k:
            xs["head"] = heads
        elif every_flow:
            xs["head"] = jax.tree.map(lambda a: jnp.broadcast_to(a, (k,) + a.shape[1:]), heads)
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
        if every_flow and "bias" not in xs:
            xs["bias"] = jnp.zeros((k, cfg.n_layers, 2 * cfg.channels))
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

    def _features(self, x_in: Array, xs: dict, cond: Array | None, c: Array, mask: Array | None = None) -> Array:
        """Estimator output (B, G, W, C) for one flow, in its direction `xs["upward"]`; `cond` is the
        shared layers' precomputed conditioning term and `c` the conditioner output; `mask` (B, 1, W, 1)
        the valid columns of padded items."""
        cfg = self.config
        n = cfg.n_shared
        e, gates, bias, upward = xs.get("embedding"), xs.get("gates"), xs.get("bias"), xs["upward"]
        skip, h = 0.0, x_in
        if n:
            h = self.estimator.front(x_in, e)
            h, skip = self.estimator(
                h,
                cond,
                None if bias is None else bias[:n],
                None if gates is None else gates[:n],
                upward,
                mask,
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
                upward,
                mask,
                method=WaveNet2D.run,
            )
            skip = skip + s
        return skip

    def _conditioning(self, mel: Array, length: int, valid_frames: Array | None = None) -> tuple[Array | None, Array]:
        """(shared layers' conditioning term, conditioner output), in row order: computed once for all
        flows (recomputing it inside each remat step is slower and no smaller on CPU: bench/RESULTS.md)."""
        c = self.condition(mel, length, valid_frames)
        return (self.estimator.condition(c) if self.config.n_shared else None), c

    def _to_official_order(self, x: Array) -> Array:
        """z after K flows, in the official layout: the official code flips the rows once per flow."""
        return flip_rows(x) if self.config.n_flows % 2 else x

    def _check_audio(self, x: Array, what: str):
        if x.ndim != 2:
            raise ValueError(f"{what} must be (batch, samples), got shape {x.shape}")
        if x.shape[1] % self.config.n_groups:
            raise ValueError(f"{what} length {x.shape[1]} is not a multiple of n_groups={self.config.n_groups}")

    # -- the flow --------------------------------------------------------------------------------
    def __call__(self, audio: Array, mel: Array, return_coupling_params: bool = False, lengths: Array | None = None):
        """audio (B, T), mel (B, bands, F) -> z (B, T), logdet (B,); with `return_coupling_params`
        also the (K, B, G, W, P) coupling parameters of every flow (affine: P = 2, log_s and t).

        `lengths` (B,): each item is its first lengths[b] samples (a multiple of lcm(hop, G)), the rest
        padding, with its mel computed from those samples alone (`mel_spectrogram(..., lengths=)`): the
        logdet counts the item's samples only, and z there is what the item alone would give."""
        self._check_audio(audio, "audio")
        cfg = self.config
        x, logdet0 = audio.astype(jnp.float32), jnp.zeros((audio.shape[0],), jnp.float32)
        if cfg.source_filter != "none":  # the flow models the excitation
            x, log_det = sf.whiten(x, *source_filter.envelope(mel, cfg, x.shape[1]), cfg.hop_length)
            if lengths is not None:
                log_det = jnp.where(jnp.arange(x.shape[1])[None] < jnp.asarray(lengths)[:, None], log_det, 0.0)
            logdet0 = jnp.sum(log_det, axis=1)
        x = to_rows(x, cfg.n_groups)
        valid = None if lengths is None else jnp.asarray(lengths) // cfg.hop_length + 1
        cond, c = self._conditioning(mel, audio.shape[1], valid)
        mask = None
        if lengths is not None:  # the valid columns of each item
            mask = (jnp.arange(x.shape[2])[None] < (jnp.asarray(lengths) // cfg.n_groups)[:, None]).astype(jnp.float32)
            mask = mask[:, None, :, None]

        def step(mdl, carry, xs):
            x, logdet = carry
            feat = mdl._features(shift_rows(x, xs["upward"]), xs, cond, c, mask)
            p = project(feat, mdl._head(xs))
            x, log_det = mdl.coupling.forward(x, p)
            if mask is not None:
                log_det = log_det * mask[..., 0]
            out = jnp.where(xs["upward"] == 1, flip_rows(p), p) if return_coupling_params else None
            return (x, logdet + jnp.sum(log_det, axis=(1, 2))), out

        (z, logdet), ps = self._scan(step, (x, logdet0), self.per_flow_inputs())
        z = from_rows(self._to_official_order(z))
        return (z, logdet, ps) if return_coupling_params else (z, logdet)

    def inverse(self, z: Array, mel: Array) -> tuple[Array, Array]:
        """Exact inverse, row by row: z (B, T), mel (B, bands, F) -> audio (B, T) and the inverse's own
        log-determinant log|d audio / d z| (B,), the forward one negated.

        Each row is recomputed from the full estimator (cost G x a forward pass); `nf.synthesize` is
        the cached fast path."""
        self._check_audio(z, "z")
        cfg = self.config
        x = self._to_official_order(to_rows(z.astype(jnp.float32), cfg.n_groups))  # its own inverse
        cond, c = self._conditioning(mel, z.shape[1])

        def flow(mdl, carry, xs):
            head, upward = mdl._head(xs), xs["upward"]

            def row(mdl, carry, i):
                # in causal order: rows after r still hold z, and the estimator's row r ignores them
                x, logdet = carry
                r = jnp.where(upward == 1, cfg.n_groups - 1 - i, i)
                feat = mdl._features(shift_rows(x, upward), xs, cond, c)
                p = project(jax.lax.dynamic_index_in_dim(feat, r, 1, keepdims=False), head)
                xr, log_det = mdl.coupling.inverse(jax.lax.dynamic_index_in_dim(x, r, 1, keepdims=False), p)
                return (jax.lax.dynamic_update_index_in_dim(x, xr, r, 1), logdet + jnp.sum(log_det, axis=1)), None

            carry, _ = nn.scan(row, length=cfg.n_groups, **_SCAN)(mdl, carry, jnp.arange(cfg.n_groups))
            return carry, None

        carry0 = (x, jnp.zeros((x.shape[0],), jnp.float32))
        (x, logdet), _ = self._scan(flow, carry0, self.per_flow_inputs(), reverse=True)
        x = from_rows(x)
        if cfg.source_filter != "none":
            x, log_det, _ = self.colour(x, mel)
            logdet = logdet + log_det
        return x, logdet

    def fast_inverse(
        self,
        z: Array,
        mel: Array,
        widths: Array | None = None,
        cache_cond: bool = True,
        unroll: int = 1,
        excitation: bool = False,
        fused: bool = False,
        interpret: bool = False,
    ) -> Array:
        """The exact inverse as the cached row-by-row form (`models.row_inverse`), one forward pass of
        work: z (B, T), mel (B, bands, F) -> audio (B, T). `widths` (B,): each item's valid columns;
        `cache_cond`: keep the shared layers' conditioning terms for all rows; `unroll`: rows per
        iteration of the row scan; `excitation`: a source-filter model's output before its filter;
        `fused`: each layer-row one Pallas kernel where `row_inverse.fused_applies` (CUDA programs;
        `interpret` runs it on CPU)."""
        cfg = self.config
        n = cfg.n_shared
        c = self.condition(mel, z.shape[1])
        shared_front, shared = self.estimator.row_weights() if n else (None, [])
        cond_shared = None
        if n and cache_cond:  # rows first, the layers next: (G, n, B, W, 2C)
            cond_shared = self.estimator.condition(jnp.swapaxes(c, 0, 1), axis=1)

        def own_weights(xs):
            front, own = shared_front, []
            if n < cfg.n_layers:
                front_top, own = self._top().apply({"params": xs["estimator"]}, method=WaveNet2D.row_weights)
                front = front if n else front_top
            return fold_embedding(*front, xs.get("embedding")), own

        x = row_inverse.cached_inverse(
            cfg,
            self.precision,
            self.coupling,
            unroll,
            c,
            to_rows(z.astype(jnp.float32), cfg.n_groups),
            self.per_flow_inputs(every_flow=True),
            shared,
            own_weights,
            cond_shared,
            widths,
            fused and row_inverse.fused_applies(cfg, cond_shared is not None),
            interpret,
        )
        x = from_rows(x)
        if cfg.source_filter == "none" or excitation:
            return x
        return self.colour(x, mel)[0]

    def colour(self, e: Array, mel: Array, state: Array | None = None) -> tuple[Array, Array, Array]:
        """The source filter's synthesis direction (`models.source_filter.colour`)."""
        return source_filter.colour(e, mel, self.config, state)

    def _scan(self, step, carry, xs, reverse: bool = False):
        """Run `step` over the K flows: `nn.scan` with the params broadcast."""
        unroll = self.config.n_flows if self.unroll_flows else 1
        if self.remat:  # inside a loop CSE prevention is not needed; unrolled, XLA would undo the remat
            step = nn.remat(step, prevent_cse=self.unroll_flows)
        return nn.scan(step, length=self.config.n_flows, reverse=reverse, unroll=unroll, **_SCAN)(self, carry, xs)
