"""Glow and NanoFlow-Glow: ActNorm's data-dependent init, the LU log-det, parameter counts against the
official models, gradients, and data loading. (Invertibility and log-determinants of every image flow and
step type: tests/test_flow_invariants.py.)"""

import io
import os
import pickle
import tarfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nanoflow_jax as nf
from nanoflow_jax.data.images import ImageLoader, load_cifar10
from nanoflow_jax.flows import image as F
from nanoflow_jax.models import GlowConfig, ImageFlow, conv
from nanoflow_jax.models.glow_step import GlowStep, estimator_stack
from tests.flow_registry import image_model

SIZE = 8


def tiny(variant, **kw):
    return GlowConfig(variant=variant, image_size=SIZE, hidden=8, n_levels=2, n_flows=2, embed_dim=2, **kw)


def _x(images, seed=2):
    return F.dequantize(images, jax.random.PRNGKey(seed))


def test_lu_logdet_is_slogdet_of_its_matrix():
    p, fixed = F.lu_init(jax.random.PRNGKey(5), 6)
    p = jax.tree.map(lambda a: a + 0.1 * jax.random.normal(jax.random.PRNGKey(6), a.shape), p)
    w, logdet = F.invconv_weight(p, fixed)
    np.testing.assert_allclose(float(logdet), float(jnp.linalg.slogdet(w)[1]), rtol=1e-5, atol=1e-6)


def test_actnorm_init_normalises_its_batch():
    """Every step's ActNorm, given the data its step receives at init, outputs zero mean, unit std (on
    NanoFlow: its steps' inputs depend on the shared estimator's own data-initialised ActNorms)."""
    model = ImageFlow(tiny("nanoflow"))
    images = jax.random.randint(jax.random.PRNGKey(0), (6, SIZE, SIZE, 3), 0, 256)
    x = _x(images)
    v = model.init(jax.random.PRNGKey(1), x)
    level = v["params"]["levels_0"]
    step_model = GlowStep(model.config, 0)
    z = F.squeeze2x2(x)
    for k in range(model.config.n_flows):
        step = {c: jax.tree.map(lambda a, k=k: a[k], v[c]["levels_0"]["steps"]) for c in ("params", "buffers")}
        y, _ = step_model.apply(step, z, method=lambda m, z: m.actnorm(z))
        np.testing.assert_allclose(np.mean(y, axis=(0, 1, 2)), 0.0, atol=1e-5)
        np.testing.assert_allclose(np.std(y, axis=(0, 1, 2)), 1.0, atol=1e-4)
        # the shared estimator's first ActNorm is set by the level's first step alone
        mixed = step_model.apply(step, z, method=lambda m, z: m.invconv(m.actnorm(z)[0])[0])
        inp, gates = step_model.apply(step, mixed[..., : mixed.shape[-1] // 2], method="estimator_input")
        stack = estimator_stack(model.config, jnp.float32, parent=None)
        _, seen = stack.apply({"params": level["shared"]["estimator"]}, inp, gates, capture_intermediates=True)
        normed = seen["intermediates"]["ActNorm_0"]["__call__"][0][0]
        spread = np.std(normed, axis=(0, 1, 2))
        assert np.allclose(spread, 1.0, atol=1e-4) == (k == 0), (k, spread)
        z, _, _ = step_model.apply(step, z, level["shared"], method="forward")


# config variant -> trainable parameters of the official model (image_density_experiments, hidden 256,
# 3 levels, CIFAR-10), counted by building it with the official code; the paper rounds them to 1,000
OFFICIAL_COUNTS = {
    "glow": 15_972_912,
    "glow_large": 287_488_560,
    "nanoflow_naive": 9_263_064,
    "nanoflow_decomp": 9_934_896,
    "nanoflow": 10_113_264,
    "nanoflow_k48": 10_718_544,
    "nanoflow_alt": 6_961_392,
}


@pytest.mark.parametrize("name", list(OFFICIAL_COUNTS))
def test_parameter_counts_match_official(name):
    from configs import glow_cifar10

    model = nf.build_model(glow_cifar10.get_config(name).model)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32))
    # trainable params only (the LU factors' permutation and signs are buffers, as officially)
    assert nf.count_params(shapes["params"]) == OFFICIAL_COUNTS[name]


def test_fast_conv_gradient_equals_autodiff(monkeypatch):
    model, v, images = image_model("nanoflow")
    x = _x(images)
    grad = jax.grad(lambda p: jnp.mean(model.apply(p, x, method="bits_per_dim")))
    fast = grad(v)
    monkeypatch.setattr(conv, "conv2d", conv._conv)  # the plain convolution, differentiated by JAX
    want = grad(v)
    for a, b in zip(jax.tree.leaves(fast), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4)


