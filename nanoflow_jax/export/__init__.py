"""Serialise the synthesis function with `jax.export`, for serving without this package's Python code.

    python -m nanoflow_jax.export --checkpoint runs/wave_g16 --frames 172 --batch 1 --out synth.jaxexport

The artifact holds the weights and the compiled-to-be program `(mel, z) -> audio` with
mel (B, bands, F) float32, z (B, 256 * (F - 3)) float32 (the latent noise: temperature * N(0, 1)) and
audio (B, 256 * (F - 3)). Load and run it with:

    exported = jax.export.deserialize(open("synth.jaxexport", "rb").read())
    audio = exported.call(mel, z)
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from nanoflow_jax.errors import UsageError
from nanoflow_jax.files import atomic_write, resolve_path
from nanoflow_jax.models import POLICIES, AudioFlow
from nanoflow_jax.models.audio_params import inference_params
from nanoflow_jax.synth.fast import min_frames, output_length, synthesis_fn


def export_synthesis(
    model: AudioFlow,
    params: Any,
    frames: int,
    batch: int = 1,
    dtype: str = "float32",
    platforms: tuple[str, ...] | None = None,
) -> jax.export.Exported:
    """The synthesis of `batch` mels of `frames` frames as a `jax.export.Exported` (weights included)."""
    cfg = model.config
    if dtype not in POLICIES:
        raise UsageError(f"dtype must be one of {', '.join(POLICIES)}, got {dtype!r}")
    if frames < min_frames(cfg) or batch < 1:
        raise UsageError(f"need frames >= {min_frames(cfg)} and batch >= 1, got {frames} and {batch}")
    ip = inference_params(model, params)
    fn = synthesis_fn(cfg, dtype)
    t = output_length(frames, cfg)
    mel = jax.ShapeDtypeStruct((batch, cfg.cond_channels, frames), jnp.float32)
    z = jax.ShapeDtypeStruct((batch, t), jnp.float32)
    return jax.export.export(jax.jit(lambda m, z: fn(ip, m, z)), platforms=platforms)(mel, z)


def save(exported: jax.export.Exported, path: str) -> None:
    """Write the serialised artifact atomically."""
    atomic_write(resolve_path(path), lambda f: f.write(exported.serialize()))
