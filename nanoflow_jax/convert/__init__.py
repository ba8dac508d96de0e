"""Official PyTorch NanoFlow / WaveFlow checkpoints -> our params.

`load_official(state_dict_or_path, official_config)` returns `(model, params)` in the training form
(weight norm kept). A `.pt` checkpoint is read without PyTorch (a restricted unpickler over the zip
archive), so converting needs no torch install.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from nanoflow_jax.config import ModelConfig, config_from_official, official_section, read_official
from nanoflow_jax.models import AudioFlow
from nanoflow_jax.params import expected_shapes

# Buffers the official code keeps in its state_dict that we recompute instead.
_IGNORED = ("h_cache",)


# -- reading a .pt without torch ---------------------------------------------------------------------
_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "BFloat16Storage": None,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _Opaque:
    """Stands in for any class in the pickle we do not need (optimizer internals and the like)."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


def _rebuild_tensor(storage, offset, size, stride, *_):
    arr = storage[offset:]
    if not size:
        return arr[:1].reshape(()).copy()
    return np.lib.stride_tricks.as_strided(arr, tuple(size), tuple(s * arr.itemsize for s in stride)).copy()


def _rebuild_parameter(data, *_):
    return data


def read_torch_checkpoint(path: str | os.PathLike) -> Any:
    """Load a PyTorch zip checkpoint into plain Python containers and numpy arrays."""
    try:
        zf = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path} is not a readable PyTorch checkpoint ({e})") from None
    with zf:
        pkl = [n for n in zf.namelist() if n.endswith("data.pkl")]
        if not pkl:
            raise ValueError(f"{path} has no data.pkl: not a PyTorch zip checkpoint")
        root = pkl[0][: -len("data.pkl")]
        loaded: dict[str, np.ndarray] = {}

        class Unpickler(pickle.Unpickler):
            def find_class(self, module, name):
                if module == "collections" and name == "OrderedDict":
                    import collections

                    return collections.OrderedDict
                if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
                    return _rebuild_tensor
                if module == "torch._utils" and name == "_rebuild_parameter":
                    return _rebuild_parameter
                if module == "torch" and name in _STORAGE_DTYPES:
                    return name
                return _Opaque

            def persistent_load(self, pid):
                _, storage_type, key, _, _ = pid
                if key not in loaded:
                    dtype = _STORAGE_DTYPES.get(storage_type)
                    if dtype is None:
                        raise ValueError(f"{path}: unsupported tensor storage {storage_type}")
                    loaded[key] = np.frombuffer(zf.read(f"{root}data/{key}"), dtype=dtype)
                return loaded[key]

        return Unpickler(zf.open(pkl[0])).load()


def state_dict_from(source: Any) -> dict[str, np.ndarray]:
    """An official state_dict as {name: array} from a mapping, a checkpoint dict, an .npz or a .pt path."""
    if isinstance(source, (str, os.PathLike)):
        path = str(source)
        if not os.path.exists(path):
            raise ValueError(f"official checkpoint {path} does not exist")
        if path.endswith(".npz"):
            source = dict(np.load(path))
        else:
            source = read_torch_checkpoint(path)
    if isinstance(source, Mapping) and "model" in source and isinstance(source["model"], Mapping):
        source = source["model"]
    if not isinstance(source, Mapping):
        raise TypeError(f"expected a state_dict mapping or a checkpoint path, got {type(source).__name__}")
    out = {}
    for k, v in source.items():
        k = k[len("param/") :] if k.startswith("param/") else k
        k = k[len("module.") :] if k.startswith("module.") else k  # saved from DataParallel
        if hasattr(v, "detach"):  # a real torch tensor
            v = v.detach().cpu().numpy()
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
        raise ValueError(
            f"official state_dict lacks tensor {e.args[0]!r} (for a {cfg.variant} with K={k_flows}, L={n_layers})"
        ) from None
    unknown = sorted(k for k in sd if k not in _IGNORED)
    if unknown:
        raise ValueError(
            f"official state_dict has unexpected tensor(s) {unknown[:5]} for a {cfg.variant} with "
            f"K={k_flows}, L={n_layers}"
        )
    return {"params": params}


def check_params(model: AudioFlow, params: Any, what: str = "params") -> None:
    """Raise a ValueError naming the first missing, unexpected or mis-shaped entry versus `model`."""
    want = expected_shapes(model)
    flat_want = {jax.tree_util.keystr(k): v.shape for k, v in jax.tree_util.tree_leaves_with_path(want)}
    flat_got = {jax.tree_util.keystr(k): np.shape(v) for k, v in jax.tree_util.tree_leaves_with_path(params)}
    for name in flat_want:
        if name not in flat_got:
            raise ValueError(f"{what}: missing {name} (expected shape {flat_want[name]})")
    for name, shape in flat_got.items():
        if name not in flat_want:
            raise ValueError(f"{what}: unexpected entry {name}")
        if tuple(shape) != tuple(flat_want[name]):
            raise ValueError(f"{what}: {name} has shape {tuple(shape)}, expected {tuple(flat_want[name])}")


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
            raise ValueError(
                f"checkpoint and config disagree on {field}: the checkpoint has {found}, the config says {sec[field]}"
            )


def load_official(state_dict_or_path: Any, official_config: Any) -> tuple[AudioFlow, dict]:
    """Official checkpoint (state_dict mapping, .npz or .pt path) + official config -> (model, params)."""
    sd = state_dict_from(state_dict_or_path)
    official_config = read_official(official_config)  # a path is read once
    cfg = config_from_official(official_config)
    check_official_config(sd, official_config)
    model = AudioFlow(cfg)
    params = params_from_state_dict(sd, cfg)
    check_params(model, params, "official checkpoint")
    return model, jax.tree.map(lambda a: np.asarray(a, np.float32), params)


# -- command line: official checkpoint -> a checkpoint folder of ours --------------------------------
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


def convert_official(checkpoint: str, official_config: str, out: str) -> str:
    """Write an official checkpoint + config as a checkpoint folder that `nf.load_checkpoint`,
    `synth.py --checkpoint` and `train.py --warm_start` accept; -> the folder."""
    # imported here: the trainer imports this module for warm starts
    from nanoflow_jax.train.checkpoint import Checkpointer

    if os.path.exists(out) and os.listdir(out):  # before the (slow) load
        raise ValueError(f"output folder {out} exists and is not empty")
    official = read_official(official_config)
    model, params = load_official(checkpoint, official)
    config = {
        "model": model.config.to_dict(),
        "data": official_data_config(official),
        "converted_from": os.path.abspath(checkpoint),
    }
    ckpt = Checkpointer(os.path.abspath(out), keep=1, async_save=False)
    ckpt.save(0, {"params": params}, {"config": config})
    ckpt.wait()
    ckpt.close()
    return out


def main(argv=None) -> None:
    import argparse

    from nanoflow_jax.cli import run_cli

    ap = argparse.ArgumentParser(
        prog="python -m nanoflow_jax.convert", description="Convert an official NanoFlow / WaveFlow checkpoint."
    )
    ap.add_argument("checkpoint", help="official .pt (or .npz state_dict)")
    ap.add_argument("--config", required=True, help="the official JSON config it was trained with")
    ap.add_argument("--out", required=True, help="new checkpoint folder")
    args = ap.parse_args(argv)

    def run():
        out = convert_official(args.checkpoint, args.config, args.out)
        print(f"wrote {out}")

    run_cli(run, "convert")
