"""What a vocoder needs before it synthesises: the model with its params and mel settings (a checkpoint of
ours or an official one), and mels from .npy files or computed from wavs; each input is checked, and a
failure is one error naming the file and what was expected."""

from __future__ import annotations

import os
from typing import Any

import jax.numpy as jnp
import numpy as np

from nanoflow_jax.audio.io import read_audio, resample
from nanoflow_jax.audio.mel import MelConfig, mel_spectrogram
from nanoflow_jax.checkpoints import load_checkpoint
from nanoflow_jax.convert import load_official, official_data_config, read_official
from nanoflow_jax.models import AudioFlow
from nanoflow_jax.synth.fast import min_frames, output_length


def load_vocoder(
    checkpoint: str | None = None, official: str | None = None, config: str | None = None
) -> tuple[AudioFlow, Any, MelConfig]:
    """-> (model, params, MelConfig) from a checkpoint folder of ours, or an official checkpoint and its
    JSON config. The stored config's model and mel fields are checked (errors name the file)."""
    if checkpoint and official:
        raise ValueError("give either --checkpoint or --official, not both")
    if checkpoint:
        if config:
            raise ValueError("--config goes with --official; a --checkpoint folder holds its own config")
        run_config, model, params = load_checkpoint(checkpoint)
        if not isinstance(model, AudioFlow):
            raise ValueError(f"{checkpoint} holds an image model ({model.config.variant}), not a vocoder")
        return model, params, MelConfig.from_any(run_config.get("data"))  # checked by load_checkpoint
    if official:
        if not config:
            raise ValueError("--official needs --config (the official JSON config it was trained with)")
        if not os.path.exists(official):
            raise ValueError(f"official checkpoint {official} does not exist")
        official_config = read_official(config)
        model, params = load_official(official, official_config)
        return model, params, MelConfig.from_any(official_data_config(official_config), config)
    raise ValueError("no model: give --checkpoint DIR or --official CKPT.pt --config CONFIG.json")


def load_mel(path: str, n_mels: int, n_groups: int) -> np.ndarray:
    """A .npy mel as (n_mels, frames) float32: (n_mels, F), (1, n_mels, F), or (F, n_mels) when that
    reading is the only one that fits."""
    try:
        m = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise ValueError(f"mel file {path} does not exist") from None
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read {path} as a .npy array ({str(e).splitlines()[0]})") from None
    if not isinstance(m, np.ndarray) or m.dtype.kind != "f":
        raise ValueError(f"{path}: mel must hold floating-point values, got dtype {getattr(m, 'dtype', type(m))}")
    shape = m.shape
    if m.ndim == 3 and m.shape[0] == 1:
        m = m[0]
    if m.ndim != 2:
        raise ValueError(f"{path}: mel must be ({n_mels}, frames) or (1, {n_mels}, frames), got shape {shape}")
    if m.shape[0] != n_mels:
        if m.shape[1] == n_mels:
            m = m.T  # (frames, bands)
        else:
            raise ValueError(f"{path}: mel has shape {shape}; the model expects {n_mels} mel bands")
    if not np.all(np.isfinite(m)):
        raise ValueError(f"{path}: mel contains NaN or Inf values")
    need = min_frames(n_groups)
    if m.shape[1] < need:
        raise ValueError(f"{path}: mel has {m.shape[1]} frames; at least {need} are needed")
    return m.astype(np.float32)


def wav_mel(path: str, mel_cfg: MelConfig, n_groups: int) -> np.ndarray:
    audio, rate = read_audio(path)
    audio = resample(audio, rate, mel_cfg.sample_rate)
    mel = np.asarray(mel_spectrogram(jnp.asarray(audio[None]), mel_cfg)[0])
    if output_length(mel.shape[1], n_groups) <= 0:
        raise ValueError(f"{path}: too short to synthesise ({len(audio)} samples)")
    return mel
