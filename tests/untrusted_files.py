"""Hostile files built from scratch for tests/test_untrusted.py: PyTorch-format archives (no torch needed:
the pickle refers to stand-in `torch` modules registered only while it is written)."""

from __future__ import annotations

import collections
import io
import pickle
import sys
import types
import zipfile

import numpy as np

DTYPES = {np.dtype(np.float32): "FloatStorage", np.dtype(np.int64): "LongStorage"}


class Storage:
    def __init__(self, key: str, data: np.ndarray, storage_type: str | None = None, numel: int | None = None):
        self.key, self.data = key, np.ascontiguousarray(data)
        self.storage_type = storage_type or DTYPES[self.data.dtype]
        self.numel = self.data.size if numel is None else numel


class Tensor:
    def __init__(self, storage, offset=0, size=None, stride=None):
        self.storage, self.offset = storage, offset
        n = storage.data.size if isinstance(storage, Storage) else 0
        self.size = (n,) if size is None else size
        self.stride = (1,) * len(self.size) if stride is None else stride


class Raw:
    """An object pickled as `REDUCE(func, args)` with func a global of the stand-in torch modules."""

    def __init__(self, module: str, name: str, args: tuple):
        self.module, self.name, self.args = module, name, args


def _fake_torch() -> dict[str, types.ModuleType]:
    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")
    for name in ("_rebuild_tensor_v2", "_rebuild_parameter"):
        f = lambda *a: None  # noqa: E731
        f.__module__, f.__qualname__, f.__name__ = "torch._utils", name, name
        setattr(utils, name, f)
    for name in ("FloatStorage", "LongStorage", "Module"):
        setattr(torch, name, type(name, (), {"__module__": "torch"}))
    torch._utils = utils
    return {"torch": torch, "torch._utils": utils}


class _Pickler(pickle.Pickler):
    def __init__(self, f, pids):
        super().__init__(f, protocol=2)
        self.pids = pids

    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            return ("storage", getattr(sys.modules["torch"], obj.storage_type), obj.key, "cpu", obj.numel)
        if isinstance(obj, tuple) and len(obj) == 2 and obj[0] == "PID":
            return obj[1]
        return None

    def reducer_override(self, obj):
        mods = sys.modules
        if isinstance(obj, Tensor):
            rebuild = mods["torch._utils"]._rebuild_tensor_v2
            return rebuild, (obj.storage, obj.offset, obj.size, obj.stride, False, collections.OrderedDict())
        if isinstance(obj, Raw):
            return getattr(mods[obj.module], obj.name), obj.args
        return NotImplemented


def pickle_bytes(tree) -> bytes:
    saved = {k: sys.modules.get(k) for k in ("torch", "torch._utils")}
    sys.modules.update(_fake_torch())
    try:
        buf = io.BytesIO()
        _Pickler(buf, None).dump(tree)
        return buf.getvalue()
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def write_pt(path, tree, storages=(), pkl: bytes | None = None, extra: dict[str, bytes] | None = None) -> str:
    """A torch-style zip: archive/data.pkl and archive/data/<key> per storage (stored, not deflated)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pickle_bytes(tree) if pkl is None else pkl)
        for s in storages:
            z.writestr(f"archive/data/{s.key}", s.data.tobytes())
        for name, data in (extra or {}).items():
            z.writestr(name, data, compress_type=zipfile.ZIP_DEFLATED)
    return str(path)
