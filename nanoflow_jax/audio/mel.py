"""The Tacotron2 / WaveGlow mel spectrogram, in JAX (batched, on device).

Reflect-pad n_fft/2 each side, periodic Hann window, |STFT| (magnitude, not power), Slaney-style mel
filterbank with area normalisation (librosa's defaults), natural log of max(x, 1e-5). F = T // hop + 1 frames.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nanoflow_jax.models.filterbank import hann, mel_filterbank
from nanoflow_jax.schema import Float, Int, Section, field

Array = jnp.ndarray
MIN_WINDOW_MS, MAX_WINDOW_MS = 10.0, 200.0  # the STFT window of a speech mel, in milliseconds


@dataclasses.dataclass(frozen=True)
class MelConfig(Section):
    """The mel front-end's fields of a config's `data` section (the LJSpeech / Tacotron2 defaults)."""

    SECTION = "data"

    sample_rate: int = field(22050, Int(min=1000, max=384_000), "sample rate of the audio in Hz")
    n_fft: int = field(1024, Int(min=2, max=16_384), "FFT size of the STFT")
    hop_length: int = field(256, Int(min=4, max=4096), "samples between STFT frames (and per mel frame)")
    win_length: int = field(1024, Int(min=1, max=16_384), "Hann window length (at most n_fft)")
    n_mels: int = field(80, Int(min=1, max=512), "mel bands")
    fmin: float = field(0.0, Float(min=0.0), "lowest mel filter edge in Hz")
    fmax: float = field(
        8000.0, Float(min=0.0, min_open=True), "highest mel filter edge in Hz (at most sample_rate / 2)"
    )
    clamp: float = field(1e-5, Float(min=0.0, min_open=True), "floor of the magnitude before the log")

    def check_fields(self) -> None:
        if self.win_length > self.n_fft:
            self.fail("win_length", f"is not allowed: at most data.n_fft = {self.n_fft}")
        if self.fmin >= self.fmax:
            self.fail("fmin", f"is not allowed: below data.fmax = {self.fmax:g}")
        if self.fmax > self.sample_rate / 2:
            self.fail("fmax", f"is not allowed: at most half of data.sample_rate = {self.sample_rate}")
        if self.hop_length > self.win_length:
            self.fail("hop_length", f"is not allowed: at most data.win_length = {self.win_length} (no sample unseen)")
        ms = 1000 * self.win_length / self.sample_rate
        if not MIN_WINDOW_MS <= ms <= MAX_WINDOW_MS:
            self.fail(
                "win_length",
                f"is not allowed: {ms:.1f} ms at data.sample_rate = {self.sample_rate}, where speech mels use "
                f"{MIN_WINDOW_MS:g} to {MAX_WINDOW_MS:g} ms (e.g. 1024 at 22.05 kHz, 1200 at 24 kHz)",
            )

    def model_mismatch(self, hop_length: int, n_mels: int) -> str | None:
        """How these mel settings contradict a vocoder's (its hop and mel bands), or None when they fit."""
        if self.hop_length != hop_length:
            return f"hop_length = {self.hop_length} but the model's hop_length is {hop_length}"
        if self.n_mels != n_mels:
            return f"n_mels = {self.n_mels} but the model takes {n_mels} mel bands"
        return None

    @classmethod
    def from_any(cls, cfg: Any = None, source: str = "config", **overrides) -> MelConfig:
        """From None, a MelConfig, or any mapping / ConfigDict holding (some of) these fields, e.g. a
        config's `data` section; other keys are ignored (a subclass, a full section, refuses them)."""
        if cls is not MelConfig:
            return super().from_any(cfg, source, **overrides)
        if isinstance(cfg, cls) and not overrides:
            return cfg
        if hasattr(cfg, "to_dict"):
            cfg = cfg.to_dict()
        names = {f.name for f in dataclasses.fields(MelConfig)}
        return super().from_any({k: v for k, v in dict(cfg or {}).items() if k in names}, source, **overrides)


