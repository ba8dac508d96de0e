"""Atomic file writes: a temporary file in the target's folder, renamed into place once complete, so a
crash or an error never leaves a partial file under the real name."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from typing import IO


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None], suffix: str = "") -> None:
    """Call `write(f)` on a temporary binary file, then rename it to `path` (mode as per the umask)."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def resolve_path(path: str | os.PathLike) -> str:
    """A path as a user gave it (flag, config field, argument) -> absolute: `~` expanded, a relative path
    taken from the current directory. Applied once where a path enters the package."""
    return os.path.abspath(os.path.expanduser(os.fspath(path)))
