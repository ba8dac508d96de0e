"""Other sample rates and hops: the conditioner built from the hop, the recipes of configs/rates.py at tiny
size (a few training steps, exact fast inverse, hop * (F - 3) samples), and the hop checks."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import nanoflow_jax as nf
from configs import demo, rates
from nanoflow_jax.errors import ConfigError
from nanoflow_jax.models.audio_config import upsample_strides
from nanoflow_jax.synth import output_length, synthesize
from nanoflow_jax.train.run import task_from_config
from tests.helpers import perturb

TINY = dict(channels=8, n_layers=4, n_flows=2, embed_dim=8, n_groups=8)


@pytest.mark.parametrize(
    "hop, strides", [(256, (16, 16)), (200, (10, 20)), (300, (10, 30)), (512, (16, 32)), (480, (20, 24))]
)
def test_strides_multiply_to_the_hop_and_stay_official_at_256(hop, strides):
    assert upsample_strides(hop) == strides
    model = nf.build_model(nf.ModelConfig(**TINY, hop_length=hop))
    params = nf.models.audio_params.init_params(model, jax.random.PRNGKey(0))["params"]
    assert [params["conditioner"][f"stage_{i}"]["v"].shape[1] for i in (0, 1)] == [2 * s for s in strides]
    frames = 8
    c = model.apply({"params": params}, jnp.zeros((1, 80, frames)), hop * frames, method="condition")
    assert c.shape[1] * c.shape[2] == hop * frames  # G x W samples of conditioning


@pytest.mark.parametrize("hop", [110, 258, 3])
def test_a_hop_without_two_even_strides_is_one_line(hop):
    with pytest.raises(ConfigError, match=r"model.hop_length = \d+ is not allowed"):
        nf.ModelConfig(hop_length=hop)


def test_data_and_model_hop_must_agree_and_the_window_fit_the_rate():
    c = demo.get_config()
    c.data.hop_length = 300
    assert c.model.hop_length == 300  # one reference: overriding data sets the upsampling too
    with pytest.raises(ConfigError, match="data.hop_length = 300 is not allowed: at most data.win_length"):
        task_from_config(dict(c.to_dict(), data=dict(c.data.to_dict(), win_length=256)))
    with pytest.raises(ConfigError, match="data.win_length = 1024 is not allowed: 5.3 ms at data.sample_rate = 192000"):
        task_from_config(dict(c.to_dict(), data=dict(c.data.to_dict(), sample_rate=192000, fmax=8000.0)))
    bad = dict(c.to_dict(), model=dict(c.model.to_dict(), hop_length=200))
    with pytest.raises(ConfigError, match="data.hop_length = 300 is not allowed: must equal model.hop_length = 200"):
        task_from_config(bad).check(1)


# 24 kHz in the default run; the other three recipes (15 s each) with the slow tests
@pytest.mark.parametrize("variant", [v if v == "24k" else pytest.param(v, marks=pytest.mark.slow) for v in rates.RATES])
def test_rate_recipe_trains_and_synthesises_exactly(variant):
    c = rates.get_config(f"{variant},demo")
    c.model.update(TINY)
    task = task_from_config(c)
    d, m = task.data, task.model_config
    assert (d.sample_rate, d.hop_length, m.hop_length) == (
        rates.RATES[variant]["sample_rate"],
        rates.RATES[variant]["hop_length"],
        rates.RATES[variant]["hop_length"],
    )
    # a few steps of the task's own loss (mel computed in the step at this rate) from its initial params
    seg = d.segment_length
    t = np.arange(seg) / d.sample_rate
    batch = jnp.asarray(np.stack([0.3 * np.sin(2 * np.pi * f * t) for f in (220.0, 330.0)]), jnp.float32)
    params = task.init_variables(jax.random.PRNGKey(0))
    tx = optax.adam(1e-3)
    opt = tx.init(params)

    @jax.jit
    def step(params, opt):
        loss, grads = jax.value_and_grad(task.loss)(params, batch)
        updates, opt = tx.update(grads, opt)
        return optax.apply_updates(params, updates), opt, loss

    losses = []
    for _ in range(3):
        params, opt, loss = step(params, opt)
        losses.append(float(loss))
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
    # synthesis: hop * (F - 3) samples, the fast inverse equal to the slow one (heads perturbed: every
    # flow does real work)
    params = perturb(params, jax.random.PRNGKey(2))
    model, frames = task.eval_model, 7
    mel = nf.mel_spectrogram(batch[:1, : d.hop_length * (frames - 1)], d)
    assert mel.shape[2] == frames
    n = output_length(frames, m)
    assert n == d.hop_length * (frames - 3) // m.n_groups * m.n_groups
    z = 0.5 * jax.random.normal(jax.random.PRNGKey(1), (1, n))
    fast = synthesize(model, params, mel, z=z)
    slow = model.apply(params, z, mel, method="inverse")[0]
    assert fast.shape == (1, n)
    np.testing.assert_allclose(fast, slow, atol=1e-4, rtol=0)


def test_official_models_keep_hop_256():
    cfg = dataclasses.replace(nf.ModelConfig(), n_flows=1)
    assert cfg.hop_length == 256 and cfg.strides == (16, 16)


@pytest.mark.parametrize("stride", [2, 4, 10, 16, 32])
def test_the_upsampler_is_the_transposed_convolution(stride):
    """The conditioner's multiply-add form (no convolution call: one a CUDA graph can record) against
    PyTorch's ConvTranspose2d(1, 1, (3, 2s), stride (1, s), padding (1, s / 2)) written as XLA's
    convolution of the stride-dilated input with the flipped kernel."""
    from nanoflow_jax.models.conditioner import transposed_conv

    x = jax.random.normal(jax.random.PRNGKey(stride), (2, 6, 9))
    w = jax.random.normal(jax.random.PRNGKey(stride + 1), (3, 2 * stride))
    flipped = jnp.flip(w, (0, 1))[..., None, None]
    ref = jax.lax.conv_general_dilated(
        x[..., None],
        flipped,
        (1, 1),
        ((1, 1), (2 * stride - 1 - stride // 2,) * 2),
        lhs_dilation=(1, stride),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=jax.lax.Precision.HIGHEST,
    )[..., 0]
    out = transposed_conv(x, w, stride)
    assert out.shape == ref.shape == (2, 6, 9 * stride)
    np.testing.assert_allclose(out, ref, atol=2e-6)
