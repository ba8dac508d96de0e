"""nanoflow_jax: NanoFlow (Lee, Kim, Yoon, NeurIPS 2020) and WaveFlow in JAX / Flax.

    import nanoflow_jax as nf
    model = nf.build_model(config.model)
    params = model.init(rng, audio, mel)
    z, logdet = model.apply(params, audio, mel)
    loss = nf.nll(z, logdet)
    audio = nf.synthesize(model, params, mel, temperature=0.8)   # the fast cached inverse
    vocoder = nf.load_vocoder()                                  # a checkpoint, official .pt, or the shipped voice
    audio = vocoder.synthesize(mel, temperature=0.8)             # params folded once, mels checked once

Importing the package loads JAX, Flax and NumPy only; checkpoints (orbax), the trainer and the command
lines load what they need when used.
"""

from __future__ import annotations

from typing import Any

from nanoflow_jax.audio.conventions import convention_warning, to_model_mel
from nanoflow_jax.audio.mel import MelConfig, mel_spectrogram
from nanoflow_jax.convert import config_from_official, load_official
from nanoflow_jax.flows import nll
from nanoflow_jax.models import AudioFlow, GlowConfig, ImageFlow, ModelConfig, build_model
from nanoflow_jax.models.audio_params import inference_params, init_params
from nanoflow_jax.models.params import count_params
from nanoflow_jax.synth import Vocoder, load_vocoder, synthesize, synthesize_chunks

__version__ = "0.1.0"


def load_checkpoint(directory: str, step: int | None = None) -> tuple[Any, Any, Any]:
    """(config, model, params) of a workdir or checkpoint folder (see `checkpoints.load_checkpoint`)."""
    from nanoflow_jax.checkpoints import load_checkpoint as load

    return load(directory, step)


def load_voice(name: str | None = None) -> tuple[AudioFlow, Any]:
    """(model, params) of a voice that ships with the package (default: the one synth.py uses)."""
    from nanoflow_jax import voices

    return voices.load_voice(name or voices.DEFAULT_VOICE)


def voice_info(name: str | None = None) -> dict[str, Any]:
    """A shipped voice's description: model, mel and split settings, training, metrics, credits."""
    from nanoflow_jax import voices

    return voices.voice_info(name or voices.DEFAULT_VOICE)


__all__ = [
    "AudioFlow",
    "GlowConfig",
    "ImageFlow",
    "MelConfig",
    "Vocoder",
    "ModelConfig",
    "build_model",
    "config_from_official",
    "convention_warning",
    "count_params",
    "inference_params",
    "init_params",
    "load_checkpoint",
    "load_vocoder",
    "load_voice",
    "voice_info",
    "load_official",
    "mel_spectrogram",
    "nll",
    "synthesize",
    "synthesize_chunks",
    "to_model_mel",
]
