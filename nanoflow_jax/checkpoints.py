"""Checkpoints with orbax: async and atomic (written to a temporary folder, renamed when complete).

Layout: <workdir>/checkpoints/<step>/{state, meta}. `state` holds the train state (params, optimiser,
step, RNG, skip counters) or just {"params"} for converted / averaged checkpoints; `meta` (JSON) the
full config, the data-iterator position, the step's eval loss and a SHA-256 of every array.

What is kept is decided here, from `meta` (so it survives restarts): the newest `keep` checkpoints and
the one with the lowest eval loss (the task's: NLL for audio, bits per dimension for images). Older ones
are deleted only once a newer save has completed, so a failed write never costs a good checkpoint. A
state with a non-finite value is never saved. Restoring verifies every array against its checksum; the
trainer falls back from a damaged checkpoint to the newest good one.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from nanoflow_jax.audio.mel import MelConfig
from nanoflow_jax.checkpoint_gate import MAX_METADATA_BYTES, check_declared, declared_arrays, leaf_name
from nanoflow_jax.errors import CheckpointError, ConfigError, InputError, OutputError
from nanoflow_jax.files import first_line, read_json_file, resolve_path
from nanoflow_jax.models import AudioFlow, abstract_variables, build_model, model_config

CHECKPOINTS = "checkpoints"
SPACE_MARGIN = 8 << 20  # bytes a checkpoint needs beyond its arrays (metadata, orbax's temporaries)


def checkpoint_dir(path: str) -> str:
    """A workdir or its checkpoints folder -> the checkpoints folder."""
    path = resolve_path(path)
    sub = os.path.join(path, CHECKPOINTS)
    return sub if os.path.isdir(sub) else path


def tree_checksums(tree: Any) -> dict[str, str]:
    """SHA-256 of each array's dtype, shape and bytes, by its path ("params/params/..."): the same names
    for a train state and for the nested dicts it restores as."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        a = np.ascontiguousarray(np.asarray(leaf))
        h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.view(np.uint8).reshape(-1) if a.size else b"")
        out[leaf_name(path)] = h.hexdigest()
    return out


def non_finite_leaves(tree: Any) -> list[str]:
    """Paths of the floating-point arrays holding NaN or Inf."""
    bad = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        a = np.asarray(leaf)
        if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
            bad.append(leaf_name(path))
    return bad


