"""The source filter (`model.source_filter`): the mel's envelope as an exact bijection outside the flow.
Invertibility and log-dets of the filter and of models that use it: tests/test_flow_invariants.py."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nanoflow_jax as nf
from nanoflow_jax.audio import mel_spectrogram, read_audio
from nanoflow_jax.flows import source_filter as sf
from nanoflow_jax.models.source_filter import block_envelope
from nanoflow_jax.synth import output_length, receptive_frames, synthesize, synthesize_chunks
from tests.flow_registry import source_filter_config
from tests.helpers import model_and_params

SPEECH = "nanoflow_jax/data/demo_corpus/wavs/SLT-0001.wav"
SPEECH_CFG = nf.ModelConfig(source_filter="lpc")  # the Tacotron2 mel, order 24


@pytest.fixture(scope="module")
def speech():
    x, rate = read_audio(SPEECH)
    assert rate == 22050
    x = jnp.asarray(x[: 256 * 120])[None]
    return x, mel_spectrogram(x)


def _max_pole(a: np.ndarray) -> float:
    return max(float(np.max(np.abs(np.roots(np.r_[1.0, row])))) for row in np.asarray(a).reshape(-1, a.shape[-1]))


@pytest.mark.parametrize("kind", ["speech", "silence", "tts_like", "one_loud_band"], ids=lambda k: k)
def test_envelope_is_minimum_phase_and_finite(kind, speech):
    blocks = 40
    if kind == "speech":
        mel = speech[1]
    elif kind == "silence":  # the log-mel floor everywhere
        mel = jnp.full((1, 80, blocks + 1), np.log(1e-5))
    elif kind == "tts_like":  # smooth, over-confident envelopes
        mel = -6 + 3 * jnp.cos(jnp.linspace(0, 9, 80))[None, :, None] * jnp.ones((1, 1, blocks + 1))
    else:  # a single sharp peak: the hardest envelope to fit
        mel = jnp.full((1, 80, blocks + 1), -11.5).at[:, 20].set(2.0)
    a, log_gain = block_envelope(mel, SPEECH_CFG, blocks)
    assert a.shape == (1, blocks, 24) and log_gain.shape == (1, blocks)
    assert np.all(np.isfinite(np.asarray(a))) and np.all(np.isfinite(np.asarray(log_gain)))
    assert _max_pole(a) < 1.0


def test_speech_round_trip_and_whitening(speech):
    x, mel = speech
    a, log_gain = block_envelope(mel, SPEECH_CFG, sf.n_blocks(x.shape[1], 256))
    e, _ = sf.whiten(x, a, log_gain, 256)
    x_back, _ = jax.jit(lambda e: sf.colour(e, a, log_gain, 256))(e)
    np.testing.assert_allclose(x_back, x, atol=2e-5, rtol=0)

    # the excitation is flatter than the speech: its spectrum's spread (dB) is far smaller
    def spread(v):
        p = np.abs(np.fft.rfft(np.asarray(v[0]).reshape(-1, 1024) * np.hanning(1024), axis=1)) ** 2
        return float(np.std(10 * np.log10(p.mean(0)[10:350] + 1e-20)))

    assert spread(e) < 0.5 * spread(x)


def test_gain_mode_is_a_per_block_scale(speech):
    x, mel = speech
    cfg = dataclasses.replace(SPEECH_CFG, source_filter="gain")
    a, log_gain = block_envelope(mel, cfg, sf.n_blocks(x.shape[1], 256))
    assert float(jnp.max(jnp.abs(a))) == 0.0
    e, _ = sf.whiten(x, a, log_gain, 256)
    np.testing.assert_allclose(e, x * jnp.exp(-sf.per_sample(log_gain, 256, x.shape[1])), rtol=1e-6)


def test_colour_in_pieces_carries_the_state():
    cfg = source_filter_config("lpc")
    hop = cfg.hop_length
    mel = 2.0 * jax.random.normal(jax.random.PRNGKey(1), (2, cfg.cond_channels, 12))
    a, log_gain = block_envelope(mel, cfg, 11)
    e = jax.random.normal(jax.random.PRNGKey(2), (2, 11 * hop - 5))
    whole, end = sf.colour(e, a, log_gain, hop)
    first, state = sf.colour(e[:, : 4 * hop], a[:, :4], log_gain[:, :4], hop)
    second, end2 = sf.colour(e[:, 4 * hop :], a[:, 4:], log_gain[:, 4:], hop, state)
    np.testing.assert_allclose(jnp.concatenate([first, second], 1), whole, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(end2, end, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(end, jnp.flip(whole[:, -cfg.lpc_order :], 1))
    restarted, _ = sf.colour(e[:, 4 * hop :], a[:, 4:], log_gain[:, 4:], hop)  # the state does matter
    assert float(jnp.max(jnp.abs(restarted - second))) > 1e-3
    # and whitening continues from the same state
    e2, _ = sf.whiten(second, a[:, 4:], log_gain[:, 4:], hop, state)
    np.testing.assert_allclose(e2, e[:, 4 * hop :], atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="module")
def filtered():
    cfg = source_filter_config("lpc")
    model, params, audio, mel = model_and_params(cfg, batch=2, width=16, frames=5)
    return cfg, model, params, audio, mel


def test_likelihood_is_the_flows_on_the_excitation_minus_the_gains(filtered):
    cfg, model, params, audio, mel = filtered
    z, logdet = model.apply(params, audio, mel)
    plain = nf.build_model(dataclasses.replace(cfg, source_filter="none"))
    a, log_gain = block_envelope(mel, cfg, sf.n_blocks(audio.shape[1], cfg.hop_length))
    e, _ = sf.whiten(audio, a, log_gain, cfg.hop_length)
    z_plain, logdet_plain = plain.apply(params, e, mel)  # the same params: the filter has none
    np.testing.assert_allclose(z, z_plain, atol=1e-5, rtol=0)
    gains = jnp.sum(sf.per_sample(log_gain, cfg.hop_length, audio.shape[1]), axis=1)
    np.testing.assert_allclose(logdet, logdet_plain - gains, rtol=1e-5, atol=1e-4)
    assert float(jnp.max(jnp.abs(gains))) > 1.0  # the filter's term is not negligible here
    assert jax.tree.structure(params) == jax.tree.structure(plain.init(jax.random.PRNGKey(0), audio[:1, :4], mel[:1]))


def test_padded_items_count_their_own_samples(filtered):
    cfg, model, params, audio, _ = filtered
    n, mel_cfg = 48, dict(n_fft=64, win_length=64, hop_length=16, sample_rate=4000, fmax=2000.0, n_mels=5)
    z_alone, logdet_alone = model.apply(params, audio[:1, :n], mel_spectrogram(audio[:1, :n], **mel_cfg))
    lengths = jnp.asarray([n])
    z_pad, logdet_pad = model.apply(
        params, audio[:1], mel_spectrogram(audio[:1], lengths=lengths, **mel_cfg), lengths=lengths
    )
    np.testing.assert_allclose(z_pad[:, :n], z_alone, atol=1e-5, rtol=0)
    np.testing.assert_allclose(logdet_pad, logdet_alone, rtol=1e-5, atol=1e-4)


def test_fast_synthesis_equals_the_slow_inverse(filtered):
    cfg, model, params, audio, mel = filtered
    z = 0.8 * jax.random.normal(jax.random.PRNGKey(7), (1, output_length(12, cfg)))
    mel12 = jax.random.normal(jax.random.PRNGKey(8), (1, cfg.cond_channels, 12))
    slow = model.apply(params, z, mel12, method="inverse")[0]
    fast = synthesize(model, params, mel12, z=z)
    np.testing.assert_allclose(fast, slow, atol=1e-4, rtol=0)


def test_chunks_equal_the_whole_with_the_filter_state_carried(filtered):
    cfg, model, params, _, _ = filtered
    frames = 120
    mel = np.asarray(jax.random.normal(jax.random.PRNGKey(3), (cfg.cond_channels, frames)))
    z = 0.8 * np.asarray(jax.random.normal(jax.random.PRNGKey(4), (output_length(frames, cfg),)))
    whole = synthesize(model, params, mel, z=z[None], chunk_frames=0)[0]
    reach = receptive_frames(cfg)
    pieces = list(synthesize_chunks(model, params, mel, chunk_frames=24, overlap_frames=reach, z=z))
    assert len(pieces) > 3
    np.testing.assert_allclose(np.concatenate(pieces), whole, atol=1e-4, rtol=0)
