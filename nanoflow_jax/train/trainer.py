"""The generic trainer: mesh, train state, resume and warm start, the step loop with its log / eval /
checkpoint cadence, summaries, progress, the non-finite stop and SIGTERM. It knows nothing of audio or
images: a task (`train.audio`, `train.image`) provides the model, its loss, data, evaluation and samples.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import jax
import numpy as np
import optax

from nanoflow_jax.checkpoints import Checkpointer, abstract_like, checkpoint_dir, load_checkpoint
from nanoflow_jax.data.prefetch import device_batches
from nanoflow_jax.errors import CheckpointError, ConfigError, TrainingError
from nanoflow_jax.files import WorkdirLock, atomic_write
from nanoflow_jax.models import POLICIES
from nanoflow_jax.models.params import check_params
from nanoflow_jax.schema import Bool, Choice, Float, Int, Section, field
from nanoflow_jax.train.step import TrainState, init_state, make_mesh, make_train_step, replicate
from nanoflow_jax.train.summaries import Progress, Writer
from nanoflow_jax.voices import is_voice_folder, training_params


@dataclasses.dataclass(frozen=True)
class TrainConfig(Section):
    """The fields every task's `train` section has; tasks add their optimiser's."""

    SECTION = "train"

    seed: int = field(0, Int(min=0), "seed of params, data order and noise")
    batch_size: int = field(8, Int(min=1), "global batch over all devices and hosts")
    num_steps: int = field(1000, Int(min=1), "optimiser steps of the run")
    learning_rate: float = field(1e-3, Float(min=0.0, min_open=True), "(peak) learning rate")
    grad_clip_norm: float = field(0.0, Float(min=0.0), "clip the gradient's global norm to this (0: off)")
    checkpoint_every: int = field(1000, Int(min=1), "steps between checkpoints")
    eval_every: int = field(1000, Int(min=1), "steps between evaluations")
    log_every: int = field(100, Int(min=1), "steps between train summaries and progress lines")
    keep_checkpoints: int = field(3, Int(min=1), "newest checkpoints kept (plus the best by eval)")
    max_bad_steps: int = field(20, Int(min=1), "this many diverged steps in a row stop the run")
    grad_accum_steps: int = field(1, Int(min=1), "micro-batches per step (must divide the per-device batch)")
    remat: bool = field(False, Bool(), "recompute each flow step in the backward pass: less memory")
    compute_dtype: str = field(
        "float32", Choice(tuple(POLICIES)), "precision of matmuls and convolutions (float16 adds loss scaling)"
    )
    loss_scale: float = field(2.0**15, Float(min=1.0), "float16: initial dynamic loss scale")
    loss_scale_period: int = field(2000, Int(min=1), "float16: finite steps before the loss scale doubles")
    max_minutes: float | None = field(
        None,
        Float(min=0.0, min_open=True, optional=True),
        "wall-clock budget of one invocation: then checkpoint, evaluate and stop (rerun to continue); None: off",
    )

    @property
    def loss_scaling(self) -> bool:
        """float16 training scales the loss dynamically (float32 / bfloat16 have the exponent range)."""
        return self.compute_dtype == "float16"

    def check_devices(self, n_devices: int, n_processes: int) -> None:
        if self.batch_size % n_devices or self.batch_size % n_processes:
            self.fail("batch_size", f"is not allowed: a multiple of the {n_devices} devices")
        per_device = self.batch_size // n_devices
        if per_device % self.grad_accum_steps:
            self.fail("grad_accum_steps", f"is not allowed: it must divide the per-device batch {per_device}")


class Task:
    """What the trainer needs from a task; `train.audio` and `train.image` derive from it. `SECTIONS` names
    the config section classes (model, data, train, eval); the constructor gets the checked sections and
    the run's folder (`workdir`, absolute; None for a task that is only checked or evaluated)."""

    SECTIONS: ClassVar[dict[str, type[Section]]]
    LOSS_NAME: ClassVar[str]  # what the loss is called in logs ("loss", "bpd")

    def __init__(self, sections: dict[str, Section], workdir: str | None = None):
        self.sections, self.workdir = sections, workdir
        self.model_config, self.data = sections["model"], sections["data"]
        self.train: TrainConfig = sections["train"]
        self.eval = sections["eval"]
        self.train_set = self.test_set = None

    def compile_for(self, platform: str) -> None:
        """Adapt the training model to the platform its step is compiled for (the mesh's devices)."""

    def config_dict(self) -> dict:
        return {name: section.to_dict() for name, section in self.sections.items()}

    def check(self, n_devices: int) -> None:
        """Rules across sections (ConfigError naming a field)."""

    def load_data(self, log: Callable) -> None:
        """Read the data (its errors come before anything compiles)."""
        raise NotImplementedError

    def init_variables(self, rng: jax.Array) -> Any:
        raise NotImplementedError

    def warm_start_file(self, path: str, variables: Any) -> Any:
        """Params from a file that is not a checkpoint folder of ours."""
        raise CheckpointError(f"warm start {path}: expected a workdir or checkpoint folder")

    def optimizer(self) -> tuple[optax.GradientTransformation, optax.Schedule]:
        raise NotImplementedError

    def loss(self, params: Any, batch: jax.Array) -> jax.Array:
        raise NotImplementedError

    def batches(self, position: int) -> Iterator:
        """This host's batches from a stream position; with `.state()` and `.close()`."""
        raise NotImplementedError

    def evaluate(self, params: Any, step: int, writer: Writer, log: Callable) -> tuple[dict, float]:
        """-> (metrics, the value the best checkpoint is chosen by)."""
        raise NotImplementedError

    def finish(self, params: Any, step: int, writer: Writer, log: Callable) -> None:
        """At the last step, on the main process (files go under `self.workdir`)."""

    def describe(self, params: Any) -> str:
        raise NotImplementedError


