"""The voice that ships: it loads for library users and is synth.py's default; a voice folder round-trips."""

import dataclasses
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

import nanoflow_jax as nf
from nanoflow_jax import voices

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_a_voice_folder_round_trips(tmp_path, monkeypatch):
    cfg = nf.ModelConfig(variant="nanoflow", n_flows=2, n_layers=2, channels=8, n_groups=8, embed_dim=4)
    model = nf.build_model(cfg)
    params = nf.init_params(model, jax.random.PRNGKey(3))
    monkeypatch.setattr(voices, "VOICES", str(tmp_path))
    voices.write_voice(str(tmp_path / "tiny"), params, {"model": cfg.to_dict(), "data": {"sample_rate": 16000}})
    assert voices.voice_names() == ["tiny"]
    got_model, got = voices.load_voice("tiny")
    assert got_model.config == cfg
    jax.tree.map(np.testing.assert_array_equal, got, jax.tree.map(np.asarray, params))
    assert voices.voice_mel_config("tiny").sample_rate == 16000
    with pytest.raises(nf.errors.ConfigError, match="no voice 'other'"):
        voices.load_voice("other")
    with pytest.raises(nf.errors.InputError, match="ships no training-form params"):
        voices.training_params(str(tmp_path / "tiny"))


def test_a_warm_start_reads_a_voice_folders_training_params(tmp_path, monkeypatch):
    from nanoflow_jax.train.trainer import warm_start_params

    cfg = nf.ModelConfig(variant="nanoflow", n_flows=2, n_layers=2, channels=8, n_groups=8, embed_dim=4)
    model = nf.build_model(cfg)
    params = nf.init_params(model, jax.random.PRNGKey(3))
    folder = str(tmp_path / "tiny")
    voices.write_voice(folder, nf.inference_params(model, params), {"model": cfg.to_dict()}, training=params)
    fresh = nf.init_params(model, jax.random.PRNGKey(4))
    got = warm_start_params(None, folder, fresh)
    jax.tree.map(np.testing.assert_array_equal, got, jax.tree.map(np.asarray, params))
    other = nf.init_params(nf.build_model(dataclasses.replace(cfg, channels=4)), jax.random.PRNGKey(4))
    with pytest.raises(nf.errors.CheckpointError, match="has shape"):
        warm_start_params(None, folder, other)  # the shapes are checked


def test_the_shipped_voice_loads_with_its_licence_and_measured_metrics():
    model, params = nf.load_voice()
    info = nf.voice_info()
    assert model.config == nf.ModelConfig(**info["model"])
    assert nf.count_params(params) == info["param_count"]["inference_form"]
    assert f"{info['param_count']['training_form']:,} params" in info["summary"]
    assert info["licence"] == "CC-BY-SA-3.0" and len(info["credits"]) == 4
    assert os.path.isfile(os.path.join(voices.voice_dir(), "LICENSE.txt"))
    mean = info["evaluation"]["mean"]
    assert set(mean) >= {"model", "griffin_lim"} and mean["model"]["ll"] > 0
    assert info["data"]["sample_rate"] == 22050 and info["data"]["hop_length"] == 256


def test_synth_with_no_model_flag_uses_the_shipped_voice(tmp_path):
    import soundfile

    from nanoflow_jax.audio.quality import log_mel

    x, sr = nf.audio.read_audio(
        os.path.join(ROOT, "tests", "data", "asterisk_sample", "en_US_f_Allison", "wavs", "en-activated.wav")
    )
    mel = log_mel(nf.audio.resample(x, sr, 22050), voices.voice_mel_config())
    np.save(tmp_path / "m.npy", mel.astype(np.float32))
    out = tmp_path / "o.wav"
    r = subprocess.run(
        [sys.executable, "synth.py", "--mel", str(tmp_path / "m.npy"), "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert "the shipped voice asterisk5 (NanoFlow" in r.stdout + r.stderr
    y, rate = soundfile.read(out)
    assert rate == 22050 and len(y) == 256 * (mel.shape[1] - 3)
    assert 0.001 < np.sqrt(np.mean(y**2)) < 0.9  # neither silence nor a blown-up output
    json.dumps(nf.voice_info())  # the description is plain JSON


def test_the_banner_says_what_the_voice_measured():
    from nanoflow_jax.voices import voice_banner, voice_info

    mean = voice_info()["evaluation"]["mean"]
    line = voice_banner()
    assert f"STOI {mean['model']['stoi']:.2f}" in line and f"PESQ {mean['model']['pesq_wb']:.2f}" in line
    assert f"Griffin-Lim {mean['griffin_lim']['stoi']:.2f}" in line and "\n" not in line
