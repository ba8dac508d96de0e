"""nf.Vocoder: built once (params folded once), mels checked once, the same audio as every other path."""

import os
import sys

import jax
import numpy as np
import pytest

import nanoflow_jax as nf
from nanoflow_jax.synth.command import SynthArgs, run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PT = os.path.join(ROOT, "tests", "data", "nanoflow_small_official_ckpt.pt")
CONFIG = os.path.join(ROOT, "tests", "data", "nanoflow_small_config.json")


@pytest.fixture(scope="module")
def vocoder():
    return nf.load_vocoder(official=PT, config=CONFIG)


def _count(monkeypatch, name: str, module: str) -> list[int]:
    """Count calls of `module.name`, however it was imported (every module holding it is patched)."""
    original = getattr(sys.modules[module], name)
    calls = []

    def counted(*a, **k):
        calls.append(1)
        return original(*a, **k)

    for mod in list(sys.modules.values()):
        if getattr(mod, name, None) is original:
            monkeypatch.setattr(mod, name, counted)
    return calls


def test_a_synth_call_folds_params_once_and_checks_its_mel_once(tmp_path, monkeypatch):
    folds = _count(monkeypatch, "inference_params", "nanoflow_jax.models.audio_params")
    checks = _count(monkeypatch, "check_mels", "nanoflow_jax.synth.fast")
    batches = _count(monkeypatch, "as_batch", "nanoflow_jax.synth.fast")
    mel = tmp_path / "m.npy"
    np.save(mel, np.full((80, 20), -5.0, np.float32))
    written = run(SynthArgs(mel=str(mel), official=PT, config=CONFIG, out=str(tmp_path / "o.wav")), log=lambda *_: None)
    assert written == [str(tmp_path / "o.wav")]
    assert (len(folds), len(checks), len(batches)) == (1, 1, 1)


def test_the_vocoder_describes_itself(vocoder):
    cfg = vocoder.config
    assert vocoder.sample_rate == 22050 and vocoder.hop_length == cfg.hop_length == 256
    assert vocoder.min_frames == 4 and vocoder.output_length(20) == 256 * 17
    assert vocoder.output_length(vocoder.min_frames - 1) == 0
    assert "K=" in repr(vocoder)


def test_every_path_gives_the_same_audio(vocoder):
    model, params = nf.load_official(PT, CONFIG)
    mel = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (80, 24))) - 4.0
    rng = jax.random.PRNGKey(1)
    a = vocoder.synthesize(mel, temperature=0.7, rng=rng)
    b = nf.synthesize(model, params, mel, temperature=0.7, rng=rng)
    c = vocoder.synthesize(vocoder.prepare([mel]), temperature=0.7, rng=rng)[0]
    pieces = np.concatenate(
        list(vocoder.synthesize_chunks(mel, chunk_frames=8, overlap_frames=64, temperature=0.7, rng=rng))
    )
    assert a.shape == (1, vocoder.output_length(24))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a[0], c)
    np.testing.assert_allclose(pieces, a[0], atol=1e-5)


def test_mels_are_checked_at_the_boundary(vocoder):
    with pytest.raises(ValueError, match="at least 4 frames"):
        vocoder.prepare(np.zeros((80, 3), np.float32))
    with pytest.raises(ValueError, match="NaN or Inf"):
        vocoder.prepare(np.full((80, 8), np.nan, np.float32))
    with pytest.raises(ValueError, match="80"):
        vocoder.prepare(np.zeros((40, 8), np.float32))
    with pytest.raises(ValueError, match="dtype"):
        vocoder.synthesize(np.zeros((80, 8), np.float32), dtype="float8")


def test_mel_settings_must_agree_with_the_model(vocoder):
    with pytest.raises(ValueError, match="disagree"):
        nf.Vocoder(vocoder.model, vocoder.params, nf.MelConfig(hop_length=200, win_length=800))


def test_the_copy_synthesis_scorer_scores_what_it_synthesises(vocoder):
    from nanoflow_jax.audio import quality
    from nanoflow_jax.synth.scoring import CopySynthesisScorer

    scorer = CopySynthesisScorer(vocoder, griffin_lim_iters=4)
    x = (0.1 * np.sin(np.arange(16000) / 5.0) * np.sin(np.arange(16000) / 300.0)).astype(np.float32)
    rng = jax.random.PRNGKey(3)
    row = scorer(x, 0.5, rng)
    t = 16000 // 256 * 256
    mel = quality.log_mel(x[:t], vocoder.mel_config)
    y = vocoder.synthesize(mel, temperature=0.5, rng=rng)[0]
    n = min(t, len(y))
    want = quality.all_metrics(x[:n], y[:n], mel, vocoder.mel_config)
    assert row["seconds"] == n / 22050 and set(row) == {"seconds", "model", "griffin_lim"}
    for k, v in want.items():
        np.testing.assert_equal(row["model"][k], v)
    assert scorer(x[: 8 * 256 - 1], 0.5, rng) is None  # too short to score


def test_a_vocoder_samples_at_its_own_temperature_unless_told(vocoder):
    mel = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (80, 24))) - 4.0
    rng = jax.random.PRNGKey(2)
    warm = nf.Vocoder(vocoder.model, vocoder.params, vocoder.mel_config, temperature=0.6)
    np.testing.assert_array_equal(warm.synthesize(mel, rng=rng), vocoder.synthesize(mel, temperature=0.6, rng=rng))
    np.testing.assert_array_equal(
        warm.synthesize(mel, temperature=0.9, rng=rng), vocoder.synthesize(mel, temperature=0.9, rng=rng)
    )
    assert vocoder.temperature == 1.0  # a checkpoint names none
    shipped = nf.load_vocoder()
    assert shipped.temperature == nf.voice_info().get("temperature", 1.0)
