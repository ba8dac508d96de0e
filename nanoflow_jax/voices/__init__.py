"""Voices that ship with the package: a trained vocoder's params (a few hundred KB of .npz), its model and
mel settings, how it was trained and how it measures, with the licence of the speech it learnt from.

    model, params = nf.load_voice()           # the default voice, for nf.synthesize
    info = nf.voice_info()                    # its voice.json: model, data, training, metrics, credits

A voice folder may also hold its training-form params (`train_params.npz`): `train.py
--warm_start=nanoflow_jax/voices/NAME` fine-tunes from them.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from nanoflow_jax.audio.mel import MelConfig
from nanoflow_jax.errors import ConfigError
from nanoflow_jax.models import AudioFlow, build_model, model_config

DEFAULT_VOICE = "asterisk5"
VOICES = os.path.dirname(os.path.abspath(__file__))
PARAMS, INFO = "params.npz", "voice.json"
TRAINING_PARAMS = "train_params.npz"  # the training form (weight norm, embedding): what --warm_start reads


def voice_names() -> list[str]:
    return sorted(d for d in os.listdir(VOICES) if os.path.isfile(os.path.join(VOICES, d, INFO)))


def voice_dir(name: str = DEFAULT_VOICE) -> str:
    if name not in voice_names():
        raise ConfigError(f"no voice {name!r}; the package ships {voice_names()}")
    return os.path.join(VOICES, name)


def voice_info(name: str = DEFAULT_VOICE) -> dict[str, Any]:
    with open(os.path.join(voice_dir(name), INFO), encoding="utf-8") as f:
        return json.load(f)


def voice_banner(name: str = DEFAULT_VOICE) -> str:
    """One line for a user who gets this voice: what it is and how it measured (its held-out STOI and
    wideband PESQ beside Griffin-Lim's from the same mels), so nobody expects more than it gives."""
    info = voice_info(name)
    line = f"the shipped voice {name} ({info['summary']})"
    mean = info.get("evaluation", {}).get("mean", {})
    model, gl = mean.get("model", {}), mean.get("griffin_lim", {})
    if model.get("stoi") is not None and model.get("pesq_wb") is not None:
        g_stoi, g_pesq = gl.get("stoi", float("nan")), gl.get("pesq_wb", float("nan"))
        line += (
            f"; on {mean.get('n', '?')} held-out prompts STOI {model['stoi']:.2f} (Griffin-Lim {g_stoi:.2f}), "
            f"wideband PESQ {model['pesq_wb']:.2f} (Griffin-Lim {g_pesq:.2f})"
        )
    return line


def voice_mel_config(name: str = DEFAULT_VOICE) -> MelConfig:
    return MelConfig.from_any(voice_info(name)["data"], f"voice {name}")


def load_voice(name: str = DEFAULT_VOICE) -> tuple[AudioFlow, Any]:
    """(model, params) of a shipped voice; params in their inference form (weight norm folded, see
    `nf.inference_params`), which `nf.synthesize` and `model.apply` both take."""
    info = voice_info(name)
    model = build_model(model_config(info["model"], f"voice {name}"))
    return model, _read_params(os.path.join(voice_dir(name), PARAMS), f"voice {name}'s params")


def is_voice_folder(path: str) -> bool:
    return os.path.isfile(os.path.join(path, INFO))


def training_params(folder: str) -> Any:
    """The training-form params a voice folder ships (for a warm start), read through the input gate."""
    from nanoflow_jax.errors import InputError

    path = os.path.join(folder, TRAINING_PARAMS)
    if not os.path.exists(path):
        raise InputError(f"the voice folder {folder} ships no training-form params ({TRAINING_PARAMS})")
    return _read_params(path, "a voice's training-form params")


def _read_params(path: str, what: str) -> Any:
    from flax.traverse_util import unflatten_dict

    from nanoflow_jax.files import read_npz

    return unflatten_dict({tuple(k.split("/")): np.asarray(v) for k, v in read_npz(path, what).items()})


def write_voice(folder: str, params: Any, info: dict[str, Any], training: Any = None) -> None:
    """Write a voice folder (params.npz + voice.json, and train_params.npz from `training`) from a
    checkpoint's params and its description."""
    from flax.traverse_util import flatten_dict

    from nanoflow_jax.files import atomic_write

    os.makedirs(folder, exist_ok=True)
    for name, tree in ((PARAMS, params), (TRAINING_PARAMS, training)):
        if tree is not None:
            flat = {"/".join(k): np.asarray(v, np.float32) for k, v in flatten_dict(tree).items()}
            atomic_write(os.path.join(folder, name), lambda f, flat=flat: np.savez_compressed(f, **flat), suffix=".npz")
    text = json.dumps(info, indent=2) + "\n"
    atomic_write(os.path.join(folder, INFO), lambda f: f.write(text.encode()), suffix=".json")
