"""Fast synthesis: the model's cached inverse (`AudioFlow.fast_inverse`, `models.row_inverse`) compiled
once per model, compute type and bucket, with the batch padded, bucketed and trimmed around it; the
lengths the official synthesis keeps; the latent noise.
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

from nanoflow_jax.models import AudioFlow, ModelConfig, precision_policy
from nanoflow_jax.models.platform import on_platform

Array = jnp.ndarray
TRIM_FRAMES = 3  # the official synthesis drops the last 3 frames (768 samples) the upsampler smears
# keep the shared layers' conditioning terms for all rows when they fit in this; else compute per row
COND_CACHE_BYTES = 1 << 30
SILENCE = math.log(1e-5)  # the log-mel floor: the pad value for shorter mels in a batch


def output_length(frames: int, cfg: ModelConfig) -> int:
    """Samples synthesised from `frames` mel frames: hop * (frames - 3), down to a multiple of G."""
    return max(cfg.hop_length * (frames - TRIM_FRAMES), 0) // cfg.n_groups * cfg.n_groups


def cache_cond_fits(cfg: ModelConfig, batch: int, samples: int) -> bool:
    """Whether the shared layers' conditioning terms for `batch` x `samples` fit in COND_CACHE_BYTES."""
    return batch * samples * cfg.n_shared * 2 * cfg.channels * 4 <= COND_CACHE_BYTES


def min_frames(cfg: ModelConfig) -> int:
    return next(f for f in range(TRIM_FRAMES + 1, TRIM_FRAMES + 2 + cfg.n_groups) if output_length(f, cfg) > 0)


def default_row_unroll(cfg: ModelConfig) -> tuple[int, int]:
    """(CPU, accelerators) rows per iteration of the row scan. CPU: 1 (unrolling only grows the program
    there: bench/RESULTS.md). GPU / TPU: every row, so a flow is one
    straight run of kernels: each loop iteration costs a launch sequence and a trip of the loop predicate
    to the host."""
    return 1, cfg.n_groups


@functools.lru_cache(maxsize=32)
def synthesis_fn(
    cfg: ModelConfig,
    dtype: str = "float32",
    masked: bool = False,
    cache_cond: bool = True,
    unroll: int | None = None,
    excitation: bool = False,
):
    """The jitted `(params, mel, z[, widths]) -> audio` for one model config and compute type:
    inference-form params, mel (B, bands, F), z (B, T) with T = output_length(F) -> audio (B, T).
    `unroll`: rows per row-scan iteration; None picks `default_row_unroll` per backend when the program
    is lowered (so an exported program carries each backend's choice). `excitation`: a source-filter
    model's output before its filter (for chunks that carry the filter's state)."""
    model = AudioFlow(cfg, dtype=precision_policy(dtype).operand_dtype)

    def run(unroll, fused, params, mel, z, widths):
        args = (widths, cache_cond, unroll, excitation, fused)
        return model.apply(params, z, mel, *args, method=AudioFlow.fast_inverse)

    def fn(params, mel, z, widths=None):
        if unroll is not None:
            return run(unroll, False, params, mel, z, widths)
        leaves, tree = jax.tree.flatten((params, mel, z, widths))
        cpu_unroll, accelerator_unroll = default_row_unroll(cfg)

        def form(u, fused):
            return lambda *flat: [run(u, fused, *jax.tree.unflatten(tree, flat))]

        # CUDA: each layer-row one Pallas kernel (`models.row_kernel`) where the model allows it, with
        # bfloat16 / float16 operands; float32 and TF32 stay with XLA's GEMMs (Triton compiled the
        # paper model's float32 program for over 10 minutes, TF32 for over 4: bench/RESULTS.md)
        forms = dict(cpu=form(cpu_unroll, False), default=form(accelerator_unroll, False))
        cuda = form(accelerator_unroll, precision_policy(dtype).reduced)
        return on_platform(**forms, cuda=cuda)(*leaves)[0]

    return jax.jit(fn)


# -- the public entry point -------------------------------------------------------------------------
def as_batch(mel: Any, bands: int) -> tuple[list[np.ndarray], bool]:
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


