"""Trainer: data-parallel step, skipping non-finite steps, accumulation, and whole runs of train.py."""

import dataclasses
import os
import re
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import nanoflow_jax as nf
from nanoflow_jax.audio.mel import MelConfig
from nanoflow_jax.models.conv import causal_conv2d
from nanoflow_jax.models.precision import POLICIES
from nanoflow_jax.train.audio_loss import audio_nll
from nanoflow_jax.train.step import global_batch, init_state, make_mesh, make_train_step, replicate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_RUN = [
    "--config=configs/demo.py",
    "--config.model.channels=8",
    "--config.model.n_layers=4",
    "--config.model.n_flows=2",
    "--config.model.embed_dim=8",
    "--config.data.segment_length=2048",
    "--config.train.batch_size=2",
    "--config.train.log_every=1",
    "--config.eval.batch_size=2",
    "--config.eval.num_crops=2",
    "--config.eval.num_utterances=1",
    "--config.eval.synthesize=False",
]


def run_train(workdir, *extra, timeout=300, wait=True, tiny=True):
    env = dict(os.environ, XLA_FLAGS="", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "train.py", f"--workdir={workdir}", *(TINY_RUN if tiny else []), *extra]
    if not wait:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_causal_conv_gradient_matches_autodiff():
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.normal(k1, (2, 6, 20, 5))
    w = jax.random.normal(k2, (3, 3, 5, 7))
    g = jax.random.normal(k3, (2, 6, 20, 7))
    for dil in ((1, 1), (2, 4), (1, 8)):
        ref = lambda x, w, dil=dil: jax.lax.conv_general_dilated(  # noqa: E731
            x,
            w,
            (1, 1),
            ((2 * dil[0], 0), (dil[1], dil[1])),
            rhs_dilation=dil,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        f32 = POLICIES["float32"]
        np.testing.assert_allclose(causal_conv2d(x, w, dil, f32), ref(x, w), atol=1e-5)
        want = jax.grad(lambda x, w, ref=ref: jnp.sum(ref(x, w) * g), (0, 1))(x, w)
        got = jax.grad(lambda x, w, dil=dil, f32=f32: jnp.sum(causal_conv2d(x, w, dil, f32) * g), (0, 1))(x, w)
        for a, b in zip(got, want, strict=True):
            np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)
        tangents = (0.3 * x, 0.2 * w)  # forward mode needs no switch
        fwd = jax.jvp(lambda x, w, dil=dil, f32=f32: causal_conv2d(x, w, dil, f32), (x, w), tangents)[1]
        np.testing.assert_allclose(fwd, jax.jvp(ref, (x, w), tangents)[1], atol=1e-4, rtol=1e-4)


def test_cpu_kernel_gradient_is_matmuls_not_a_convolution():
    x, w = jnp.ones((2, 6, 20, 5)), jnp.ones((3, 3, 5, 7))
    f32 = POLICIES["float32"]
    loss = lambda x, w: jnp.sum(causal_conv2d(x, w, (1, 1), f32) ** 2)  # noqa: E731
    hlo = jax.jit(jax.grad(loss, (0, 1))).lower(x, w).compile().as_text()  # the CPU program XLA runs
    # the forward convolution and the input gradient's; the kernel gradient is one matmul per tap
    assert len(re.findall(r"= \S+ convolution\(", hlo)) == 2 and len(re.findall(r" dot\(", hlo)) == 9


def small_setup():
    cfg = nf.ModelConfig(n_flows=2, n_layers=4, channels=8, n_groups=8, embed_dim=8)
    model = nf.build_model(cfg)
    loss_fn = audio_nll(model, MelConfig())

    schedule = optax.exponential_decay(1e-3, 100, 0.5, staircase=True)
    tx = optax.chain(optax.clip_by_global_norm(5.0), optax.adam(schedule))
    audio = 0.1 * jax.random.normal(jax.random.PRNGKey(1), (8, 1024))
    params = model.init(jax.random.PRNGKey(0), audio, nf.mel_spectrogram(audio))
    return loss_fn, tx, schedule, audio, params


def run_steps(loss_fn, tx, schedule, mesh, params, batches, accum=1):
    step = make_train_step(loss_fn, tx, schedule, mesh, accum)
    state = replicate(init_state(params, tx, jax.random.PRNGKey(0)), mesh)
    for b in batches:
        state, metrics = step(state, global_batch(np.asarray(b), mesh))
        jax.block_until_ready(metrics)  # CPU all-reduce: never queue multi-device steps back to back
    return state, metrics