# -- set-up of the trainer's step and state ------------------------------------------------------------------
def build_step(task: Task, mesh: jax.sharding.Mesh) -> tuple[optax.GradientTransformation, Callable, Callable]:
    """(optimiser, schedule, jitted step) of a task: the same step the trainer runs."""
    t = task.train
    task.compile_for(mesh.devices.flat[0].platform)
    tx, schedule = task.optimizer()
    step = make_train_step(
        task.loss,
        tx,
        schedule,
        mesh,
        t.grad_accum_steps,
        dynamic_scale=t.loss_scaling,
        scale_period=t.loss_scale_period,
    )
    return tx, schedule, step


def initial_state(task: Task, tx: optax.GradientTransformation, rng: jax.Array, abstract: bool = False) -> TrainState:
    """The train state at step 0 (`abstract`: shapes only, the target a checkpoint restores into)."""
    t = task.train
    init_rng, state_rng = jax.random.split(rng)
    scale = t.loss_scale if t.loss_scaling else 1.0
    make = lambda: init_state(task.init_variables(init_rng), tx, state_rng, scale)  # noqa: E731
    return jax.eval_shape(make) if abstract else make()


def warm_start_params(task: Task, path: str, variables: Any) -> Any:
    """Params from a workdir or checkpoint folder of ours (any task), a voice folder that ships its
    training-form params, or a file the task reads."""
    if os.path.isdir(path) and is_voice_folder(path):
        loaded = training_params(path)
    elif os.path.isdir(path):
        _, _, loaded = load_checkpoint(path)
    else:
        loaded = task.warm_start_file(path, variables)
    check_params(variables, loaded, f"warm start {path}")
    return jax.tree.map(lambda a, b: np.asarray(a, b.dtype), loaded, variables)


# fields a resumed run must share with its checkpoint (the rest, e.g. num_steps, may change)
BINDING = {
    "model": None,  # every field
    "data": ("sample_rate", "n_fft", "hop_length", "win_length", "n_mels", "fmin", "fmax", "clamp"),
}


