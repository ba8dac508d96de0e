"""The official JSON configs: reading them, our model and mel configs from them, and checking them
against a checkpoint's weights."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from nanoflow_jax.errors import ConversionError
from nanoflow_jax.models.audio_config import VARIANTS, ModelConfig


def read_official(official: Any) -> Mapping:
    """An official JSON config (path or its dict) as a mapping; unreadable or invalid JSON is a ValueError."""
    if isinstance(official, (str, os.PathLike)):
        try:
            with open(official) as f:
                official = json.load(f)
        except OSError as e:
            raise ConversionError(f"cannot read official config {official}: {e.strerror}") from None
        except json.JSONDecodeError as e:
            raise ConversionError(f"official config {official} is not valid JSON: {e}") from None
    if not isinstance(official, Mapping):
        raise TypeError(f"official config must be a path or a mapping, got {type(official).__name__}")
    return official


def official_section(official: Any) -> Mapping:
    """The model section (`waveflow_config`) of an official config, or the mapping itself if it is one."""
    official = read_official(official)
    return official.get("waveflow_config", official)


def config_from_official(official: Any) -> ModelConfig:
    """Model config equivalent to an official NanoFlow JSON config (path, its dict, or its
    `waveflow_config` section)."""
    sec = official_section(official)
    try:
        variant = sec.get("coupling_type", "waveflow")
        if variant not in VARIANTS:
            raise ConversionError(f"official coupling_type {variant!r} is not one of {VARIANTS}")
        kw = dict(
            variant=variant,
            n_flows=int(sec["n_flow"]),
            n_layers=int(sec["n_layer"]),
            channels=int(sec["res_channels"]),
            n_groups=int(sec["n_height"]),
            cond_channels=int(sec.get("cin_channels", 80)),
            height_dilation_cycle=int(sec.get("n_layer_per_cycle", 1)),
        )
    except KeyError as e:
        raise ConversionError(f"official config lacks field {e.args[0]!r}") from None
    if variant == "nanoflow":
        kw["embed_dim"] = int(sec.get("size_flow_embed", 512))
        # the official per-layer embedding projections are always weight-normed; its use_weightnorm_embed
        # puts weight norm on the embedding table itself, which the converter folds into the plain table
        kw["embed_weight_norm"] = True
    return ModelConfig(**kw)


def official_data_config(official_config: Any) -> dict:
    """Our `data` mel fields from an official JSON's data_config (defaults where absent)."""
    official = read_official(official_config)
    d = official.get("data_config", {})
    return {
        "sample_rate": int(d.get("sampling_rate", 22050)),
        "n_fft": int(d.get("filter_length", 1024)),
        "hop_length": int(d.get("hop_length", 256)),
        "win_length": int(d.get("win_length", 1024)),
        "n_mels": int(official_section(official).get("cin_channels", 80)),
        "fmin": float(d.get("mel_fmin", 0.0)),
        "fmax": float(d.get("mel_fmax", 8000.0)),
    }


def infer_official_fields(sd: Mapping) -> dict[str, Any]:
    """The official config fields a state_dict determines (coupling_type, n_flow, n_layer, res_channels,
    cin_channels, size_flow_embed); n_height is not among them: no weight depends on it."""
    if any(k.startswith("flows.0.coupling.") for k in sd):
        variant, net = "waveflow", "flows.0.coupling.net."
    elif any(k.startswith("flow.coupling.") for k in sd):
        variant, net = "nanoflow_naive", "flow.coupling.net."
    elif "flow_embedding.weight" in sd or "flow_embedding.weight_v" in sd:
        variant, net = "nanoflow", "estimator.net."
    else:
        variant, net = "nanoflow_decomp", "estimator.net."
    out: dict[str, Any] = {"coupling_type": variant}
    flows = {int(k.split(".")[1]) for k in sd if k.startswith("flows.")}
    if variant != "nanoflow_naive" and flows:
        # the run of flows 0, 1, 2, ...: a stray extra tensor is reported by name later, not as a count
        out["n_flow"] = next(i for i in range(len(flows) + 1) if i not in flows)
    blocks = {int(k[len(net) :].split(".")[1]) for k in sd if k.startswith(net + "res_blocks.")}
    if blocks:
        out["n_layer"] = max(blocks) + 1
    bias = sd.get(net + "front_conv.0.conv.bias")
    if bias is not None:
        out["res_channels"] = int(np.shape(bias)[0])
    cond = sd.get(
        net + "res_blocks.0.filter_gate_conv_c.weight_v", sd.get(net + "res_blocks.0.filter_gate_conv_c.weight")
    )
    if cond is not None:
        out["cin_channels"] = int(np.shape(cond)[1])
    table = sd.get("flow_embedding.weight", sd.get("flow_embedding.weight_v"))
    if table is not None:
        out["size_flow_embed"] = int(np.shape(table)[1])
    return out


def check_official_config(sd: Mapping, official_config: Any) -> None:
    """Raise a ValueError naming the first config field the checkpoint's weights contradict."""
    sec = dict(official_section(official_config))
    sec.setdefault("coupling_type", "waveflow")
    sec.setdefault("cin_channels", 80)
    if sec.get("coupling_type") == "nanoflow":
        sec.setdefault("size_flow_embed", 512)
    for field, found in infer_official_fields(sd).items():
        if field in sec and str(sec[field]) != str(found):
            raise ConversionError(
                f"checkpoint and config disagree on {field}: the checkpoint has {found}, the config says {sec[field]}"
            )
