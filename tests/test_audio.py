"""Mel front-end parity with the official Tacotron2 STFT, and WAV I/O."""

import os
import wave

import numpy as np
import pytest

import nanoflow_jax as nf
from nanoflow_jax.audio import MelConfig, mel_basis, read_audio, resample, write_wav
from nanoflow_jax.audio.mel import hann_window, magnitude
from tests.conftest import DATA

GOLD = np.load(os.path.join(DATA, "mel_pipeline.npz"))


def test_mel_matches_official():
    cfg = MelConfig()
    np.testing.assert_allclose(mel_basis(cfg), GOLD["mel_basis"], atol=1e-8, rtol=0)
    np.testing.assert_allclose(hann_window(cfg), GOLD["hann_window"], atol=1e-7, rtol=0)
    mag = np.asarray(magnitude(GOLD["audio"], cfg))
    np.testing.assert_allclose(mag, GOLD["magnitude"], atol=1e-4, rtol=1e-5)
    mel = np.asarray(nf.mel_spectrogram(GOLD["audio"]))
    assert mel.shape == GOLD["mel"].shape
    np.testing.assert_allclose(mel, GOLD["mel"], atol=1e-4, rtol=0)


def reference_log_mel(x: np.ndarray, cfg: MelConfig) -> np.ndarray:
    """Float64 NumPy version of the official pipeline, for lengths the golden file does not cover."""
    pad = cfg.n_fft // 2
    xp = np.pad(x.astype(np.float64), (pad, pad), mode="reflect")
    n = len(x) // cfg.hop_length + 1
    frames = np.stack([xp[i * cfg.hop_length : i * cfg.hop_length + cfg.n_fft] for i in range(n)])
    mag = np.abs(np.fft.rfft(frames * hann_window(cfg).astype(np.float64), axis=-1)).T
    return np.log(np.maximum(mel_basis(cfg).astype(np.float64) @ mag, cfg.clamp))


@pytest.mark.parametrize("length", [16000, 16001, 5000 + 37, 2 * 256 + 1])
def test_mel_any_length(length):
    x = GOLD["audio"][0, :length]
    mel = np.asarray(nf.mel_spectrogram(x[None]))[0]
    assert mel.shape == (80, length // 256 + 1)
    np.testing.assert_allclose(mel, reference_log_mel(x, MelConfig()), atol=1e-4, rtol=0)


def test_mel_parameters_are_configurable():
    x = GOLD["audio"][:1, :12000]
    cfg = MelConfig.from_any({"sample_rate": 24000, "fmax": 12000.0, "n_mels": 100, "unrelated": 1})
    mel = np.asarray(nf.mel_spectrogram(x, cfg))
    assert mel.shape == (1, 100, 12000 // 256 + 1)
    np.testing.assert_allclose(mel[0], reference_log_mel(x[0], cfg), atol=1e-4, rtol=0)
    mel2 = np.asarray(nf.mel_spectrogram(x, sample_rate=24000, fmax=12000.0, n_mels=100))
    np.testing.assert_array_equal(mel, mel2)


def test_mel_bad_input():
    with pytest.raises(ValueError, match="batch"):
        nf.mel_spectrogram(np.zeros(4000, np.float32))
    with pytest.raises(ValueError, match="too short"):
        nf.mel_spectrogram(np.zeros((1, 100), np.float32))
    with pytest.raises(ValueError, match="fmax"):
        MelConfig.from_any(fmax=20000.0)


def test_wav_roundtrip_and_atomic_write(tmp_path):
    x = (0.5 * np.sin(np.linspace(0, 100, 5000))).astype(np.float32)
    path = tmp_path / "a.wav"
    write_wav(path, x, 22050)
    y, sr = read_audio(path)
    assert sr == 22050 and y.shape == x.shape
    assert np.max(np.abs(y - x)) < 1.0 / 16000
    with pytest.raises(ValueError, match="NaN"):
        write_wav(tmp_path / "b.wav", np.array([0.0, np.nan], np.float32), 22050)
    assert sorted(os.listdir(tmp_path)) == ["a.wav"]  # nothing partial left behind


def test_read_24bit_stereo_and_resample(tmp_path):
    path = str(tmp_path / "s.wav")
    left = np.array([0, 1 << 22, -(1 << 22), (1 << 23) - 1], np.int32)
    frames = np.stack([left, -left], axis=1).reshape(-1)
    raw = b"".join(int(v & 0xFFFFFF).to_bytes(3, "little") for v in frames)
    with wave.open(path, "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(3)
        w.setframerate(16000)
        w.writeframes(raw)
    x, sr = read_audio(path)
    assert sr == 16000
    np.testing.assert_allclose(x, 0.0, atol=1e-7)  # the channels cancel
    tone = np.sin(2 * np.pi * 440 * np.arange(16000) / 16000).astype(np.float32)
    up = resample(tone, 16000, 22050)
    assert len(up) == 22050
    ref = np.sin(2 * np.pi * 440 * np.arange(22050) / 22050)
    assert np.max(np.abs(up[100:-100] - ref[100:-100])) < 1e-2
