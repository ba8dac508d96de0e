"""The voice that ships: it loads for library users and is synth.py's default; a voice folder round-trips."""

import os

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
