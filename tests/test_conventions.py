"""Other front-ends' mels: each convention built from the same audio with its reference recipe (librosa),
converted, and compared with the model's own mel of that audio."""

import math
import os

import librosa
import numpy as np
import pytest

import nanoflow_jax as nf
from nanoflow_jax.audio.conventions import check_filterbank, convention_warning, load_stats, to_model_mel
from nanoflow_jax.audio.io import read_audio
from nanoflow_jax.audio.mel import MelConfig
from nanoflow_jax.data.sources import DEMO_CORPUS
from nanoflow_jax.errors import InputError

CFG = MelConfig()


@pytest.fixture(scope="module")
def speech():
    x, rate = read_audio(os.path.join(DEMO_CORPUS, "wavs", "SLT-0001.wav"))
    assert rate == CFG.sample_rate
    x = x[: 3 * rate]
    return x, np.asarray(nf.mel_spectrogram(x[None], CFG)[0], np.float64)


def _basis(fmin=CFG.fmin, fmax=CFG.fmax):
    return librosa.filters.mel(sr=CFG.sample_rate, n_fft=CFG.n_fft, n_mels=CFG.n_mels, fmin=fmin, fmax=fmax)


def hifigan_mel(x):
    """HiFi-GAN's recipe: reflect-pad (n_fft - hop) / 2, no centring, sqrt(|S|^2 + 1e-9), ln max(., 1e-5)."""
    pad = (CFG.n_fft - CFG.hop_length) // 2
    spec = librosa.stft(
        np.pad(x, (pad, pad), mode="reflect"),
        n_fft=CFG.n_fft,
        hop_length=CFG.hop_length,
        win_length=CFG.win_length,
        window="hann",
        center=False,
    )
    return np.log(np.maximum(_basis() @ np.sqrt(np.abs(spec) ** 2 + 1e-9), 1e-5))


def espnet_mel(x):
    """ESPnet / ParallelWaveGAN's recipe: centred reflect-padded |STFT|, log10 max(., 1e-10)."""
    spec = librosa.stft(
        x, n_fft=CFG.n_fft, hop_length=CFG.hop_length, win_length=CFG.win_length, window="hann", pad_mode="reflect"
    )
    return np.log10(np.maximum(_basis() @ np.abs(spec), 1e-10))


def test_tacotron2_is_ours(speech):
    x, ours = speech
    assert to_model_mel(ours, "tacotron2", CFG).shape == ours.shape
    assert convention_warning(ours, CFG) is None


def test_espnet_normalised_log10_converts_exactly(speech, tmp_path):
    x, ours = speech
    log10 = espnet_mel(x)
    stats = np.stack([log10.mean(axis=1), log10.std(axis=1)])  # what the training set's scaler holds
    normed = (log10 - stats[0][:, None]) / stats[1][:, None]
    np.save(tmp_path / "stats.npy", stats)
    back = to_model_mel(normed, "espnet", CFG, load_stats(str(tmp_path / "stats.npy"), CFG.n_mels))
    assert back.shape == ours.shape
    err = np.abs(back - ours)
    assert err.max() < 2e-3, err.max()  # float32 STFTs of two libraries
    assert "mean-variance normalised" in convention_warning(normed, CFG)
    assert convention_warning(back, CFG) is None
    with pytest.raises(InputError, match="give the statistics"):
        to_model_mel(normed, "espnet", CFG)


def test_hifigan_half_hop_offset_is_interpolated(speech):
    x, ours = speech
    hifi = hifigan_mel(x)
    assert hifi.shape[1] == ours.shape[1] - 1
    conv = to_model_mel(hifi, "hifigan", CFG)
    assert conv.shape == ours.shape
    converted = np.mean(np.abs(conv - ours))
    as_is = np.mean(np.abs(hifi - ours[:, :-1]))  # taken as ours, frame t is half a hop late
    assert converted < 0.6 * as_is, (converted, as_is)
    assert converted < 0.25  # nats, mean over bands and frames
    assert convention_warning(conv, CFG) is None


def test_another_filterbank_is_refused_in_one_line():
    with pytest.raises(InputError, match=r"fmin = 80 Hz differs from the model's 0 Hz: another filterbank"):
        check_filterbank(CFG, 80.0, 7600.0, "espnet")
    check_filterbank(CFG, None, 8000.0, "espnet")


def test_warnings_name_the_likely_convention(speech):
    x, ours = speech
    assert "log10" in convention_warning(ours / math.log(10.0), CFG)
    assert "decibels" in convention_warning(20.0 * ours / math.log(10.0), CFG)
    assert "linear" in convention_warning(np.exp(ours), CFG)


def test_bad_stats_are_one_line(tmp_path):
    np.save(tmp_path / "s.npy", np.ones((3, 80)))
    with pytest.raises(InputError, match=r"shape \(2, 80\)"):
        load_stats(str(tmp_path / "s.npy"), 80)
    np.save(tmp_path / "z.npy", np.stack([np.zeros(80), np.zeros(80)]))
    with pytest.raises(InputError, match="positive scale"):
        load_stats(str(tmp_path / "z.npy"), 80)


def test_synth_py_converts_espnet_mels_and_warns_on_unconverted_ones(speech, tmp_path):
    from nanoflow_jax.synth.command import SynthArgs, run

    x, ours = speech
    ours = ours[:, :60]
    log10 = espnet_mel(x)[:, :60]
    stats = np.stack([log10.mean(axis=1), log10.std(axis=1)])
    np.save(tmp_path / "stats.npy", stats)
    np.save(tmp_path / "ours.npy", ours.astype(np.float32))
    np.save(tmp_path / "espnet.npy", ((log10 - stats[0][:, None]) / stats[1][:, None]).astype(np.float32))
    logs = []
    [a] = run(SynthArgs(mel=str(tmp_path / "ours.npy"), out=str(tmp_path / "a.wav")), log=logs.append)
    [b] = run(
        SynthArgs(
            mel=str(tmp_path / "espnet.npy"),
            out=str(tmp_path / "b.wav"),
            mel_convention="espnet",
            mel_stats=str(tmp_path / "stats.npy"),
        ),
        log=logs.append,
    )
    assert not [line for line in logs if line.startswith("warning")]
    wa, wb = read_audio(a)[0], read_audio(b)[0]
    assert wa.shape == wb.shape
    assert np.max(np.abs(wa - wb)) < 0.01 * np.max(np.abs(wa)) + 1e-3
    run(SynthArgs(mel=str(tmp_path / "espnet.npy"), out=str(tmp_path / "c.wav")), log=logs.append)
    assert [line for line in logs if line.startswith("warning: espnet.npy:") and "mean-variance" in line]
