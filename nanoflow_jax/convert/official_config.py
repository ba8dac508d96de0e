"""The official JSON configs: reading them, our model and mel configs from them, and checking them
against a checkpoint's weights."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from nanoflow_jax.errors import ConversionError
from nanoflow_jax.files import check_input_file
from nanoflow_jax.models.audio_config import VARIANTS, ModelConfig

MAX_CONFIG_BYTES = 1 << 20  # official configs are ~1 KB
MAX_CONFIG_DEPTH = 8  # they nest two levels


def _depth(obj: Any, limit: int) -> int:
    """Nesting depth of parsed JSON, iteratively (no recursion to exhaust), stopping past `limit`."""
    deepest, todo = 0, [(obj, 1)]
    while todo:
        node, d = todo.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, d)
            if deepest > limit:
                return deepest
            todo.extend((v, d + 1) for v in (node.values() if isinstance(node, dict) else node))
    return deepest


def read_official(official: Any) -> Mapping:
    """An official JSON config (path or its dict) as a mapping, its sections mappings; unreadable, invalid,
    oversized or deeply nested JSON is a ConversionError naming the file."""
    name = "official config"
    if isinstance(official, (str, os.PathLike)):
        name = f"official config {official}"
        check_input_file(official, "official config", max_bytes=MAX_CONFIG_BYTES)
        try:
            with open(official, encoding="utf-8") as f:
                official = json.load(f)
        except OSError as e:
            raise ConversionError(f"cannot read {name}: {e.strerror}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConversionError(f"{name} is not valid JSON: {e}") from None
        except RecursionError:
            raise ConversionError(f"{name} nests deeper than {MAX_CONFIG_DEPTH} levels") from None
    if not isinstance(official, Mapping):
        raise ConversionError(f"{name} must be a JSON object, got {type(official).__name__}")
    if _depth(dict(official), MAX_CONFIG_DEPTH) > MAX_CONFIG_DEPTH:
        raise ConversionError(f"{name} nests deeper than {MAX_CONFIG_DEPTH} levels")
    for section in ("waveflow_config", "data_config", "train_config"):
        if section in official and not isinstance(official[section], Mapping):
            raise ConversionError(f"{name}: {section} must be an object, got {type(official[section]).__name__}")
    return official


def official_int(sec: Mapping, key: str, default: Any = None, lo: int = 1, hi: int = 1 << 20) -> int:
    """An integer field of an official config: a JSON integer (not a bool, not 8.7) within [lo, hi]."""
    if key not in sec:
        if default is None:
            raise ConversionError(f"official config lacks field {key!r}")
        return default
    v = sec[key]
    if not isinstance(v, int) or isinstance(v, bool):
        raise ConversionError(f"official config field {key} = {v!r:.40} is not allowed: an integer")
    if not lo <= v <= hi:
        raise ConversionError(f"official config field {key} = {v} is not allowed: an integer in [{lo}, {hi}]")
    return v


def official_float(sec: Mapping, key: str, default: float, lo: float = 0.0, hi: float = 1e6) -> float:
    v = sec.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi:
        raise ConversionError(f"official config field {key} = {v!r:.40} is not allowed: a number in [{lo:g}, {hi:g}]")
    return float(v)


def official_section(official: Any) -> Mapping:
    """The model section (`waveflow_config`) of an official config, or the mapping itself if it is one."""
    official = read_official(official)
    return official.get("waveflow_config", official)


def config_from_official(official: Any) -> ModelConfig:
    """Model config equivalent to an official NanoFlow JSON config (path, its dict, or its
    `waveflow_config` section)."""
    sec = official_section(official)
    variant = sec.get("coupling_type", "waveflow")
    if variant not in VARIANTS:
        raise ConversionError(f"official coupling_type {variant!r:.40} is not one of {VARIANTS}")
    kw = dict(
        variant=variant,
        n_flows=official_int(sec, "n_flow", hi=1024),
        n_layers=official_int(sec, "n_layer", hi=1024),
        channels=official_int(sec, "res_channels", hi=1 << 14),
        n_groups=official_int(sec, "n_height", hi=1024),
        cond_channels=official_int(sec, "cin_channels", 80, hi=512),
        height_dilation_cycle=official_int(sec, "n_layer_per_cycle", 1, hi=1024),
    )
    if variant == "nanoflow":
        kw["embed_dim"] = official_int(sec, "size_flow_embed", 512, hi=1 << 14)
        # the official per-layer embedding projections are always weight-normed; its use_weightnorm_embed
        # puts weight norm on the embedding table itself, which the converter folds into the plain table
        kw["embed_weight_norm"] = True
    return ModelConfig(**kw)


def official_data_config(official_config: Any) -> dict:
    """Our `data` mel fields from an official JSON's data_config (defaults where absent)."""
    official = read_official(official_config)
    d = official.get("data_config", {})
    return {
        "sample_rate": official_int(d, "sampling_rate", 22050, lo=1000, hi=384_000),
        "n_fft": official_int(d, "filter_length", 1024, lo=2, hi=16_384),
        "hop_length": official_int(d, "hop_length", 256, hi=16_384),
        "win_length": official_int(d, "win_length", 1024, hi=16_384),
        "n_mels": official_int(official_section(official), "cin_channels", 80, hi=512),
        "fmin": official_float(d, "mel_fmin", 0.0),
        "fmax": official_float(d, "mel_fmax", 8000.0),
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
