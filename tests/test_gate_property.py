"""A property of the input gate: every generated file (random bytes, declared shapes that lie, truncations,
wrong kinds, damaged headers) through every reader is either read exactly or refused as one of the
package's own errors in one line, with bounded memory and without blocking."""

import os
import struct
import threading
import tracemalloc
import zipfile

import numpy as np
import pytest

from nanoflow_jax.audio.conventions import load_stats
from nanoflow_jax.audio.io import read_audio, read_mel
from nanoflow_jax.convert import read_official
from nanoflow_jax.convert.official_params import state_dict_from
from nanoflow_jax.errors import USER_ERRORS
from nanoflow_jax.export import load as load_export
from nanoflow_jax.files import read_npz

MEMORY_LIMIT = 64 << 20  # bytes a refused or accepted small file may cost to read
CASES = 40


def _npy_bytes(rng, shape=None, dtype="<f4", lie=False, cut=None) -> tuple[bytes, np.ndarray]:
    shape = shape if shape is not None else tuple(int(d) for d in rng.integers(1, 9, rng.integers(1, 4)))
    a = rng.standard_normal(shape).astype(dtype)
    declared = shape
    if lie:  # a header that claims something else, up to terabytes
        declared = tuple(int(d) for d in rng.integers(1, 1 << 20, len(shape)))
    import io

    f = io.BytesIO()
    np.lib.format.write_array_header_1_0(f, {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": declared})
    data = f.getvalue() + a.tobytes()
    return (data[:cut] if cut is not None else data), a


def _random_file(rng, tmp_path, i: int, ext: str) -> tuple[str, np.ndarray | dict | None]:
    """A generated file and, when it is valid, what reading it must give."""
    path = str(tmp_path / f"f{i}{ext}")
    kind = rng.choice(["bytes", "valid", "lie", "cut", "header", "empty", "folder", "fifo", "loop"])
    expect = None
    if kind == "bytes":
        open(path, "wb").write(rng.bytes(int(rng.integers(1, 4096))))
    elif kind == "empty":
        open(path, "wb").close()
    elif kind == "folder":
        os.mkdir(path)
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "loop":
        os.symlink(path, path)
    elif ext == ".npz":
        members = {}
        with zipfile.ZipFile(path, "w", compression=rng.choice([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])) as z:
            for m in range(int(rng.integers(1, 4))):
                data, a = _npy_bytes(rng, lie=kind == "lie")
                if kind == "header":
                    data = data[:6] + rng.bytes(20) + data[26:]
                z.writestr(f"m{m}.npy", data)
                members[f"m{m}"] = a
        if kind == "cut":
            size = os.path.getsize(path)
            os.truncate(path, int(rng.integers(1, size)))
        expect = members if kind == "valid" else None
    elif ext == ".wav":
        import soundfile

        rate = int(rng.choice([8000, 16000, 22050, 44100]))
        channels = int(rng.integers(1, 4))
        x = (0.5 * rng.uniform(-1, 1, (int(rng.integers(1, 3000)), channels))).astype(np.float32)
        soundfile.write(path, x, rate, subtype="FLOAT", format="WAV")
        data = bytearray(open(path, "rb").read())
        if kind == "lie":  # the fmt chunk's rate, channels or the data chunk's size rewritten
            field = int(rng.integers(0, 3))
            offset, fmt = [(24, "<I"), (22, "<H"), (len(data) - x.nbytes - 4, "<I")][field]
            data[offset : offset + struct.calcsize(fmt)] = struct.pack(fmt, int(rng.integers(0, 2**16 - 1)))
        elif kind == "cut":
            data = data[: int(rng.integers(1, len(data)))]
        elif kind == "header":
            data[: int(rng.integers(4, 44))] = rng.bytes(len(data[: int(rng.integers(4, 44))]))
        open(path, "wb").write(bytes(data))
        expect = (x.mean(axis=1), rate) if kind == "valid" else None
    else:  # .npy
        shape = (80, int(rng.integers(1, 50))) if ext == ".npy" else (2, 80)
        data, a = _npy_bytes(rng, shape=shape, lie=kind == "lie")
        if kind == "cut":
            data = data[: int(rng.integers(1, len(data)))]
        elif kind == "header":
            data = data[:8] + rng.bytes(30) + data[38:]
        open(path, "wb").write(data)
        expect = a if kind == "valid" and ext in (".npy", ".npys") else None
    return path, expect


READERS = {
    "mel": (".npy", lambda p: read_mel(p, 80, 1 << 20)),
    "stats": (".npys", lambda p: load_stats(p, 80)),
    "npz": (".npz", lambda p: read_npz(p, "archive", budget=16 << 20)),
    "wav": (".wav", lambda p: read_audio(p, max_bytes=16 << 20)),
    "official npz": (".npz", lambda p: state_dict_from(p, max_bytes=16 << 20)),
    "official pt": (".pt", state_dict_from),
    "official json": (".json", read_official),
    "export": (".jaxexport", load_export),
}


def _call(reader, path):
    """(result, error) of reading `path` in a thread that must finish in seconds (a FIFO must not block)."""
    out = {}

    def go():
        tracemalloc.start()
        try:
            out["result"] = reader(path)
        except BaseException as e:  # judged below: only the package's own errors are allowed
            out["error"] = e
        finally:
            out["peak"] = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()

    t = threading.Thread(target=go, daemon=True)
    t.start()
    t.join(20)
    assert not t.is_alive(), f"reading {path} blocked"
    return out


@pytest.mark.parametrize("name", list(READERS))
def test_every_generated_file_is_read_exactly_or_refused_in_one_line(tmp_path, name):
    ext, reader = READERS[name]
    rng = np.random.default_rng(sum(map(ord, name)))
    read, refused = 0, 0
    for i in range(CASES):
        path, expect = _random_file(rng, tmp_path, i, ext)
        out = _call(reader, path)
        assert out["peak"] < MEMORY_LIMIT, (path, out["peak"])
        if "error" in out:
            e = out["error"]
            assert expect is None or name == "stats", f"{name}: a valid file was refused: {e}"
            assert isinstance(e, USER_ERRORS), f"{name}: {path}: {type(e).__name__}: {e}"
            assert str(e) and "\n" not in str(e), str(e)
            refused += 1
            continue
        read += 1
        result = out["result"]
        if expect is None:
            continue  # a damaged file that still parses (e.g. random bytes in an ignored header field)
        if name == "wav":
            np.testing.assert_allclose(result[0], expect[0], atol=1e-6)
            assert result[1] == expect[1]
        elif name in ("npz", "official npz"):
            assert sorted(result) == sorted(expect)
            for k in expect:
                np.testing.assert_array_equal(result[k], expect[k])
        elif name == "mel":
            np.testing.assert_array_equal(result, expect)
    assert refused > 0  # the generator makes bad files for every reader