class Checkpointer:
    def __init__(self, directory: str, keep: int = 3, async_save: bool = True, create: bool = True):
        options = ocp.CheckpointManagerOptions(
            max_to_keep=None,  # pruning is ours (_prune): orbax's would delete before a new save completes
            enable_async_checkpointing=async_save,
            create=create,
            read_only=not create,
            save_interval_steps=1 if create else 0,
        )
        self.directory = directory = resolve_path(directory)
        self.keep, self.read_only = keep, not create
        self._pending: int | None = None
        level = logging.get_verbosity()
        if not create:  # orbax warns that a read-only manager is read-only
            logging.set_verbosity(logging.ERROR)
        try:
            self.manager = ocp.CheckpointManager(directory, options=options, item_names=("state", "meta"))
        except OSError as e:
            raise OutputError(f"cannot use checkpoint folder {directory}: {e.strerror or first_line(e)}") from e
        finally:
            logging.set_verbosity(level)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def meta_path(self, step: int) -> str:
        return os.path.join(self.directory, str(step), "meta", "metadata")  # the JSON file orbax writes

    def eval_loss(self, step: int) -> float | None:
        """The eval loss stored with `step` (None: not evaluated, or unreadable)."""
        try:
            with open(self.meta_path(step), encoding="utf-8") as f:
                value = json.load(f).get("eval_loss")
        except (OSError, ValueError, AttributeError):
            return None
        return float(value) if isinstance(value, int | float) and math.isfinite(value) else None

    def kept_steps(self, steps: list[int]) -> set[int]:
        """The newest `keep` of `steps` and the one with the lowest eval loss."""
        kept = set(steps[-self.keep :])
        losses = {s: v for s in steps if (v := self.eval_loss(s)) is not None}
        if losses:
            kept.add(min(losses, key=lambda s: (losses[s], -s)))
        return kept

    def _prune(self) -> None:
        steps = self.all_steps()
        for s in set(steps) - self.kept_steps(steps):
            self.manager.delete(s)

    def save(self, step: int, state: Any, meta: dict, metrics: dict | None = None) -> bool:
        """Save `state` with `meta` (and `metrics["eval_loss"]` when evaluated); False (nothing written)
        when the state holds a non-finite value. A failed write is an OutputError; the checkpoints
        before it are intact."""
        if non_finite_leaves(state):
            return False
        self.wait()  # the previous save is complete: only now may older ones go
        self._check_space(step, state)
        self._prune()
        eval_loss = None if not metrics else metrics.get("eval_loss")
        meta = dict(meta, checksums=tree_checksums(state), eval_loss=eval_loss)
        self._pending = step
        try:
            self.manager.save(
                step,
                args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
                force=True,
            )
        except Exception as e:  # orbax / tensorstore report a full or read-only disk in their own types
            self._write_failed(e)
        return True

    def _check_space(self, step: int, state: Any) -> None:
        """Refuse before orbax starts when the disk cannot hold the checkpoint: orbax's writer threads
        report a full disk as tracebacks of their own, after the fact."""
        if short := space_shortfall(self.directory, state):
            raise OutputError(f"could not write checkpoint {step} in {self.directory}: {short}; {self._intact(step)}")

    def _intact(self, failed: int) -> str:
        good = [s for s in self.all_steps() if s != failed]
        return f"the newest complete checkpoint (step {good[-1]}) is intact" if good else "no earlier checkpoint"

    def _write_failed(self, e: BaseException) -> None:
        step, self._pending = self._pending, None
        reason = getattr(e, "strerror", None) or first_line(e)
        raise OutputError(
            f"could not write checkpoint {step} in {self.directory} ({reason}); {self._intact(step)}"
        ) from e

    def declared_arrays(self, step: int) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """{name: (shape, dtype)} of every array `step`'s state declares (`checkpoint_gate.declared_arrays`)."""
        return declared_arrays(os.path.join(self.directory, str(step)))

    def check_declared(
        self, step: int, expected: Any = None, prefix: str = "", complete: bool = True
    ) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """`checkpoint_gate.check_declared` of `step`, before any of its arrays is read; -> what it declares."""
        return check_declared(os.path.join(self.directory, str(step)), expected, prefix, complete)

    def restore(self, step: int, target: Any = None, expected: Any = None, prefix: str = "") -> tuple[Any, dict]:
        """(state, meta) of `step`, every array checked against its checksum; with `target` (an abstract
        or concrete state) restored into its structure and shardings, otherwise as nested dicts of
        arrays. Before anything is read the folder passes `check_step_files` and its declared arrays
        `check_declared` (against `target`, or `expected` under `prefix`). A damaged, incomplete,
        oversized or non-finite checkpoint is a CheckpointError naming its folder."""
        where = os.path.join(self.directory, str(step))
        if target is not None:  # orbax checks the structure; scalars may be stored as plain values
            self.check_declared(step, target, complete=False)
        else:
            self.check_declared(step, expected, prefix)
        state_arg = ocp.args.StandardRestore(target) if target is not None else ocp.args.StandardRestore()
        level = logging.get_verbosity()
        logging.set_verbosity(logging.FATAL)  # a damaged file is reported below, once
        try:
            out = self.manager.restore(step, args=ocp.args.Composite(state=state_arg, meta=ocp.args.JsonRestore()))
        except Exception as e:  # orbax, tensorstore and JSON each fail in their own types
            raise CheckpointError(f"checkpoint {where} cannot be read ({first_line(e)})") from e
        finally:
            logging.set_verbosity(level)
        state, meta = out["state"], out["meta"]
        if not isinstance(meta, dict):
            raise CheckpointError(f"checkpoint {where}: its metadata is not a JSON object")
        expected = meta.get("checksums")
        if isinstance(expected, dict):  # checkpoints written before checksums existed have none
            got = tree_checksums(state)
            bad = sorted(k for k in set(got) | set(expected) if got.get(k) != expected.get(k))
            if bad:
                raise CheckpointError(f"checkpoint {where} is damaged: array {bad[0]} does not match its checksum")
        bad = non_finite_leaves(state)
        if bad:
            raise CheckpointError(f"checkpoint {where} holds non-finite values (in {bad[0]})")
        return state, meta

    def read_meta(self, step: int) -> dict:
        """The JSON meta of `step`, read without touching its arrays (at most MAX_METADATA_BYTES)."""
        try:
            meta = read_json_file(self.meta_path(step), "checkpoint metadata", MAX_METADATA_BYTES)
        except InputError as e:
            raise CheckpointError(str(e)) from None
        if not isinstance(meta, dict):
            raise CheckpointError(f"checkpoint {self.directory}/{step}: its metadata is not a JSON object")
        return meta

    def restore_newest_good(self, target: Any = None, warn=print, check_meta=None) -> tuple[int, Any, dict] | None:
        """(step, state, meta) of the newest checkpoint that restores and verifies, its meta first passed to
        `check_meta(meta, path)` before any array is read (its errors propagate); each damaged one newer
        than it is one warning line and, in a writable folder, is moved aside to `damaged-<step>` (kept
        for inspection, out of the way of the steps that will be saved again). None: no checkpoint."""
        steps = self.all_steps()
        for step in reversed(steps):
            try:
                if check_meta is not None:  # e.g. the config a resume must share: its errors propagate
                    check_meta(self.read_meta(step), self.meta_path(step))
                state, meta = self.restore(step, target)
                return step, state, meta
            except CheckpointError as e:
                aside = ""
                if not self.read_only:
                    aside = os.path.join(self.directory, f"damaged-{step}")
                    os.replace(os.path.join(self.directory, str(step)), aside)
                    self.manager.reload()
                    aside = f" (moved to {aside})"
                warn(f"warning: {e}{aside}; trying an older checkpoint")
        if steps:
            raise CheckpointError(f"no usable checkpoint in {self.directory}: all {len(steps)} are damaged")
        return None

    def wait(self) -> None:
        """Wait for the async save in flight; a failed one is an OutputError."""
        try:
            self.manager.wait_until_finished()
        except Exception as e:
            self._write_failed(e)
        self._pending = None

    def close(self) -> None:
        self.wait()
        if not self.read_only:
            self._prune()
        self.manager.close()


