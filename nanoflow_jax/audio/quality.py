"""Objective quality of synthesised speech against the recording it should reproduce (copy synthesis:
both are time-aligned, so no warping is needed), and the Griffin-Lim baseline from the same mel.

Every metric takes (reference, synthesised) NumPy audio at one sample rate; the lengths are cut to the
shorter. Lower is better except STOI, PESQ and voiced/unvoiced F1.

- log-mel L1: mean |log-mel difference| in our own (Tacotron2) mel, i.e. how well the input mel is kept.
- multi-resolution STFT: spectral convergence + log-magnitude L1, averaged over three STFT sizes (the
  resolutions of Parallel WaveGAN's auxiliary loss).
- MCD (dB): 10 / ln 10 * sqrt(2 * sum_d (c_d - c'_d)^2) over mel-cepstra c_1..c_24 (DCT-II of the
  natural-log mel magnitude; c_0, the level, left out), averaged over frames.
- LSD (dB): per frame the RMS over frequency of the difference of 10 log10 power, averaged over frames.
- F0 RMSE (cents) over frames both voice, and the F1 of the synthesised voicing decisions against the
  reference's, from librosa's pYIN.
- STOI (pystoi, 10 kHz inside) and wideband PESQ (ITU-T P.862.2, the `pesq` package: 16 kHz, so both
  signals are resampled first).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from nanoflow_jax.audio.io import resample
from nanoflow_jax.audio.mel import MelConfig
from nanoflow_jax.errors import InputError

STFT_RESOLUTIONS = ((512, 50, 240), (1024, 120, 600), (2048, 240, 1200))  # (n_fft, hop, window)
N_CEPSTRA = 24
F0_RANGE = (50.0, 600.0)  # Hz: the pitch tracker's search range, every adult voice
PESQ_RATE = 16000
_TINY = 1e-10


def _aligned(ref: np.ndarray, deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ref, deg = np.asarray(ref, np.float64).reshape(-1), np.asarray(deg, np.float64).reshape(-1)
    n = min(len(ref), len(deg))
    if n == 0:
        raise InputError("quality metrics need non-empty audio")
    return ref[:n], deg[:n]


def _stft_magnitude(x: np.ndarray, n_fft: int, hop: int, win: int) -> np.ndarray:
    import librosa

    return np.abs(librosa.stft(x, n_fft=n_fft, hop_length=hop, win_length=win, window="hann", center=True))


def log_mel(audio: np.ndarray, cfg: MelConfig) -> np.ndarray:
    """(n_mels, F) natural-log mel of 1-D audio, our front-end's."""
    import jax.numpy as jnp

    from nanoflow_jax.audio.mel import mel_spectrogram

    return np.asarray(mel_spectrogram(jnp.asarray(np.asarray(audio, np.float32)[None]), cfg)[0], np.float64)


def log_mel_l1(ref_mel: np.ndarray, audio: np.ndarray, cfg: MelConfig) -> float:
    """Mean |ref_mel - log_mel(audio)| over bands and the frames both have."""
    deg = log_mel(audio, cfg)
    f = min(ref_mel.shape[1], deg.shape[1])
    return float(np.mean(np.abs(np.asarray(ref_mel, np.float64)[:, :f] - deg[:, :f])))


def multi_resolution_stft(ref: np.ndarray, deg: np.ndarray) -> float:
    ref, deg = _aligned(ref, deg)
    total = 0.0
    for n_fft, hop, win in STFT_RESOLUTIONS:
        r, d = _stft_magnitude(ref, n_fft, hop, win), _stft_magnitude(deg, n_fft, hop, win)
        convergence = np.linalg.norm(r - d) / max(np.linalg.norm(r), _TINY)
        log_l1 = np.mean(np.abs(np.log(np.maximum(r, 1e-7)) - np.log(np.maximum(d, 1e-7))))
        total += convergence + log_l1
    return float(total / len(STFT_RESOLUTIONS))


def mel_cepstra(log_mel_magnitude: np.ndarray, n: int = N_CEPSTRA) -> np.ndarray:
    """(n, F) mel-cepstra c_1..c_n of a (bands, F) natural-log mel magnitude (orthonormal DCT-II)."""
    from scipy.fft import dct

    return dct(np.asarray(log_mel_magnitude, np.float64), type=2, norm="ortho", axis=0)[1 : n + 1]


def mel_cepstral_distortion(ref_log_mel: np.ndarray, deg_log_mel: np.ndarray) -> float:
    """MCD in dB between two (bands, F) natural-log mels (the frames both have)."""
    f = min(ref_log_mel.shape[1], deg_log_mel.shape[1])
    diff = mel_cepstra(ref_log_mel[:, :f]) - mel_cepstra(deg_log_mel[:, :f])
    return float(np.mean(10.0 / math.log(10.0) * np.sqrt(2.0 * np.sum(diff**2, axis=0))))


def log_spectral_distance(ref: np.ndarray, deg: np.ndarray, n_fft: int = 1024, hop: int = 256) -> float:
    ref, deg = _aligned(ref, deg)
    p_ref = _stft_magnitude(ref, n_fft, hop, n_fft) ** 2
    p_deg = _stft_magnitude(deg, n_fft, hop, n_fft) ** 2
    diff = 10.0 * np.log10(p_ref + _TINY) - 10.0 * np.log10(p_deg + _TINY)
    return float(np.mean(np.sqrt(np.mean(diff**2, axis=0))))