def check_mels(mels: Sequence[np.ndarray], cfg: ModelConfig) -> list[int]:
    """The output length of each (bands, F) mel, after checking that there is one, and each is finite and
    long enough."""
    if not mels:
        raise ValueError("no mel spectrograms given")
    lengths = [output_length(m.shape[1], cfg) for m in mels]
    if min(lengths) <= 0:
        need = min_frames(cfg)
        raise ValueError(f"a mel needs at least {need} frames to synthesise audio, got {min(m.shape[1] for m in mels)}")
    for m in mels:
        if not np.all(np.isfinite(m)):
            raise ValueError("mel contains NaN or Inf values")
    return lengths


def synthesize_prepared(
    model: AudioFlow,
    params: Any,
    mels: Sequence[np.ndarray],
    lengths: Sequence[int],
    noise: Any,
    dtype: str = "float32",
    cache_cond: bool | None = None,
    bucket_frames: int | None = None,
    excitation: bool = False,
) -> list[np.ndarray]:
    """The whole batch in one program, from what has been prepared once (`vocoder.Vocoder`): (bands, F)
    mels already checked (`check_mels` gave `lengths`), inference-form params, noise (B, >= max(lengths)).
    Nothing is checked or folded again. Frame counts are padded to `bucket_frames_for(max F,
    bucket_frames)` and the batch to `bucket_batch`, so nearby sizes share a program; padding is masked
    and trimmed, so the outputs are exact. `cache_cond`: keep the shared layers' conditioning terms for
    all rows (default: when under 1 GiB); `excitation`: see `synthesis_fn`. A non-finite result in reduced
    precision is redone in float32 with a warning. -> one 1-D array per mel."""
    cfg = model.config
    frames = [m.shape[1] for m in mels]
    f_max = bucket_frames_for(max(frames), bucket_frames)
    t_max = output_length(f_max, cfg)
    b, b_pad = len(mels), bucket_batch(len(mels))
    silent = np.full((cfg.cond_channels, f_max), SILENCE, np.float32)
    mel_b = np.stack([np.pad(m, ((0, 0), (0, f_max - m.shape[1])), constant_values=SILENCE) for m in mels])
    mel_b = np.concatenate([mel_b, np.broadcast_to(silent, (b_pad - b,) + silent.shape)])
    noise = jnp.asarray(noise, jnp.float32)[:, : max(lengths)]
    z_b = jnp.pad(noise, ((0, b_pad - b), (0, t_max - noise.shape[1])))
    widths = jnp.asarray([t // cfg.n_groups for t in lengths] + [0] * (b_pad - b))  # padding rows: none valid
    if cache_cond is None:
        cache_cond = cache_cond_fits(cfg, b_pad, t_max)

    def run(dt):
        return np.asarray(
            synthesis_fn(cfg, dt, True, cache_cond, excitation=excitation)(params, jnp.asarray(mel_b), z_b, widths)
        )[:b]

    audio = run(dtype)
    outs = [a[:t] for a, t in zip(audio, lengths, strict=True)]
    if dtype != "float32" and not all(np.all(np.isfinite(o)) for o in outs):
        warnings.warn(f"synthesis in {dtype} gave non-finite samples; redoing it in float32", stacklevel=2)
        audio = run("float32")
        outs = [a[:t] for a, t in zip(audio, lengths, strict=True)]
    return outs


def bucket_frames_for(frames: int, step: int | None = None) -> int:
    """Frames padded up to a multiple of `step`, or (None) of 2**(floor(log2(frames)) - 3), at least 8:
    eight buckets per octave, at most 12.5% padding (on CPU, where compiling is cheap, padding costs
    more than it saves: bench/RESULTS.md)."""
    if step is None:
        step = max(8, 2 ** (max(frames, 1).bit_length() - 4))
    return -(-frames // step) * step


def bucket_batch(b: int) -> int:
    """Batch sizes that share a program: powers of two up to 8, then multiples of 8."""
    return 1 << (b - 1).bit_length() if b <= 8 else -(-b // 8) * 8


def draw_noise(z: Any, lengths: Sequence[int], t_max: int, temperature: float, rng) -> Array:
    b = len(lengths)
    if z is None:  # drawn at the items' own length: the padding of a bucket does not change the noise
        rng = jax.random.PRNGKey(0) if rng is None else rng
        noise = temperature * jax.random.normal(rng, (b, max(lengths)), jnp.float32)
        return jnp.pad(noise, ((0, 0), (0, t_max - max(lengths))))
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
