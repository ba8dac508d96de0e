"""Reading, writing and resampling audio (NumPy, no JAX).

Reading goes through `soundfile` (libsndfile: WAV of any sample width, FLAC, OGG, ...), resampling
through `soxr` (the resampler librosa uses). Writing is 16-bit PCM WAV, atomic: a temporary file in the
same folder, renamed into place only once complete.
"""

from __future__ import annotations

import io
import os
import wave
from collections.abc import Iterable

import numpy as np

from nanoflow_jax.errors import AudioReadError, InputError
from nanoflow_jax.files import atomic_write, check_input_file, first_line, memory_budget, npy_header

__all__ = ["AudioReadError", "read_audio", "read_mel", "resample", "write_wav", "write_wav_stream"]


MIN_RATE, MAX_RATE = 1000, 768_000  # sample rates a file may declare (a 1 Hz file resampled would explode)
MAX_SECONDS = 4 * 3600.0  # longest file read by default


READ_BLOCK = 1 << 15  # frames of a multi-channel file read at a time (the mix is built block by block)


def read_audio(
    path: str | os.PathLike,
    dtype: str = "float32",
    max_seconds: float = MAX_SECONDS,
    max_bytes: int | None = None,
    extra_bytes_per_second: float = 0.0,
) -> tuple[np.ndarray, int]:
    """-> (mono samples, sample rate): float32 in [-1, 1], or int16 with dtype="int16" (full scale
    32768, as the file stores it for 16-bit PCM). Multi-channel audio is mixed block by block, so reading
    holds one mono copy and one block. The header is checked first: a rate outside [1 kHz, 768 kHz], more
    than `max_seconds` or 8 channels, or more than `max_bytes` (default: this machine's `memory_budget()`)
    for the mono samples plus `extra_bytes_per_second` of the file (what the caller builds from them), or
    NaN / Inf samples are an AudioReadError naming the file."""
    import soundfile

    path = os.fspath(path)
    try:
        check_input_file(path, "audio file")  # a FIFO would block, a folder is no audio
    except InputError as e:
        raise AudioReadError(str(e)) from None
    try:
        info = soundfile.info(path)
    except Exception as e:  # libsndfile reports every failure as its own error type
        raise AudioReadError(f"{path}: unreadable audio ({first_line(e)})") from None
    if not MIN_RATE <= info.samplerate <= MAX_RATE:
        msg = f"{path}: sample rate {info.samplerate} Hz is outside {MIN_RATE}..{MAX_RATE} Hz"
        raise AudioReadError(msg, "out of range")
    if info.frames > max_seconds * info.samplerate or info.channels > 8:
        raise AudioReadError(
            f"{path}: {info.frames / info.samplerate:.0f} s in {info.channels} channels; "
            f"at most {max_seconds:.0f} s and 8 channels are read",
            "out of range",
        )
    itemsize = np.dtype(dtype).itemsize
    need = info.frames * itemsize + min(info.frames, READ_BLOCK) * info.channels * itemsize
    need += int(extra_bytes_per_second * info.frames / info.samplerate)
    budget = memory_budget() if max_bytes is None else max_bytes
    if need > budget:
        raise AudioReadError(
            f"{path}: {info.frames / info.samplerate:.0f} s at {info.samplerate} Hz in {info.channels} channels "
            f"would need {need / 2**20:.0f} MiB; at most {budget / 2**20:.0f} MiB are allowed here",
            "out of range",
        )
    try:
        if info.channels == 1:
            x = soundfile.read(path, dtype=dtype, always_2d=True)[0][:, 0]
        else:
            x = _read_mixed(path, info.frames, dtype)
    except Exception as e:  # libsndfile reports every failure as its own error type
        raise AudioReadError(f"{path}: unreadable audio ({first_line(e)})") from None
    if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
        raise AudioReadError(f"{path}: holds NaN or Inf samples", "non-finite")
    return x, info.samplerate


