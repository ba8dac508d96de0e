"""What a GPU or TPU would run, checked on this CPU: the training gradient, an evaluation and the synthesis
(and the image flow's gradient and sampling) lowered for cuda and tpu with jax.export hold no conditionals,
ask for HIGHEST precision on every float32 matmul and convolution, and (cuda) run the 3x3 convolutions
natively, forward and backward. Plus the reduced-precision numerics against float32 and float16's dynamic
loss scaling."""

import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import nanoflow_jax as nf
from nanoflow_jax.audio.mel import MelConfig
from nanoflow_jax.models import row_kernel
from nanoflow_jax.models.audio_params import inference_params, init_params
from nanoflow_jax.synth.fast import output_length, synthesis_fn
from nanoflow_jax.train.audio_loss import audio_nll
from nanoflow_jax.train.step import global_batch, init_state, make_mesh, make_train_step, replicate
from tests.conftest import DATA

# small, but every part of the paper's NanoFlow: shared estimator, K heads, embedding, odd K
CFG = nf.ModelConfig(n_flows=3, n_layers=4, channels=16, n_groups=8, embed_dim=8)
OPS = r"stablehlo\.(dot_general|convolution)"
# the image flow's NanoFlow: a shared estimator per level, per-step embeddings and gates, LU 1x1 convs
IMAGE_CFG = nf.GlowConfig(variant="nanoflow", image_size=8, hidden=8, n_levels=2, n_flows=3, embed_dim=2)


def _programs(platform: str, dtype: str = "float32") -> dict[str, str]:
    model = nf.AudioFlow(CFG, dtype=dtype)
    params = jax.eval_shape(lambda: init_params(model, jax.random.PRNGKey(0)))
    audio = jax.ShapeDtypeStruct((2, 4096), jnp.float32)
    loss = audio_nll(model, MelConfig())
    frames = 20
    mel = jax.ShapeDtypeStruct((2, 80, frames), jnp.float32)
    z = jax.ShapeDtypeStruct((2, output_length(frames, CFG)), jnp.float32)
    ip = jax.eval_shape(lambda p: inference_params(model, p), params)
    kernel = [jax.export.DisabledSafetyCheck.custom_call(row_kernel.CUSTOM_CALL)]

    def export(fn, *args):
        return jax.export.export(jax.jit(fn), platforms=(platform,), disabled_checks=kernel)(*args).mlir_module()

    image_model = nf.ImageFlow(IMAGE_CFG, dtype=dtype)
    images = jax.ShapeDtypeStruct((2, 8, 8, 3), jnp.float32)
    variables = jax.eval_shape(image_model.init, jax.random.PRNGKey(0), images)
    bpd = lambda v, x: jnp.mean(image_model.apply(v, x, method="bits_per_dim"))  # noqa: E731
    sample = lambda v: nf.ImageFlow(IMAGE_CFG).apply(v, jax.random.PRNGKey(0), 2, 0.7, method="sample")  # noqa: E731
    return {
        "gradient": export(jax.grad(loss), params, audio),
        "evaluation": export(audio_nll(nf.AudioFlow(CFG), MelConfig()), params, audio),
        "synthesis": export(synthesis_fn(CFG, dtype), ip, mel, z),
        "image gradient": export(jax.grad(bpd), variables, images),
        "image sampling": export(sample, variables),
    }


@pytest.fixture(scope="module", params=["cuda", "tpu"])
def lowered(request):
    return request.param, _programs(request.param)


def _ops(text: str) -> list[str]:
    return [line for line in text.splitlines() if re.search(OPS, line)]


def test_no_conditionals(lowered):
    _, programs = lowered
    for name, text in programs.items():
        assert "stablehlo.case" not in text and "stablehlo.if" not in text, name
        assert "stablehlo.while" in text, name  # the flow scan is there: the check reads the real program


def test_every_float32_matmul_and_convolution_is_highest(lowered):
    _, programs = lowered
    for name, text in programs.items():
        ops = _ops(text)
        assert len(ops) > 10, name
        f32 = [op for op in ops if re.search(r":\s*\(tensor<[^>]*xf32>, tensor<[^>]*xf32>\)", op)]
        assert len(f32) == len(ops), (name, [op for op in ops if op not in f32][:2])
        low = [op for op in f32 if "HIGHEST" not in op]
        assert not low, (name, low[:2])


def test_cuda_gradient_runs_3x3_convolutions_natively():
    text = _programs("cuda")["gradient"]
    convs = [op for op in _ops(text) if "stablehlo.convolution" in op]
    kernels_3x3 = [op for op in convs if re.search(r"tensor<3x3x\d+x\d+xf32>", op)]
    # forward, input gradient and kernel gradient of every estimator layer (in the scan's body)
    assert len(kernels_3x3) >= 3 * CFG.n_layers, len(kernels_3x3)
    # on CPU the same program uses the explicit gradient: matmuls per tap instead of a kernel-gradient conv
    cpu = _programs("cpu")["gradient"]
    cpu_convs = [op for op in _ops(cpu) if "stablehlo.convolution" in op and re.search(r"tensor<3x3x", op)]
    assert len(cpu_convs) < len(kernels_3x3)