def test_sharded_step_equals_single_device():
    assert jax.device_count() == 8, "conftest sets 8 fake CPU devices"
    loss_fn, tx, schedule, audio, params = small_setup()
    batches = [audio, audio[::-1] * 0.5]
    s8, m8 = run_steps(loss_fn, tx, schedule, make_mesh(), params, batches)
    s1, m1 = run_steps(loss_fn, tx, schedule, make_mesh(jax.devices()[:1]), params, batches)
    assert len(s8.params["params"]["estimator"]["layer_0"]["conv"]["v"].sharding.device_set) == 8
    np.testing.assert_allclose(float(m8["loss"]), float(m1["loss"]), rtol=1e-6)
    for a, b in zip(jax.tree.leaves(s8.params), jax.tree.leaves(s1.params), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6, rtol=1e-5)
    moved = max(
        float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(params), strict=True)
    )
    assert moved > 1e-4


def test_gradient_accumulation_equals_full_batch():
    loss_fn, tx, schedule, audio, params = small_setup()
    mesh = make_mesh(jax.devices()[:1])
    full, _ = run_steps(loss_fn, tx, schedule, mesh, params, [audio])
    acc, _ = run_steps(loss_fn, tx, schedule, mesh, params, [audio], accum=4)
    for a, b in zip(jax.tree.leaves(full.params), jax.tree.leaves(acc.params), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6, rtol=1e-5)


def test_non_finite_step_is_skipped_and_counted():
    loss_fn, tx, schedule, audio, params = small_setup()
    mesh = make_mesh(jax.devices()[:1])
    bad = np.asarray(audio).copy()
    bad[0, 5] = np.nan
    state, metrics = run_steps(loss_fn, tx, schedule, mesh, params, [bad, bad])
    assert not bool(metrics["finite"])
    assert (int(state.step), int(state.skipped), int(state.bad_streak)) == (2, 2, 2)
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    state2, _ = run_steps(loss_fn, tx, schedule, mesh, params, [bad, audio])
    assert (int(state2.skipped), int(state2.bad_streak)) == (1, 0)


def test_cli_bad_dataset_path_is_one_clear_line(tmp_path):
    r = run_train(tmp_path / "w", "--config.data.path=/nonexistent/LJSpeech", timeout=120)
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip() and not re.match(r"^[IWE]\d{4}", ln)]
    assert lines == ["train.py: error: dataset folder /nonexistent/LJSpeech does not exist"], r.stderr
    r = run_train(tmp_path / "w", "--config.model.n_groups=12", timeout=120)
    assert (
        r.returncode == 2 and "data.segment_length = 2048 is not allowed: a multiple of model.n_groups = 12" in r.stderr
    )


def final_params(workdir):
    _, _, params = nf.load_checkpoint(str(workdir))
    return params


@pytest.mark.slow
def test_kill_9_and_rerun_equals_uninterrupted(tmp_path):
    args = ["--config.train.num_steps=30", "--config.train.checkpoint_every=3", "--config.train.eval_every=1000"]
    ref = run_train(tmp_path / "ref", *args)
    assert ref.returncode == 0, ref.stdout[-2000:]
    proc = run_train(tmp_path / "run", *args, wait=False)
    ckpts = tmp_path / "run" / "checkpoints"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if ckpts.is_dir() and any(n.isdigit() and int(n) >= 9 for n in os.listdir(ckpts)):
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    assert proc.wait(timeout=60) == -signal.SIGKILL, "the run ended before it could be killed"
    steps = sorted(int(n) for n in os.listdir(ckpts) if n.isdigit())
    assert steps and steps[-1] < 30
    again = run_train(tmp_path / "run", *args)
    assert again.returncode == 0, again.stdout[-2000:]
    assert f"resumed from step {steps[-1]}" in again.stdout
    for a, b in zip(
        jax.tree.leaves(final_params(tmp_path / "run")), jax.tree.leaves(final_params(tmp_path / "ref")), strict=True
    ):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6, rtol=0)


@pytest.mark.slow
def test_sigterm_saves_and_exits_cleanly(tmp_path):
    proc = run_train(
        tmp_path / "w", "--config.train.num_steps=100000", "--config.train.checkpoint_every=100000", wait=False
    )
    out = ""
    for line in proc.stdout:
        out += line
        if line.startswith("step 3/"):
            proc.send_signal(signal.SIGTERM)
            break
    out += proc.stdout.read()
    assert proc.wait(timeout=120) == 0, out[-2000:]
    m = re.search(r"signal 15: saved step (\d+), exiting", out)
    assert m, out[-2000:]
    assert str(int(m.group(1))) in os.listdir(tmp_path / "w" / "checkpoints")


