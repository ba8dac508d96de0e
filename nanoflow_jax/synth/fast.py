"""Fast synthesis: the exact row-by-row inverse with per-layer row caches, as one compiled program.

Inverting flow k means computing its rows in order: row i's coupling parameters come from the estimator
applied to rows < i, which are known by then. The estimator is causal down the rows, so layer j only
needs its own input at rows i - 2*d_j, i - d_j and i (d_j its height dilation). Each layer keeps a cache
of its last 2*d_j input rows, and every row costs L single-row convolutions: the whole synthesis costs
one forward pass. Flows and rows are two nested `lax.scan`s; nothing runs in Python per row.

A 3x3 convolution of one row is one matmul: the three cached/new rows concatenated on channels (3C) times
the kernel laid out as (3C, 3 * 2C), one output block per width tap, then the blocks are shifted along
the width by the tap's dilation and summed.

Mixed precision: the matmul operands are `dtype` (float16 / bfloat16) with float32 accumulation; the
running samples, the residual stream, the gate non-linearities, the skip sum, the projection heads and
the coupling stay float32.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nanoflow_jax.config import ModelConfig
from nanoflow_jax.flows import make_coupling, unsqueeze
from nanoflow_jax.models import DTYPES, HOP, AudioFlow
from nanoflow_jax.params import inference_params

Array = jnp.ndarray
TRIM_FRAMES = 3  # the official synthesis drops the last 3 frames (768 samples) the upsampler smears
# keep the shared layers' conditioning terms for all rows when they fit in this; else compute per row
COND_CACHE_BYTES = 1 << 30
SILENCE = math.log(1e-5)  # the log-mel floor: the pad value for shorter mels in a batch


def output_length(frames: int, n_groups: int) -> int:
    """Samples synthesised from `frames` mel frames: 256 * (frames - 3), down to a multiple of G."""
    return max(HOP * (frames - TRIM_FRAMES), 0) // n_groups * n_groups


def cache_cond_fits(cfg: ModelConfig, batch: int, samples: int) -> bool:
    """Whether the shared layers' conditioning terms for `batch` x `samples` fit in COND_CACHE_BYTES."""
    return batch * samples * cfg.n_shared * 2 * cfg.channels * 4 <= COND_CACHE_BYTES


def min_frames(n_groups: int) -> int:
    return next(f for f in range(TRIM_FRAMES + 1, TRIM_FRAMES + 2 + n_groups) if output_length(f, n_groups) > 0)


# -- the estimator on one row ---------------------------------------------------------------------
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


def _dot(a: Array, w: Array) -> Array:
    return jnp.dot(a, w.astype(a.dtype), preferred_element_type=jnp.float32)


