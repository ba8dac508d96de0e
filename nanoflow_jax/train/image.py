"""The image task: Glow and NanoFlow-Glow on CIFAR-10 (or the bundled demo crops), objective in bits per
dimension of 8-bit uniformly dequantised pixels; evaluation on the test set and sample grids."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nanoflow_jax.data.images import ImageDataConfig, ImageLoader, dequantize_np, load_image_splits
from nanoflow_jax.data.stream import host_shard
from nanoflow_jax.errors import DataError
from nanoflow_jax.models import GlowConfig, ImageFlow
from nanoflow_jax.models.params import count_params
from nanoflow_jax.schema import Float, Floats, Int, Section, field
from nanoflow_jax.train.figures import grid_figure, save_png
from nanoflow_jax.train.optimizers import adamax_warmup
from nanoflow_jax.train.summaries import Writer
from nanoflow_jax.train.trainer import Task, TrainConfig


@dataclasses.dataclass(frozen=True)
class ImageTrainConfig(TrainConfig):
    """The image task's optimiser: Adamax with weight decay after a linear warm-up (the recipes' numbers
    are in configs/)."""

    warmup_steps: int = field(3905, Int(min=0), "steps of linear learning-rate warm-up (5 CIFAR-10 epochs)")
    weight_decay: float = field(5e-5, Float(min=0.0), "L2 weight decay added to the gradient (torch Adamax)")
    init_batch_size: int = field(512, Int(min=1), "images that initialise the ActNorms (official: 8 x 64)")


@dataclasses.dataclass(frozen=True)
class ImageEvalConfig(Section):
    SECTION = "eval"

    batch_size: int = field(500, Int(min=1), "test images per evaluation batch")
    num_images: int = field(10000, Int(min=1), "test images evaluated (the first ones)")
    num_samples: int = field(64, Int(min=1), "images per sample grid")
    temperatures: tuple = field((0.7, 1.0), Floats(Float(min=0.0)), "temperatures of the sample grids")


class ImageTask(Task):
    SECTIONS: ClassVar[dict[str, type[Section]]] = {
        "model": GlowConfig,
        "data": ImageDataConfig,
        "train": ImageTrainConfig,
        "eval": ImageEvalConfig,
    }
    LOSS_NAME: ClassVar[str] = "bpd"

    def __init__(self, sections: dict[str, Section], workdir: str | None = None):
        super().__init__(sections, workdir)
        self.model = ImageFlow(self.model_config, dtype=self.train.compute_dtype, remat=self.train.remat)
        model, n = ImageFlow(self.model_config), self.eval.num_samples  # evaluation: float32, built once
        self.bits_per_dim = jax.jit(lambda v, x: model.apply(v, x, method=ImageFlow.bits_per_dim))
        self.sample = jax.jit(lambda v, rng, t: model.apply(v, rng, n, t, method=ImageFlow.sample))

    def load_data(self, log: Callable) -> None:
        self.train_set, self.test_set = load_image_splits(self.data, log)
        cfg = self.model_config
        if self.train_set.shape[1:] != (cfg.image_size, cfg.image_size, cfg.channels):
            raise DataError(
                f"images are {self.train_set.shape[1:]}, the model expects {cfg.image_size}px with {cfg.channels} "
                "channels (model.image_size, model.channels)"
            )
        # fewer images than hosts fails here, before the model is built (the loader takes the share)
        host_shard(self.train_set, jax.process_index(), jax.process_count(), "training images")

    def init_variables(self, rng: jax.Array) -> Any:
        """Every ActNorm initialised from a seeded draw of all training images (dequantised): the same on
        every host, so the same params."""
        t = self.train
        order = np.random.default_rng(t.seed).permutation(len(self.train_set))[: t.init_batch_size]
        x = dequantize_np(self.train_set[order], np.random.default_rng((t.seed, 1)), self.model_config.n_bits)
        return self.model.init(rng, jnp.asarray(x))

    def optimizer(self) -> tuple[optax.GradientTransformation, optax.Schedule]:
        t = self.train
        return adamax_warmup(t.learning_rate, t.warmup_steps, t.weight_decay, t.grad_clip_norm)

    def loss(self, params: Any, batch: jax.Array) -> jax.Array:
        return jnp.mean(self.model.apply(params, batch, method=ImageFlow.bits_per_dim))

    def batches(self, position: int) -> ImageLoader:
        t = self.train
        mine = host_shard(self.train_set, jax.process_index(), jax.process_count(), "training images")
        local = t.batch_size // jax.process_count()
        return ImageLoader(mine, local, t.seed, self.model_config.n_bits, jax.process_index(), position)

    def evaluate(self, params: Any, step: int, writer: Writer, log: Callable) -> tuple[dict, float]:
        e = self.eval
        n_bits = self.model_config.n_bits
        bpd = evaluate_bpd(
            self.bits_per_dim, jax.device_get(params), self.test_set[: e.num_images], e.batch_size, n_bits
        )
        writer.scalars(step, {"eval/bpd": bpd})
        log(f"eval at step {step}: test bpd {bpd:.4f}")
        if jax.process_index() == 0:
            self.write_samples(jax.device_get(params), step, writer)
        return {"eval/bpd": bpd}, bpd

    def write_samples(self, params: Any, step: int, writer: Writer) -> None:
        e = self.eval
        out = os.path.join(self.workdir, "samples")
        os.makedirs(out, exist_ok=True)
        for temp in e.temperatures:
            imgs = np.asarray(self.sample(params, jax.random.PRNGKey(step), float(temp)))
            grid = grid_figure(imgs, f"{self.model_config.variant} samples, temperature {temp}, step {step}")
            save_png(os.path.join(out, f"step_{step}_t{temp}.png"), grid)
            writer.image(step, f"samples/t{temp}", grid)

    def describe(self, params: Any) -> str:
        return f"model: {self.model_config.variant}, {count_params(params['params']):,} parameters"


def evaluate_bpd(fn: Callable, variables: Any, test: np.ndarray, batch: int, n_bits: int, seed: int = 0) -> float:
    """Mean bits per dimension over `test` (dequantised with a fixed seed) by `fn(variables, x) -> (B,)`, in
    batches of one shape."""
    rng, total = np.random.default_rng(seed), 0.0
    for i in range(0, len(test), batch):
        chunk = test[i : i + batch]
        x = dequantize_np(chunk, rng, n_bits)
        x = np.concatenate([x, np.zeros((batch - len(chunk),) + x.shape[1:], np.float32)])  # one shape
        total += float(np.sum(np.asarray(fn(variables, x))[: len(chunk)]))
    return total / len(test)
