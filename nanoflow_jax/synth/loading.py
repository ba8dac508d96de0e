"""What a vocoder needs before it synthesises: the model with its params and mel settings (a checkpoint of
ours or an official one), and mels from .npy files or computed from wavs; each input is checked, and a
failure is one error naming the file and what was expected."""

from __future__ import annotations

import math
import os
from typing import Any

import jax.numpy as jnp
import numpy as np

from nanoflow_jax.audio.io import read_audio, resample
from nanoflow_jax.audio.mel import MelConfig, mel_spectrogram
from nanoflow_jax.checkpoints import load_checkpoint
from nanoflow_jax.convert import load_official, official_data_config, read_official
from nanoflow_jax.errors import InputError
from nanoflow_jax.files import check_input_file
from nanoflow_jax.models import AudioFlow, ModelConfig
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


# what synthesis holds per output sample: the upsampled conditioning (bands), its intermediates and the
# samples, ~3 x bands + 16 float32 values (measured scale; the shared layers' cache is capped separately)
SYNTH_BYTES_PER_SAMPLE_PER_BAND = 12
NPY_HEADER_BYTES = 1 << 16


def available_memory() -> int:
    """Bytes this machine can still give (MemAvailable), or 8 GiB where that is unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 << 30


def frame_bytes(cfg: ModelConfig) -> int:
    """What synthesis holds per mel frame: hop x (12 x bands + 64) bytes (hop 256, 80 bands: ~262 KB)."""
    return cfg.hop_length * (SYNTH_BYTES_PER_SAMPLE_PER_BAND * cfg.cond_channels + 64)


def max_mel_frames(cfg: ModelConfig) -> int:
    """The longest mel one synthesis program may take here: half of the available memory at most (22.05
    kHz, 80 bands: 24 GiB free takes ~13 hours). Chunked synthesis (`synth.chunked`) has no such bound."""
    return max(available_memory() // 2 // frame_bytes(cfg), 1)


def _npy_header(path: str, size: int) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, data offset) of a .npy file, checked against the file's real size before any data
    is read (a header claiming 40 GB in a 1 KB file is refused here)."""
    with open(path, "rb") as f:
        try:
            major, _ = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(f, max_header_size=NPY_HEADER_BYTES)
        except (ValueError, OSError, EOFError, SyntaxError) as e:
            raise InputError(f"cannot read {path} as a .npy array ({str(e).splitlines()[0]})") from None
        offset = f.tell()
    if dtype.hasobject or dtype.kind != "f":
        raise InputError(f"{path}: mel must hold floating-point values, got dtype {dtype}")
    need = math.prod(shape) * dtype.itemsize
    if offset + need != size:
        raise InputError(f"{path}: its header declares shape {shape} ({need} bytes) but the file holds {size - offset}")
    return shape, dtype, offset


def load_mel(path: str, cfg: ModelConfig, max_frames: int | None = None) -> np.ndarray:
    """A .npy mel as (n_mels, frames) float32: (n_mels, F), (1, n_mels, F), or (F, n_mels) when that
    reading is the only one that fits. The header is checked against the file and the frame count against
    `max_frames` (default: what this machine's memory can synthesise) before the data is read."""
    n_mels = cfg.cond_channels
    size = check_input_file(path, "mel file")
    shape, _, _ = _npy_header(path, size)
    dims = shape[1:] if len(shape) == 3 and shape[0] == 1 else shape
    if len(dims) != 2:
        raise InputError(f"{path}: mel must be ({n_mels}, frames) or (1, {n_mels}, frames), got shape {shape}")
    if dims[0] != n_mels and dims[1] != n_mels:
        raise InputError(f"{path}: mel has shape {shape}; the model expects {n_mels} mel bands")
    frames = dims[1] if dims[0] == n_mels else dims[0]
    limit = max_mel_frames(cfg) if max_frames is None else max_frames
    if frames > limit:
        raise InputError(
            f"{path}: {frames} frames is more than the {limit} this machine's memory can synthesise "
            f"(~{frame_bytes(cfg) // 1024} KB a frame)"
        )
    try:
        m = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read {path} as a .npy array ({str(e).splitlines()[0]})") from None
    if m.ndim == 3:
        m = m[0]
    if m.shape[0] != n_mels:
        m = m.T  # (frames, bands)
    if not np.all(np.isfinite(m)):
        raise InputError(f"{path}: mel contains NaN or Inf values")
    need = min_frames(cfg)
    if m.shape[1] < need:
        raise InputError(f"{path}: mel has {m.shape[1]} frames; at least {need} are needed")
    return m.astype(np.float32)


def wav_mel(path: str, mel_cfg: MelConfig, cfg: ModelConfig) -> np.ndarray:
    audio, rate = read_audio(path, max_seconds=max_mel_frames(cfg) * cfg.hop_length / mel_cfg.sample_rate)
    audio = resample(audio, rate, mel_cfg.sample_rate)
    mel = np.asarray(mel_spectrogram(jnp.asarray(audio[None]), mel_cfg)[0])
    if output_length(mel.shape[1], cfg) <= 0:
        raise ValueError(f"{path}: too short to synthesise ({len(audio)} samples)")
    return mel
