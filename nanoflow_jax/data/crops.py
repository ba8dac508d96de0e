"""Random fixed-length crops for training, deterministic and resumable.

The audio task's `stream.PositionStream`: item i of epoch e (a file of this host's shard) is cropped at
an offset drawn from a generator seeded by (seed, host, e, i), so a batch depends only on its stream
position. A corpus in memory is cropped from its int16 samples; one that is decoded on demand is decoded
by a pool of worker threads, a batch's files in parallel.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from nanoflow_jax.data.corpus import AudioSet, to_float
from nanoflow_jax.data.stream import PositionStream


def crop_pair(
    x: np.ndarray, mel: np.ndarray, length: int, hop: int, rng: np.random.Generator, floor: float
) -> dict[str, np.ndarray]:
    """A random `length`-sample window starting on a frame boundary and the `length // hop + 1` mel frames
    centred on its hops (what our mel of the window has), both padded at the end (audio with zeros, the
    mel with the log floor) when the utterance is shorter."""
    frames = length // hop + 1
    last = max(0, min(len(x) // hop - length // hop, mel.shape[1] - frames))
    k = int(rng.integers(0, last + 1))
    audio = x[k * hop : k * hop + length]
    m = mel[:, k : k + frames]
    return {
        "audio": np.pad(to_float(audio), (0, length - len(audio))),
        "mel": np.pad(m, ((0, 0), (0, frames - m.shape[1])), constant_values=floor),
    }


def crop(x: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """A random `length`-sample window, zero-padded at the end when the utterance is shorter."""
    if len(x) >= length:
        start = int(rng.integers(0, len(x) - length + 1))
        return x[start : start + length]
    return np.pad(x, (0, length - len(x)))


class CropLoader(PositionStream):
    """(batch_size, segment_length) float32 crops of this host's utterances at each stream position (for
    pairs, {"audio": those, "mel": their frames})."""

    def __init__(
        self,
        data: AudioSet,
        batch_size: int,
        segment_length: int,
        seed: int,
        process_index: int = 0,
        position: int = 0,
        workers: int | None = None,
        mel_floor: float = math.log(1e-5),
    ):
        super().__init__(len(data), batch_size, seed, process_index, position)
        self.data, self.segment_length, self.floor = data, segment_length, mel_floor
        # decoding (soundfile, soxr) releases the GIL: a batch's files decode in parallel threads
        n_workers = workers or max(2, min(8, os.cpu_count() or 1))
        self._pool = None if data.in_memory else ThreadPoolExecutor(n_workers, thread_name_prefix="decode")

    def _item(self, item: tuple[int, int, int]) -> np.ndarray | dict[str, np.ndarray]:
        idx, epoch, i = item
        rng = np.random.default_rng((self.seed, self.process_index, epoch, i))
        if self.data.mels is not None:
            mel = self.data.mels[idx]
            return crop_pair(self.data.samples(idx), mel, self.segment_length, self.data.hop_length, rng, self.floor)
        return to_float(crop(self.data.samples(idx), self.segment_length, rng))

    def batch_at(self, position: int) -> np.ndarray | dict[str, np.ndarray]:
        """The batch at a stream position: float32 (batch_size, segment_length), or for pairs {"audio": that,
        "mel": (batch_size, bands, segment_length // hop + 1)}."""
        items = self.items(position)
        crops = list(map(self._item, items) if self._pool is None else self._pool.map(self._item, items))
        if isinstance(crops[0], dict):
            return {k: np.stack([c[k] for c in crops]) for k in crops[0]}
        return np.stack(crops)

    def close(self) -> None:
        super().close()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