def test_reduced_precision_programs_take_narrow_operands():
    programs = _programs("cuda", "bfloat16")
    narrow = r"\(tensor<[^>]*xbf16>, tensor<[^>]*xbf16>\) -> tensor<[^>]*xf32>"
    convs = [op for op in _ops(programs["gradient"]) if "stablehlo.convolution" in op and "3x3x" in op]
    assert convs and all(re.search(narrow, op) for op in convs)
    # the image estimators' convolutions (hidden = 8 output channels) too; its zero convs stay float32
    image = [op for op in _ops(programs["image gradient"]) if re.search(r"tensor<3x3x\d+x8x", op)]
    assert image and all(re.search(narrow, op) for op in image)


# -- numerics of bfloat16 / float16 against float32 --------------------------------------------------------
@pytest.fixture(scope="module")
def official_small():
    d = dict(np.load(os.path.join(DATA, "nanoflow_small.npz")))
    state_dict = {k[len("param/") :]: v for k, v in d.items() if k.startswith("param/")}
    model, params = nf.load_official(state_dict, os.path.join(DATA, "nanoflow_small_config.json"))
    return model, params, d["x"], d["mel"]


def _loss_and_grad(model, params, x, mel, scale=1.0):
    def loss(p):
        z, logdet = model.apply(p, x, mel)
        return nf.nll(z, logdet) * scale

    value, grads = jax.jit(jax.value_and_grad(loss))(params)
    return float(value) / scale, jax.tree.map(lambda g: np.asarray(g, np.float64) / scale, grads)


@pytest.mark.parametrize("dtype,scale", [("bfloat16", 1.0), ("float16", 2.0**12)])
def test_reduced_precision_gradient_is_close_to_float32(official_small, dtype, scale):
    """The official small NanoFlow with trained-like heads (the golden params): loss within 1e-3 nats,
    gradient within 2% (relative L2) of float32."""
    model, params, x, mel = official_small
    ref_loss, ref = _loss_and_grad(model, params, x, mel)
    loss, grads = _loss_and_grad(nf.AudioFlow(model.config, dtype=dtype), params, x, mel, scale)
    a, b = (np.concatenate([g.ravel() for g in jax.tree.leaves(t)]) for t in (grads, ref))
    rel = np.linalg.norm(a - b) / np.linalg.norm(b)
    assert abs(loss - ref_loss) <= 1e-3, (loss, ref_loss)
    assert rel <= 0.02, rel
    assert all(g.dtype == np.float32 for g in jax.tree.leaves(params))


# -- float16 loss scaling --------------------------------------------------------------------------------
def _scaling_step(period=2):
    """loss = sum(c * p): finite, with gradient c; c = 1e30 overflows any gradient scaled beyond 3e8."""
    mesh = make_mesh(jax.devices()[:1])
    tx = optax.sgd(1e-3)
    step = make_train_step(
        lambda p, c: jnp.sum(c * p["w"]), tx, lambda s: 1e-3, mesh, dynamic_scale=True, scale_period=period
    )
    return mesh, tx, step


def test_loss_scale_halves_on_overflow_and_skips_the_step():
    mesh, tx, step = _scaling_step()
    params = {"w": jnp.full((4,), 1e-30, jnp.float32)}
    state = replicate(init_state(params, tx, jax.random.PRNGKey(0), loss_scale=2.0**15), mesh)
    batch = global_batch(np.full((1, 4), 1e30, np.float32), mesh)
    state, metrics = step(state, batch)
    assert not bool(metrics["finite"]) and np.isfinite(float(metrics["loss"]))
    assert float(state.loss_scale) == 2.0**14  # halved
    assert (int(state.skipped), int(state.bad_streak)) == (1, 0)  # skipped, not counted as divergence
    np.testing.assert_array_equal(np.asarray(state.params["w"]), np.asarray(params["w"]))


def test_loss_scale_grows_after_finite_steps_and_unscales_the_gradient():
    mesh, tx, step = _scaling_step(period=2)
    state = replicate(init_state({"w": jnp.ones((4,))}, tx, jax.random.PRNGKey(0), loss_scale=8.0), mesh)
    batch = global_batch(np.ones((1, 4), np.float32), mesh)
    state, m1 = step(state, batch)
    assert float(state.loss_scale) == 8.0 and float(m1["grad_norm"]) == pytest.approx(2.0)  # |(1,1,1,1)|, unscaled
    state, _ = step(state, batch)
    assert float(state.loss_scale) == 16.0  # doubled after 2 finite steps
    np.testing.assert_allclose(np.asarray(state.params["w"]), 1.0 - 2e-3, rtol=1e-6)
