"""Training: state and step (data parallel over a device mesh), loop, checkpoints, evaluation."""

from nanoflow_jax.train.checkpoint import Checkpointer, load_checkpoint
from nanoflow_jax.train.loop import TrainingError, train

__all__ = ["Checkpointer", "TrainingError", "load_checkpoint", "train"]