def pitch(x: np.ndarray, sample_rate: int, hop: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(f0 in Hz, NaN where unvoiced; voiced flags) per frame, librosa's pYIN."""
    import librosa

    f0, voiced, _ = librosa.pyin(
        np.asarray(x, np.float64), fmin=F0_RANGE[0], fmax=F0_RANGE[1], sr=sample_rate, frame_length=1024, hop_length=hop
    )
    return f0, voiced.astype(bool)


def f0_metrics(ref: np.ndarray, deg: np.ndarray, sample_rate: int) -> tuple[float, float]:
    """(F0 RMSE in cents over frames voiced in both (NaN if none), voicing F1)."""
    ref, deg = _aligned(ref, deg)
    f0_r, v_r = pitch(ref, sample_rate)
    f0_d, v_d = pitch(deg, sample_rate)
    both = v_r & v_d & np.isfinite(f0_r) & np.isfinite(f0_d)
    rmse = float(np.sqrt(np.mean((1200.0 * np.log2(f0_d[both] / f0_r[both])) ** 2))) if both.any() else math.nan
    tp, fp, fn = np.sum(v_r & v_d), np.sum(~v_r & v_d), np.sum(v_r & ~v_d)
    f1 = float(2 * tp / (2 * tp + fp + fn)) if tp + fp + fn else 1.0
    return rmse, f1


def stoi(ref: np.ndarray, deg: np.ndarray, sample_rate: int) -> float:
    from pystoi import stoi as pystoi_stoi

    ref, deg = _aligned(ref, deg)
    return float(pystoi_stoi(ref, deg, sample_rate, extended=False))


def pesq_wideband(ref: np.ndarray, deg: np.ndarray, sample_rate: int) -> float:
    """Wideband PESQ (MOS-LQO, 1.04 to 4.64) at 16 kHz; NaN when the reference holds no speech PESQ can
    find."""
    from pesq import NoUtterancesError, pesq

    ref, deg = _aligned(ref, deg)
    ref16 = resample(ref.astype(np.float32), sample_rate, PESQ_RATE)
    deg16 = resample(deg.astype(np.float32), sample_rate, PESQ_RATE)
    try:
        return float(pesq(PESQ_RATE, ref16, deg16, "wb"))
    except NoUtterancesError:
        return math.nan


def finite_mean(values: Iterable[float | None]) -> float:
    """Mean of the finite values, NaN if none (F0 RMSE is NaN where no frame is voiced in both)."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


METRICS = ("log_mel_l1", "mrstft", "mcd_db", "lsd_db", "f0_rmse_cents", "vuv_f1", "stoi", "pesq_wb")
HIGHER_IS_BETTER = {"vuv_f1", "stoi", "pesq_wb"}


def all_metrics(ref: np.ndarray, deg: np.ndarray, ref_mel: np.ndarray, cfg: MelConfig) -> dict[str, float]:
    """Every metric of `deg` against `ref` (1-D audio at cfg.sample_rate); `ref_mel` the mel `deg` was
    made from."""
    ref, deg = _aligned(ref, deg)
    sr = cfg.sample_rate
    f0_rmse, vuv_f1 = f0_metrics(ref, deg, sr)
    return {
        "log_mel_l1": log_mel_l1(ref_mel, deg, cfg),
        "mrstft": multi_resolution_stft(ref, deg),
        "mcd_db": mel_cepstral_distortion(log_mel(ref, cfg), log_mel(deg, cfg)),
        "lsd_db": log_spectral_distance(ref, deg),
        "f0_rmse_cents": f0_rmse,
        "vuv_f1": vuv_f1,
        "stoi": stoi(ref, deg, sr),
        "pesq_wb": pesq_wideband(ref, deg, sr),
    }


def griffin_lim(mel: np.ndarray, cfg: MelConfig, n_iter: int = 32, seed: int = 0) -> np.ndarray:
    """Audio from a (n_mels, F) natural-log mel by librosa's mel inversion (non-negative least squares
    onto the linear magnitude, then `n_iter` Griffin-Lim iterations): the baseline every vocoder row is
    measured beside. Same filterbank, FFT, window and hop as the mel."""
    import librosa

    magnitude_mel = np.exp(np.asarray(mel, np.float64))
    linear = librosa.feature.inverse.mel_to_stft(
        magnitude_mel,
        sr=cfg.sample_rate,
        n_fft=cfg.n_fft,
        power=1.0,
        fmin=cfg.fmin,
        fmax=cfg.fmax,
        htk=False,
        norm="slaney",
    )
    x = librosa.griffinlim(
        linear,
        n_iter=n_iter,
        hop_length=cfg.hop_length,
        win_length=cfg.win_length,
        n_fft=cfg.n_fft,
        window="hann",
        center=True,
        pad_mode="reflect",
        length=(mel.shape[1] - 1) * cfg.hop_length,
        random_state=np.random.default_rng(seed),
    )
    return np.clip(x, -1.0, 1.0).astype(np.float32)
