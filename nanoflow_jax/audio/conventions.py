"""Mels from other front-ends, turned into the model's convention (NumPy, no JAX).

The model's mel (`audio.mel`, Tacotron2 / WaveGlow): magnitude STFT centred on each hop (reflect padding
n_fft / 2), Slaney mel filterbank, natural log of max(x, 1e-5). What other front-ends change:

- "tacotron2": nothing (the default).
- "hifigan": the same magnitude, filterbank, clamp and natural log, but the signal is padded by
  (n_fft - hop) / 2 and not centred, so frame t is centred half a hop after ours and there is one frame
  fewer. Half a hop is no whole frame: each of our frames is the mean of the two log-mel frames around it
  (the ends take the nearest frame), close but not exact (tests/test_conventions.py measures it).
- "espnet" (ESPnet, ParallelWaveGAN): log10 of max(mel, 1e-10), then normalised per band with the
  training set's statistics, `(x - mean) / scale` (ParallelWaveGAN's stats.npy: row 0 the mean, row 1 the
  scale). Undone exactly: x * scale + mean, times ln 10, floored at the model's clamp.

A front-end with another filterbank (band edges, band count) or sample rate cannot be converted: the
model never saw those bands. `check_filterbank` refuses it in one line.
"""

from __future__ import annotations

import math

import numpy as np

from nanoflow_jax.audio.mel import MelConfig
from nanoflow_jax.errors import InputError
from nanoflow_jax.files import check_input_file, npy_header

CONVENTIONS = ("tacotron2", "hifigan", "espnet")


def check_filterbank(cfg: MelConfig, fmin: float | None, fmax: float | None, convention: str) -> None:
    """Refuse a front-end whose mel band edges differ from the model's (None: the model's)."""
    for name, theirs, ours in (("fmin", fmin, cfg.fmin), ("fmax", fmax, cfg.fmax)):
        if theirs is not None and abs(theirs - ours) > 1e-6:
            raise InputError(
                f"the {convention} mels' {name} = {theirs:g} Hz differs from the model's {ours:g} Hz: another "
                "filterbank, which no conversion can undo (use mels made with the model's band edges)"
            )


def load_stats(path: str, n_mels: int) -> np.ndarray:
    """A ParallelWaveGAN-style stats.npy: (2, bands) float, the per-band mean then scale of the log10 mel.
    The file is checked as every untrusted .npy is (`files.npy_header`) before its data is read."""
    shape, _, _ = npy_header(path, check_input_file(path, "mel statistics"), "mel statistics")
    if shape != (2, n_mels):
        raise InputError(f"{path}: mel statistics must be a float array of shape (2, {n_mels}), got {shape}")
    try:
        stats = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read mel statistics {path} as a .npy array ({str(e).splitlines()[0]})") from None
    if not np.all(np.isfinite(stats)) or np.any(stats[1] <= 0) or np.any(np.abs(stats) > 1e30):
        raise InputError(f"{path}: mel statistics must be finite (|x| <= 1e30) with a positive scale")
    return stats.astype(np.float64)


def to_model_mel(mel: np.ndarray, convention: str, cfg: MelConfig, stats: np.ndarray | None = None) -> np.ndarray:
    """(bands, F) mel in `convention` -> (bands, F') in the model's (F' = F + 1 for hifigan)."""
    mel = np.asarray(mel, np.float64)
    floor = math.log(cfg.clamp)
    if convention == "tacotron2":
        out = mel
    elif convention == "hifigan":
        mids = 0.5 * (mel[:, 1:] + mel[:, :-1])
        out = np.concatenate([mel[:, :1], mids, mel[:, -1:]], axis=1)
    elif convention == "espnet":
        if stats is None:
            raise InputError("espnet mels are normalised: give the statistics they were normalised with (--mel_stats)")
        out = np.maximum((mel * stats[1][:, None] + stats[0][:, None]) * math.log(10.0), floor)
    else:
        raise InputError(f"unknown mel convention {convention!r}; known: {', '.join(CONVENTIONS)}")
    with np.errstate(over="ignore", invalid="ignore"):
        out = out.astype(np.float32)
    if not np.all(np.isfinite(out)):
        raise InputError(f"the {convention} mel converted to the model's scale leaves float32's range (|x| > 3.4e38)")
    return out


def convention_warning(mel: np.ndarray, cfg: MelConfig) -> str | None:
    """One line when a (bands, F) mel's values do not look like the model's natural-log mel, naming the
    convention they look like; None when they fit."""
    m = np.asarray(mel, np.float64)
    lo, hi, mean, std = float(m.min()), float(m.max()), float(m.mean()), float(m.std())
    floor = math.log(cfg.clamp)
    # speech in the model's convention: above the clamp, mean about -5 and std about 2.4 (a log10 mel of
    # the same audio: mean about -2.3, std about 1)
    if lo >= floor - 1e-3 and hi <= 6.0 and mean < -3.0:
        return None
    if abs(mean) < 0.5 and 0.5 < std < 1.5:
        likely = "mean-variance normalised (ESPnet / ParallelWaveGAN: --mel_convention espnet --mel_stats stats.npy)"
    elif lo < -20.0 or hi > 10.0:
        likely = "in decibels or another scale (not a log magnitude mel)"
    elif lo >= -10.0 - 1e-3 and hi <= 3.0 and -4.5 < mean < -0.5:
        likely = "log10 (ESPnet's log base; normalised ESPnet mels convert with --mel_convention espnet)"
    elif lo >= 0.0:
        likely = "linear or scaled to [0, 1] (not a log mel)"
    else:
        likely = "of another convention"
    return (
        f"these mel values (min {lo:.2f}, max {hi:.2f}, mean {mean:.2f}, std {std:.2f}) do not look like "
        f"the model's natural-log mel (floor ln {cfg.clamp:g} = {floor:.2f}); they look {likely}"
    )
