"""A decoded corpus: 16-bit samples in memory when it fits (read once), else decoded on demand."""

from __future__ import annotations

import dataclasses

import numpy as np

from nanoflow_jax.audio.io import read_audio, resample

FULL_SCALE = 32768.0


def to_int16(x: np.ndarray) -> np.ndarray:
    """float samples in [-1, 1] -> int16 (exact for audio that was 16-bit PCM)."""
    return np.clip(np.round(np.asarray(x) * FULL_SCALE), -32768, 32767).astype(np.int16)


def to_float(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float32) / FULL_SCALE if x.dtype == np.int16 else np.asarray(x, np.float32)


@dataclasses.dataclass
class AudioSet:
    """Checked utterances at one sample rate: int16 in memory (half of float32: LJSpeech is ~3.8 GB),
    or None to decode each utterance when it is needed."""

    names: list[str]
    sample_rate: int
    audio: list[np.ndarray] | None  # int16 (or float32) arrays; None: decode on demand
    lengths: list[int]
    mels: list[np.ndarray] | None = None  # pairs: each utterance's given (bands, frames) mel, frame-aligned
    hop_length: int = 256  # samples per frame of `mels`

    def __len__(self) -> int:
        return len(self.names)

    @property
    def in_memory(self) -> bool:
        return self.audio is not None

    def samples(self, i: int) -> np.ndarray:
        """Utterance i as stored: int16 in memory, float32 when decoded on demand."""
        if self.audio is not None:
            return self.audio[i]
        x, sr = read_audio(self.names[i])
        return resample(x, sr, self.sample_rate)

    def load(self, i: int) -> np.ndarray:
        """Utterance i as float32 in [-1, 1]."""
        return to_float(self.samples(i))
