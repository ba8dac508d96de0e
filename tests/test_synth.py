"""The cached fast inverse: exact against the model's slow inverse and the official synthesis."""

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nanoflow_jax as nf
from nanoflow_jax.synth import output_length, synthesize
from tests.conftest import DATA
from tests.helpers import max_err, model_and_params, tiny
from tests.test_golden import MODELS, flat, official_config

FRAMES = 6


def _case(name, coupling="affine", frames=FRAMES):
    cfg = tiny(name, coupling)
    model, params, _, mel = model_and_params(cfg, frames=frames)
    t = output_length(frames, cfg)
    z = 0.7 * jax.random.normal(jax.random.PRNGKey(7), (mel.shape[0], t))
    return model, params, mel, z


# the four architectures, odd and even K, concatenated embedding, partial sharing, a dilation cycle (the
# other injection options are covered by the default nanoflow, which has additive and multiplicative)
EXACT_CASES = [
    "waveflow",
    "naive",
    "decomp",
    "nanoflow",
    "nanoflow_even_k",
    "nanoflow_concat",
    "nanoflow_partial",
    "decomp_partial",
    "dilation_cycle",
]


@pytest.mark.parametrize("name", EXACT_CASES)
def test_fast_equals_slow_inverse(name):
    model, params, mel, z = _case(name)
    slow = model.apply(params, z, mel, method="inverse")[0]
    np.testing.assert_allclose(synthesize(model, params, mel, z=z), slow, atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", ["waveflow", "naive", "nanoflow", "dilation_cycle"])
def test_fast_inverts_forward_spline(name):
    model, params, mel, z = _case(name, "spline")
    z_back, _ = model.apply(params, synthesize(model, params, mel, z=z), mel)
    np.testing.assert_allclose(z_back, z, atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", ["nanoflow", "nanoflow_partial"])
def test_per_row_conditioning_equals_cached(name):
    model, params, mel, z = _case(name)
    cached = synthesize(model, params, mel, z=z, cache_cond=True)
    np.testing.assert_allclose(synthesize(model, params, mel, z=z, cache_cond=False), cached, atol=1e-5, rtol=0)


def test_wide_dilations_drop_taps_exactly():
    """Width dilations beyond the row width: those taps see only padding and are dropped."""
    cfg = dataclasses.replace(tiny("nanoflow"), n_layers=6, n_groups=16, height_dilation_cycle=2)
    model, params, _, mel = model_and_params(cfg, frames=4)
    z = jax.random.normal(jax.random.PRNGKey(1), (2, output_length(4, cfg)))  # 16 columns, dilations to 32
    slow = model.apply(params, z, mel, method="inverse")[0]
    np.testing.assert_allclose(synthesize(model, params, mel, z=z), slow, atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", ["nanoflow", "waveflow"])
def test_batch_of_different_lengths(name):
    model, params, mel, _ = _case(name, frames=8)
    lengths = [8, 5, 7]
    mels = [np.asarray(mel[i % 2, :, :f]) for i, f in enumerate(lengths)]
    zs = [
        0.7 * jax.random.normal(jax.random.PRNGKey(i), (output_length(f, model.config),)) for i, f in enumerate(lengths)
    ]
    outs = synthesize(model, params, mels, z=zs)
    assert [o.shape[0] for o in outs] == [output_length(f, model.config) for f in lengths]
    for m, z, o in zip(mels, zs, outs, strict=True):
        alone = model.apply(params, z[None], jnp.asarray(m)[None], method="inverse")[0][0]
        np.testing.assert_allclose(o, alone, atol=1e-4, rtol=0)


def test_temperature_and_rng():
    model, params, mel, _ = _case("nanoflow")
    a = synthesize(model, params, mel, rng=jax.random.PRNGKey(3), temperature=0.5)
    b = synthesize(model, params, mel, rng=jax.random.PRNGKey(3), temperature=0.5)
    c = synthesize(model, params, mel, rng=jax.random.PRNGKey(4), temperature=0.5)
    np.testing.assert_array_equal(a, b)
    assert max_err(a, c) > 1e-3
    z = 0.5 * jax.random.normal(jax.random.PRNGKey(3), a.shape)
    np.testing.assert_allclose(a, synthesize(model, params, mel, z=z), atol=1e-6, rtol=0)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_reduced_precision_close(dtype):
    model, params, mel, z = _case("nanoflow")
    ref = synthesize(model, params, mel, z=z)
    out = synthesize(model, params, mel, z=z, dtype=dtype)
    assert out.dtype == np.float32
    snr = 10 * np.log10(np.sum(ref**2) / np.sum((out - ref) ** 2))
    assert snr > 20, snr


def test_non_finite_reduced_precision_falls_back(monkeypatch):
    from nanoflow_jax.synth import fast

    model, params, mel, z = _case("nanoflow")
    real = fast.synthesis_fn

    def broken(cfg, dtype="float32", *a, **k):  # a reduced-precision run that overflows
        fn = real(cfg, dtype, *a, **k)
        return (lambda *args: fn(*args) * jnp.inf) if dtype != "float32" else fn

    monkeypatch.setattr(fast, "synthesis_fn", broken)
    with pytest.warns(UserWarning, match="redoing it in float32"):
        out = synthesize(model, params, mel, z=z, dtype="float16")
    np.testing.assert_allclose(out, synthesize(model, params, mel, z=z), atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "mel, match",
    [
        (np.zeros((2, 5, 2), np.float32), "at least"),
        (np.zeros((2, 7, 6), np.float32), r"\(5, frames\)"),
        (np.full((1, 5, 6), np.nan, np.float32), "NaN"),
    ],
)
def test_bad_mel_errors(mel, match):
    model, params, _, _ = _case("nanoflow")
    with pytest.raises(ValueError, match=match):
        synthesize(model, params, mel)


@pytest.mark.parametrize("name", MODELS)
def test_matches_official_synthesis(name):
    d = dict(np.load(os.path.join(DATA, name + ".npz")))
    state_dict = {k[len("param/") :]: v for k, v in d.items() if k.startswith("param/")}
    model, params = nf.load_official(state_dict, official_config(name))
    audio = synthesize(model, params, d["mel"], z=flat(d["z_syn"]))
    np.testing.assert_allclose(audio, d["audio_syn_slow"], atol=1e-4, rtol=0)
    if name != "nanoflow_naive_small":  # the official fast path is wrong for naive; its slow path is right
        np.testing.assert_allclose(audio, d["audio_syn_fast"], atol=1e-4, rtol=0)


def test_row_form_equals_the_full_estimator_layer_by_layer():
    """models.row_inverse, row by row, against the 2-D estimator it mirrors: every layer's output on
    every row, and the head's projection, for one flow of a NanoFlow with a height-dilation cycle (so the
    row caches hold lags 1, 2 and 4) and multiplicative gates."""
    from nanoflow_jax.flows import shift_rows, to_rows
    from nanoflow_jax.models import AudioFlow, precision_policy
    from nanoflow_jax.models.heads import project
    from nanoflow_jax.models.row_inverse import RowEstimator
    from nanoflow_jax.models.wavenet2d import WaveNet2D, fold_embedding

    cfg = dataclasses.replace(tiny("nanoflow"), n_layers=3, n_groups=8, height_dilation_cycle=3)
    model, params, audio, mel = model_and_params(cfg, frames=2)
    infer = nf.inference_params(model, params)
    p = infer["params"]
    g, flow = cfg.n_groups, 1  # flow 1 runs down the rows
    xs = jax.tree.map(lambda a: a[flow], model.apply(infer, True, method=AudioFlow.per_flow_inputs))
    assert int(xs["upward"]) == 0
    x_in = shift_rows(to_rows(audio, g), 0)  # row i sees rows < i
    c = model.apply(infer, mel, audio.shape[1], method=AudioFlow.condition)
    full = []
    for j in range(cfg.n_layers):
        est = WaveNet2D(cfg, 0, j + 1, has_front=True)
        full.append(
            est.apply(
                {"params": p["estimator"]}, x_in, c, None, xs["bias"][: j + 1], xs["gates"][: j + 1], 0, method="run"
            )
        )
    row = RowEstimator(cfg, x_in.shape[2], precision_policy("float32"))
    front, weights = WaveNet2D(cfg).apply({"params": p["estimator"]}, method=WaveNet2D.row_weights)
    layers = [row.layer_weights(w, j) for j, w in enumerate(weights)]
    layers, head_const, head_scale = row.fold_head(layers, xs["head"])
    front = fold_embedding(*front, None)
    caches = row.init_caches(x_in.shape[0])
    for i in range(g):
        start = max(s for s, _ in row.phases() if s <= i)
        h = x_in[:, i][..., None] * front[0] + front[1]
        proj = head_const
        for j, w in enumerate(layers):
            cond = c[:, i] @ w["cond"] + w["cond_bias"] + w["bias"] + xs["bias"][j]
            h, skip, caches[j] = row.layer_step(j, i, start, h, caches[j], w, cond, xs["gates"][j], None)
            proj = proj + skip
            if j < cfg.n_layers - 1:
                assert max_err(h, full[j][0][:, i]) < 1e-5, (i, j)
        want = project(full[-1][1][:, i], xs["head"])
        assert max_err(proj * head_scale, want) < 1e-5, i