def space_shortfall(folder: str, tree: Any) -> str | None:
    """ "X MiB free, Y MiB needed" when `folder`'s disk cannot hold a checkpoint of `tree`, else None."""
    need = sum(int(getattr(leaf, "nbytes", 0)) for leaf in jax.tree.leaves(tree)) * 5 // 4 + SPACE_MARGIN
    free = shutil.disk_usage(folder).free
    return f"{free / 2**20:.1f} MiB free, {need / 2**20:.1f} MiB needed" if free < need else None


def check_new_folder(out: str) -> None:
    """`out` may become a new folder: absent or an empty folder; a file or a non-empty folder is refused."""
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        what = "is not empty" if os.path.isdir(out) else "is a file, not a folder"
        raise OutputError(f"output folder {out} {what}")


def save_params_folder(out: str, step: int, params: Any, meta: dict) -> str:
    """Write `{"params": params}` with `meta` as a new one-checkpoint folder `out` (absolute path
    returned). Written beside it under a temporary name and renamed when complete, so a full or
    read-only disk leaves nothing under `out`; an existing non-empty `out`, a file at `out` or
    non-finite params are refused before anything is written."""
    import tempfile

    out = resolve_path(out)
    check_new_folder(out)
    if bad := non_finite_leaves(params):
        raise CheckpointError(f"refusing to write {out}: non-finite values in {', '.join(bad[:3])}")
    parent = os.path.dirname(out)
    try:
        os.makedirs(parent, exist_ok=True)
        if short := space_shortfall(parent, params):
            raise OutputError(f"cannot write {out}: {short}")
        tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(out)}.tmp-")
    except OSError as e:
        raise OutputError(f"cannot write {out}: {e.strerror}") from None
    try:
        ckpt = Checkpointer(tmp, keep=1, async_save=False)
        try:
            ckpt.save(step, {"params": params}, meta)
            ckpt.wait()
        finally:
            ckpt.close()
        if os.path.isdir(out):
            os.rmdir(out)  # empty, checked above
        os.replace(tmp, out)
    except OSError as e:
        raise OutputError(f"cannot write {out}: {e.strerror}") from None
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def abstract_like(tree: Any) -> Any:
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def load_checkpoint(directory: str, step: int | None = None) -> tuple[Any, Any, Any]:
    """(config, model, params) from a workdir or checkpoint folder: the latest step, or `step`.

    `config` is the run's config (an ml_collections ConfigDict); its model section and an audio model's
    mel fields are checked (a hand-edited field that is not allowed is a ConfigError naming the file and
    the field), and every array against its checksum. `params` is the variables dict `model.apply` takes."""
    import ml_collections

    path = checkpoint_dir(directory)
    if not os.path.isdir(path):
        raise CheckpointError(f"checkpoint directory {directory} does not exist")
    ckpt = Checkpointer(path, create=False, async_save=False)
    steps = ckpt.all_steps()
    if not steps:
        raise CheckpointError(f"no checkpoint found in {directory}")
    if step is None:
        step = max(steps)
    elif step not in steps:
        raise CheckpointError(f"no checkpoint for step {step} in {directory}; available: {sorted(steps)}")
    try:
        source = ckpt.meta_path(step)
        config = ckpt.read_meta(step).get("config")
        if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
            raise ConfigError(f"{source}: no model section in the stored config")
        model = build_model(model_config(config["model"], source))
        if isinstance(model, AudioFlow) and "data" in config:  # the mel settings synthesis will use
            if not isinstance(config["data"], dict):
                raise ConfigError(f"{source}: the stored data section is not a mapping")
            mel = MelConfig.from_any(config["data"], source)
            if mismatch := mel.model_mismatch(model.config.hop_length, model.config.cond_channels):
                raise ConfigError(f"{source}: data.{mismatch}; they must agree")
        # the model's shapes against the declared ones before any array is read ("holds no params" too)
        state, meta = ckpt.restore(step, expected=abstract_variables(model), prefix="params/")
    finally:
        ckpt.manager.close()
    if not isinstance(state, dict) or "params" not in state:
        raise CheckpointError(f"checkpoint {os.path.join(path, str(step))} holds no params")
    return ml_collections.ConfigDict(config), model, state["params"]