class _Row:
    """Static description of the estimator for one-row steps."""

    def __init__(self, cfg: ModelConfig, width: int, dtype: Any):
        self.cfg, self.width, self.dtype = cfg, width, dtype
        self.dilations = [cfg.height_dilation(j) for j in range(cfg.n_layers)]
        # width taps of layer j: offset -1, 0, +1 times 2**j; a tap wholly outside the row is dropped
        self.taps = [[t for t in (-1, 0, 1) if abs(t) * 2**j < width] for j in range(cfg.n_layers)]

    def init_caches(self, batch: int) -> list[Array]:
        c = self.cfg.channels
        return [jnp.zeros((batch, self.width, 2 * d * c), self.dtype) for d in self.dilations]

    def layer_weights(self, layer: dict, j: int) -> dict:
        """One layer's params (inference form) -> the matmul form used per row."""
        c2 = 2 * self.cfg.channels
        conv = _conv_as_matmul(layer["conv"]["kernel"])
        conv = conv.reshape(conv.shape[:-1] + (3, c2))[..., [t + 1 for t in self.taps[j]], :]
        conv = conv.reshape(conv.shape[:-2] + (-1,))
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
            skip_k = w["res_skip"][:, c:] @ head["kernel"]
            const = const + w["res_skip_bias"][c:] @ head["kernel"]
            if j < self.cfg.n_layers - 1:
                out = jnp.concatenate([w["res_skip"][:, :c], skip_k], axis=1)
                out_bias = jnp.concatenate([w["res_skip_bias"][:c], jnp.zeros(skip_k.shape[1:])])
            else:
                out, out_bias = skip_k, jnp.zeros(skip_k.shape[1:])
            folded.append(dict(w, out=out.astype(self.dtype), out_bias=out_bias))
        return folded, const

    def step(self, x_prev, caches, layers, front, cond, flow, mask):
        """One row of the estimator and head: x_prev (B, W) the previous row of this flow's input (zeros
        for row 0), `layers` per-layer weights with the head folded in, `cond` this row's conditioning
        terms and biases per layer, (B, W, 2C) each. -> the head's output less its constant part
        (B, W, P) in float32, and the updated caches."""
        cfg, c = self.cfg, self.cfg.channels
        h = x_prev[..., None] * front["kernel"][0] + front["bias"]
        proj = 0.0
        new_caches = []
        for j, (w, cache, d) in enumerate(zip(layers, caches, self.dilations, strict=True)):
            hm = h.astype(self.dtype)
            if mask is not None:  # zero beyond each item's own width, as the conv's "same" padding
                hm = jnp.where(mask, hm, 0)
            rows = jnp.concatenate([cache[..., :c], cache[..., d * c : (d + 1) * c], hm], axis=-1)
            new_caches.append(jnp.concatenate([cache[..., c:], hm], axis=-1))
            y = _dot(rows, w["conv"])
            taps = self.taps[j]
            y = y.reshape(y.shape[:-1] + (len(taps), 2 * c))
            a = sum(_shift_width(y[..., n, :], t * 2**j) if t else y[..., n, :] for n, t in enumerate(taps))
            a = a + cond[j]
            acts = jnp.tanh(a[..., :c]) * jax.nn.sigmoid(a[..., c:])
            rs = _dot(acts.astype(self.dtype), w["out"]) + w["out_bias"]
            if j < cfg.n_layers - 1:
                proj = proj + rs[..., c:]
                res = rs[..., :c]
                if "gates" in flow:
                    gate = flow["gates"][j]
                    h = h + res * (jnp.exp(gate) if cfg.gate_form == "exp" else gate)
                else:
                    h = (h + res) * math.sqrt(0.5)
            else:
                proj = proj + rs
        return proj, new_caches


def _flow_inputs(cfg: ModelConfig, p: dict) -> dict:
    """The stacked (K, ...) per-flow inputs of the flow scan, from inference-form params."""
    k, n, c2 = cfg.n_flows, cfg.n_shared, 2 * cfg.channels
    heads = p["proj_heads"]
    if cfg.n_heads == 1:
        heads = jax.tree.map(lambda a: jnp.broadcast_to(a, (k,) + a.shape[1:]), heads)
    xs = {"flipped": (jnp.arange(k) + 1) % 2, "head": heads}
    bias = p.get("flow_bias_table")
    xs["bias"] = jnp.zeros((k, cfg.n_layers, c2)) if bias is None else bias
    if "flow_gates" in p:
        xs["gates"] = p["flow_gates"]
    if "flow_embedding" in p and cfg.injects("concat"):
        xs["embedding"] = p["flow_embedding"]
    if n < cfg.n_layers:
        xs["estimator"] = p["per_flow_estimator"]
    return xs


