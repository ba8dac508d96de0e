"""What the benchmarks share: the paper's model, weights under which every flow works, the two programs
they time (the cached inverse and the training step) and one timing loop.

Benchmarks run from the repository root as modules, `python -m bench.NAME`, so the package, configs/ and
this module import without an install (the lent GPU machine has none) and without editing sys.path.
Only jax, flax, optax, numpy and the package are imported here: no ml_collections, which that machine
lacks.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from nanoflow_jax.models import AudioFlow, ModelConfig
from nanoflow_jax.models.audio_params import inference_params, init_params

# dense peak TFLOP/s by device kind (jax's `device_kind`, also what bench/gpu_targets/ report) and
# policy: vendor data sheets, SXM parts, no sparsity
PEAK_TFLOPS = {
    "NVIDIA H200": {"float32": 67.0, "tensorfloat32": 494.7, "bfloat16": 989.4, "float16": 989.4},
    "NVIDIA H100 80GB HBM3": {"float32": 67.0, "tensorfloat32": 494.7, "bfloat16": 989.4, "float16": 989.4},
    "NVIDIA A100-SXM4-80GB": {"float32": 19.5, "tensorfloat32": 156.0, "bfloat16": 312.0, "float16": 312.0},
    "NVIDIA A100-SXM4-40GB": {"float32": 19.5, "tensorfloat32": 156.0, "bfloat16": 312.0, "float16": 312.0},
    "Tesla V100-SXM2-16GB": {"float32": 15.7, "tensorfloat32": 15.7, "bfloat16": None, "float16": 125.0},
}


def paper_model(**fields: Any) -> ModelConfig:
    """The paper's NanoFlow (C=128, L=8, K=8, G=16, D=512): ModelConfig's defaults, which are
    configs/wave_g16.py's model (tests/test_bench.py holds them equal); `fields` change some."""
    return ModelConfig(**fields)


def forward_flops_per_sample(cfg: ModelConfig) -> float:
    """One forward pass per audio sample: 20 C^2 + 2 x bands x C multiply-adds per layer and flow (the
    official estimator's layers; 44.6 MFLOP for the paper's model)."""
    return 2.0 * cfg.n_flows * cfg.n_layers * (20 * cfg.channels**2 + 2 * cfg.cond_channels * cfg.channels)


def working_params(cfg: ModelConfig, seed: int = 0) -> Any:
    """Random inference-form params whose projection heads are perturbed (std 0.05: per-flow log_s std
    0.03-0.05, as in the golden data), so that every flow does real work."""
    model = AudioFlow(cfg)
    params = init_params(model, jax.random.PRNGKey(seed))
    heads = params["params"]["proj_heads"]  # near zero at init
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed + 1))
    heads["kernel"] = 0.05 * jax.random.normal(k1, heads["kernel"].shape)
    heads["bias"] = 0.05 * jax.random.normal(k2, heads["bias"].shape)
    return inference_params(model, params)


def synthesis_program(
    cfg: ModelConfig, params: Any, batch: int, frames: int, dtype: str, compile: Callable | None = None, **options: Any
):
    """The cached inverse (`synthesis_fn`, the conditioning cached where it fits, as `nf.synthesize`
    does), AOT-compiled for (batch, frames) -> (run, info): `run()` synthesises once; info has the samples
    made, the compile seconds and the compiled program. `compile(lowered) -> compiled` replaces
    `lowered.compile()` (bench.accelerator audits the program as it compiles it)."""
    from nanoflow_jax.synth.fast import cache_cond_fits, output_length, synthesis_fn

    t = output_length(frames, cfg)
    options.setdefault("cache_cond", cache_cond_fits(cfg, batch, t))
    mel = jax.random.normal(jax.random.PRNGKey(3), (batch, cfg.cond_channels, frames)) - 5.0
    z = jax.random.normal(jax.random.PRNGKey(4), (batch, t))
    t0 = time.perf_counter()
    compiled = (compile or _compile)(synthesis_fn(cfg, dtype, **options).lower(params, mel, z))
    info = {"samples": batch * t, "compile_s": time.perf_counter() - t0, "compiled": compiled}
    return (lambda: compiled(params, mel, z)), info


def train_program(
    cfg: ModelConfig, dtype: str, batch: int, segment: int, remat: bool = False, compile: Callable | None = None
):
    """The trainer's step (mel on the device, forward, backward, Adam with the official schedule, the
    non-finite skip; float16 adds loss scaling) on `batch` random crops, AOT-compiled -> (run, info):
    `run()` takes one step (the state, which the step donates, is carried) and returns its metrics.
    `compile`: as in `synthesis_program`."""
    from nanoflow_jax.audio.mel import MelConfig
    from nanoflow_jax.train.audio_loss import audio_nll
    from nanoflow_jax.train.optimizers import adam_halving
    from nanoflow_jax.train.step import global_batch, init_state, make_mesh, make_train_step, replicate

    mesh = make_mesh()
    model = AudioFlow(cfg, remat=remat, dtype=dtype).for_platform(mesh.devices.flat[0].platform)  # as the trainer
    tx, schedule = adam_halving(1e-3, 200_000, 0.5, 5.0)  # the official recipe
    step = make_train_step(audio_nll(model, MelConfig()), tx, schedule, mesh, dynamic_scale=dtype == "float16")
    scale = 2.0**15 if dtype == "float16" else 1.0
    state = replicate(init_state(init_params(model, jax.random.PRNGKey(0)), tx, jax.random.PRNGKey(1), scale), mesh)
    x = global_batch(0.1 * np.random.default_rng(0).standard_normal((batch, segment)).astype(np.float32), mesh)
    t0 = time.perf_counter()
    compiled = (compile or _compile)(step.lower(state, x))
    info = {"samples": batch * segment, "compile_s": time.perf_counter() - t0, "compiled": compiled}
    holder = [state]

    def run() -> Any:
        holder[0], metrics = compiled(holder[0], x)
        return metrics

    return run, info


def _compile(lowered: Any) -> Any:
    return lowered.compile()


def timed(run: Callable[[], Any], repeats: int, warmup: int = 1) -> tuple[list[float], Any]:
    """`warmup` untimed calls, then `repeats` timed ones, each blocked on -> (seconds of each, the last
    result)."""
    out = None
    for _ in range(warmup):
        out = jax.block_until_ready(run())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = jax.block_until_ready(run())
        times.append(time.perf_counter() - t0)
    return times, out


def median(times: list[float]) -> float:
    return statistics.median(times)


def snr_db(ref: np.ndarray, out: np.ndarray) -> float | None:
    """Signal-to-error ratio of `out` against `ref` (None when they are equal)."""
    err = float(np.sum((np.asarray(out, np.float64) - ref) ** 2))
    return None if err == 0 else 10 * float(np.log10(np.sum(np.asarray(ref, np.float64) ** 2) / err))