def mel_basis(cfg: MelConfig) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) Slaney mel filterbank with area normalisation, float32."""
    return mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.fmax).astype(np.float32)


def hann_window(cfg: MelConfig) -> np.ndarray:
    """Periodic Hann window of win_length, zero-padded to n_fft (centred)."""
    return hann(cfg.win_length, cfg.n_fft).astype(np.float32)


def n_frames(n_samples: int, hop_length: int = 256) -> int:
    return n_samples // hop_length + 1


def magnitude(audio: Array, cfg: MelConfig, lengths: Array | None = None) -> Array:
    """(B, T) -> (B, n_fft // 2 + 1, F) STFT magnitude. With `lengths` (B,), each item is its first
    lengths[b] samples, reflected at its own end (frames past n_frames(lengths[b]) are not meaningful):
    padded items of one shape give the magnitudes each would give alone."""
    pad = cfg.n_fft // 2
    if audio.shape[-1] <= pad:
        raise ValueError(f"audio of {audio.shape[-1]} samples is too short: need more than {pad} (n_fft / 2)")
    frames = n_frames(audio.shape[-1], cfg.hop_length)
    pos = np.arange(frames)[:, None] * cfg.hop_length + np.arange(cfg.n_fft)[None, :] - pad  # (F, n_fft)
    x = audio.astype(jnp.float32)
    if lengths is None:
        return padded_magnitude(jnp.pad(x, ((0, 0), (pad, pad)), mode="reflect"), cfg, frames)
    # reflect at each item's own end: index arithmetic, one gather
    end = jnp.asarray(lengths)[:, None, None] - 1
    idx = jnp.abs(pos)[None]
    idx = jnp.clip(jnp.where(idx > end, 2 * end - idx, idx), 0, audio.shape[-1] - 1)
    windows = jnp.take_along_axis(x[:, None, :], idx.reshape(len(x), 1, -1), axis=2).reshape(idx.shape)
    return _window_magnitude(windows, cfg)


def padded_magnitude(x: Array, cfg: MelConfig, frames: int) -> Array:
    """(B, T') audio already padded by n_fft / 2 at its start -> (B, n_fft // 2 + 1, frames), frame f
    centred on sample f * hop of the unpadded audio."""
    pos = np.arange(frames)[:, None] * cfg.hop_length + np.arange(cfg.n_fft)[None, :]
    return _window_magnitude(x[:, pos], cfg)


def _window_magnitude(windows: Array, cfg: MelConfig) -> Array:
    spec = jnp.fft.rfft(windows * hann_window(cfg), axis=-1)
    return jnp.swapaxes(jnp.abs(spec), 1, 2)


def log_mel(magnitudes: Array, cfg: MelConfig) -> Array:
    """(B, n_fft // 2 + 1, F) STFT magnitudes -> (B, n_mels, F) natural-log mel."""
    mel = jnp.einsum("mf,bft->bmt", mel_basis(cfg), magnitudes, precision="highest")
    return jnp.log(jnp.maximum(mel, cfg.clamp))


def mel_spectrogram(audio: Array, cfg: Any = None, lengths: Array | None = None, **overrides) -> Array:
    """(B, T) float audio in [-1, 1] -> (B, n_mels, T // hop + 1) natural-log mel.

    `cfg` is a MelConfig, a mapping with its fields (e.g. a config's `data` section) or None for the
    LJSpeech defaults; keyword arguments override single fields (`sample_rate=24000`, `fmax=12000.`).
    `lengths` (B,): items shorter than T, padded (see `magnitude`)."""
    cfg = MelConfig.from_any(cfg, **overrides)
    audio = jnp.asarray(audio)
    if audio.ndim == 1:
        raise ValueError(f"audio must be (batch, samples), got shape {audio.shape}; add a batch axis")
    if audio.ndim != 2:
        raise ValueError(f"audio must be (batch, samples), got shape {audio.shape}")
    return log_mel(magnitude(audio, cfg, lengths), cfg)


MEL_BLOCK_FRAMES = 2048


def mel_spectrogram_long(audio: np.ndarray, cfg: Any = None, block_frames: int = MEL_BLOCK_FRAMES) -> np.ndarray:
    """(T,) audio of any length -> (n_mels, T // hop + 1) float32, the values of `mel_spectrogram`, computed
    `block_frames` frames at a time with one compiled program: memory beyond the audio and the mel stays
    that of one block (the whole-signal STFT of 20 minutes would take gigabytes)."""
    cfg = MelConfig.from_any(cfg)
    audio = np.asarray(audio, np.float32)
    frames = n_frames(len(audio), cfg.hop_length)
    if frames <= block_frames:
        return np.asarray(mel_spectrogram(audio[None], cfg)[0])
    pad = cfg.n_fft // 2
    x = np.pad(audio, pad, mode="reflect")
    span = (block_frames - 1) * cfg.hop_length + cfg.n_fft
    block = jax.jit(lambda seg: log_mel(padded_magnitude(seg, cfg, block_frames), cfg))
    out = np.empty((cfg.n_mels, frames), np.float32)
    for f0 in range(0, frames, block_frames):
        seg = x[f0 * cfg.hop_length : f0 * cfg.hop_length + span]
        n = min(block_frames, frames - f0)
        out[:, f0 : f0 + n] = np.asarray(block(np.pad(seg, (0, span - len(seg)))[None]))[0, :, :n]
    return out