def _inverse(cfg: ModelConfig, dtype: Any, cache_cond: bool, p: dict, c: Array, z: Array, widths: Array | None):
    """c (B, G, W, bands) conditioning, z (B, G, W) -> x (B, G, W); `widths` (B,) valid columns."""
    b, g, width, _ = c.shape
    n = cfg.n_shared
    row = _Row(cfg, width, dtype)
    coupling = make_coupling(cfg.coupling, cfg.spline_bins, cfg.spline_tail_bound)
    mask = None if widths is None else (jnp.arange(width)[None, :] < widths[:, None])[..., None]
    c = jnp.swapaxes(c, 0, 1)  # rows first: (G, B, W, bands)
    shared = [row.layer_weights(p["estimator"][f"layer_{j}"], j) for j in range(n)]
    cond_shared = None
    if n and cache_cond:  # (G, n, B, W, 2C): conditioning terms plus the layers' own biases
        wc = jnp.stack([w["cond"] for w in shared])
        cond_shared = jnp.einsum("gbwc,nco->gnbwo", c, wc) + jnp.stack([w["bias"] for w in shared])[:, None, None]
        cond_shared = cond_shared.astype(dtype)

    def flow(z, xs):
        own = xs.get("estimator", {})
        layers = shared + [row.layer_weights(own[f"layer_{j}"], j) for j in range(n, cfg.n_layers)]
        layers, head_const = row.fold_head(layers, xs["head"])
        front = dict((p["estimator"] if n else own)["front_conv"])
        if "embedding" in xs:  # concatenated embedding: a per-flow bias of the front conv
            front["bias"] = front["bias"] + xs["embedding"] @ front["kernel"][1:]
        first = 0 if cond_shared is None else n  # layers whose conditioning is computed per row
        wc = jnp.concatenate([w["cond"] for w in layers[first:]], axis=-1) if first < cfg.n_layers else None
        bias = xs["bias"] + jnp.stack([0.0 * w["bias"] if j < first else w["bias"] for j, w in enumerate(layers)])
        scale = jnp.exp(3.0 * xs["head"]["scale"])

        def one_row(carry, i):
            x_prev, caches = carry
            r = jnp.where(xs["flipped"] == 1, g - 1 - i, i)  # this flow sees c flipped on odd counts
            cond = []
            if cond_shared is not None:
                cs = cond_shared[r]
                cond = [cs[j].astype(jnp.float32) for j in range(n)]
            if wc is not None:
                extra = jnp.dot(c[r], wc)
                cond += [
                    extra[..., m * 2 * cfg.channels : (m + 1) * 2 * cfg.channels] for m in range(cfg.n_layers - first)
                ]
            cond = [a + bias[j] for j, a in enumerate(cond)]
            proj, caches = row.step(x_prev, caches, layers, front, cond, xs, mask)
            x_row, _ = coupling.inverse(z[i], (proj + head_const) * scale)
            return (x_row, caches), x_row

        carry = (jnp.zeros((b, width), jnp.float32), row.init_caches(b))
        _, x = jax.lax.scan(one_row, carry, jnp.arange(g))
        return jnp.flip(x, 0), None  # (G, B, W); undo this flow's flip

    x, _ = jax.lax.scan(flow, jnp.swapaxes(z, 0, 1), _flow_inputs(cfg, p), reverse=True)
    return jnp.swapaxes(x, 0, 1)


@functools.lru_cache(maxsize=32)
def synthesis_fn(cfg: ModelConfig, dtype: str = "float32", masked: bool = False, cache_cond: bool = True):
    """The jitted `(params, mel, z[, widths]) -> audio` for one model config and compute type:
    inference-form params, mel (B, bands, F), z (B, T) with T = output_length(F) -> audio (B, T)."""
    model, jdtype = AudioFlow(cfg), DTYPES[dtype]

    def fn(params, mel, z, widths=None):
        c = model.apply(params, mel, z.shape[1], method=AudioFlow.condition)
        x2d = _inverse(
            cfg,
            jdtype,
            cache_cond,
            params["params"],
            c,
            jnp.swapaxes(z.reshape(z.shape[0], -1, cfg.n_groups), 1, 2),
            widths,
        )
        return unsqueeze(x2d)

    return jax.jit(fn)


# -- the public entry point -------------------------------------------------------------------------
def _as_batch(mel: Any, bands: int) -> tuple[list[np.ndarray], bool]:
    """-> list of (bands, F) float32 mels, and whether the caller gave one batched array."""
    if isinstance(mel, (list, tuple)):
        mels = [np.asarray(m, np.float32) for m in mel]
        for m in mels:
            if m.ndim != 2 or m.shape[0] != bands:
                raise ValueError(f"each mel in a list must be ({bands}, frames), got shape {m.shape}")
        return mels, False
    m = np.asarray(mel, np.float32)
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3 or m.shape[1] != bands:
        raise ValueError(f"mel must be ({bands}, frames) or (batch, {bands}, frames), got shape {m.shape}")
    return list(m), True


