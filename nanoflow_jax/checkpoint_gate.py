"""What a checkpoint folder must pass before orbax reads a byte of it: only folders and regular files,
metadata of a bounded size, and arrays whose declared shapes fit this machine's memory and the model they
must fit. Read from the metadata alone, nothing allocated; every failure a CheckpointError naming the
folder or file."""

from __future__ import annotations

import math
import os
from typing import Any

import jax
import numpy as np
from absl import logging

from nanoflow_jax.errors import CheckpointError
from nanoflow_jax.files import first_line, memory_budget

MAX_METADATA_BYTES = 16 << 20  # any file of a checkpoint outside its array data (JSON, orbax's own)


def leaf_name(path: tuple) -> str:
    """A tree path as "a/b/c", the same for a train state and the nested dicts it restores as."""
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def check_step_files(where: str) -> None:
    """A checkpoint step folder as orbax will read it: only folders and regular files (a FIFO would block,
    a device never ends), and every file outside the array data folders (`d/`) at most MAX_METADATA_BYTES,
    judged by its size before it is opened. A CheckpointError naming the file."""
    import stat

    if not os.path.isdir(where):
        raise CheckpointError(f"checkpoint {where} is not a folder")
    data_files = 0
    for folder, dirs, files in os.walk(where):
        if os.path.basename(folder) == "d":
            data_files += len(files)
        for name in dirs + files:
            path = os.path.join(folder, name)
            try:
                st = os.stat(path)
            except OSError as e:
                raise CheckpointError(f"checkpoint file {path} cannot be read ({e.strerror})") from None
            if stat.S_ISDIR(st.st_mode):
                continue
            if not stat.S_ISREG(st.st_mode):
                raise CheckpointError(f"checkpoint file {path} is not a regular file")
            if os.path.basename(folder) != "d" and st.st_size > MAX_METADATA_BYTES:
                raise CheckpointError(
                    f"checkpoint file {path} is {st.st_size} bytes; metadata may hold at most {MAX_METADATA_BYTES}"
                )
    if not data_files and os.path.isdir(os.path.join(where, "state")):
        # orbax would fail inside its own event loop, after the fact; say it first
        raise CheckpointError(f"checkpoint {where} is damaged: its array data files are missing")


def declared_arrays(where: str) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """{name: (shape, dtype)} of every array the step folder `where`'s state declares, read from its metadata alone
    (after the folder passes `check_step_files`); nothing is allocated."""
    import orbax.checkpoint as ocp
    from etils import epath

    check_step_files(where)
    level = logging.get_verbosity()
    logging.set_verbosity(logging.FATAL)
    try:
        tree = ocp.StandardCheckpointHandler().metadata(epath.Path(where) / "state")
        leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    except Exception as e:  # orbax, tensorstore and JSON each fail in their own types
        raise CheckpointError(f"checkpoint {where}: its array metadata cannot be read ({first_line(e)})") from e
    finally:
        logging.set_verbosity(level)
    out = {}
    for path, leaf in leaves:
        shape, dtype = getattr(leaf, "shape", None), getattr(leaf, "dtype", None)
        if shape is None or dtype is None:  # a scalar orbax stores as a plain Python value
            continue
        out[leaf_name(path)] = (tuple(int(d) for d in shape), np.dtype(dtype))
    return out


def check_declared(
    where: str, expected: Any = None, prefix: str = "", complete: bool = True
) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Before any array of `where` is read: what its metadata declares fits this machine's memory budget
    and, given `expected` (a tree of shape structs: a model's variables or a train state), every
    declared array under `prefix` has the expected shape (and, if `complete`, there are some and every
    expected one is declared). A CheckpointError naming the array. -> the declared arrays."""
    declared = declared_arrays(where)
    try:
        total = sum(math.prod(shape) * dtype.itemsize for shape, dtype in declared.values())
    except TypeError:
        raise CheckpointError(f"checkpoint {where}: its metadata declares an array that is not numeric") from None
    budget = memory_budget()
    if total > budget:
        raise CheckpointError(
            f"checkpoint {where} declares {total / 2**20:.0f} MiB of arrays; at most {budget / 2**20:.0f} MiB "
            "can be read here"
        )
    if expected is None:
        return declared
    want = {prefix + leaf_name(p): tuple(v.shape) for p, v in jax.tree_util.tree_flatten_with_path(expected)[0]}
    got = {k: v[0] for k, v in declared.items() if k.startswith(prefix)}
    if complete and not got:
        raise CheckpointError(f"checkpoint {where} holds no {prefix.strip('/') or 'arrays'}")
    for name, shape in got.items():
        if name not in want:
            raise CheckpointError(f"checkpoint {where}: unexpected array {name} for this model")
        if shape != want[name]:
            raise CheckpointError(f"checkpoint {where}: array {name} is declared {shape}; its model needs {want[name]}")
    missing = sorted(set(want) - set(got))
    if complete and missing:
        raise CheckpointError(f"checkpoint {where}: missing array {missing[0]} (shape {want[missing[0]]})")
    return declared
