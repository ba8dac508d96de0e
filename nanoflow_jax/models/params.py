"""Param trees of any model: counting, and checking a tree against the shapes a model expects."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from nanoflow_jax.errors import CheckpointError


def count_params(params: Any) -> int:
    """Number of scalars in a params tree."""
    return int(sum(np.size(x) for x in jax.tree.leaves(params)))


def check_params(expected: Any, params: Any, what: str = "params") -> None:
    """Raise a ValueError naming the first missing, unexpected or mis-shaped entry of `params` against
    `expected` (a tree of arrays or shape structs, e.g. from `jax.eval_shape` of the model's init)."""
    flat_want = {jax.tree_util.keystr(k): v.shape for k, v in jax.tree_util.tree_leaves_with_path(expected)}
    flat_got = {jax.tree_util.keystr(k): np.shape(v) for k, v in jax.tree_util.tree_leaves_with_path(params)}
    for name in flat_want:
        if name not in flat_got:
            raise CheckpointError(f"{what}: missing {name} (expected shape {flat_want[name]})")
    for name, shape in flat_got.items():
        if name not in flat_want:
            raise CheckpointError(f"{what}: unexpected entry {name}")
        if tuple(shape) != tuple(flat_want[name]):
            raise CheckpointError(f"{what}: {name} has shape {tuple(shape)}, expected {tuple(flat_want[name])}")
