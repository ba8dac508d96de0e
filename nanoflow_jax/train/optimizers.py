"""The official optimisers of the two tasks, from plain numbers (optax only: the accelerator benchmark
builds them on a machine with nothing else)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def adam_halving(
    learning_rate: float, decay_every: int, decay_factor: float, clip_norm: float
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """The audio recipe: Adam at a rate multiplied by `decay_factor` every `decay_every` steps, after
    grad-norm clipping (0: none)."""
    schedule = optax.exponential_decay(learning_rate, decay_every, decay_factor, staircase=True)
    clip = [optax.clip_by_global_norm(clip_norm)] if clip_norm > 0 else []
    return optax.chain(*clip, optax.adam(schedule)), schedule


def adamax_warmup(
    learning_rate: float, warmup_steps: int, weight_decay: float, clip_norm: float
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """The image recipe: Adamax with L2 weight decay added to the gradient (torch's Adamax weight_decay),
    linear warm-up, optional grad-norm clipping; everything but the "params" collection (the LU buffers)
    is frozen."""
    warm = max(warmup_steps, 1)
    schedule = lambda step: learning_rate * jnp.minimum(1.0, (step + 1) / warm)  # noqa: E731
    parts = [optax.clip_by_global_norm(clip_norm)] if clip_norm > 0 else []
    parts += [optax.add_decayed_weights(weight_decay), optax.scale_by_adamax(), optax.scale_by_learning_rate(schedule)]

    def labels(variables):
        return {k: jax.tree.map(lambda _, k=k: "train" if k == "params" else "frozen", v) for k, v in variables.items()}

    return optax.multi_transform({"train": optax.chain(*parts), "frozen": optax.set_to_zero()}, labels), schedule
