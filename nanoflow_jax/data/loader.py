"""Random fixed-length crops for training, deterministic and resumable, loaded in the background.

The stream of one host is an endless sequence of items: epoch e visits a seeded permutation of this
host's training files (its shard), and item i of it is cropped at an offset drawn from a generator seeded
by (seed, host, e, i). So a batch depends only on the stream position, which is all the state a
checkpoint needs to resume exactly.
"""

from __future__ import annotations

import queue
import threading

import numpy as np

from nanoflow_jax.data.sources import AudioSet


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
    ):
        if len(data) == 0:
            raise ValueError("no training files to load")
        self.data, self.batch_size, self.segment_length, self.seed = data, batch_size, segment_length, seed
        self.process_index = process_index
        self.position = position  # items of the stream already handed out
        self._epoch_cache: tuple[int, np.ndarray] | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=prefetch)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, args=(position,), daemon=True)
        self._thread.start()

    def _shard(self, epoch: int) -> np.ndarray:
        if self._epoch_cache is None or self._epoch_cache[0] != epoch:
            perm = np.random.default_rng((self.seed, self.process_index, epoch)).permutation(len(self.data))
            self._epoch_cache = (epoch, perm)
        return self._epoch_cache[1]

    def batch_at(self, position: int) -> np.ndarray:
        out = np.empty((self.batch_size, self.segment_length), np.float32)
        for j in range(self.batch_size):
            p = position + j
            epoch, i = divmod(p, len(self.data))
            idx = int(self._shard(epoch)[i])
            rng = np.random.default_rng((self.seed, self.process_index, epoch, i))
            out[j] = crop(self.data.load(idx), self.segment_length, rng)
        return out

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
        batch = self._queue.get()
        self.position += self.batch_size
        return batch

    def state(self) -> dict:
        """Position of the next batch to be returned (prefetched batches are not counted)."""
        return {"position": int(self.position)}

    def close(self):
        self._stop.set()
        self._thread.join(timeout=5)
