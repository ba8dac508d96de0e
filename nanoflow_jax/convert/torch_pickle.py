"""Reading a PyTorch `.pt` checkpoint without PyTorch, safely: the file is untrusted.

A restricted unpickler over the zip archive: no class or function of the file's choosing is ever looked
up (each stands in as an inert object), storages are byte buffers read within their declared size, and
every tensor's size, stride and offset are checked against its storage before a view is taken, so no
read can leave the buffer. Memory is bounded before it is spent: the pickle's size and opcode count,
each tensor's and the file's total bytes, and the number of objects a traversal of the result visits
(shared references count each time: a few hundred bytes of nested shared lists cannot expand into
gigabytes later). Anything else is one ConversionError naming the file and, where known, the tensor.
"""

from __future__ import annotations

import collections
import io
import math
import os
import pickle
import pickletools
import zipfile
from typing import Any

import numpy as np

from nanoflow_jax.errors import ConversionError

_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "BFloat16Storage": None,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
# limits (the largest official model, WaveFlow C=128 with its optimiser state, is ~270 MB of tensors
# and a data.pkl of ~100 KB)
MAX_PICKLE_BYTES = 16 * 2**20
MAX_PICKLE_OPS = 2_000_000
MAX_TENSOR_ELEMENTS = 2**28
MAX_TOTAL_BYTES = 2**30
MAX_NODES = 1_000_000  # containers and leaves a traversal of the loaded object visits
MAX_DEPTH = 64


