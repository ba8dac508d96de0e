"""Atomic file writes: a temporary file in the target's folder, renamed into place once complete, so a
crash or an error never leaves a partial file under the real name."""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Iterable
from typing import IO, Any


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None], suffix: str = "") -> None:
    """Call `write(f)` on a temporary binary file, then rename it to `path` (mode as per the umask).
    A filesystem that refuses (read-only, full, a file where a folder should be) is an OutputError
    naming `path`; the temporary file is removed."""
    from nanoflow_jax.errors import OutputError

    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    check_output_file(path)
    tmp = None
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=suffix)
        with os.fdopen(fd, "wb") as f:
            write(f)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e.strerror or e}") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def check_output_file(path: str | os.PathLike) -> None:
    """An OutputError when a file cannot be written at `path` whatever the disk holds: `path` is a folder,
    or an ancestor that exists is a file. Commands call it before their work; `atomic_write` before it
    writes."""
    from nanoflow_jax.errors import OutputError

    path = os.path.abspath(os.fspath(path))
    if os.path.isdir(path):
        raise OutputError(f"cannot write {path}: it is a folder")
    folder = os.path.dirname(path)
    while not os.path.lexists(folder):
        parent = os.path.dirname(folder)
        if parent == folder:
            return
        folder = parent
    if not os.path.isdir(folder):
        raise OutputError(f"cannot write {path}: {folder} is a file, not a folder")


