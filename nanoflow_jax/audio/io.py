"""Reading, writing and resampling audio (NumPy, no JAX).

WAV PCM is read with the standard library; other formats (float WAV, FLAC, ...) through `soundfile`
when it is installed. Writing is 16-bit PCM WAV, atomic: a temporary file in the same folder, renamed
into place only once complete.
"""

from __future__ import annotations

import os
import wave
from math import gcd

import numpy as np

from nanoflow_jax.files import atomic_write


class AudioReadError(ValueError):
    """A file that is not readable audio."""


def read_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """-> (mono float32 samples in [-1, 1], sample rate). Multi-channel audio is averaged."""
    path = os.fspath(path)
    try:
        with wave.open(path, "rb") as w:
            width, ch, sr, n = w.getsampwidth(), w.getnchannels(), w.getframerate(), w.getnframes()
            raw = w.readframes(n)
    except (wave.Error, EOFError) as e:
        return _read_with_soundfile(path, e)
    except OSError as e:
        raise AudioReadError(f"{path}: {e.strerror or e}") from None
    if width == 1:
        x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        x = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    elif width == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        x = (np.where(v >= 1 << 23, v - (1 << 24), v)).astype(np.float32) / float(1 << 23)
    elif width == 4:
        x = np.frombuffer(raw, "<i4").astype(np.float32) / float(1 << 31)
    else:
        raise AudioReadError(f"{path}: unsupported sample width {width} bytes")
    if ch > 1:
        x = x[: len(x) // ch * ch].reshape(-1, ch).mean(axis=1)
    return x, sr


def _read_with_soundfile(path: str, err: Exception) -> tuple[np.ndarray, int]:
    try:
        import soundfile
    except ImportError:
        raise AudioReadError(f"{path}: not a PCM WAV file ({err}); install soundfile for other formats") from None
    try:
        x, sr = soundfile.read(path, dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises its own error types
        raise AudioReadError(f"{path}: unreadable audio ({e})") from None
    return x.mean(axis=1), sr


def resample(x: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Polyphase resampling (scipy), float32 out."""
    if from_rate == to_rate:
        return x
    from scipy.signal import resample_poly

    g = gcd(int(from_rate), int(to_rate))
    return resample_poly(x, to_rate // g, from_rate // g).astype(np.float32)


def write_wav(path: str | os.PathLike, audio: np.ndarray, sample_rate: int) -> None:
    """16-bit PCM mono WAV, written atomically. Values beyond [-1, 1] are clipped."""
    path = os.fspath(path)
    audio = np.asarray(audio, np.float32).reshape(-1)
    if not np.all(np.isfinite(audio)):
        raise ValueError(f"refusing to write {path}: audio has NaN or Inf values")
    pcm = np.round(np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2")

    def write(f):
        with wave.open(f, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(int(sample_rate))
            w.writeframes(pcm.tobytes())

    atomic_write(path, write, suffix=".wav")
