"""Checkpoints with orbax: async and atomic (written to a temporary folder, renamed when complete).

Layout: <workdir>/checkpoints/<step>/{state, meta}. `state` holds the train state (params, optimiser,
step, RNG, skip counters) or just {"params"} for converted / averaged checkpoints; `meta` (JSON) the
full config and the data-iterator position. Kept: the last `keep` steps and the one with the best eval
loss (the task's: NLL for audio, bits per dimension for images).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging
from orbax.checkpoint import checkpoint_managers as policies

from nanoflow_jax.audio.mel import MelConfig
from nanoflow_jax.errors import ConfigError
from nanoflow_jax.files import resolve_path
from nanoflow_jax.models import AudioFlow, build_model, model_config

CHECKPOINTS = "checkpoints"


def checkpoint_dir(path: str) -> str:
    """A workdir or its checkpoints folder -> the checkpoints folder."""
    path = resolve_path(path)
    sub = os.path.join(path, CHECKPOINTS)
    return sub if os.path.isdir(sub) else path


def _eval_loss(metrics: dict) -> float:
    """The value the best checkpoint is chosen by (lower is better: NLL, bits per dimension)."""
    return metrics["eval_loss"] if "eval_loss" in metrics else metrics["eval_nll"]  # earlier runs stored eval_nll


class Checkpointer:
    def __init__(self, directory: str, keep: int = 3, async_save: bool = True, create: bool = True):
        policy = policies.AnyPreservationPolicy(
            [
                policies.LatestN(n=keep),
                policies.BestN(get_metric_fn=_eval_loss, reverse=False, n=1, keep_checkpoints_without_metrics=False),
            ]
        )
        options = ocp.CheckpointManagerOptions(
            preservation_policy=policy,
            enable_async_checkpointing=async_save,
            create=create,
            read_only=not create,
            save_interval_steps=1 if create else 0,
        )
        self.directory = directory = resolve_path(directory)
        level = logging.get_verbosity()
        if not create:  # orbax warns that a read-only manager is read-only
            logging.set_verbosity(logging.ERROR)
        try:
            self.manager = ocp.CheckpointManager(directory, options=options, item_names=("state", "meta"))
        finally:
            logging.set_verbosity(level)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state: Any, meta: dict, metrics: dict | None = None) -> None:
        self.manager.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
            metrics=metrics,
            force=True,
        )

    def restore(self, step: int, target: Any = None) -> tuple[Any, dict]:
        """(state, meta) of `step`; with `target` (an abstract or concrete state) the state is restored
        into its structure and shardings, otherwise as nested dicts of arrays."""
        state_arg = ocp.args.StandardRestore(target) if target is not None else ocp.args.StandardRestore()
        out = self.manager.restore(step, args=ocp.args.Composite(state=state_arg, meta=ocp.args.JsonRestore()))
        return out["state"], out["meta"]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()


def abstract_like(tree: Any) -> Any:
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def load_checkpoint(directory: str, step: int | None = None) -> tuple[Any, Any, Any]:
    """(config, model, params) from a workdir or checkpoint folder: the latest step, or `step`.

    `config` is the run's config (an ml_collections ConfigDict); its model section and an audio model's
    mel fields are checked (a hand-edited field that is not allowed is a ConfigError naming the file and
    the field). `params` is the variables dict that `model.apply` takes."""
    import ml_collections

    path = checkpoint_dir(directory)
    if not os.path.isdir(path):
        raise ValueError(f"checkpoint directory {directory} does not exist")
    ckpt = Checkpointer(path, create=False, async_save=False)
    steps = ckpt.all_steps()
    if not steps:
        raise ValueError(f"no checkpoint found in {directory}")
    if step is None:
        step = max(steps)
    elif step not in steps:
        raise ValueError(f"no checkpoint for step {step} in {directory}; available: {sorted(steps)}")
    state, meta = ckpt.restore(step)
    ckpt.close()
    config = meta.get("config")
    source = os.path.join(path, str(step), "meta", "metadata")  # the JSON file orbax writes
    if not isinstance(config, dict) or "model" not in config:
        raise ConfigError(f"{source}: no model section in the stored config")
    model = build_model(model_config(config["model"], source))
    if isinstance(model, AudioFlow) and "data" in config:  # the mel settings synthesis will use
        MelConfig.from_any(config["data"], source)
    return ml_collections.ConfigDict(config), model, state["params"]
