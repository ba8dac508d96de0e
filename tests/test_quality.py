"""Each quality metric against a value known in closed form (or the metric's own scale end), on real
recorded speech where the metric needs speech, and the Griffin-Lim baseline."""

import glob
import math
import os

import numpy as np
import pytest

from nanoflow_jax.audio import quality
from nanoflow_jax.audio.io import read_audio, resample
from nanoflow_jax.audio.mel import MelConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(ROOT, "tests", "data", "asterisk_sample")
CFG = MelConfig()
RATE = CFG.sample_rate


@pytest.fixture(scope="module")
def speech():
    """Two short recorded prompts (English, Italian) at 22.05 kHz, joined."""
    files = sorted(glob.glob(os.path.join(SAMPLE, "*", "wavs", "*.wav")))
    parts = []
    for f in (files[0], files[6]):
        x, sr = read_audio(f)
        parts.append(resample(x, sr, RATE))
    return np.concatenate(parts)


def noise(n, seed=0):
    return np.random.default_rng(seed).normal(0, 0.1, n).astype(np.float32)


def test_identical_signals_are_perfect(speech):
    m = quality.all_metrics(speech, speech, quality.log_mel(speech, CFG), CFG)
    assert m["log_mel_l1"] < 1e-5 and m["mrstft"] < 1e-6 and m["mcd_db"] < 1e-6 and m["lsd_db"] < 1e-6
    assert m["f0_rmse_cents"] == 0.0 and m["vuv_f1"] == 1.0
    assert m["stoi"] > 0.999
    assert m["pesq_wb"] == pytest.approx(4.644, abs=0.01)  # the top of P.862.2's MOS-LQO scale


def test_half_the_amplitude_is_6_db_and_ln_2():
    x = noise(22050)
    assert quality.log_spectral_distance(x, 0.5 * x) == pytest.approx(20 * math.log10(2), abs=1e-3)
    assert quality.log_mel_l1(quality.log_mel(x, CFG), 0.5 * x, CFG) == pytest.approx(math.log(2), abs=1e-3)
    # spectral convergence 0.5 plus log-magnitude L1 ln 2, at every resolution
    assert quality.multi_resolution_stft(x, 0.5 * x) == pytest.approx(0.5 + math.log(2), abs=1e-3)


def test_mcd_ignores_level_and_measures_one_cepstral_step_exactly():
    from scipy.fft import idct

    rng = np.random.default_rng(1)
    mel = rng.normal(-4, 1, (80, 50))
    assert quality.mel_cepstral_distortion(mel, mel + 3.0) == pytest.approx(0.0, abs=1e-9)  # only c0 moves
    basis = np.zeros(80)
    basis[5] = 0.2
    shifted = mel + idct(basis, type=2, norm="ortho")[:, None]  # c5 moves by 0.2 in every frame
    assert quality.mel_cepstral_distortion(mel, shifted) == pytest.approx(10 / math.log(10) * math.sqrt(2) * 0.2)


def test_f0_rmse_of_a_tone_a_tenth_higher_is_165_cents():
    t = np.arange(RATE) / RATE
    a, b = 0.5 * np.sin(2 * np.pi * 200 * t), 0.5 * np.sin(2 * np.pi * 220 * t)
    rmse, f1 = quality.f0_metrics(a, b, RATE)
    assert rmse == pytest.approx(1200 * math.log2(1.1), abs=10)  # pYIN's pitch grid is 10 cents
    assert f1 == pytest.approx(1.0)
    rmse, f1 = quality.f0_metrics(a, noise(RATE), RATE)  # noise has no pitch: no voiced frame matches
    assert f1 < 0.2


def test_stoi_and_pesq_fall_as_noise_rises(speech):
    n = noise(len(speech), seed=3)
    scale = np.sqrt(np.mean(speech**2) / np.mean(n**2))
    at = {snr: speech + n * scale * 10 ** (-snr / 20) for snr in (20, 0)}
    stoi = {snr: quality.stoi(speech, y, RATE) for snr, y in at.items()}
    pesq = {snr: quality.pesq_wideband(speech, y, RATE) for snr, y in at.items()}
    assert 1.0 > stoi[20] > stoi[0] > 0.3
    assert 4.6 > pesq[20] > pesq[0] >= 1.0


def test_griffin_lim_inverts_the_mel_of_speech(speech):
    mel = quality.log_mel(speech, CFG)
    y = quality.griffin_lim(mel, CFG, n_iter=32)
    assert len(y) == (mel.shape[1] - 1) * CFG.hop_length
    assert quality.log_mel_l1(mel, y, CFG) < 0.3  # measured 0.16 on a 5 s prompt
    assert quality.stoi(speech[: len(y)], y, RATE) > 0.85
    silence = quality.griffin_lim(np.full((80, 20), np.log(1e-5)), CFG, n_iter=4)
    assert np.max(np.abs(silence)) < 1e-3
