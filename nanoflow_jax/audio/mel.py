"""The Tacotron2 / WaveGlow mel spectrogram, in JAX (batched, on device).

Reflect-pad n_fft/2 each side, periodic Hann window, |STFT| (magnitude, not power), Slaney-style mel
filterbank with area normalisation (librosa's defaults), natural log of max(x, 1e-5). F = T // hop + 1 frames.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax.numpy as jnp
import numpy as np

Array = jnp.ndarray


@dataclasses.dataclass(frozen=True)
class MelConfig:
    sample_rate: int = 22050
    n_fft: int = 1024
    hop_length: int = 256
    win_length: int = 1024
    n_mels: int = 80
    fmin: float = 0.0
    fmax: float = 8000.0
    clamp: float = 1e-5

    @classmethod
    def from_any(cls, cfg: Any = None, **overrides) -> MelConfig:
        """From None, a MelConfig, or any mapping / ConfigDict holding (some of) these fields, e.g. a
        config's `data` section; other keys are ignored."""
        if isinstance(cfg, cls):
            base = dataclasses.asdict(cfg)
        else:
            if hasattr(cfg, "to_dict"):
                cfg = cfg.to_dict()
            names = {f.name for f in dataclasses.fields(cls)}
            base = {k: v for k, v in (cfg or {}).items() if k in names}
        base.update(overrides)
        out = cls(**base)
        if out.win_length > out.n_fft:
            raise ValueError(f"win_length {out.win_length} exceeds n_fft {out.n_fft}")
        if not 0 <= out.fmin < out.fmax <= out.sample_rate / 2:
            raise ValueError(f"need 0 <= fmin < fmax <= sample_rate/2, got {out.fmin}, {out.fmax}, {out.sample_rate}")
        return out


def _hz_to_mel(f):
    f = np.asarray(f, np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    logstep = math.log(6.4) / 27.0
    lin = f / f_sp
    return np.where(f >= min_log_hz, min_log_hz / f_sp + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, lin)


def _mel_to_hz(m):
    m = np.asarray(m, np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


def mel_basis(cfg: MelConfig) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) Slaney mel filterbank with area normalisation, float32."""
    fft_freqs = np.linspace(0.0, cfg.sample_rate / 2, cfg.n_fft // 2 + 1)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(cfg.fmin), _hz_to_mel(cfg.fmax), cfg.n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2:] - mel_f[:-2]))[:, None]
    return weights.astype(np.float32)


def hann_window(cfg: MelConfig) -> np.ndarray:
    """Periodic Hann window of win_length, zero-padded to n_fft (centred)."""
    n = np.arange(cfg.win_length)
    w = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / cfg.win_length)
    left = (cfg.n_fft - cfg.win_length) // 2
    return np.pad(w, (left, cfg.n_fft - cfg.win_length - left)).astype(np.float32)


def n_frames(n_samples: int, hop_length: int = 256) -> int:
    return n_samples // hop_length + 1


def magnitude(audio: Array, cfg: MelConfig) -> Array:
    """(B, T) -> (B, n_fft // 2 + 1, F) STFT magnitude."""
    pad = cfg.n_fft // 2
    if audio.shape[-1] <= pad:
        raise ValueError(f"audio of {audio.shape[-1]} samples is too short: need more than {pad} (n_fft / 2)")
    x = jnp.pad(audio.astype(jnp.float32), ((0, 0), (pad, pad)), mode="reflect")
    frames = n_frames(audio.shape[-1], cfg.hop_length)
    idx = np.arange(frames)[:, None] * cfg.hop_length + np.arange(cfg.n_fft)[None, :]
    spec = jnp.fft.rfft(x[:, idx] * hann_window(cfg), axis=-1)
    return jnp.swapaxes(jnp.abs(spec), 1, 2)


def mel_spectrogram(audio: Array, cfg: Any = None, **overrides) -> Array:
    """(B, T) float audio in [-1, 1] -> (B, n_mels, T // hop + 1) natural-log mel.

    `cfg` is a MelConfig, a mapping with its fields (e.g. a config's `data` section) or None for the
    LJSpeech defaults; keyword arguments override single fields (`sample_rate=24000`, `fmax=12000.`)."""
    cfg = MelConfig.from_any(cfg, **overrides)
    audio = jnp.asarray(audio)
    if audio.ndim == 1:
        raise ValueError(f"audio must be (batch, samples), got shape {audio.shape}; add a batch axis")
    if audio.ndim != 2:
        raise ValueError(f"audio must be (batch, samples), got shape {audio.shape}")
    mel = jnp.einsum("mf,bft->bmt", mel_basis(cfg), magnitude(audio, cfg), precision="highest")
    return jnp.log(jnp.maximum(mel, cfg.clamp))
