"""Voices that ship with the package: a trained vocoder's params (a few hundred KB of .npz), its model and
mel settings, how it was trained and how it measures, with the licence of the speech it learnt from.

    model, params = nf.load_voice()           # the default voice, for nf.synthesize
    info = nf.voice_info()                    # its voice.json: model, data, training, metrics, credits
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
    from flax.traverse_util import unflatten_dict

    info = voice_info(name)
    model = build_model(model_config(info["model"], f"voice {name}"))
    with np.load(os.path.join(voice_dir(name), PARAMS), allow_pickle=False) as z:
        flat = {tuple(k.split("/")): np.asarray(z[k]) for k in z.files}
    return model, unflatten_dict(flat)


def write_voice(folder: str, params: Any, info: dict[str, Any]) -> None:
    """Write a voice folder (params.npz + voice.json) from a checkpoint's params and its description."""
    from flax.traverse_util import flatten_dict

    from nanoflow_jax.files import atomic_write

    flat = {"/".join(k): np.asarray(v, np.float32) for k, v in flatten_dict(params).items()}
    os.makedirs(folder, exist_ok=True)
    atomic_write(os.path.join(folder, PARAMS), lambda f: np.savez_compressed(f, **flat), suffix=".npz")
    text = json.dumps(info, indent=2) + "\n"
    atomic_write(os.path.join(folder, INFO), lambda f: f.write(text.encode()), suffix=".json")