def check_input_file(path: str | os.PathLike, what: str, max_bytes: int | None = None) -> int:
    """The size of a regular, readable, non-empty file of at most `max_bytes`; anything else (missing, a
    symlink loop, unreadable, a FIFO that would block the read, a device, a folder, empty, too large) is an
    InputError naming it. The gate every file we are handed passes before it is opened."""
    import errno
    import stat

    from nanoflow_jax.errors import InputError

    path = os.fspath(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        kind = "a broken symlink" if os.path.islink(path) else None
        raise InputError(f"{what} {path} does not exist" + (f" ({kind})" if kind else "")) from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise InputError(f"{what} {path} is a symlink loop, not a file") from None
        if e.errno == errno.ENOTDIR:
            raise InputError(f"{what} {path} does not exist (a part of the path is a file)") from None
        raise InputError(f"cannot read {what} {path}: {e.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"{what} {path} is a folder, not a file")
    if not stat.S_ISREG(st.st_mode):
        kind = "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a device or socket"
        raise InputError(f"{what} {path} is {kind}, not a regular file")
    if st.st_size == 0:
        raise InputError(f"{what} {path} is empty")
    if max_bytes is not None and st.st_size > max_bytes:
        raise InputError(f"{what} {path} is {st.st_size} bytes; at most {max_bytes} are allowed")
    if not os.access(path, os.R_OK):
        raise InputError(f"cannot read {what} {path}: permission denied")
    return st.st_size


def read_text_file(path: str | os.PathLike, what: str, max_bytes: int) -> str:
    """The UTF-8 text of a file that passes `check_input_file` (at most `max_bytes`; a sparse file that
    claims more is refused by its size, unread); not UTF-8 is an InputError naming it."""
    from nanoflow_jax.errors import InputError

    check_input_file(path, what, max_bytes)
    with open(path, "rb") as f:
        data = f.read(max_bytes + 1)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{what} {path} is not UTF-8 text (byte {e.start})") from None


def read_json_file(path: str | os.PathLike, what: str, max_bytes: int = 16 << 20) -> Any:
    """A JSON file through `read_text_file`; text that is not JSON is an InputError naming it."""
    import json

    from nanoflow_jax.errors import InputError

    text = read_text_file(path, what, max_bytes)
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as e:
        raise InputError(f"{what} {path} is not valid JSON ({first_line(e, 120)})") from None


def available_memory() -> int:
    """Bytes this machine can still give (MemAvailable), or 8 GiB where that is unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 << 30


def memory_budget() -> int:
    """What one input may cost to read: half of the memory this machine can still give."""
    return available_memory() // 2


def check_budget(path: str, what: str, need: int, budget: int | None = None) -> None:
    """An InputError when reading `path` would take `need` bytes, more than `budget` (default:
    `memory_budget()`), checked before any of it is read."""
    from nanoflow_jax.errors import InputError

    budget = memory_budget() if budget is None else budget
    if need > budget:
        raise InputError(
            f"{what} {path} would need {need / 2**20:.0f} MiB to read; at most {budget / 2**20:.0f} MiB "
            "are allowed here"
        )


def first_line(e: BaseException, limit: int = 200) -> str:
    """An exception's first line (its type's name when it has no text), at most `limit` characters."""
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:limit]


def _real(path: str) -> str:
    return os.path.realpath(os.path.abspath(os.fspath(path)))


def inside(path: str, folder: str) -> bool:
    """`path` is `folder` or lies under it, after symlinks are resolved."""
    p, d = _real(path), _real(folder)
    return p == d or p.startswith(d.rstrip(os.sep) + os.sep)


def check_not_input(
    out: str, input_files: Iterable[str] = (), input_folders: Iterable[str] = (), flag: str = "--out"
) -> None:
    """Refuse, before any work, an output that is one of the inputs (the same file, however reached) or lies
    inside an input folder: an OutputError naming both. Inputs are never outputs."""
    from nanoflow_jax.errors import OutputError

    for f in input_files:
        if not f:
            continue
        same = _real(out) == _real(f)
        try:
            same = same or os.path.samefile(out, f)
        except OSError:
            pass
        if same:
            raise OutputError(f"{flag} {out} is the input {f}: refusing to overwrite what is being read")
    for d in input_folders:
        if d and inside(out, d):
            raise OutputError(f"{flag} {out} lies inside the input folder {d}: write the outputs somewhere else")


def resolve_path(path: str | os.PathLike) -> str:
    """A path as a user gave it (flag, config field, argument) -> absolute: `~` expanded, a relative path
    taken from the current directory. Applied once where a path enters the package."""
    return os.path.abspath(os.path.expanduser(os.fspath(path)))


class WorkdirLock:
    """An exclusive lock on a folder (its `.lock` file) for the life of a process: a second holder is
    refused with one line naming the first. The kernel drops the lock when its holder exits, even on
    kill -9, so no stale lock survives a crash."""

    NAME = ".lock"

    def __init__(self, folder: str, what: str = "train.py"):
        import fcntl
        import socket
        import time

        from nanoflow_jax.errors import OutputError

        self.path = os.path.join(folder, self.NAME)
        try:
            os.makedirs(folder, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise OutputError(f"cannot use {folder}: {e.strerror}") from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(self._fd)
            raise OutputError(f"{folder} is in use by {holder}; one {what} per folder") from None
        os.ftruncate(self._fd, 0)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        os.pwrite(self._fd, f"{what} pid {os.getpid()} on {socket.gethostname()} since {stamp}\n".encode(), 0)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> WorkdirLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


NPY_HEADER_BYTES = 1 << 16


def npy_header(path: str, size: int, what: str = "mel") -> tuple[tuple[int, ...], Any, int]:
    """(shape, dtype, data offset) of a .npy file, checked against the file's real size before any data
    is read (a header claiming 40 GB in a 1 KB file is refused here)."""

    from nanoflow_jax.errors import InputError

    with open(path, "rb") as f:
        try:
            shape, dtype, offset = _read_npy_header(f)
        except (ValueError, OSError, EOFError, SyntaxError) as e:
            raise InputError(f"cannot read {path} as a .npy array ({str(e).splitlines()[0]})") from None
    if dtype.hasobject or dtype.kind != "f":
        raise InputError(f"{path}: {what} must hold floating-point values, got dtype {dtype}")
    need = math.prod(shape) * dtype.itemsize
    if offset + need != size:
        raise InputError(f"{path}: its header declares shape {shape} ({need} bytes) but the file holds {size - offset}")
    return shape, dtype, offset


def _read_npy_header(f: IO[bytes]) -> tuple[tuple[int, ...], Any, int]:
    """(shape, dtype, data offset) of the .npy at the start of `f`, its header at most NPY_HEADER_BYTES."""
    import numpy as np

    major, _ = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
    shape, _, dtype = read(f, max_header_size=NPY_HEADER_BYTES)
    return shape, dtype, f.tell()


MAX_NPZ_MEMBERS = 10_000


def read_npz(path: str | os.PathLike, what: str, budget: int | None = None) -> dict[str, Any]:
    """The arrays of an untrusted .npz, {name: array}. Before any array is read: the file passes
    `check_input_file`, every member is a .npy whose header (shape, dtype: numbers only, no objects)
    matches the member's size in the zip's directory, and their total fits `budget` (default: this
    machine's `memory_budget()`). A truncated or damaged member is an InputError naming the file."""
    import zipfile

    import numpy as np

    from nanoflow_jax.errors import InputError

    path = os.fspath(path)
    check_input_file(path, what)

    def refuse(why: str) -> InputError:
        return InputError(f"{what} {path}: {why}")

    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise InputError(f"cannot read {what} {path} as an .npz archive ({first_line(e)})") from None
    with zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
        if len(infos) > MAX_NPZ_MEMBERS:
            raise refuse(f"{len(infos)} members; at most {MAX_NPZ_MEMBERS} are read")
        total = 0
        for info in infos:
            if not info.filename.endswith(".npy"):
                raise refuse(f"member {info.filename!r} is not a .npy array")
            try:
                with zf.open(info) as f:
                    shape, dtype, offset = _read_npy_header(f)
            except (ValueError, OSError, EOFError, SyntaxError, zipfile.BadZipFile, NotImplementedError) as e:
                raise refuse(f"member {info.filename!r} is not a readable .npy ({first_line(e, 120)})") from None
            if dtype.hasobject or dtype.kind not in "fiub":
                raise refuse(f"member {info.filename!r} has dtype {dtype}; only numbers are read")
            need = math.prod(shape) * dtype.itemsize
            if offset + need != info.file_size:
                raise refuse(
                    f"member {info.filename!r} declares shape {shape} ({need} bytes) but holds "
                    f"{info.file_size - offset}"
                )
            total += need
        check_budget(path, what, total, budget)
        out = {}
        for info in infos:
            try:
                with zf.open(info) as f:
                    out[info.filename[: -len(".npy")]] = np.lib.format.read_array(f, allow_pickle=False)
            except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
                raise refuse(f"member {info.filename!r} is damaged ({first_line(e)})") from None
    return out
