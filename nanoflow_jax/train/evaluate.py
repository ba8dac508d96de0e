"""Test-set likelihood: on fixed random crops, and on full utterances (the paper's protocol).

Full utterances are cut to a multiple of 256 samples (the hop) and the NLL averaged per utterance; the
paper reports LL = -NLL in nats per sample.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from nanoflow_jax.audio.mel import MelConfig, mel_spectrogram
from nanoflow_jax.data import AudioSet, crop
from nanoflow_jax.losses import nll


def audio_nll(model, mel_cfg: MelConfig) -> Callable:
    """(params, audio (B, T)) -> mean NLL per sample, with the mel computed from the audio (on device):
    the training loss and the evaluation metric."""

    def fn(params, audio):
        z, logdet = model.apply(params, audio, mel_spectrogram(audio, mel_cfg))
        return nll(z, logdet)

    return fn


def make_nll_fn(model, mel_cfg: MelConfig) -> Callable:
    return jax.jit(audio_nll(model, mel_cfg))


def fixed_crops(data: AudioSet, n: int, length: int, seed: int = 0) -> np.ndarray:
    """The same `n` crops every time: one per utterance in turn, offsets from a fixed seed."""
    rng = np.random.default_rng(seed)
    return np.stack([crop(data.load(i % len(data)), length, rng) for i in range(n)])


def nll_on_crops(nll_fn: Callable, params, crops: np.ndarray, batch_size: int) -> float:
    n = len(crops) // batch_size * batch_size
    vals = [float(nll_fn(params, jnp.asarray(crops[i : i + batch_size]))) for i in range(0, n, batch_size)]
    return float(np.mean(vals))


def nll_on_utterances(nll_fn: Callable, params, data: AudioSet, n: int | None, multiple: int) -> float:
    """Mean over utterances of the per-sample NLL of each whole utterance cut to a multiple of `multiple`
    (one compilation per distinct length)."""
    vals = []
    for i in range(len(data) if n is None else min(n, len(data))):
        x = data.load(i)
        t = len(x) // multiple * multiple
        if t:
            vals.append(float(nll_fn(params, jnp.asarray(x[None, :t]))))
    return float(np.mean(vals)) if vals else math.nan
