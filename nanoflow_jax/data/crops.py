"""Random fixed-length crops for training, deterministic and resumable, loaded in the background.

The stream of one host is an endless sequence of items: epoch e visits a seeded permutation of this
host's training files (its shard), and item i of it is cropped at an offset drawn from a generator seeded
by (seed, host, e, i). So a batch depends only on the stream position, which is all the state a
checkpoint needs to resume exactly. A corpus in memory is cropped from its int16 samples; one that is
decoded on demand is decoded by a pool of worker threads, a batch's files in parallel.
"""

from __future__ import annotations

import math
import os
import queue
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from nanoflow_jax.data.corpus import AudioSet, to_float


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


class CropLoader:
    """Iterator of (batch_size, segment_length) float32 batches for this host, prefetched by a thread."""

    def __init__(
        self,
        data: AudioSet,
        batch_size: int,
        segment_length: int,
        seed: int,
        process_index: int = 0,
        position: int = 0,
        prefetch: int = 4,
        workers: int | None = None,
        mel_floor: float = math.log(1e-5),
    ):
        if len(data) == 0:
            raise ValueError("no training files to load")
        self.data, self.batch_size, self.segment_length, self.seed = data, batch_size, segment_length, seed
        self.process_index = process_index
        self.floor = mel_floor
        self.position = position  # items of the stream already handed out
        self._epoch_cache: tuple[int, np.ndarray] | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=prefetch)
        # decoding (soundfile, soxr) releases the GIL: threads run it in parallel
        n_workers = workers or max(2, min(8, os.cpu_count() or 1))
        self._pool = None if data.in_memory else ThreadPoolExecutor(n_workers, thread_name_prefix="decode")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, args=(position,), daemon=True)
        self._thread.start()

    def _shard(self, epoch: int) -> np.ndarray:
        if self._epoch_cache is None or self._epoch_cache[0] != epoch:
            perm = np.random.default_rng((self.seed, self.process_index, epoch)).permutation(len(self.data))
            self._epoch_cache = (epoch, perm)
        return self._epoch_cache[1]

    def _item(self, p: int) -> np.ndarray:
        epoch, i = divmod(p, len(self.data))
        idx = int(self._shard(epoch)[i])
        rng = np.random.default_rng((self.seed, self.process_index, epoch, i))
        if self.data.mels is not None:
            mel = self.data.mels[idx]
            return crop_pair(self.data.samples(idx), mel, self.segment_length, self.data.hop_length, rng, self.floor)
        return to_float(crop(self.data.samples(idx), self.segment_length, rng))

    def batch_at(self, position: int) -> np.ndarray | dict[str, np.ndarray]:
        """The batch at a stream position: float32 (batch_size, segment_length), or for pairs {"audio": that,
        "mel": (batch_size, bands, segment_length // hop + 1)}."""
        positions = range(position, position + self.batch_size)
        items = list(map(self._item, positions) if self._pool is None else self._pool.map(self._item, positions))
        if isinstance(items[0], dict):
            return {k: np.stack([it[k] for it in items]) for k in items[0]}
        return np.stack(items)

    def _fill(self, position: int):
        while not self._stop.is_set():
            batch = self.batch_at(position)
            position += self.batch_size
            while not self._stop.is_set():
                try:
                    self._queue.put(batch, timeout=0.1)
                    break
                except queue.Full:
                    continue

    def __iter__(self):
        return self

    def __next__(self) -> np.ndarray:
        while True:
            try:
                batch = self._queue.get(timeout=0.1)
                break
            except queue.Empty:
                if self._stop.is_set():
                    raise StopIteration from None
        self.position += self.batch_size
        return batch

    def state(self) -> dict:
        """Position of the next batch to be returned (prefetched batches are not counted)."""
        return {"position": int(self.position)}

    def close(self):
        self._stop.set()
        self._thread.join(timeout=5)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
