"""The training stream of both tasks: one host's items, visited in seeded epoch orders, as batches indexed
by stream position.

Item p of a host's stream is item `order(epoch)[i]` of its shard, with (epoch, i) = divmod(p, items) and
the order a permutation seeded by (seed, host, epoch); the batch at position p holds items p .. p + B - 1.
So a batch depends only on its position, which is all a checkpoint keeps to resume exactly. Loaders are
synchronous: the trainer's one prefetch thread (`prefetch.device_batches`) runs them ahead of the step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np

from nanoflow_jax.errors import DataError

T = TypeVar("T")


def host_shard(items: Sequence[T], process_index: int, process_count: int, what: str = "training items") -> Sequence[T]:
    """This host's share of `items`: every process_count-th from process_index (disjoint, covering)."""
    if len(items) < process_count:
        raise DataError(f"{len(items)} {what} for {process_count} hosts: each host needs at least one")
    return items[process_index::process_count]


class PositionStream:
    """Iterator of batches over `n_items` items of this host; a subclass says what the batch at a position
    is (`batch_at`). `state()` is {"position": next item}."""

    def __init__(self, n_items: int, batch_size: int, seed: int, process_index: int = 0, position: int = 0):
        if n_items == 0:
            raise DataError("no training items to load")
        self.n_items, self.batch_size, self.seed = n_items, batch_size, seed
        self.process_index, self.position = process_index, position
        self._order: tuple[int, np.ndarray] | None = None
        self._closed = False

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The permutation of this host's items visited in `epoch` (the last one cached)."""
        if self._order is None or self._order[0] != epoch:
            rng = np.random.default_rng((self.seed, self.process_index, epoch))
            self._order = (epoch, rng.permutation(self.n_items))
        return self._order[1]

    def items(self, position: int) -> list[tuple[int, int, int]]:
        """(item index, epoch, place in the epoch) of each item in the batch at `position`."""
        out = []
        for p in range(position, position + self.batch_size):
            epoch, i = divmod(p, self.n_items)
            out.append((int(self.epoch_order(epoch)[i]), epoch, i))
        return out

    def batch_at(self, position: int) -> Any:
        raise NotImplementedError

    def __iter__(self):
        return self

    def __next__(self) -> Any:
        if self._closed:
            raise StopIteration
        batch = self.batch_at(self.position)
        self.position += self.batch_size
        return batch

    def state(self) -> dict:
        """Position of the next batch to be returned."""
        return {"position": int(self.position)}

    def close(self) -> None:
        self._closed = True