@pytest.mark.slow
def test_two_processes_train_and_agree(tmp_path):
    port = 20000 + os.getpid() % 20000
    procs = [
        run_train(
            tmp_path / "w",
            "--config.train.num_steps=3",
            "--config.train.checkpoint_every=3",
            "--config.train.batch_size=2",
            f"--coordinator=127.0.0.1:{port}",
            "--num_processes=2",
            f"--process_id={i}",
            wait=False,
        )
        for i in range(2)
    ]
    outs = []
    for p in procs:
        try:
            outs.append(p.communicate(timeout=400)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
    for p, o in zip(procs, outs, strict=True):
        assert p.returncode == 0, o[-3000:]
    sums = [re.search(r"process (\d): step 3, params checksum (\S+)", o).groups() for o in outs]
    assert sorted(s[0] for s in sums) == ["0", "1"]
    assert sums[0][1] == sums[1][1]
    assert "3" in os.listdir(tmp_path / "w" / "checkpoints")


def test_remat_and_bf16_keep_the_function():
    from tests.helpers import model_and_params, tiny

    cfg = tiny("nanoflow_partial")
    model, params, audio, mel = model_and_params(cfg)

    def grads(m):
        return jax.value_and_grad(lambda p: nf.nll(*m.apply(p, audio, mel)))(params)

    (l1, g1), (l2, g2) = grads(model), grads(nf.AudioFlow(cfg, remat=True))
    assert abs(float(l1 - l2)) < 1e-6
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5)
    l3, g3 = grads(nf.AudioFlow(cfg, dtype=jnp.bfloat16))
    assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(g3))  # fp32 master weights
    assert abs(float(l3 - l1)) < 0.05 * abs(float(l1)) + 0.01


def test_unrolled_flows_are_the_same_function():
    """`unroll_flows` (what the trainer builds for an accelerator mesh) changes the program, not the
    numbers; the CPU trainer keeps the loop, and remat keeps it everywhere."""
    from tests.helpers import model_and_params, tiny

    cfg = tiny("nanoflow_partial")
    model, params, audio, mel = model_and_params(cfg)
    unrolled = model.for_platform("cuda")
    assert unrolled.unroll_flows and not model.for_platform("cpu").unroll_flows
    assert not nf.AudioFlow(cfg, remat=True).for_platform("cuda").unroll_flows

    def grads(m):
        return jax.value_and_grad(lambda p: nf.nll(*m.apply(p, audio, mel)))(params)

    (l1, g1), (l2, g2) = grads(model), grads(unrolled)
    assert abs(float(l1 - l2)) < 1e-6
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5)
    x1, _ = model.apply(params, audio, mel, method="inverse")
    x2, _ = unrolled.apply(params, audio, mel, method="inverse")
    np.testing.assert_allclose(x1, x2, atol=1e-6)

    def loops(m):  # the flow loop (unrolled when lowered) is the only loop of the forward pass
        return jax.jit(lambda p: m.apply(p, audio, mel)).lower(params).as_text().count("stablehlo.while")

    assert (loops(model), loops(unrolled)) == (1, 0)


def _audio_task(model_config):
    from nanoflow_jax.train.run import task_from_config

    return task_from_config({"model": model_config.to_dict()})