def check_resume_config(stored: Any, current: dict, source: str) -> None:
    """A ConfigError naming each binding field whose value differs from the checkpoint's config."""
    if not isinstance(stored, dict):
        raise ConfigError(f"{source}: the checkpoint holds no config to resume with")
    norm = lambda v: json.loads(json.dumps(v, default=str))  # noqa: E731  tuples and lists alike
    changed = []
    for name, fields in BINDING.items():
        old, new = norm(stored.get(name, {})), norm(current.get(name, {}))
        if not isinstance(old, dict):
            raise ConfigError(f"{source}: the stored {name} section is not a mapping")
        for f in fields or sorted(set(old) | set(new)):
            if f in old and old.get(f) != new.get(f):
                changed.append(f"{name}.{f} {old.get(f)!r} -> {new.get(f)!r}")
    if changed:
        raise ConfigError(
            f"config: the checkpoint ({source}) was trained with other values: {', '.join(changed)}; "
            "resume with the stored values or use a new workdir"
        )


# -- the run ----------------------------------------------------------------------------------------------
def run(task: Task, warm_start: str | None = None, log: Callable = print) -> dict:
    """Train (or resume) `task` in its workdir; -> the last logged and evaluated metrics."""
    if not task.workdir:
        raise ValueError("the task has no workdir: build it with task_from_config(config, workdir=...)")
    workdir, t = task.workdir, task.train
    proc, n_proc = jax.process_index(), jax.process_count()
    main = proc == 0
    say = log if main else (lambda *_: None)
    try:
        t.check_devices(jax.device_count(), n_proc)
        task.check(jax.device_count())
    except ConfigError as e:
        raise ConfigError(f"config: {e}") from None
    mesh = make_mesh()
    task.load_data(log if n_proc > 1 else say)  # data errors before anything compiles

    tx, schedule, step_fn = build_step(task, mesh)
    lock = WorkdirLock(workdir) if main else None  # one trainer per workdir
    try:
        ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), keep=t.keep_checkpoints)
        rng = jax.random.PRNGKey(t.seed)
        target = abstract_like(initial_state(task, tx, rng, abstract=True))
        check = lambda meta, source: check_resume_config(meta.get("config"), task.config_dict(), source)  # noqa: E731
        found, position = ckpt.restore_newest_good(target, warn=say, check_meta=check), 0
        if found is not None:
            latest, state, meta = found
            position = int(meta["data"]["position"])
            say(f"resumed from step {latest} in {checkpoint_dir(workdir)}")
        else:
            state = initial_state(task, tx, rng)
            if warm_start:
                state = state.replace(params=warm_start_params(task, warm_start, state.params))
                say(f"warm start: params from {warm_start}")
        if main:  # only once the stored config agrees
            atomic_write(
                os.path.join(workdir, "config.json"),
                lambda f: f.write(json.dumps(task.config_dict(), indent=1, default=str).encode()),
            )
        return _train(task, workdir, mesh, state, position, step_fn, ckpt, say, log)
    finally:
        if lock is not None:
            lock.release()


def _train(task, workdir, mesh, state, position, step_fn, ckpt, say, log) -> dict:
    t, proc, main = task.train, jax.process_index(), jax.process_index() == 0
    say(task.describe(state.params))
    state = replicate(state, mesh)
    loader = task.batches(position)
    writer = Writer(os.path.join(workdir, "tb"), main)

    def evaluate(step, state):
        return task.evaluate(state.params, step, writer, say)

    try:
        state, step, results = run_steps(
            state, step_fn, loader, mesh, task, workdir, ckpt, writer, say, evaluate, t.num_steps
        )
        if main and (step == t.num_steps or results.get("out_of_time")):
            task.finish(jax.device_get(state.params), step, writer, say)
    finally:
        writer.close()
    results["step"] = step
    # printed by every process: multi-host runs can check that all hold the same params
    results["params_checksum"] = float(sum(np.sum(np.abs(np.asarray(x))) for x in jax.tree.leaves(state.params)))
    log(f"process {proc}: step {step}, params checksum {results['params_checksum']:.9g}")
    return results


def _all_agree(flag: bool) -> bool:
    """True on every process when process 0 says so (hosts' clocks differ; all must stop at one step)."""
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils

    return bool(multihost_utils.broadcast_one_to_all(np.asarray(flag)))


