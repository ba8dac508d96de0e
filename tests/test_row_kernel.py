"""The fused row kernel (models/row_kernel.py: one Pallas kernel per layer-row, the form CUDA programs
get) against the XLA row form, in interpret mode on CPU; and that a CUDA program holds it."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nanoflow_jax as nf
from nanoflow_jax.models import AudioFlow, row_kernel
from nanoflow_jax.models.audio_params import inference_params, init_params
from nanoflow_jax.models.row_inverse import fused_applies
from nanoflow_jax.synth.fast import output_length, synthesis_fn
from tests.helpers import perturb, tiny

FRAMES = 9


def _inputs(cfg, batch=2):
    model = AudioFlow(cfg)
    params = perturb(init_params(model, jax.random.PRNGKey(0)), jax.random.PRNGKey(1))
    params = inference_params(model, params)
    t = output_length(FRAMES, cfg)
    mel = jax.random.normal(jax.random.PRNGKey(2), (batch, cfg.cond_channels, FRAMES)) - 4.0
    z = 0.8 * jax.random.normal(jax.random.PRNGKey(3), (batch, t))
    widths = jnp.array([t // cfg.n_groups, t // cfg.n_groups - 5])[:batch]  # the second item is shorter
    return params, mel, z, widths


def _both(cfg, dtype):
    params, mel, z, widths = _inputs(cfg)
    model = AudioFlow(cfg, dtype=nf.models.precision_policy(dtype).operand_dtype)

    def run(fused, interpret):
        args = (widths, True, cfg.n_groups, False, fused, interpret)
        return model.apply(params, z, mel, *args, method=AudioFlow.fast_inverse)

    return np.asarray(run(False, False)), np.asarray(run(True, True))


@pytest.mark.parametrize("name", ["nanoflow", "nanoflow_exp_gate", "nanoflow_concat", "dilation_cycle"])
def test_fused_rows_equal_the_xla_rows(name):
    cfg = dataclasses.replace(tiny(name), channels=16)
    assert fused_applies(cfg, True)
    xla, fused = _both(cfg, "float32")
    assert np.abs(xla).max() > 0.5
    np.testing.assert_allclose(fused, xla, atol=2e-5)


def test_fused_rows_in_bfloat16():
    """Both bfloat16 forms round differently; each is as far from float32 as the other."""
    cfg = dataclasses.replace(tiny("nanoflow"), channels=32, n_groups=8, n_layers=3)
    exact, _ = _both(cfg, "float32")
    xla, fused = _both(cfg, "bfloat16")
    rms = lambda a: float(np.sqrt(np.mean((a - exact) ** 2)))  # noqa: E731
    assert 0 < rms(fused) <= 1.1 * rms(xla) < 0.01 * np.abs(exact).max()
    assert np.abs(fused - exact).max() <= 1.5 * np.abs(xla - exact).max()


def test_models_the_kernel_does_not_take_keep_the_xla_rows():
    for cfg in (tiny("nanoflow_partial"), tiny("nanoflow")):  # own layers; 8 channels
        assert not fused_applies(dataclasses.replace(cfg, channels=16 if cfg.shared_layers else 8), True)
    cfg = tiny("nanoflow_partial")
    xla, fused = _both(dataclasses.replace(cfg, channels=16), "float32")
    np.testing.assert_array_equal(fused, xla)


def test_a_cuda_program_has_one_kernel_per_layer_row():
    cfg = nf.ModelConfig(n_flows=2, n_layers=3, channels=16, n_groups=8, embed_dim=8)
    model = AudioFlow(cfg)
    params = jax.eval_shape(lambda: inference_params(model, init_params(model, jax.random.PRNGKey(0))))
    mel = jax.ShapeDtypeStruct((1, 80, FRAMES), jnp.float32)
    z = jax.ShapeDtypeStruct((1, output_length(FRAMES, cfg)), jnp.float32)
    checks = [jax.export.DisabledSafetyCheck.custom_call(row_kernel.CUSTOM_CALL)]
    lowered = {
        p: jax.export.export(synthesis_fn(cfg, "bfloat16"), platforms=(p,), disabled_checks=checks)(params, mel, z)
        for p in ("cuda", "cpu")
    }
    cuda, cpu = (lowered[p].mlir_module() for p in ("cuda", "cpu"))
    # each phase's unrolled rows call one lowered body: at least one kernel per layer in the text (the
    # launches per layer-row are counted in the compiled program by bench.gpu_program's test)
    assert cuda.count(f"@{row_kernel.CUSTOM_CALL}") >= cfg.n_layers
    assert row_kernel.CUSTOM_CALL not in cpu


def test_fused_rows_give_the_official_synthesis():
    """The golden NanoFlow (C=32, every layer shared): the fused rows from the official z and mel give
    the official code's audio."""
    import os

    from tests.conftest import DATA
    from tests.test_golden import flat, official_config

    d = dict(np.load(os.path.join(DATA, "nanoflow_small.npz")))
    state_dict = {k[len("param/") :]: v for k, v in d.items() if k.startswith("param/")}
    model, params = nf.load_official(state_dict, official_config("nanoflow_small"))
    cfg = model.config
    assert fused_applies(cfg, True)
    ip = nf.inference_params(model, params)
    args = (None, True, cfg.n_groups, False, True, True)  # widths, cache_cond, unroll, excitation, fused, interpret
    audio = model.apply(ip, flat(d["z_syn"]), d["mel"], *args, method=AudioFlow.fast_inverse)
    np.testing.assert_allclose(audio, d["audio_syn_slow"], atol=1e-4, rtol=0)
