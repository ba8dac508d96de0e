"""The spectral envelope a log-mel spectrogram holds, as the per-block predictor and gain of the source
filter (`flows.source_filter`): mel magnitudes -> least-squares linear magnitudes (pseudo-inverse of the
filterbank) -> power per sample -> autocorrelation -> Levinson-Durbin. No parameters: the same envelope
in training and synthesis, computed on the device from the mel alone.

Block b (samples b * hop ..) lies between frames b and b + 1 (frame f is centred on sample f * hop), so it
takes the mean of their autocorrelations: a sum of two valid autocorrelations, so still one of a
minimum-phase predictor. Conditioning for float32 on silence and on a TTS model's mels: a white floor
NOISE_FLOOR below each frame's mean power, an absolute floor, and a Gaussian lag window (LAG_WINDOW_HZ)
that widens the envelope's sharpest peaks; every reflection coefficient is kept inside the unit circle.
"gain" mode keeps only g (the frame's RMS) and A = 1.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from nanoflow_jax.flows import source_filter as sf
from nanoflow_jax.models.audio_config import ModelConfig
from nanoflow_jax.models.filterbank import hann, mel_filterbank

Array = jax.Array
NOISE_FLOOR = 1e-3  # -30 dB under the frame's mean power
POWER_FLOOR = 1e-12  # digital silence
LAG_WINDOW_HZ = 60.0
MAX_REFLECTION = 0.999


@functools.lru_cache(maxsize=16)
def _analysis_constants(cfg: ModelConfig) -> tuple[np.ndarray, float, np.ndarray]:
    """(pseudo-inverse of the filterbank (freqs, mels), 1 / the window's energy, lag window (p + 1,))."""
    basis = mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.cond_channels, cfg.fmin, cfg.fmax)
    window = hann(cfg.win_length, cfg.n_fft)
    lags = np.arange(cfg.lpc_order + 1)
    lag_window = np.exp(-0.5 * (2 * np.pi * LAG_WINDOW_HZ * lags / cfg.sample_rate) ** 2)
    return np.linalg.pinv(basis).astype(np.float32), float(1.0 / np.sum(window**2)), lag_window.astype(np.float32)


def autocorrelation(mel: Array, cfg: ModelConfig) -> Array:
    """(B, bands, F) natural-log mel -> (B, F, p + 1) autocorrelation of each frame's power per sample."""
    pinv, inv_energy, lag_window = _analysis_constants(cfg)
    magnitude = jnp.maximum(jnp.einsum("fm,bmt->btf", pinv, jnp.exp(mel.astype(jnp.float32)), precision="highest"), 0)
    power = magnitude**2 * inv_energy
    power = power + NOISE_FLOOR * jnp.mean(power, axis=-1, keepdims=True) + POWER_FLOOR
    r = jnp.fft.irfft(power, n=cfg.n_fft, axis=-1)[..., : cfg.lpc_order + 1]
    return r * lag_window


def levinson(r: Array) -> tuple[Array, Array]:
    """r (..., p + 1) autocorrelation -> predictor a (..., p) (A(z) = 1 + sum a_k z^-k) and the
    prediction error power (...,)."""
    p = r.shape[-1] - 1
    a = jnp.zeros(r.shape[:-1] + (0,), r.dtype)
    err = r[..., 0]
    for i in range(1, p + 1):
        acc = r[..., i] + jnp.sum(a * jnp.flip(r[..., 1:i], -1), axis=-1)
        k = jnp.clip(-acc / err, -MAX_REFLECTION, MAX_REFLECTION)
        a = jnp.concatenate([a + k[..., None] * jnp.flip(a, -1), k[..., None]], axis=-1)
        err = err * (1 - k * k)
    return a, err


def block_envelope(mel: Array, cfg: ModelConfig, blocks: int) -> tuple[Array, Array]:
    """(B, bands, F) log mel -> predictor a (B, blocks, p) and log gain (B, blocks) of the first `blocks`
    blocks of hop samples (block b between frames b and b + 1; past the last frame, the last frame)."""
    r = autocorrelation(mel, cfg)
    frames = r.shape[1]
    idx = np.minimum(np.arange(blocks + 1), frames - 1)
    r = 0.5 * (r[:, idx[:-1]] + r[:, idx[1:]])
    if cfg.source_filter == "gain":
        return jnp.zeros(r.shape[:-1] + (cfg.lpc_order,), r.dtype), 0.5 * jnp.log(r[..., 0])
    a, err = levinson(r)
    return a, 0.5 * jnp.log(err)


def envelope(mel: Array, cfg: ModelConfig, samples: int) -> tuple[Array, Array]:
    """`block_envelope` over the blocks of `samples` samples."""
    return block_envelope(mel, cfg, sf.n_blocks(samples, cfg.hop_length))


def colour(e: Array, mel: Array, cfg: ModelConfig, state: Array | None = None) -> tuple[Array, Array, Array]:
    """The source filter's synthesis direction: excitation e (B, T) starting on a frame, and the mel
    from that frame on -> audio (B, T), its log-det log|dx/de| (B,) and the filter state after it
    (B, p) (`state`: the one before it, for audio made piece by piece; default silence)."""
    a, log_gain = envelope(mel, cfg, e.shape[1])
    x, state = sf.colour(e, a, log_gain, cfg.hop_length, state)
    return x, jnp.sum(sf.per_sample(log_gain, cfg.hop_length, e.shape[1]), axis=1), state
