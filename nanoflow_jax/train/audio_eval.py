"""Test-set likelihood (the loss of `audio_loss`): on fixed random crops, and on full utterances (the
paper's protocol).

Full utterances are cut to a multiple of 256 samples (the hop) and the NLL averaged per utterance; the
paper reports LL = -NLL in nats per sample.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax.numpy as jnp
import numpy as np

from nanoflow_jax.data import AudioSet, crop


def fixed_crops(data: AudioSet, n: int, length: int, seed: int = 0) -> np.ndarray:
    """The same `n` crops every time: one per utterance in turn, offsets from a fixed seed."""
    rng = np.random.default_rng(seed)
    return np.stack([crop(data.load(i % len(data)), length, rng) for i in range(n)])


def nll_on_crops(nll_fn: Callable, params, crops: np.ndarray, batch_size: int) -> float:
    n = len(crops) // batch_size * batch_size
    vals = [float(nll_fn(params, jnp.asarray(crops[i : i + batch_size]))) for i in range(0, n, batch_size)]
    return float(np.mean(vals))


def bucket_length(length: int, multiple: int) -> int:
    """`length` (a multiple of `multiple`) rounded up to `multiple` times a power of two: the padded
    shapes of whole-utterance evaluation, a handful for any corpus."""
    return multiple * 2 ** math.ceil(math.log2(length // multiple))


def nll_on_utterances(
    nll_fn: Callable, params, data: AudioSet, n: int | None, multiple: int, samples_per_batch: int
) -> tuple[float, int]:
    """Mean over utterances of the per-sample NLL of each whole utterance cut to a multiple of `multiple`
    (`nll_fn` from `utterance_nll`, jitted). Utterances are padded to power-of-two buckets and batched
    within a bucket, about `samples_per_batch` samples a batch (at least one utterance): one compilation
    per bucket. -> (mean NLL, number of distinct batch shapes)."""
    items = []
    for i in range(len(data) if n is None else min(n, len(data))):
        x = data.load(i)
        t = len(x) // multiple * multiple
        if t:
            items.append(x[:t])
    buckets: dict[int, list[np.ndarray]] = {}
    for x in items:
        buckets.setdefault(bucket_length(len(x), multiple), []).append(x)
    vals, shapes = [], set()
    for length, group in sorted(buckets.items()):
        rows = max(1, samples_per_batch // length)
        for start in range(0, len(group), rows):
            chunk = group[start : start + rows]
            audio = np.zeros((rows, length), np.float32)
            lengths = np.zeros((rows,), np.int32)  # rows past the chunk are empty and dropped
            for j, x in enumerate(chunk):
                audio[j, : len(x)], lengths[j] = x, len(x)
            shapes.add(audio.shape)
            vals.extend(np.asarray(nll_fn(params, jnp.asarray(audio), jnp.asarray(lengths)))[: len(chunk)].tolist())
    return (float(np.mean(vals)) if vals else math.nan), len(shapes)