def run_steps(
    state: TrainState,
    step_fn: Callable,
    loader: Any,
    mesh: jax.sharding.Mesh,
    task: Task,
    workdir: str,
    ckpt: Checkpointer,
    writer: Writer,
    say: Callable,
    evaluate: Callable[[int, TrainState], tuple[dict, float]],
    num_steps: int,
) -> tuple[TrainState, int, dict]:
    """The loop: steps, windowed train summaries, the non-finite stop, evaluation (`evaluate(step, state)
    -> (metrics, value the checkpoints keep the best of)`), checkpoints with the data position, and
    SIGTERM (save, then exit). Closes the checkpointer and the loader. -> (state, last step, metrics)."""
    t, name = task.train, task.LOSS_NAME
    deadline = None if t.max_minutes is None else time.monotonic() + 60.0 * t.max_minutes
    # XLA's CPU all-reduce can deadlock when multi-device steps are queued back to back
    sync_every_step = jax.default_backend() == "cpu" and jax.device_count() > 1
    stop = {"signal": None}
    previous = signal.signal(signal.SIGTERM, lambda signum, _: stop.update(signal=signum))
    step = int(state.step)
    progress = Progress(step, num_steps, say)
    results: dict[str, float] = {}
    window: list[dict] = []
    t_window = time.perf_counter()
    batches = device_batches(loader, mesh)
    try:
        while step < num_steps:
            state, metrics = step_fn(state, next(batches))
            step += 1
            if sync_every_step:
                jax.block_until_ready(metrics)
            window.append(metrics)
            out_of_time = deadline is not None and step % t.log_every == 0 and _all_agree(time.monotonic() > deadline)
            last = step == num_steps or out_of_time
            worst = 0
            if step % t.log_every == 0 or last or stop["signal"]:
                vals = jax.device_get(window)
                finite = [m for m in vals if m["finite"]]
                logged = {
                    name: float(np.mean([m["loss"] for m in finite])) if finite else math.nan,
                    "grad_norm": float(np.mean([m["grad_norm"] for m in finite])) if finite else math.nan,
                    "learning_rate": float(vals[-1]["learning_rate"]),
                    "samples_per_s": len(vals) * t.batch_size / (time.perf_counter() - t_window),
                }
                if t.loss_scaling:
                    logged["loss_scale"] = float(vals[-1]["loss_scale"])
                writer.scalars(
                    step, {f"train/{k}": v for k, v in logged.items()} | {"train/skipped_steps": int(state.skipped)}
                )
                progress.line(step, {name: logged[name], "lr": logged["learning_rate"]})
                results.update(logged)
                worst = max(int(m["bad_streak"]) for m in vals)
                window, t_window = [], time.perf_counter()
            is_ckpt_step = step % t.checkpoint_every == 0 or last or stop["signal"]
            if is_ckpt_step:
                worst = max(worst, int(state.bad_streak))
            if worst >= t.max_bad_steps:
                raise TrainingError(
                    f"{worst} non-finite steps in a row by step {step}; stopping. Non-finite updates are "
                    f"skipped and non-finite states never saved, so the checkpoints in {checkpoint_dir(workdir)} "
                    "hold finite params (lower the learning rate or check the data)"
                )
            metrics_for_ckpt = None
            if step % t.eval_every == 0 or last:
                evals, best_by = evaluate(step, state)
                results.update(evals)
                metrics_for_ckpt = {"eval_loss": best_by}
            if is_ckpt_step:
                meta = {"config": task.config_dict(), "data": batches.state()}
                if not ckpt.save(step, state, meta, metrics_for_ckpt):
                    say(f"warning: step {step}: the state holds non-finite values; not saved (older checkpoints kept)")
            if stop["signal"]:
                say(f"signal {stop['signal']}: saved step {step}, exiting")
                break
            if out_of_time:
                say(f"train.max_minutes={t.max_minutes:g} spent: saved step {step}; rerun the command to continue")
                results["out_of_time"] = True
                break
    finally:
        ckpt.wait()
        ckpt.close()
        batches.close()
        signal.signal(signal.SIGTERM, previous)
    return state, step, results
