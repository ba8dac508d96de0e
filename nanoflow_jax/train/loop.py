"""The training loop: data, model, step, evaluation, summaries and checkpoints, for one or many devices
and hosts. `train(config, workdir)` is what `train.py` calls; rerunning it on the same workdir resumes."""

from __future__ import annotations

import json
import math
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nanoflow_jax.audio.io import write_wav
from nanoflow_jax.audio.mel import MelConfig, mel_spectrogram, n_frames
from nanoflow_jax.config import ModelConfig
from nanoflow_jax.convert import check_params, params_from_state_dict, state_dict_from
from nanoflow_jax.data import CropLoader, load_splits
from nanoflow_jax.errors import DataError, TrainingError
from nanoflow_jax.files import resolve_path
from nanoflow_jax.models import DTYPES, HOP, AudioFlow
from nanoflow_jax.params import init_params
from nanoflow_jax.synth import synthesize
from nanoflow_jax.train import evaluate
from nanoflow_jax.train.checkpoint import Checkpointer, abstract_like, checkpoint_dir, load_checkpoint
from nanoflow_jax.train.figures import mel_figure, save_png
from nanoflow_jax.train.step import (
    global_batch,
    init_state,
    learning_rate_schedule,
    make_mesh,
    make_optimizer,
    make_train_step,
    replicate,
)
from nanoflow_jax.train.summaries import Progress, Writer


def build_training_model(config: Any) -> AudioFlow:
    t = config.train
    if t.compute_dtype not in DTYPES:
        raise ValueError(f"train.compute_dtype must be one of {sorted(DTYPES)}, got {t.compute_dtype!r}")
    return AudioFlow(ModelConfig.from_any(config.model), remat=bool(t.remat), dtype=DTYPES[t.compute_dtype])


def check_config(config: Any, n_devices: int) -> None:
    """Clear errors for settings that cannot work, before any data is read or anything compiled."""
    m, d, t = config.model, config.data, config.train
    if d.sample_rate <= 0 or d.segment_length <= 0:
        raise ValueError("data.sample_rate and data.segment_length must be positive")
    if d.segment_length % m.n_groups:
        raise ValueError(f"data.segment_length {d.segment_length} must be a multiple of model.n_groups {m.n_groups}")
    if d.hop_length != HOP:
        raise ValueError(f"data.hop_length must be {HOP} (the conditioner upsamples x{HOP}), got {d.hop_length}")
    if d.n_mels != m.cond_channels:
        raise ValueError(f"data.n_mels {d.n_mels} differs from model.cond_channels {m.cond_channels}")
    if t.batch_size % n_devices:
        raise ValueError(f"train.batch_size {t.batch_size} is not divisible by the {n_devices} devices")
    per_device = t.batch_size // n_devices
    if per_device % t.grad_accum_steps:
        raise ValueError(
            f"the per-device batch {per_device} is not divisible by train.grad_accum_steps {t.grad_accum_steps}"
        )
    if t.num_steps < 1 or t.checkpoint_every < 1:
        raise ValueError("train.num_steps and train.checkpoint_every must be positive")


def _warm_start_params(path: str, model: AudioFlow, params: Any) -> Any:
    if os.path.isdir(path):
        _, _, loaded = load_checkpoint(path)
    else:
        loaded = params_from_state_dict(state_dict_from(path), model.config)
    check_params(model, loaded, f"warm start {path}")
    return jax.tree.map(lambda a, b: jnp.asarray(a, b.dtype), loaded, params)


def _synthesise_sample(model, params, mel_cfg, audio: np.ndarray, temperature: float, rng, multiple: int):
    t = len(audio) // multiple * multiple
    x = jnp.asarray(audio[None, :t])
    mel = mel_spectrogram(x, mel_cfg)
    y = synthesize(model, params, mel, temperature=temperature, rng=rng)[0]
    return audio[:t], y, np.asarray(mel[0]), np.asarray(mel_spectrogram(jnp.asarray(y[None]), mel_cfg)[0])


