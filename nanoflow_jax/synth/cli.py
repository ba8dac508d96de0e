"""What `synth.py` does: read mels (or wavs, through our mel), load a model, synthesise, write wavs.

Inputs are checked before anything is compiled, and every failure is one line naming the file and what
was expected. WAVs are written atomically, one file at a time, so an error never leaves a partial file.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nanoflow_jax.audio.io import read_audio, resample, write_wav
from nanoflow_jax.audio.mel import MelConfig, mel_spectrogram
from nanoflow_jax.params import inference_params
from nanoflow_jax.synth.denoise import Denoiser
from nanoflow_jax.synth.fast import DTYPES, min_frames, output_length, synthesize

DEFAULT_OUT = "synth_out"


@dataclasses.dataclass
class SynthArgs:
    mel: str | None = None
    mel_dir: str | None = None
    wav: str | None = None
    wav_dir: str | None = None
    checkpoint: str | None = None
    official: str | None = None
    config: str | None = None
    out: str | None = None
    temperature: float = 1.0
    dtype: str = "float32"
    denoise: float = 0.0
    batch: int = 1
    bucket: int = 32
    seed: int = 0


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


def _files(folder: str, ext: str) -> list[str]:
    if not os.path.isdir(folder):
        raise ValueError(f"input folder {folder} does not exist")
    files = sorted(glob.glob(os.path.join(folder, f"*{ext}")))
    if not files:
        raise ValueError(f"no {ext} files in {folder}")
    return files


def load_model(args: SynthArgs):
    """-> (model, params, MelConfig) from --checkpoint or --official + --config."""
    from nanoflow_jax.config import read_official
    from nanoflow_jax.convert import load_official, official_data_config
    from nanoflow_jax.train.checkpoint import load_checkpoint

    if args.checkpoint and args.official:
        raise ValueError("give either --checkpoint or --official, not both")
    if args.checkpoint:
        if args.config:
            raise ValueError("--config goes with --official; a --checkpoint folder holds its own config")
        config, model, params = load_checkpoint(args.checkpoint)
        return model, params, MelConfig.from_any(config.get("data"))
    if args.official:
        if not args.config:
            raise ValueError("--official needs --config (the official JSON config it was trained with)")
        if not os.path.exists(args.official):
            raise ValueError(f"official checkpoint {args.official} does not exist")
        official = read_official(args.config)
        model, params = load_official(args.official, official)
        return model, params, MelConfig.from_any(official_data_config(official))
    raise ValueError("no model: give --checkpoint DIR or --official CKPT.pt --config CONFIG.json")


def _inputs(args: SynthArgs) -> list[tuple[str, str]]:
    """[(kind, path)] with kind "mel" or "wav"."""
    given = [
        (k, v)
        for k, v in (("mel", args.mel), ("mel_dir", args.mel_dir), ("wav", args.wav), ("wav_dir", args.wav_dir))
        if v
    ]
    if len(given) != 1:
        raise ValueError("give exactly one input: --mel, --mel-dir, --wav or --wav-dir")
    kind, path = given[0]
    if kind == "mel_dir":
        return [("mel", f) for f in _files(path, ".npy")]
    if kind == "wav_dir":
        return [("wav", f) for f in _files(path, ".wav")]
    if not os.path.exists(path):
        raise ValueError(f"input file {path} does not exist")
    return [(kind, path)]


def _out_paths(args: SynthArgs, inputs: list[tuple[str, str]]) -> list[str]:
    stems = [os.path.splitext(os.path.basename(p))[0] + ".wav" for _, p in inputs]
    single = args.mel or args.wav
    if single and args.out and not os.path.isdir(args.out):
        if not args.out.endswith(".wav"):
            raise ValueError(f"--out {args.out} must end in .wav (or be an existing folder)")
        return [args.out]
    return [os.path.join(args.out or DEFAULT_OUT, s) for s in stems]


def run(args: SynthArgs, log=print) -> list[str]:
    """Synthesise every input; -> the wav paths written."""
    if args.dtype not in DTYPES:
        raise ValueError(f"--dtype must be one of {', '.join(DTYPES)}, got {args.dtype!r}")
    if args.temperature < 0:
        raise ValueError(f"--temperature must be >= 0, got {args.temperature}")
    if args.denoise < 0:
        raise ValueError(f"--denoise must be >= 0, got {args.denoise}")
    if args.batch < 1 or args.bucket < 1:
        raise ValueError("--batch and --bucket must be at least 1")
    inputs = _inputs(args)
    outs = _out_paths(args, inputs)
    model, params, mel_cfg = load_model(args)
    cfg = model.config
    mels = []
    for kind, path in inputs:  # check every input before the first compilation
        if kind == "mel":
            mels.append(load_mel(path, cfg.cond_channels, cfg.n_groups))
        else:
            mels.append(_wav_mel(path, mel_cfg, cfg.n_groups))
    params = inference_params(model, params)  # once, not in every synthesize call
    denoiser = Denoiser(model, params, mel_cfg, dtype=args.dtype) if args.denoise > 0 else None
    rng = jax.random.PRNGKey(args.seed)
    written, total_audio, total_wall = [], 0.0, 0.0
    seen_shapes = set()
    for start in range(0, len(mels), args.batch):
        chunk = mels[start : start + args.batch]
        shape = (len(chunk), -(-max(m.shape[1] for m in chunk) // args.bucket))
        t0 = time.perf_counter()
        audio = synthesize(
            model,
            params,
            chunk,
            temperature=args.temperature,
            dtype=args.dtype,
            rng=jax.random.fold_in(rng, start),
            bucket_frames=args.bucket,
        )
        wall = time.perf_counter() - t0
        note = "" if shape in seen_shapes else " (includes compiling)"
        seen_shapes.add(shape)
        secs = sum(len(a) for a in audio) / mel_cfg.sample_rate
        total_audio, total_wall = total_audio + secs, total_wall + wall
        for a, path in zip(audio, outs[start : start + args.batch], strict=True):
            if denoiser is not None:
                a = denoiser(a, args.denoise)
            write_wav(path, a, mel_cfg.sample_rate)
            written.append(path)
        names = ", ".join(os.path.basename(p) for p in outs[start : start + args.batch])
        log(f"{names}: {secs:.2f} s of audio in {wall:.2f} s{note}: {_speed(secs, wall, mel_cfg.sample_rate)}")
    if len(mels) > 1:
        log(
            f"total: {total_audio:.2f} s of audio in {total_wall:.2f} s: "
            f"{_speed(total_audio, total_wall, mel_cfg.sample_rate)}"
        )
    return written


def _speed(audio_s: float, wall_s: float, rate: int) -> str:
    khz = audio_s * rate / wall_s / 1e3
    return f"{khz:.1f} kHz, real-time factor {wall_s / audio_s:.3f} ({audio_s / wall_s:.1f}x real time)"


def _wav_mel(path: str, mel_cfg: MelConfig, n_groups: int) -> np.ndarray:
    audio, rate = read_audio(path)
    audio = resample(audio, rate, mel_cfg.sample_rate)
    mel = np.asarray(mel_spectrogram(jnp.asarray(audio[None]), mel_cfg)[0])
    if output_length(mel.shape[1], n_groups) <= 0:
        raise ValueError(f"{path}: too short to synthesise ({len(audio)} samples)")
    return mel


def from_flags(flags: Any) -> SynthArgs:
    """SynthArgs from parsed absl flags of the same names."""
    return SynthArgs(**{f.name: getattr(flags, f.name) for f in dataclasses.fields(SynthArgs)})