def _read_mixed(path: str, frames: int, dtype: str) -> np.ndarray:
    """The channel mean of a multi-channel file, read a block at a time."""
    import soundfile

    out = np.empty(frames, dtype)
    n = 0
    for block in soundfile.blocks(path, blocksize=READ_BLOCK, dtype=dtype, always_2d=True):
        m = len(block)
        if n + m > frames:  # a header that under-declares its length: keep what it declared
            m = frames - n
        if dtype == "int16":
            out[n : n + m] = np.round(block[:m].astype(np.int32).mean(axis=1)).astype(np.int16)
        else:
            out[n : n + m] = block[:m].mean(axis=1)
        n += m
        if n >= frames:
            break
    return out[:n]


def resample(x: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Band-limited resampling with soxr (high quality), float32 out."""
    if from_rate == to_rate:
        return x
    import soxr

    return soxr.resample(np.asarray(x, np.float32), int(from_rate), int(to_rate), quality="HQ").astype(np.float32)


def _pcm16(path: str, audio: np.ndarray) -> np.ndarray:
    audio = np.asarray(audio, np.float32).reshape(-1)
    if not np.all(np.isfinite(audio)):
        raise ValueError(f"refusing to write {path}: audio has NaN or Inf values")
    return np.round(np.clip(audio, -1.0, 1.0) * 32767.0).astype(np.int16)


def write_wav(path: str | os.PathLike, audio: np.ndarray, sample_rate: int) -> None:
    """16-bit PCM mono WAV, written atomically. Values beyond [-1, 1] are clipped."""
    import soundfile

    path = os.fspath(path)
    pcm = _pcm16(path, audio)
    encoded = io.BytesIO()  # encoded in memory: soundfile's file callbacks would hide a full disk's OSError
    soundfile.write(encoded, pcm, int(sample_rate), subtype="PCM_16", format="WAV")
    atomic_write(path, lambda f: f.write(encoded.getbuffer()), suffix=".wav")


def write_wav_stream(path: str | os.PathLike, pieces: Iterable[np.ndarray], sample_rate: int) -> int:
    """`write_wav` of the concatenation of `pieces`, each encoded and written as it arrives (the standard
    library's `wave` fills in the header's length at the end), still atomically: nothing is at `path`
    until the last piece is in. -> samples written."""
    path = os.fspath(path)
    written = 0

    def write(f) -> None:
        nonlocal written
        with wave.open(f, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(int(sample_rate))
            for piece in pieces:
                pcm = _pcm16(path, piece)
                w.writeframes(pcm.astype("<i2").tobytes())
                written += len(pcm)

    atomic_write(path, write, suffix=".wav")
    return written


def read_mel(path: str, n_mels: int, max_frames: int, limit_reason: str = "allowed") -> np.ndarray:
    """A .npy mel as (n_mels, frames) float32: (n_mels, F), (1, n_mels, F), or (F, n_mels) when that reading
    is the only one that fits. The header is checked against the file and the frame count against
    `max_frames` before the data is read; NaN / Inf refused."""
    size = check_input_file(path, "mel file")
    shape, _, _ = npy_header(path, size)
    dims = shape[1:] if len(shape) == 3 and shape[0] == 1 else shape
    if len(dims) != 2:
        raise InputError(f"{path}: mel must be ({n_mels}, frames) or (1, {n_mels}, frames), got shape {shape}")
    if dims[0] != n_mels and dims[1] != n_mels:
        raise InputError(f"{path}: mel has shape {shape}; the model expects {n_mels} mel bands")
    frames = dims[1] if dims[0] == n_mels else dims[0]
    if frames > max_frames:
        raise InputError(f"{path}: {frames} frames is more than the {max_frames} {limit_reason}")
    try:
        m = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read {path} as a .npy array ({str(e).splitlines()[0]})") from None
    if m.ndim == 3:
        m = m[0]
    if m.shape[0] != n_mels:
        m = m.T  # (frames, bands)
    with np.errstate(over="ignore", invalid="ignore"):
        m = m.astype(np.float32)
    if not np.all(np.isfinite(m)):
        raise InputError(f"{path}: mel contains NaN or Inf values, or values beyond float32's range")
    return m