def train(config: Any, workdir: str, warm_start: str | None = None, log=print) -> dict:
    """Train (or resume) `config` in `workdir`; returns the last logged and evaluated metrics."""
    workdir = resolve_path(workdir)
    warm_start = resolve_path(warm_start) if warm_start else None
    if config.model.get("kind") == "image":  # Glow / NanoFlow-Glow: same step and checkpoints, other data
        from nanoflow_jax.train.images import train_images  # imports this module

        return train_images(config, workdir, log)
    t, d, e = config.train, config.data, config.eval
    proc, n_proc = jax.process_index(), jax.process_count()
    main = proc == 0
    say = log if main else (lambda *_: None)
    mesh = make_mesh()
    check_config(config, jax.device_count())
    model = build_training_model(config)
    mel_cfg = MelConfig.from_any(d)
    if n_frames(d.segment_length, d.hop_length) * HOP < d.segment_length:
        raise ValueError("data.segment_length is too long for its own mel")

    train_set, test_set = load_splits(d, log if n_proc > 1 else say, proc, n_proc)  # errors before compiling
    if len(test_set) == 0:
        raise DataError(f"the test split is empty: {len(train_set)} files with test_fraction={d.test_fraction}")

    os.makedirs(workdir, exist_ok=True)
    if main:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            json.dump(config.to_dict(), f, indent=1, default=str)
    tx = make_optimizer(t)
    schedule = learning_rate_schedule(t)
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), keep=t.keep_checkpoints)

    rng = jax.random.PRNGKey(t.seed)
    init_rng, state_rng = jax.random.split(rng)
    params = init_params(model, init_rng)
    state = init_state(params, tx, state_rng)
    position = 0
    latest = ckpt.latest_step()
    if latest is not None:
        state, meta = ckpt.restore(latest, abstract_like(state))
        position = int(meta["data"]["position"])
        say(f"resumed from step {latest} in {checkpoint_dir(workdir)}")
    elif warm_start:
        state = state.replace(params=_warm_start_params(warm_start, model, state.params))
        say(f"warm start: params from {warm_start}")
    state = replicate(state, mesh)

    local_batch = t.batch_size // n_proc
    loader = CropLoader(train_set, local_batch, d.segment_length, t.seed, process_index=proc, position=position)

    loss_fn = evaluate.audio_nll(model, mel_cfg)
    step_fn = make_train_step(loss_fn, tx, schedule, mesh, t.grad_accum_steps)
    writer = Writer(os.path.join(workdir, "tb"), main)
    eval_model = AudioFlow(model.config)  # float32, no remat
    nll_fn = evaluate.make_nll_fn(eval_model, mel_cfg)
    multiple = math.lcm(HOP, model.config.n_groups)
    eval_crops = evaluate.fixed_crops(test_set, e.num_crops, d.segment_length)

    def run_eval(step: int, state) -> tuple[dict, float]:
        out = {"eval/nll_crops": evaluate.nll_on_crops(nll_fn, state.params, eval_crops, e.batch_size)}
        if e.num_utterances:
            full = evaluate.nll_on_utterances(nll_fn, state.params, test_set, e.num_utterances, multiple)
            out.update({"eval/nll_utterances": full, "eval/ll_utterances": -full})
        writer.scalars(step, out)
        say(f"eval at step {step}: " + ", ".join(f"{k.split('/')[1]} {v:.4f}" for k, v in out.items()))
        return out, out["eval/nll_crops"]

    def finish(step: int, state) -> None:
        if main and step == t.num_steps and e.synthesize:
            _write_sample(eval_model, state, mel_cfg, test_set, e, workdir, writer, step, multiple, say)

    state, step, results = run_steps(
        state, step_fn, loader, mesh, config, workdir, ckpt, writer, say, run_eval, finish, loss_name="loss"
    )
    results["step"] = step
    # printed by every process: multi-host runs can check that all hold the same params
    results["params_checksum"] = float(sum(jnp.sum(jnp.abs(x)) for x in jax.tree.leaves(state.params)))
    log(f"process {proc}: step {step}, params checksum {results['params_checksum']:.9g}")
    return results