def test_remat_keeps_the_gradient():
    """Recomputing each step in the backward pass (the level's scan body under nn.remat) changes nothing
    (NanoFlow: the shared estimator's params broadcast into the remat body too)."""
    model, v, images = image_model("nanoflow")
    x = _x(images)

    def grad(m):
        return jax.grad(lambda p: jnp.mean(m.apply(p, x, method="bits_per_dim")))(v)

    remat = ImageFlow(model.config, remat=True)
    for a, b in zip(jax.tree.leaves(grad(model)), jax.tree.leaves(grad(remat)), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5)


def test_bad_images_error():
    model = ImageFlow(tiny("glow"))
    with pytest.raises(ValueError, match=r"images must be \(batch, 8, 8, 3\)"):
        model.init(jax.random.PRNGKey(0), jnp.zeros((2, 16, 16, 3), jnp.float32))


def _fake_cifar(folder):
    rng = np.random.default_rng(0)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batches[name] = {b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), b"labels": [0] * 4}
    tar_path = os.path.join(folder, "cifar-10-python.tar.gz")
    with tarfile.open(tar_path, "w:gz") as tar:
        for name, b in batches.items():
            raw = pickle.dumps(b)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return tar_path, batches


def test_cifar10_archive_and_folder(tmp_path):
    tar_path, batches = _fake_cifar(str(tmp_path))
    train, test = load_cifar10(tar_path)
    assert train.shape == (20, 32, 32, 3) and test.shape == (4, 32, 32, 3)
    # channel-major rows: pixel (0, 0) of image 0 has R, G, B at offsets 0, 1024, 2048
    row = batches["data_batch_1"][b"data"][0]
    assert tuple(train[0, 0, 0]) == (row[0], row[1024], row[2048])
    with tarfile.open(tar_path) as tar:
        tar.extractall(tmp_path, filter="data")
    train2, test2 = load_cifar10(str(tmp_path / "cifar-10-batches-py"))
    np.testing.assert_array_equal(train2, train)
    os.remove(tmp_path / "cifar-10-batches-py" / "test_batch")
    with pytest.raises(nf.data.DataError, match="missing test_batch"):
        load_cifar10(str(tmp_path))


def test_loader_resumes_exactly():
    images = np.random.default_rng(0).integers(0, 256, (10, 8, 8, 3), dtype=np.uint8)
    a = ImageLoader(images, 4, seed=3)
    batches = [next(a) for _ in range(4)]
    b = ImageLoader(images, 4, seed=3, position=8)
    np.testing.assert_array_equal(next(b), batches[2])
    assert batches[0].dtype == np.float32 and -0.5 <= batches[0].min() and batches[0].max() < 0.5


@pytest.mark.slow
def test_demo_config_trains_and_bpd_falls(tmp_path):
    import re
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    overrides = ["num_steps=30", "eval_every=15", "checkpoint_every=15", "log_every=5", "init_batch_size=32"]
    cmd = [sys.executable, "train.py", "--config=configs/glow_demo.py", f"--workdir={tmp_path}"]
    cmd += [f"--config.train.{o}" for o in overrides] + ["--config.eval.num_samples=4", "--config.eval.num_images=64"]
    r = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    bpd = [float(v) for v in re.findall(r"test bpd ([0-9.]+)", r.stdout)]
    assert len(bpd) == 2 and bpd[1] < bpd[0], r.stdout
    for t in ("0.7", "1.0"):
        assert (tmp_path / "samples" / f"step_30_t{t}.png").exists()


@pytest.mark.slow
def test_image_training_accumulates_and_warm_starts(tmp_path):
    """The generic trainer gives images what audio has: gradient accumulation, and a warm start from a
    checkpoint folder (here the first run's)."""
    from configs import glow_demo
    from nanoflow_jax.train import trainer
    from nanoflow_jax.train.run import task_from_config

    config = glow_demo.get_config()
    config.model.update(hidden=4, n_levels=2, n_flows=1)
    config.train.update(batch_size=16, grad_accum_steps=2, num_steps=2, init_batch_size=16, log_every=1)
    config.train.update(eval_every=100, checkpoint_every=2)
    config.eval.update(batch_size=16, num_images=16, num_samples=2)
    logs = []
    results = trainer.run(task_from_config(config, workdir=str(tmp_path / "a")), log=logs.append)
    assert results["step"] == 2 and np.isfinite(results["bpd"]), logs
    _, _, trained = nf.load_checkpoint(str(tmp_path / "a"))
    task = task_from_config(config)
    task.load_data(lambda *_: None)
    fresh = task.init_variables(jax.random.PRNGKey(7))
    warm = trainer.warm_start_params(task, str(tmp_path / "a"), fresh)
    for a, b in zip(jax.tree.leaves(warm), jax.tree.leaves(trained), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    pairs = zip(jax.tree.leaves(warm), jax.tree.leaves(fresh), strict=True)
    assert any(float(jnp.max(jnp.abs(a - b))) > 0 for a, b in pairs)
    with pytest.raises(ValueError, match="warm start .*expected a workdir or checkpoint folder"):
        trainer.warm_start_params(task, str(tmp_path / "nope.pt"), fresh)
