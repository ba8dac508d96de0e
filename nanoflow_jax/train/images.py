"""Training the image flows (Glow / NanoFlow-Glow) with the same step, mesh, checkpoints and summaries as
the audio models; only the objective (bits per dimension), data and samples differ. `train.train`
dispatches here when `config.model.kind == "image"`."""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nanoflow_jax.data.images import ImageLoader, dequantize_np, load_image_splits
from nanoflow_jax.models.glow import GlowConfig, ImageFlow
from nanoflow_jax.params import count_params
from nanoflow_jax.train.checkpoint import Checkpointer, abstract_like, checkpoint_dir
from nanoflow_jax.train.figures import grid_figure, save_png
from nanoflow_jax.train.loop import run_steps
from nanoflow_jax.train.step import init_state, make_mesh, make_train_step, replicate
from nanoflow_jax.train.summaries import Writer


def warmup_schedule(train: Any) -> optax.Schedule:
    """Linear warm-up to train.learning_rate over train.warmup_steps, then constant (the official
    recipe warms up over 5 epochs)."""
    lr, warm = train.learning_rate, max(int(train.warmup_steps), 1)
    return lambda step: lr * jnp.minimum(1.0, (step + 1) / warm)


def make_image_optimizer(train: Any, schedule: optax.Schedule) -> optax.GradientTransformation:
    """Adamax with L2 weight decay added to the gradient (torch's Adamax weight_decay), optional
    grad-norm clipping; the LU buffers are frozen."""
    parts = [optax.clip_by_global_norm(train.grad_clip_norm)] if train.grad_clip_norm > 0 else []
    parts += [
        optax.add_decayed_weights(train.weight_decay),
        optax.scale_by_adamax(),
        optax.scale_by_learning_rate(schedule),
    ]

    def labels(variables):
        return {k: jax.tree.map(lambda _, k=k: "train" if k == "params" else "frozen", v) for k, v in variables.items()}

    return optax.multi_transform({"train": optax.chain(*parts), "frozen": optax.set_to_zero()}, labels)


def evaluate_bpd(model: ImageFlow, variables: Any, test: np.ndarray, batch: int, seed: int = 0) -> float:
    """Mean bits per dimension over `test` (dequantised with a fixed seed)."""
    fn = jax.jit(model.bits_per_dim)
    rng, total = np.random.default_rng(seed), 0.0
    for i in range(0, len(test), batch):
        chunk = test[i : i + batch]
        x = dequantize_np(chunk, rng, model.config.n_bits)
        x = np.concatenate([x, np.zeros((batch - len(chunk),) + x.shape[1:], np.float32)])  # one shape
        total += float(np.sum(np.asarray(fn(variables, x))[: len(chunk)]))
    return total / len(test)


def train_images(config: Any, workdir: str, log=print) -> dict:
    t, d, e = config.train, config.data, config.eval
    proc, n_proc = jax.process_index(), jax.process_count()
    main = proc == 0
    say = log if main else (lambda *_: None)
    model = ImageFlow(GlowConfig.from_any(config.model))
    mesh = make_mesh()
    if t.batch_size % jax.device_count():
        raise ValueError(f"train.batch_size {t.batch_size} is not divisible by the {jax.device_count()} devices")
    train_set, test_set = load_image_splits(d, say)
    if train_set.shape[1:] != (model.config.image_size,) * 2 + (model.config.channels,):
        raise ValueError(f"images are {train_set.shape[1:]}, the model expects {model.config.image_size}px")
    os.makedirs(workdir, exist_ok=True)
    if main:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            json.dump(config.to_dict(), f, indent=1, default=str)

    schedule = warmup_schedule(t)
    tx = make_image_optimizer(t, schedule)
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), keep=t.keep_checkpoints)
    rng = jax.random.PRNGKey(t.seed)
    init_rng, state_rng = jax.random.split(rng)
    # ActNorm data-dependent init on the first batch(es) of the training stream
    init_images = train_set[np.random.default_rng(t.seed).permutation(len(train_set))[: t.init_batch_size]]
    latest = ckpt.latest_step()
    if latest is None:
        variables = model.init(init_rng, jnp.asarray(init_images))
    else:
        variables = jax.eval_shape(model.init, init_rng, jax.ShapeDtypeStruct(init_images.shape, jnp.uint8))
        variables = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), variables)
    state = init_state(variables, tx, state_rng)
    position = 0
    if latest is not None:
        state, meta = ckpt.restore(latest, abstract_like(state))
        position = int(meta["data"]["position"])
        say(f"resumed from step {latest} in {checkpoint_dir(workdir)}")
    say(f"model: {model.config.variant}, {count_params(state.params['params']):,} parameters")
    state = replicate(state, mesh)

    loader = ImageLoader(train_set, t.batch_size // n_proc, t.seed, model.config.n_bits, proc, n_proc, position)
    step_fn = make_train_step(lambda v, x: jnp.mean(model.bits_per_dim(v, x)), tx, schedule, mesh)
    writer = Writer(os.path.join(workdir, "tb"), main)

    def run_eval(step: int, state) -> tuple[dict, float]:
        bpd = evaluate_bpd(model, jax.device_get(state.params), test_set[: e.num_images], e.batch_size)
        writer.scalars(step, {"eval/bpd": bpd})
        say(f"eval at step {step}: test bpd {bpd:.4f}")
        if main:
            _write_samples(model, state, e, workdir, writer, step)
        return {"eval/bpd": bpd}, bpd

    state, step, results = run_steps(
        state, step_fn, loader, mesh, config, workdir, ckpt, writer, say, run_eval, loss_name="bpd"
    )
    results["step"] = step
    return results


def _write_samples(model: ImageFlow, state, e, workdir: str, writer: Writer, step: int) -> None:
    variables = jax.device_get(state.params)
    out = os.path.join(workdir, "samples")
    os.makedirs(out, exist_ok=True)
    sample = jax.jit(model.sample, static_argnums=2)  # one compilation for every temperature
    for temp in e.temperatures:
        imgs = np.asarray(sample(variables, jax.random.PRNGKey(step), e.num_samples, float(temp)))
        grid = grid_figure(imgs, f"{model.config.variant} samples, temperature {temp}, step {step}")
        save_png(os.path.join(out, f"step_{step}_t{temp}.png"), grid)
        writer.image(step, f"samples/t{temp}", grid)
