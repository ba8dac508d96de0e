"""Batches already on the device when the step asks for them.

The one loading thread of a run: it takes this host's batches from a loader (a synchronous
`stream.PositionStream`: cropping, decoding and dequantising happen here), turns each into the global
array sharded along the mesh's "data" axis (the layout the step expects) and keeps `depth` of them in
flight, so loading and the host-to-device copy overlap the previous step instead of delaying the next.
"""

from __future__ import annotations

import queue
import threading
from typing import Any

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P


class device_batches:  # noqa: N801  (used like a generator function)
    """Iterator of global device arrays from a host loader (anything with `__next__`, `state()` giving
    {"position": next item} and `close()`). `state()` is the position of the next batch this iterator
    returns, not of what the thread has read ahead, so a checkpoint resumes exactly."""

    def __init__(self, loader: Any, mesh: jax.sharding.Mesh, depth: int = 2):
        self.loader, self.sharding = loader, NamedSharding(mesh, P("data"))
        self._position = loader.state()["position"]
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, daemon=True)
        self._thread.start()

    def _fill(self) -> None:
        try:
            while not self._stop.is_set():
                host = next(self.loader)
                put = lambda a: jax.make_array_from_process_local_data(self.sharding, a)  # noqa: E731
                item = (jax.tree.map(put, host), self.loader.state()["position"])
                self._put(item)
        except StopIteration:  # the loader was closed
            return
        except BaseException as e:  # handed to the consumer, raised where it asks for the next batch
            self._put(e)

    def _put(self, item: Any) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def __iter__(self):
        return self

    def __next__(self) -> jax.Array:
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        batch, self._position = item
        return batch

    def state(self) -> dict:
        return {"position": int(self._position)}

    def close(self) -> None:
        self._stop.set()
        self.loader.close()  # the thread's next read stops it
        self._thread.join(timeout=10)
