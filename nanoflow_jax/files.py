"""Atomic file writes: a temporary file in the target's folder, renamed into place once complete, so a
crash or an error never leaves a partial file under the real name."""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable
from typing import IO, Any


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None], suffix: str = "") -> None:
    """Call `write(f)` on a temporary binary file, then rename it to `path` (mode as per the umask).
    A filesystem that refuses (read-only, full, a file where a folder should be) is an OutputError
    naming `path`; the temporary file is removed."""
    from nanoflow_jax.errors import OutputError

    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise OutputError(f"cannot write {path}: it is a folder")
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


def check_input_file(path: str | os.PathLike, what: str, max_bytes: int | None = None) -> int:
    """The size of a regular, non-empty file of at most `max_bytes`; anything else (missing, a FIFO that
    would block the read, a device, a folder, empty, too large) is an InputError naming it."""
    import stat

    from nanoflow_jax.errors import InputError

    path = os.fspath(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise InputError(f"{what} {path} does not exist") from None
    except OSError as e:
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
    return st.st_size


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
    import numpy as np

    from nanoflow_jax.errors import InputError

    with open(path, "rb") as f:
        try:
            major, _ = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(f, max_header_size=NPY_HEADER_BYTES)
        except (ValueError, OSError, EOFError, SyntaxError) as e:
            raise InputError(f"cannot read {path} as a .npy array ({str(e).splitlines()[0]})") from None
        offset = f.tell()
    if dtype.hasobject or dtype.kind != "f":
        raise InputError(f"{path}: {what} must hold floating-point values, got dtype {dtype}")
    need = math.prod(shape) * dtype.itemsize
    if offset + need != size:
        raise InputError(f"{path}: its header declares shape {shape} ({need} bytes) but the file holds {size - offset}")
    return shape, dtype, offset
