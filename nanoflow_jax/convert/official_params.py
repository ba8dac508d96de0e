"""Official PyTorch NanoFlow / WaveFlow state_dicts -> our params, by name.

`load_official(state_dict_or_path, official_config)` returns `(model, params)` in the training form
(weight norm kept). A `.pt` checkpoint is read without PyTorch (`torch_pickle`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from nanoflow_jax.convert.official_config import check_official_config, config_from_official, read_official
from nanoflow_jax.convert.torch_pickle import read_torch_checkpoint
from nanoflow_jax.errors import ConversionError
from nanoflow_jax.files import check_input_file, memory_budget, read_npz
from nanoflow_jax.models import AudioFlow, ModelConfig
from nanoflow_jax.models.audio_params import expected_shapes
from nanoflow_jax.models.params import check_params

# Buffers the official code keeps in its state_dict that we recompute instead.
_IGNORED = ("h_cache",)


def state_dict_from(source: Any, max_bytes: int | None = None) -> dict[str, np.ndarray]:
    """An official state_dict as {name: array} from a mapping, a checkpoint dict, an .npz or a .pt path.
    A path passes the file gate first (`files.check_input_file`: a FIFO is refused unopened); an .npz's
    declared arrays, or a .pt's storages, are held to `max_bytes` (and this machine's memory) before any
    is read."""
    from_file = isinstance(source, (str, os.PathLike))
    if from_file:
        path = os.fspath(source)
        check_input_file(path, "official checkpoint")
        if path.endswith(".npz"):
            budget = memory_budget() if max_bytes is None else min(max_bytes, memory_budget())
            source = read_npz(path, "official checkpoint", budget=budget)
        else:
            source = read_torch_checkpoint(path, max_bytes)
    if isinstance(source, Mapping) and "model" in source and isinstance(source["model"], Mapping):
        source = source["model"]
    if not isinstance(source, Mapping):
        if from_file:
            raise ConversionError(f"{path} holds a {type(source).__name__}, not a state_dict of named tensors")
        raise TypeError(f"expected a state_dict mapping or a checkpoint path, got {type(source).__name__}")
    out = {}
    for k, v in source.items():
        if not isinstance(k, str):
            raise ConversionError(f"official state_dict has a key {k!r} that is not a tensor name")
        k = k[len("param/") :] if k.startswith("param/") else k
        k = k[len("module.") :] if k.startswith("module.") else k  # saved from DataParallel
        if hasattr(v, "detach"):  # a real torch tensor
            v = v.detach().cpu().numpy()
        if not isinstance(v, np.ndarray | np.generic | int | float | list) or np.asarray(v).dtype.kind not in "fiub":
            raise ConversionError(f"official state_dict entry {k!r} is a {type(v).__name__}, not a tensor")
        out[k] = np.asarray(v)
    return out


# -- name mapping ----------------------------------------------------------------------------------
def _wn(sd: dict, name: str, kernel) -> dict:
    """A (possibly weight-normed) torch conv -> our {v, g, bias} or {kernel, bias}."""
    if name + ".weight_v" in sd:
        v = kernel(sd.pop(name + ".weight_v"))
        g = sd.pop(name + ".weight_g").reshape(-1)
        out = {"v": v, "g": g}
    else:
        out = {"kernel": kernel(sd.pop(name + ".weight"))}
    if name + ".bias" in sd:
        out["bias"] = sd.pop(name + ".bias")
    return out


def _dense(w):  # (out, in, 1, 1) -> (in, out)
    return w[:, :, 0, 0].T


def _conv(w):  # (out, in, kh, kw) -> (kh, kw, in, out)
    return w.transpose(2, 3, 1, 0)


def _estimator(sd: dict, prefix: str, cfg: ModelConfig, first: int, last: int, front: bool) -> dict:
    tree = {}
    if front:
        tree["front_conv"] = _wn(sd, prefix + "front_conv.0.conv", _dense)
    for i in range(first, last):
        p = f"{prefix}res_blocks.{i}."
        layer = {
            "conv": _wn(sd, p + "filter_gate_conv.conv", _conv),
            "cond_proj": _wn(sd, p + "filter_gate_conv_c", _dense),
            "res_skip": _wn(sd, p + "res_skip_conv", _dense),
        }
        if cfg.injects("additive"):
            layer["embed_proj"] = _wn(sd, p + "filter_gate_conv_h", _dense)
        tree[f"layer_{i}"] = layer
    return tree


def _head(sd: dict, prefix: str) -> dict:
    return {
        "kernel": _dense(sd.pop(prefix + "conv.weight")),
        "bias": sd.pop(prefix + "conv.bias"),
        "scale": sd.pop(prefix + "scale").reshape(-1),
    }


def _embedding_table(sd: dict) -> np.ndarray:
    """The (K, D) flow embedding; a weight-normed one (official use_weightnorm_embed, norm per row) is
    folded into the plain table: the same function, trained as a plain table from here on."""
    if "flow_embedding.weight_v" in sd:
        v, g = sd.pop("flow_embedding.weight_v"), sd.pop("flow_embedding.weight_g")
        return (v * (np.reshape(g, (-1, 1)) / np.linalg.norm(v, axis=1, keepdims=True))).astype(v.dtype)
    return sd.pop("flow_embedding.weight")


def _stack(trees: list) -> Any:
    return jax.tree.map(lambda *a: np.stack(a), *trees)


def params_from_state_dict(state_dict: Mapping, cfg: ModelConfig) -> dict:
    """Official state_dict -> our training-form params tree ({'params': ...}), without shape checks."""
    sd = dict(state_dict)
    k_flows, n_layers = cfg.n_flows, cfg.n_layers
    params: dict[str, Any] = {}
    try:
        params["conditioner"] = {
            f"stage_{j}": _wn(sd, f"upsample_conv.{2 * j}", lambda w: w[0, 0][..., None]) for j in range(2)
        }
        if cfg.variant == "waveflow":
            params["per_flow_estimator"] = _stack(
                [_estimator(sd, f"flows.{k}.coupling.net.", cfg, 0, n_layers, True) for k in range(k_flows)]
            )
            params["proj_heads"] = _stack([_head(sd, f"flows.{k}.coupling.proj_log_s_t.") for k in range(k_flows)])
        elif cfg.variant == "nanoflow_naive":
            params["estimator"] = _estimator(sd, "flow.coupling.net.", cfg, 0, n_layers, True)
            params["proj_heads"] = _stack([_head(sd, "flow.coupling.proj_log_s_t.")])
        else:
            params["estimator"] = _estimator(sd, "estimator.net.", cfg, 0, n_layers, True)
            params["proj_heads"] = _stack([_head(sd, f"flows.{k}.proj_log_s_t.") for k in range(k_flows)])
            if cfg.variant == "nanoflow":
                params["flow_embedding"] = _embedding_table(sd)
                if cfg.injects("multiplicative"):
                    params["flow_gates"] = np.stack([sd.pop(f"flows.{k}.multgate") for k in range(k_flows)])
    except KeyError as e:
        raise ConversionError(
            f"official state_dict lacks tensor {e.args[0]!r} (for a {cfg.variant} with K={k_flows}, L={n_layers})"
        ) from None
    unknown = sorted(k for k in sd if k not in _IGNORED)
    if unknown:
        raise ConversionError(
            f"official state_dict has unexpected tensor(s) {unknown[:5]} for a {cfg.variant} with "
            f"K={k_flows}, L={n_layers}"
        )
    return {"params": params}


def load_official(state_dict_or_path: Any, official_config: Any) -> tuple[AudioFlow, dict]:
    """Official checkpoint (state_dict mapping, .npz or .pt path) + official config -> (model, params).
    The config is read first, so a file's arrays are bounded by the model they must fit."""
    official_config = read_official(official_config)  # a path is read once
    cfg = config_from_official(official_config)
    model = AudioFlow(cfg)
    expected = expected_shapes(model)
    # weight norm's v and g, plus the buffers the official code keeps: a generous bound on what may be read
    bound = 3 * sum(a.size * 4 for a in jax.tree.leaves(expected)) + (16 << 20)
    sd = state_dict_from(state_dict_or_path, max_bytes=bound)
    check_official_config(sd, official_config)
    params = params_from_state_dict(sd, cfg)
    check_params(expected, params, "official checkpoint")
    return model, jax.tree.map(lambda a: np.asarray(a, np.float32), params)
