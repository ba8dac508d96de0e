"""Long-form synthesis: chunks over time with an overlap of context, from the same z as the whole utterance."""

import jax
import numpy as np
import pytest

import nanoflow_jax as nf
from nanoflow_jax.synth import output_length, receptive_frames, synthesize, synthesize_chunks
from nanoflow_jax.synth.chunked import chunk_spans
from tests.helpers import model_and_params

# hop 16 keeps the receptive field (K * (G - 1) * (2 ** L - 1) columns) a few dozen frames long
CFG = nf.ModelConfig(n_flows=2, n_layers=3, channels=8, n_groups=8, cond_channels=5, embed_dim=4, hop_length=16)
FRAMES = 200


@pytest.fixture(scope="module")
def case():
    model, params, _, _ = model_and_params(CFG)
    mel = np.asarray(jax.random.normal(jax.random.PRNGKey(3), (CFG.cond_channels, FRAMES)))
    z = 0.8 * np.asarray(jax.random.normal(jax.random.PRNGKey(4), (output_length(FRAMES, CFG),)))
    whole = synthesize(model, params, mel, z=z[None], chunk_frames=0)[0]
    return model, params, mel, z, whole


def test_receptive_field_is_k_rows_layers():
    assert receptive_frames(CFG) == -(-2 * 7 * 7 * 8 // 16) == 49


def test_spans_cover_the_output_once_in_order():
    for frames, chunk, overlap in [(200, 40, 0), (200, 40, 49), (57, 10, 3), (7, 100, 5)]:
        spans = chunk_spans(frames, CFG, chunk, overlap)
        kept = [(s * CFG.hop_length + a, s * CFG.hop_length + b) for s, n, a, b in spans]
        assert kept[0][0] == 0 and kept[-1][1] == output_length(frames, CFG)
        assert all(x[1] == y[0] for x, y in zip(kept, kept[1:], strict=False))
        assert all(s + n <= frames and b <= output_length(n, CFG) for s, n, _, b in spans)


def test_chunks_equal_the_whole_once_the_overlap_covers_the_field(case):
    model, params, mel, z, whole = case
    errors = {}
    for overlap in (0, 4, receptive_frames(CFG)):
        pieces = list(synthesize_chunks(model, params, mel, chunk_frames=40, overlap_frames=overlap, z=z))
        assert len(pieces) == 5
        out = np.concatenate(pieces)
        assert out.shape == whole.shape
        errors[overlap] = float(np.max(np.abs(out - whole)))
    assert errors[receptive_frames(CFG)] < 1e-5
    assert errors[0] > 100 * errors[receptive_frames(CFG)]  # the edges do matter: the test can fail
    assert errors[4] <= errors[0]


def test_synthesize_chunks_long_mels_with_the_same_noise(case):
    model, params, mel, _, _ = case
    rng = jax.random.PRNGKey(9)
    short = mel[:, :120]
    whole = synthesize(model, params, [mel, short], rng=rng, temperature=0.7, chunk_frames=0)
    chunked = synthesize(
        model, params, [mel, short], rng=rng, temperature=0.7, chunk_frames=64, overlap_frames=receptive_frames(CFG)
    )
    for a, b in zip(whole, chunked, strict=True):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
    batched = synthesize(model, params, mel[None], rng=rng, chunk_frames=64, overlap_frames=60)
    assert batched.shape == (1, output_length(FRAMES, CFG))


def test_chunked_input_errors_are_checked_before_any_chunk(case):
    model, params, mel, _, _ = case
    bad = mel.copy()
    bad[0, -1] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        next(synthesize_chunks(model, params, bad, chunk_frames=40))
    with pytest.raises(ValueError, match="chunk_frames must be >= 1"):
        next(synthesize_chunks(model, params, mel, chunk_frames=0))