def run_steps(
    state: Any,
    step_fn: Callable,
    loader: Any,
    mesh: jax.sharding.Mesh,
    config: Any,
    workdir: str,
    ckpt: Checkpointer,
    writer: Writer,
    say: Callable,
    run_eval: Callable[[int, Any], tuple[dict, float]],
    finish: Callable[[int, Any], None] | None = None,
    loss_name: str = "loss",
) -> tuple[Any, int, dict]:
    """The training loop every model shares: steps, windowed train summaries, the non-finite stop,
    evaluation (`run_eval(step, state) -> (metrics, value the checkpoints keep the best of)`),
    checkpoints with the data position, and SIGTERM (save, then exit). Closes the checkpointer, loader and
    writer. -> (state, last step, last logged and evaluated metrics)."""
    t = config.train
    # XLA's CPU all-reduce can deadlock when multi-device steps are queued back to back
    sync_every_step = jax.default_backend() == "cpu" and jax.device_count() > 1
    stop = {"signal": None}
    previous = signal.signal(signal.SIGTERM, lambda signum, _: stop.update(signal=signum))
    step = int(state.step)
    progress = Progress(step, t.num_steps, say)
    results: dict[str, float] = {}
    window: list[dict] = []
    t_window = time.perf_counter()
    try:
        while step < t.num_steps:
            state, metrics = step_fn(state, global_batch(next(loader), mesh))
            step += 1
            if sync_every_step:
                jax.block_until_ready(metrics)
            window.append(metrics)
            last = step == t.num_steps
            if step % t.log_every == 0 or last or stop["signal"]:
                vals = jax.device_get(window)
                finite = [m for m in vals if m["finite"]]
                dt = time.perf_counter() - t_window
                logged = {
                    loss_name: float(np.mean([m["loss"] for m in finite])) if finite else math.nan,
                    "grad_norm": float(np.mean([m["grad_norm"] for m in finite])) if finite else math.nan,
                    "learning_rate": float(vals[-1]["learning_rate"]),
                    "samples_per_s": len(vals) * t.batch_size / dt,
                }
                writer.scalars(
                    step, {f"train/{k}": v for k, v in logged.items()} | {"train/skipped_steps": int(state.skipped)}
                )
                progress.line(step, {loss_name: logged[loss_name], "lr": logged["learning_rate"]})
                results.update(logged)
                worst = max(int(m["bad_streak"]) for m in vals)
                window, t_window = [], time.perf_counter()
            else:
                worst = 0
            is_ckpt_step = step % t.checkpoint_every == 0 or last or stop["signal"]
            if is_ckpt_step:
                worst = max(worst, int(state.bad_streak))
            if worst >= t.max_bad_steps:
                raise TrainingError(
                    f"{worst} non-finite steps in a row by step {step}; stopping. The last "
                    f"checkpoint in {checkpoint_dir(workdir)} holds the last good params (lower the learning "
                    "rate or check the data)"
                )
            metrics_for_ckpt = None
            if step % t.eval_every == 0 or last:
                evals, best_by = run_eval(step, state)
                results.update(evals)
                metrics_for_ckpt = {"eval_nll": best_by}
            if is_ckpt_step:
                ckpt.save(step, state, {"config": config.to_dict(), "data": loader.state()}, metrics_for_ckpt)
            if stop["signal"]:
                say(f"signal {stop['signal']}: saved step {step}, exiting")
                break
        if finish is not None:
            finish(step, state)
    finally:
        ckpt.wait()
        ckpt.close()
        loader.close()
        writer.close()
        signal.signal(signal.SIGTERM, previous)
    return state, step, results


def _write_sample(model, state, mel_cfg, test_set, e, workdir, writer, step, multiple, say) -> None:
    """Synthesise the first test utterance from its mel: samples/step_N.wav and a mel image (ground truth
    on top, synthesis below)."""
    audio = test_set.load(0)[: int(e.synth_seconds * test_set.sample_rate)]
    ref, y, mel_ref, mel_syn = _synthesise_sample(
        model, state.params, mel_cfg, audio, e.temperature, jax.random.fold_in(state.rng, step), multiple
    )
    out = os.path.join(workdir, "samples")
    os.makedirs(out, exist_ok=True)
    if not np.all(np.isfinite(y)):
        say("synthesis gave non-finite samples; no sample written")
        return
    write_wav(os.path.join(out, f"step_{step}.wav"), y, test_set.sample_rate)
    name = os.path.basename(test_set.names[0])
    panels = {f"ground truth ({name})": mel_ref, f"synthesized, step {step}": mel_syn}
    img = mel_figure(panels, mel_cfg.hop_length, mel_cfg.sample_rate)
    save_png(os.path.join(out, f"step_{step}_mel.png"), img)
    writer.audio(step, "sample/synthesized", y, test_set.sample_rate)
    writer.audio(step, "sample/reference", ref, test_set.sample_rate)
    writer.image(step, "sample/mel_reference_vs_synthesized", img)
    say(f"wrote {out}/step_{step}.wav and step_{step}_mel.png")
