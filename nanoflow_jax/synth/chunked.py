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

import functools
import math
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np

from nanoflow_jax.models import AudioFlow, ModelConfig
from nanoflow_jax.synth.fast import TRIM_FRAMES, output_length, synthesize_prepared

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


def chunks_prepared(
    model: AudioFlow,
    params: Any,
    mel: np.ndarray,
    noise: np.ndarray,
    *,
    chunk_frames: int = DEFAULT_CHUNK_FRAMES,
    overlap_frames: int = DEFAULT_OVERLAP_FRAMES,
    dtype: str = "float32",
) -> Iterator[np.ndarray]:
    """One mel's audio chunk by chunk, from what has been prepared once: a checked (bands, F) mel,
    inference-form params and its (T,) latent noise. Consecutive 1-D pieces whose concatenation is the
    whole utterance's audio up to the chunk edges' error (none once `overlap_frames` reaches
    `receptive_frames`); every chunk is one call of the same program (padded to one size)."""
    cfg = model.config
    if chunk_frames < 1 or overlap_frames < 0:
        raise ValueError(f"chunk_frames must be >= 1 and overlap_frames >= 0, got {chunk_frames}, {overlap_frames}")
    spans = chunk_spans(mel.shape[1], cfg, chunk_frames, overlap_frames)
    size = max(n for _, n, _, _ in spans)  # every chunk padded to one program
    hop, filtered = cfg.hop_length, cfg.source_filter != "none"
    state = None
    for start, n, keep_from, keep_to in spans:
        t = output_length(n, cfg)
        zs = noise[None, start * hop : start * hop + t]
        chunk = [mel[:, start : start + n]]
        piece = synthesize_prepared(model, params, chunk, [t], zs, dtype, bucket_frames=size, excitation=filtered)[0]
        piece = piece[keep_from:keep_to]
        if filtered:  # the filter runs on through the chunk edges: its state carried, exactly
            first = start + keep_from // hop
            frames = mel[:, first : first + -(-len(piece) // hop) + 1]  # the frames its blocks lie between
            piece, state = _colour(model, params, piece, frames, state)
        yield piece


def _colour(model: AudioFlow, params: Any, e: np.ndarray, mel: np.ndarray, state: Any) -> tuple[np.ndarray, Any]:
    x, _, state = _colour_fn(model)(params, e[None], mel[None], state)
    return np.asarray(x[0]), state


@functools.lru_cache(maxsize=8)
def _colour_fn(model: AudioFlow):
    return jax.jit(lambda params, e, mel, state: model.apply(params, e, mel, state, method=AudioFlow.colour))