def synthesize(
    model: AudioFlow,
    params: Any,
    mel: Any,
    *,
    temperature: float = 1.0,
    dtype: str = "float32",
    z: Any = None,
    rng: jax.Array | None = None,
    cache_cond: bool | None = None,
    bucket_frames: int = 1,
) -> Any:
    """Audio from mel spectrograms with the cached fast inverse.

    mel: (bands, F) or (B, bands, F) array, or a list of (bands, F_i) arrays of different lengths
        (padded to the longest, each output trimmed to its own length).
    Each mel of F frames gives 256 * (F - 3) samples (the official synthesis' trim, down to a
    multiple of G). z: the latent noise, (B, T) or a list of (T_i,), else temperature * N(0, 1) from
    `rng` (default PRNGKey(0)). dtype: "float32", "float16" or "bfloat16" for the estimator's matmuls;
    a non-finite result in reduced precision is redone in float32 with a warning.
    bucket_frames: pad the batch's frame count up to a multiple of this, so that inputs of nearby
    lengths share one compiled program (the outputs are exact all the same).
    cache_cond: keep the shared layers' conditioning terms for all rows (default: when under 1 GiB).
    Returns (B, T) for an array input and a list of 1-D arrays for a list.
    """
    cfg = model.config
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    mels, batched = _as_batch(mel, cfg.cond_channels)
    if not mels:
        raise ValueError("no mel spectrograms given")
    frames = [m.shape[1] for m in mels]
    lengths = [output_length(f, cfg.n_groups) for f in frames]
    if min(lengths) <= 0:
        need = min_frames(cfg.n_groups)
        raise ValueError(f"a mel needs at least {need} frames to synthesise audio, got {min(frames)}")
    for m in mels:
        if not np.all(np.isfinite(m)):
            raise ValueError("mel contains NaN or Inf values")
    f_max = -(-max(frames) // bucket_frames) * bucket_frames
    t_max = output_length(f_max, cfg.n_groups)
    mel_b = np.stack([np.pad(m, ((0, 0), (0, f_max - m.shape[1])), constant_values=SILENCE) for m in mels])
    z_b = _noise(z, lengths, t_max, temperature, rng)
    masked = any(t != t_max for t in lengths)
    widths = jnp.asarray([t // cfg.n_groups for t in lengths]) if masked else None
    if cache_cond is None:
        cache_cond = cache_cond_fits(cfg, len(mels), t_max)
    params = inference_params(model, params)

    def run(dt):
        fn = synthesis_fn(cfg, dt, masked, cache_cond)
        args = (params, jnp.asarray(mel_b), z_b) + ((widths,) if masked else ())
        return np.asarray(fn(*args))

    audio = run(dtype)
    outs = [a[:t] for a, t in zip(audio, lengths, strict=True)]
    if dtype != "float32" and not all(np.all(np.isfinite(o)) for o in outs):
        warnings.warn(f"synthesis in {dtype} gave non-finite samples; redoing it in float32", stacklevel=2)
        audio = run("float32")
        outs = [a[:t] for a, t in zip(audio, lengths, strict=True)]
    return np.stack(outs) if batched else outs


def _noise(z: Any, lengths: Sequence[int], t_max: int, temperature: float, rng) -> Array:
    b = len(lengths)
    if z is None:
        rng = jax.random.PRNGKey(0) if rng is None else rng
        return temperature * jax.random.normal(rng, (b, t_max), jnp.float32)
    if isinstance(z, (list, tuple)):
        zs = [np.asarray(v, np.float32).reshape(-1) for v in z]
    else:
        za = np.asarray(z, np.float32)
        zs = list(za.reshape(1, -1) if za.ndim == 1 else za)
    if len(zs) != b:
        raise ValueError(f"z holds {len(zs)} sequences for {b} mels")
    for v, t in zip(zs, lengths, strict=True):
        if v.shape[0] < t:
            raise ValueError(f"z has {v.shape[0]} samples where its mel needs {t}")
    return jnp.asarray(np.stack([np.pad(v[:t], (0, t_max - t)) for v, t in zip(zs, lengths, strict=True)]))
