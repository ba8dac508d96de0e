"""Reading a PyTorch `.pt` checkpoint without PyTorch: a restricted unpickler over the zip archive that
rebuilds tensors as NumPy arrays and stands in an inert object for every other class."""

from __future__ import annotations

import collections
import os
import pickle
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


class _Opaque:
    """Stands in for any class in the pickle we do not need (optimizer internals and the like)."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


def _rebuild_tensor(storage, offset, size, stride, *_):
    arr = storage[offset:]
    if not size:
        return arr[:1].reshape(()).copy()
    return np.lib.stride_tricks.as_strided(arr, tuple(size), tuple(s * arr.itemsize for s in stride)).copy()


def _rebuild_parameter(data, *_):
    return data


def read_torch_checkpoint(path: str | os.PathLike) -> Any:
    """Load a PyTorch zip checkpoint into plain Python containers and numpy arrays."""
    try:
        zf = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as e:
        raise ConversionError(f"{path} is not a readable PyTorch checkpoint ({e})") from None
    with zf:
        pkl = [n for n in zf.namelist() if n.endswith("data.pkl")]
        if not pkl:
            raise ConversionError(f"{path} has no data.pkl: not a PyTorch zip checkpoint")
        root = pkl[0][: -len("data.pkl")]
        loaded: dict[str, np.ndarray] = {}

        class Unpickler(pickle.Unpickler):
            def find_class(self, module, name):
                if module == "collections" and name == "OrderedDict":
                    return collections.OrderedDict
                if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
                    return _rebuild_tensor
                if module == "torch._utils" and name == "_rebuild_parameter":
                    return _rebuild_parameter
                if module == "torch" and name in _STORAGE_DTYPES:
                    return name
                return _Opaque

            def persistent_load(self, pid):
                _, storage_type, key, _, _ = pid
                if key not in loaded:
                    dtype = _STORAGE_DTYPES.get(storage_type)
                    if dtype is None:
                        raise ConversionError(f"{path}: unsupported tensor storage {storage_type}")
                    loaded[key] = np.frombuffer(zf.read(f"{root}data/{key}"), dtype=dtype)
                return loaded[key]

        return Unpickler(zf.open(pkl[0])).load()
