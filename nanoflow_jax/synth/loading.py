"""What a vocoder needs before it synthesises: the model with its params and mel settings (a checkpoint of
ours or an official one), and mels from .npy files or computed from wavs; each input is checked, and a
failure is one error naming the file and what was expected."""

from __future__ import annotations

from typing import Any

import numpy as np

from nanoflow_jax.audio.io import read_audio, read_mel, resample
from nanoflow_jax.audio.mel import MelConfig, mel_spectrogram_long
from nanoflow_jax.checkpoints import load_checkpoint
from nanoflow_jax.convert import load_official, official_data_config, read_official
from nanoflow_jax.errors import CheckpointError, InputError, UsageError
from nanoflow_jax.files import memory_budget
from nanoflow_jax.models import AudioFlow, ModelConfig


def load_model(
    checkpoint: str | None = None, official: str | None = None, config: str | None = None
) -> tuple[AudioFlow, Any, MelConfig]:
    """-> (model, params, MelConfig) from a checkpoint folder of ours, or an official checkpoint and its
    JSON config. The stored config's model and mel fields are checked (errors name the file)."""
    if checkpoint and official:
        raise UsageError("give either --checkpoint or --official, not both")
    if checkpoint:
        if config:
            raise UsageError("--config goes with --official; a --checkpoint folder holds its own config")
        run_config, model, params = load_checkpoint(checkpoint)
        if not isinstance(model, AudioFlow):
            raise CheckpointError(f"{checkpoint} holds an image model ({model.config.variant}), not a vocoder")
        return model, params, MelConfig.from_any(run_config.get("data"))  # checked by load_checkpoint
    if official:
        if not config:
            raise UsageError("--official needs --config (the official JSON config it was trained with)")
        official_config = read_official(config)
        model, params = load_official(official, official_config)
        return model, params, MelConfig.from_any(official_data_config(official_config), config)
    raise UsageError("no model: give --checkpoint DIR or --official CKPT.pt --config CONFIG.json")


# what synthesis holds per mel frame beyond one chunk's program (`synth.chunked` bounds that): the mel,
# the latent noise, the audio and its copy on the way out, float32
STREAM_FLOATS_PER_SAMPLE = 4


def frame_bytes(cfg: ModelConfig) -> int:
    """What synthesis holds per mel frame: 4 x (bands + 4 x hop) bytes (hop 256, 80 bands: ~4.4 KB)."""
    return 4 * (cfg.cond_channels + STREAM_FLOATS_PER_SAMPLE * cfg.hop_length)


def max_mel_frames(cfg: ModelConfig) -> int:
    """The longest mel synthesis may take here: half of the available memory at most (22.05 kHz, 80
    bands: 24 GiB free takes ~30 hours); long mels are synthesised in chunks, so this is all that grows."""
    return max(memory_budget() // frame_bytes(cfg), 1)


def load_mel(path: str, cfg: ModelConfig, max_frames: int | None = None) -> np.ndarray:
    """A .npy mel as (n_mels, frames) float32 (`audio.io.read_mel`: the file's header and values checked),
    at most `max_frames` long (default: what this machine's memory can synthesise). Whether it is long
    enough to synthesise is `Vocoder.prepare`'s one check."""
    limit = max_mel_frames(cfg) if max_frames is None else max_frames
    why = f"this machine's memory can synthesise (~{frame_bytes(cfg)} bytes a frame)"
    return read_mel(path, cfg.cond_channels, limit, why)


def wav_mel(path: str, mel_cfg: MelConfig, cfg: ModelConfig) -> np.ndarray:
    """The model's mel of a wav file. Its memory is budgeted from the file's own header (rate, channels,
    length) before a sample is read: the mono samples, their resampled copy and its padded copy, and the
    synthesis that follows (`frame_bytes` per frame); the mel is computed a block at a time."""
    per_second = mel_cfg.sample_rate * (2 * 4 + frame_bytes(cfg) / mel_cfg.hop_length)
    audio, rate = read_audio(path, extra_bytes_per_second=per_second)
    audio = resample(audio, rate, mel_cfg.sample_rate)
    if len(audio) <= mel_cfg.n_fft // 2:  # what the STFT's reflection needs
        raise InputError(f"{path}: too short to synthesise ({len(audio)} samples)")
    return mel_spectrogram_long(audio, mel_cfg)
