"""Denoiser (as WaveGlow's): a flow vocoder leaves a faint constant hiss, the spectrum it synthesises from
silence. Synthesise a silent mel with zero noise once, keep its mean magnitude spectrum, and subtract it,
scaled by `strength`, from the magnitude of any synthesised audio (phase kept, floor at zero)."""

from __future__ import annotations

import numpy as np
from scipy import signal

from nanoflow_jax.audio.mel import MelConfig
from nanoflow_jax.synth.fast import SILENCE
from nanoflow_jax.synth.vocoder import Vocoder


class Denoiser:
    def __init__(self, vocoder: Vocoder, frames: int = 88, dtype: str = "float32"):
        self.mel = vocoder.mel_config or MelConfig()
        silent = np.full((vocoder.config.cond_channels, frames), SILENCE, np.float32)
        z = np.zeros((1, vocoder.output_length(frames)), np.float32)
        bias_audio = vocoder.synthesize(silent, z=z, dtype=dtype)[0]
        self.bias_spectrum = np.abs(self._stft(bias_audio)).mean(axis=1, keepdims=True)

    def _stft(self, audio: np.ndarray) -> np.ndarray:
        m = self.mel
        return signal.stft(
            audio, nperseg=m.win_length, noverlap=m.win_length - m.hop_length, nfft=m.n_fft, window="hann"
        )[2]

    def __call__(self, audio: np.ndarray, strength: float = 0.01) -> np.ndarray:
        """audio (T,) -> denoised (T,) float32."""
        if strength < 0:
            raise ValueError(f"denoise strength must be >= 0, got {strength}")
        audio = np.asarray(audio, np.float32)
        spec = self._stft(audio)
        mag = np.maximum(np.abs(spec) - strength * self.bias_spectrum, 0.0)
        m = self.mel
        _, out = signal.istft(
            mag * np.exp(1j * np.angle(spec)),
            nperseg=m.win_length,
            noverlap=m.win_length - m.hop_length,
            nfft=m.n_fft,
            window="hann",
        )
        out = out[: len(audio)]
        return np.pad(out, (0, len(audio) - len(out))).astype(np.float32)