def test_warm_start_from_official_pt():
    from nanoflow_jax.train.trainer import warm_start_params
    from tests.conftest import DATA

    pt = os.path.join(DATA, "nanoflow_small_official_ckpt.pt")
    model, official = nf.load_official(pt, os.path.join(DATA, "nanoflow_small_config.json"))
    task = _audio_task(model.config)
    fresh = task.init_variables(jax.random.PRNGKey(0))
    warm = warm_start_params(task, pt, fresh)
    for a, b in zip(jax.tree.leaves(warm), jax.tree.leaves(official), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    wrong = _audio_task(dataclasses.replace(model.config, channels=16))
    with pytest.raises(ValueError, match="warm start .*shape"):
        warm_start_params(wrong, pt, wrong.init_variables(jax.random.PRNGKey(0)))


@pytest.mark.slow
def test_run_of_non_finite_steps_stops_with_checkpoint_intact(tmp_path):
    # a huge learning rate blows the params up after the first step; every later step is non-finite
    r = run_train(
        tmp_path / "w",
        "--config.train.learning_rate=1e30",
        "--config.train.max_bad_steps=3",
        "--config.train.num_steps=50",
        "--config.train.checkpoint_every=1",
        "--config.train.eval_every=1000",
    )
    assert r.returncode == 3, r.stdout[-2000:] + r.stderr[-2000:]
    assert "non-finite steps in a row" in r.stderr and "stopping" in r.stderr
    steps = sorted(int(n) for n in os.listdir(tmp_path / "w" / "checkpoints") if n.isdigit())
    assert steps and steps[-1] < 50
    _, _, params = nf.load_checkpoint(str(tmp_path / "w"))
    assert all(np.all(np.isfinite(np.asarray(a))) for a in jax.tree.leaves(params))


def test_whole_utterance_eval_is_bucketed_and_unchanged():
    """Padded to power-of-two buckets, batched and masked: the same per-utterance NLL as each utterance
    alone (the paper's protocol), with one compilation per bucket instead of one per length."""
    from nanoflow_jax.data import load_splits
    from nanoflow_jax.train import audio_eval, audio_loss
    from tests.helpers import perturb
    from tests.test_data import data_cfg

    _, test_set = load_splits(data_cfg("demo", test_fraction=0.15), log=lambda *_: None)
    cfg = nf.ModelConfig(n_flows=3, n_layers=3, channels=8, n_groups=8, embed_dim=8)
    model = nf.build_model(cfg)
    params = perturb(nf.init_params(model, jax.random.PRNGKey(0)), jax.random.PRNGKey(1))
    mel_cfg = MelConfig()
    alone = jax.jit(audio_nll(model, mel_cfg))
    per_utterance = []
    for i in range(len(test_set)):
        x = test_set.load(i)
        per_utterance.append(float(alone(params, jnp.asarray(x[None, : len(x) // 256 * 256]))))
    fn = jax.jit(audio_loss.utterance_nll(model, mel_cfg))
    mean, n_shapes = audio_eval.nll_on_utterances(fn, params, test_set, None, 256, 4 * 8192)
    lengths = {len(test_set.load(i)) // 256 for i in range(len(test_set))}
    assert len(lengths) == len(test_set) == 6 and n_shapes <= 3, (lengths, n_shapes)
    np.testing.assert_allclose(mean, np.mean(per_utterance), rtol=1e-5)
    # and each utterance's own value: padding to another bucket changes nothing
    one = np.asarray(test_set.load(3)[: len(test_set.load(3)) // 256 * 256])
    padded = np.zeros((2, 4 * len(one)), np.float32)
    padded[0, : len(one)] = one
    got = fn(params, jnp.asarray(padded), jnp.asarray([len(one), 0]))
    np.testing.assert_allclose(float(got[0]), per_utterance[3], rtol=1e-5)


def test_training_evaluation_scores_copy_synthesis_beside_griffin_lim(monkeypatch):
    from configs import demo
    from nanoflow_jax.audio import quality
    from nanoflow_jax.train.run import task_from_config

    cfg = demo.get_config()
    cfg.model.update(dict(channels=8, n_layers=2, n_flows=2, embed_dim=8))
    cfg.eval.update(dict(quality_utterances=2, synth_seconds=0.5))
    task = task_from_config(cfg)
    task.load_data(log=lambda *_: None)
    params = nf.init_params(task.eval_model, jax.random.PRNGKey(0))
    calls, loaded = [], []
    inner = quality.griffin_lim
    monkeypatch.setattr(quality, "griffin_lim", lambda *a, **k: calls.append(1) or inner(*a, **k))
    load = task.test_set.load
    monkeypatch.setattr(task.test_set, "load", lambda i: loaded.append(i) or load(i))
    first, second = task.quality(params, 0), task.quality(params, 1)
    half = len(task.test_set) // 2
    assert half > 0 and loaded == [0, half, 0, half]  # spread over the test split, the same ones each time
    assert set(first) == {f"quality/{m}" for m in quality.METRICS} | {
        f"quality_griffin_lim/{m}" for m in quality.METRICS
    }
    assert len(calls) == 2  # the baseline once per utterance, at the first evaluation only
    gl = {k: v for k, v in first.items() if "griffin" in k}
    assert gl == {k: v for k, v in second.items() if "griffin" in k}
    # an untrained model synthesises its latent noise: Griffin-Lim keeps the mel far better
    assert first["quality/log_mel_l1"] > 2 * first["quality_griffin_lim/log_mel_l1"]