class _Opaque:
    """Stands in for any class or function in the pickle we do not need (optimizer internals and the like)."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


class _StorageType(str):
    """A storage class named by the pickle (e.g. "FloatStorage"): only a tag of a persistent id."""

    def __call__(self, *args, **kwargs):
        raise ConversionError(f"the pickle calls the storage type {self} as a function")


class _Storage:
    """A storage the pickle names: read from the archive only when a tensor uses it."""

    def __init__(self, key: str, dtype: np.dtype, numel: int):
        self.key, self.dtype, self.numel = key, np.dtype(dtype), numel
        self.array: np.ndarray | None = None


class _TensorSpec:
    """A tensor as the pickle describes it; checked and built after loading, when its name is known."""

    def __init__(self, storage: Any, offset: Any, size: Any, stride: Any):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride


def _rebuild_tensor(storage, offset, size, stride, *_):
    return _TensorSpec(storage, offset, size, stride)


def _rebuild_parameter(data, *_):
    return data


def _index_tuple(v: Any) -> tuple[int, ...] | None:
    if not isinstance(v, tuple | list) or len(v) > 32:
        return None
    if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in v):
        return None
    return tuple(v)


class _Reader:
    def __init__(self, path: str, zf: zipfile.ZipFile, root: str, max_bytes: int = MAX_TOTAL_BYTES):
        self.path, self.zf, self.root, self.max_bytes = path, zf, root, max_bytes
        self.names = set(zf.namelist())
        self.storages: dict[str, _Storage] = {}
        self.total_bytes = 0
        self.nodes = 0

    # -- the unpickler's hooks ---------------------------------------------------------------------
    def find_class(self, module: str, name: str) -> Any:
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        return _Opaque

    def persistent_load(self, pid: Any) -> _Storage:
        if not isinstance(pid, tuple) or len(pid) != 5 or pid[0] != "storage":
            raise ConversionError(f"a persistent id is not ('storage', type, key, location, size): {pid!r:.80}")
        _, storage_type, key, _, numel = pid
        if not isinstance(storage_type, _StorageType):
            raise ConversionError(f"storage {key!r:.40} has no known storage type ({storage_type!r:.40})")
        if _STORAGE_DTYPES[storage_type] is None:
            raise ConversionError(f"unsupported tensor storage {storage_type}")
        if not isinstance(key, str) or f"{self.root}data/{key}" not in self.names:
            raise ConversionError(f"the pickle names storage {key!r:.40}, which the archive does not hold")
        if not isinstance(numel, int) or isinstance(numel, bool) or numel < 0:
            raise ConversionError(f"storage {key!r} declares {numel!r:.40} elements")
        s = self.storages.get(key)
        if s is None:
            s = self.storages[key] = _Storage(key, _STORAGE_DTYPES[storage_type], numel)
        elif s.numel != numel or s.dtype != np.dtype(_STORAGE_DTYPES[storage_type]):
            raise ConversionError(f"storage {key!r} is declared twice with different types or sizes")
        return s

    # -- after loading -----------------------------------------------------------------------------
    def storage_array(self, s: _Storage, name: str) -> np.ndarray:
        if s.array is None:
            nbytes = s.numel * s.dtype.itemsize
            self.total_bytes += nbytes
            if self.total_bytes > self.max_bytes:
                raise ConversionError(f"tensor {name}: the file's storages exceed {self.max_bytes / 2**20:.0f} MiB")
            entry = f"{self.root}data/{s.key}"
            if self.zf.getinfo(entry).file_size != nbytes:
                raise ConversionError(f"tensor {name}: storage {s.key!r} does not hold its declared {nbytes} bytes")
            with self.zf.open(entry) as f:
                data = f.read(nbytes + 1)  # reading past the end checks the CRC; a bomb stops at the cap
            if len(data) != nbytes:
                raise ConversionError(f"tensor {name}: storage {s.key!r} does not hold its declared {nbytes} bytes")
            s.array = np.frombuffer(data, dtype=s.dtype)
        return s.array

    def tensor(self, spec: _TensorSpec, name: str) -> np.ndarray:
        if not isinstance(spec.storage, _Storage):
            raise ConversionError(f"tensor {name}: its storage is a {type(spec.storage).__name__}, not a storage")
        size, stride, offset = _index_tuple(spec.size), _index_tuple(spec.stride), spec.offset
        if size is None or stride is None or len(size) != len(stride):
            raise ConversionError(f"tensor {name}: size {spec.size!r:.60} / stride {spec.stride!r:.60} are invalid")
        if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
            raise ConversionError(f"tensor {name}: storage offset {offset!r:.40} is invalid")
        numel = math.prod(size)
        if numel > MAX_TENSOR_ELEMENTS:
            raise ConversionError(f"tensor {name}: {numel} elements is more than the {MAX_TENSOR_ELEMENTS} allowed")
        store = spec.storage
        if numel == 0:
            return np.zeros(size, store.dtype)
        extent = offset + sum((n - 1) * st for n, st in zip(size, stride, strict=True)) + 1
        if extent > store.numel:
            raise ConversionError(
                f"tensor {name}: size {size}, stride {stride} and offset {offset} reach element {extent - 1} "
                f"of a storage of {store.numel}"
            )
        arr = self.storage_array(store, name)[offset:]
        view = np.lib.stride_tricks.as_strided(arr, size, tuple(st * arr.itemsize for st in stride), writeable=False)
        return np.array(view)

    def build(self, obj: Any, name: str = "", depth: int = 0, active: frozenset = frozenset()) -> Any:
        """The loaded object with each tensor built, visiting at most MAX_NODES nodes (shared ones each
        time) to at most MAX_DEPTH levels; a container that holds itself is refused."""
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise ConversionError(f"the pickle's objects expand to more than {MAX_NODES} nodes")
        if depth > MAX_DEPTH:
            raise ConversionError(f"the pickle's objects nest deeper than {MAX_DEPTH} levels (at {name or 'top'})")
        if isinstance(obj, _TensorSpec):
            return self.tensor(obj, name or "(top)")
        if isinstance(obj, dict | list | tuple):
            if id(obj) in active:
                raise ConversionError(f"the pickle's object {name or 'top'} contains itself")
            inner = active | {id(obj)}
            if isinstance(obj, dict):
                out = collections.OrderedDict() if isinstance(obj, collections.OrderedDict) else {}
                for k, v in obj.items():
                    out[k] = self.build(v, f"{name}.{k}" if name else str(k), depth + 1, inner)
                return out
            items = [self.build(v, f"{name}[{i}]", depth + 1, inner) for i, v in enumerate(obj)]
            return tuple(items) if isinstance(obj, tuple) else items
        return obj


def _check_pickle(data: bytes) -> None:
    """Count the opcodes without running any (pickletools only parses)."""
    n = 0
    for _ in pickletools.genops(data):
        n += 1
        if n > MAX_PICKLE_OPS:
            raise ConversionError(f"data.pkl has more than {MAX_PICKLE_OPS} pickle operations")


def read_torch_checkpoint(path: str | os.PathLike, max_bytes: int | None = None) -> Any:
    """Load a PyTorch zip checkpoint into plain Python containers and NumPy arrays (see the module doc);
    its tensors' storages may hold at most `max_bytes` (default and cap: MAX_TOTAL_BYTES)."""
    path = os.fspath(path)
    try:
        zf = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile, ValueError) as e:
        raise ConversionError(f"{path} is not a readable PyTorch checkpoint ({e})") from None
    with zf:
        pkl = [n for n in zf.namelist() if n.endswith("data.pkl")]
        if not pkl:
            raise ConversionError(f"{path} has no data.pkl: not a PyTorch zip checkpoint")
        limit = MAX_TOTAL_BYTES if max_bytes is None else min(max_bytes, MAX_TOTAL_BYTES)
        reader = _Reader(path, zf, pkl[0][: -len("data.pkl")], limit)
        try:
            if zf.getinfo(pkl[0]).file_size > MAX_PICKLE_BYTES:
                raise ConversionError(f"data.pkl is larger than {MAX_PICKLE_BYTES >> 20} MiB")
            with zf.open(pkl[0]) as f:
                data = f.read(MAX_PICKLE_BYTES + 1)
            if len(data) > MAX_PICKLE_BYTES:
                raise ConversionError(f"data.pkl is larger than {MAX_PICKLE_BYTES >> 20} MiB")
            _check_pickle(data)

            class Unpickler(pickle.Unpickler):
                find_class = staticmethod(reader.find_class)
                persistent_load = staticmethod(reader.persistent_load)

            loaded = Unpickler(io.BytesIO(data)).load()
            return reader.build(loaded)
        except ConversionError as e:
            raise ConversionError(f"{path}: {e}") from None
        except (zipfile.BadZipFile, OSError, EOFError) as e:  # a damaged archive member (bad CRC, cut short)
            raise ConversionError(f"{path}: damaged archive ({e})") from None
        except (pickle.UnpicklingError, ValueError, TypeError, AttributeError, IndexError, KeyError) as e:
            # what the unpickler raises on malformed input; its text names no file, so add it
            raise ConversionError(
                f"{path}: data.pkl is not a valid checkpoint pickle ({type(e).__name__}: {e})"
            ) from None
