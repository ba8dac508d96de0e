"""nanoflow_jax: NanoFlow (Lee, Kim, Yoon, NeurIPS 2020) and WaveFlow in JAX / Flax.

import nanoflow_jax as nf
model = nf.build_model(config.model)
params = model.init(rng, audio, mel)
z, logdet = model.apply(params, audio, mel)
loss = nf.nll(z, logdet)
audio = nf.synthesize(model, params, mel, temperature=0.8)   # the fast cached inverse
"""

from __future__ import annotations

from typing import Any

from nanoflow_jax.audio import mel_spectrogram
from nanoflow_jax.config import ModelConfig, config_from_official
from nanoflow_jax.convert import load_official
from nanoflow_jax.losses import nll
from nanoflow_jax.models import AudioFlow
from nanoflow_jax.models.glow import GlowConfig, ImageFlow
from nanoflow_jax.params import count_params, inference_params, init_params
from nanoflow_jax.synth import synthesize
from nanoflow_jax.train.checkpoint import load_checkpoint

__version__ = "0.1.0"


def build_model(model_config: Any) -> AudioFlow | ImageFlow:
    """The flow model for a config's `model` section (ConfigDict, dict, ModelConfig or GlowConfig):
    an `AudioFlow`, or an `ImageFlow` when the section has kind="image"."""
    if (
        isinstance(model_config, GlowConfig)
        or dict(getattr(model_config, "items", lambda: [])()).get("kind") == "image"
    ):
        return ImageFlow(GlowConfig.from_any(model_config))
    return AudioFlow(ModelConfig.from_any(model_config))


__all__ = [
    "AudioFlow",
    "GlowConfig",
    "ImageFlow",
    "ModelConfig",
    "build_model",
    "config_from_official",
    "count_params",
    "inference_params",
    "init_params",
    "load_checkpoint",
    "load_official",
    "mel_spectrogram",
    "nll",
    "synthesize",
]
