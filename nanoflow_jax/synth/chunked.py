"""Long-form synthesis in bounded memory: the utterance cut into chunks over time, each synthesised with
`overlap` frames of context on either side and only its middle kept, from the same latent z as the whole
utterance. Every chunk is one call of the same compiled program (the chunks are padded to one size), so
memory depends on the chunk, not the utterance, and the first audio comes after one chunk's work.

How exact it is: the conditioner moves with the mel (shifting the mel by a frame shifts its output by a
hop), so a chunk differs from the whole only through its edges. The flows reach along time as far as
their receptive field: per flow the estimator sees R = 2 ** L - 1 columns either side (width dilations
1, 2, ..., 2 ** (L - 1)), and the inverse runs row by row, each row reading the rows below it, so R is
reached again at each of the G - 1 later rows; over K flows z at one column can move x up to
K * (G - 1) * R columns (G samples each) away: `receptive_frames`. An overlap of that many frames gives
the whole-utterance result to float precision; in practice the influence decays far sooner
(bench/RESULTS.md measures the error against the overlap).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np

from nanoflow_jax.models import AudioFlow, ModelConfig
from nanoflow_jax.models.audio_params import inference_params
from nanoflow_jax.synth.fast import (
    TRIM_FRAMES,
    as_batch,
    check_mels,
    draw_noise,
    output_length,
    synthesize_batch,
)

DEFAULT_CHUNK_FRAMES = 512  # ~6 s at 22.05 kHz / hop 256
DEFAULT_OVERLAP_FRAMES = 32
LONG_FRAMES = 4 * DEFAULT_CHUNK_FRAMES  # longer mels are chunked by default (~24 s at 22.05 kHz / hop 256)


def frame_step(cfg: ModelConfig) -> int:
    """Chunk edges fall on multiples of this many frames, so each chunk starts on a column of G samples."""
    return math.lcm(cfg.hop_length, cfg.n_groups) // cfg.hop_length


def receptive_frames(cfg: ModelConfig) -> int:
    """Frames either side within which z at one point can change x: K * (G - 1) * (2 ** L - 1) columns."""
    columns = cfg.n_flows * (cfg.n_groups - 1) * (2**cfg.n_layers - 1)
    return -(-columns * cfg.n_groups // cfg.hop_length)


def chunk_spans(frames: int, cfg: ModelConfig, chunk_frames: int, overlap_frames: int) -> list[tuple]:
    """[(first input frame, input frames, first kept sample, end kept sample)] covering the utterance's
    output_length(frames) samples in order: output frames [a, b) of a chunk come from input frames
    [a - overlap, b + overlap + 3), clipped to the mel."""
    q = frame_step(cfg)
    chunk = max(q, chunk_frames // q * q)
    overlap = -(-overlap_frames // q) * q
    total, hop = output_length(frames, cfg), cfg.hop_length
    spans, a = [], 0
    while a * hop < total:
        b = a + chunk
        start = max(0, a - overlap)
        end = min(frames, b + overlap + TRIM_FRAMES)
        spans.append((start, end - start, (a - start) * hop, min(b * hop, total) - start * hop))
        a = b
    return spans


def synthesize_chunks(
    model: AudioFlow,
    params: Any,
    mel: Any,
    *,
    chunk_frames: int = DEFAULT_CHUNK_FRAMES,
    overlap_frames: int = DEFAULT_OVERLAP_FRAMES,
    temperature: float = 1.0,
    dtype: str = "float32",
    z: Any = None,
    rng: jax.Array | None = None,
) -> Iterator[np.ndarray]:
    """Yield one mel's audio chunk by chunk: (bands, F) mel -> consecutive 1-D pieces whose concatenation
    is `synthesize(model, params, mel, z=z)` up to the chunk edges' error (none once `overlap_frames`
    reaches `receptive_frames`). z: the (T,) latent noise, else temperature * N(0, 1) from `rng` (default
    PRNGKey(0)), drawn as `synthesize` draws it, so both give the same audio."""
    cfg = model.config
    mel = np.asarray(mel, np.float32)
    if mel.ndim == 3 and mel.shape[0] == 1:
        mel = mel[0]
    if mel.ndim != 2 or mel.shape[0] != cfg.cond_channels:
        raise ValueError(f"chunked synthesis takes one mel of shape ({cfg.cond_channels}, frames), got {mel.shape}")
    if chunk_frames < 1 or overlap_frames < 0:
        raise ValueError(f"chunk_frames must be >= 1 and overlap_frames >= 0, got {chunk_frames}, {overlap_frames}")
    (total,) = check_mels([mel], cfg, dtype)
    z = np.asarray(draw_noise(z, [total], total, temperature, rng))[0]
    params = inference_params(model, params)  # once, not in every chunk's call
    spans = chunk_spans(mel.shape[1], cfg, chunk_frames, overlap_frames)
    size = max(n for _, n, _, _ in spans)  # every chunk padded to one program
    hop = cfg.hop_length
    for start, n, keep_from, keep_to in spans:
        piece = mel[:, start : start + n]
        zs = z[start * hop : start * hop + output_length(n, cfg)]
        audio = synthesize_batch(model, params, [piece], z=[zs], dtype=dtype, bucket_frames=size)[0]
        yield audio[keep_from:keep_to]


def synthesize(
    model: AudioFlow,
    params: Any,
    mel: Any,
    *,
    temperature: float = 1.0,
    dtype: str = "float32",
    z: Any = None,
    rng: jax.Array | None = None,
    chunk_frames: int | None = None,
    overlap_frames: int = DEFAULT_OVERLAP_FRAMES,
    **options: Any,
) -> Any:
    """Audio from mel spectrograms: `synthesize_batch` (one program for the batch; see it for `mel`, `z`,
    `rng`, `temperature`, `dtype` and its `options`), except that mels longer than `chunk_frames` are
    synthesised chunk by chunk (`synthesize_chunks`, with `overlap_frames` of context) from the same z,
    so memory is bounded whatever their length. chunk_frames None: chunk only a batch holding a mel
    longer than LONG_FRAMES (in chunks of DEFAULT_CHUNK_FRAMES); 0: never chunk."""
    cfg = model.config
    mels, batched = as_batch(mel, cfg.cond_channels)
    longest = max((m.shape[1] for m in mels), default=0)
    if chunk_frames is None:
        chunk_frames = DEFAULT_CHUNK_FRAMES if longest > LONG_FRAMES else 0
    if not chunk_frames or longest <= chunk_frames:
        return synthesize_batch(model, params, mel, temperature=temperature, dtype=dtype, z=z, rng=rng, **options)
    lengths = check_mels(mels, cfg, dtype)
    noise = np.asarray(draw_noise(z, lengths, max(lengths), temperature, rng))
    params = inference_params(model, params)
    outs = [
        np.concatenate(
            list(
                synthesize_chunks(
                    model, params, m, chunk_frames=chunk_frames, overlap_frames=overlap_frames, dtype=dtype, z=zs[:t]
                )
            )
        )
        for m, zs, t in zip(mels, noise, lengths, strict=True)
    ]
    return np.stack(outs) if batched else outs
