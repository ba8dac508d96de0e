"""Flax modules of the flow models, and the registry that builds one from its config section.

Every model module follows one protocol: `variables = model.init(rng, *inputs)`, `model.apply(variables,
*inputs)` runs the flow forward, and `method=` names the other directions ("inverse", ...). A config's
`model` section names its family in `kind`: "audio" (WaveFlow and the NanoFlow family) or "image" (Glow
and NanoFlow-Glow).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import flax.linen as nn

from nanoflow_jax.errors import ConfigError
from nanoflow_jax.models.audio_config import ModelConfig
from nanoflow_jax.models.audio_flow import AudioFlow
from nanoflow_jax.models.image_config import GlowConfig
from nanoflow_jax.models.image_flow import ImageFlow
from nanoflow_jax.models.precision import POLICIES, precision_policy
from nanoflow_jax.schema import Section


class ModelFamily(NamedTuple):
    config: type[Section]
    module: type[nn.Module]


MODELS = {"audio": ModelFamily(ModelConfig, AudioFlow), "image": ModelFamily(GlowConfig, ImageFlow)}


def model_kind(section: Any, source: str = "config") -> str:
    """The family a config's `model` section names in `kind` (default "audio"), checked."""
    if hasattr(section, "to_dict"):
        section = section.to_dict()
    kind = dict(section or {}).get("kind", "audio")
    if kind not in MODELS:
        raise ConfigError(f"{source}: model.kind = {kind!r} is not allowed: one of {', '.join(map(repr, MODELS))}")
    return kind


def model_config(section: Any, source: str = "config") -> ModelConfig | GlowConfig:
    """A checked model config from a config's `model` section (a ModelConfig / GlowConfig, a mapping or a
    ConfigDict), by its `kind` (default "audio")."""
    if isinstance(section, ModelConfig | GlowConfig):
        return section
    return MODELS[model_kind(section, source)].config.from_any(section, source)


def build_model(section: Any, **options: Any) -> AudioFlow | ImageFlow:
    """The flow model of a config's `model` section; `options` are the module's other fields (`dtype`,
    `remat` for the audio flows)."""
    config = model_config(section)
    return MODELS[config.kind].module(config, **options)


def abstract_variables(model: AudioFlow | ImageFlow) -> Any:
    """The variables `model.init` makes, as shape structs (nothing computed): what a checkpoint or a
    converted file must hold for this model, checked before its arrays are read."""
    import jax
    import jax.numpy as jnp

    if isinstance(model, AudioFlow):
        from nanoflow_jax.models.audio_params import expected_shapes

        return expected_shapes(model)
    c = model.config
    x = jax.ShapeDtypeStruct((1, c.image_size, c.image_size, c.channels), jnp.float32)
    return jax.eval_shape(model.init, jax.random.PRNGKey(0), x)


__all__ = [
    "MODELS",
    "POLICIES",
    "AudioFlow",
    "GlowConfig",
    "ImageFlow",
    "ModelConfig",
    "abstract_variables",
    "build_model",
    "model_config",
    "model_kind",
    "precision_policy",
]
