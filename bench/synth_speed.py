"""Synthesis speed (kHz) and fidelity (SNR against float32) of the cached fast inverse.

    python bench/synth_speed.py [--frames 172] [--batch 1] [--repeats 5] [--modes float32,bfloat16,float16]

NanoFlow C=128 L=8 K=8 G=16 (configs/wave_g16.py) with random weights whose projection heads are
perturbed so that every flow does real work (per-flow log_s std 0.03-0.05, as in the golden data).
Each mode is AOT-compiled (`jit(...).lower(...).compile()`), run once to warm up, then timed `repeats`
times, each blocked on; the median is reported, side by side in one run.
44.6 MFLOP per sample gives the achieved FLOP/s.
Compare with the official code run in the same sitting (../shared/official-bench), never with a figure
from another machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

MFLOP_PER_SAMPLE = 44.6


def model_config():
    """The paper's NanoFlow (configs/wave_g16.py), without needing ml_collections on a bare machine."""
    from nanoflow_jax.models import ModelConfig

    return ModelConfig(variant="nanoflow", n_flows=8, n_layers=8, channels=128, n_groups=16, embed_dim=512)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=172)
    ap.add_argument("--batch", type=str, default="1", help="comma-separated batch sizes")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--modes", default="float32,bfloat16,float16")
    ap.add_argument("--xla-options", default="")
    ap.add_argument("--cache-cond", choices=("auto", "yes", "no"), default="auto")
    ap.add_argument("--unroll", type=int, default=None, help="rows per row-scan iteration (default: per backend)")
    args = ap.parse_args()

    import jax
    import numpy as np

    import nanoflow_jax as nf
    from nanoflow_jax.synth.fast import cache_cond_fits, output_length, synthesis_fn

    cfg = model_config()
    model = nf.build_model(cfg)
    params = nf.init_params(model, jax.random.PRNGKey(0))
    heads = params["params"]["proj_heads"]
    k1, k2 = jax.random.split(jax.random.PRNGKey(1))
    heads["kernel"] = 0.05 * jax.random.normal(k1, heads["kernel"].shape)  # log_s std 0.03-0.05 per flow
    heads["bias"] = 0.05 * jax.random.normal(k2, heads["bias"].shape)
    params = nf.inference_params(model, params)
    t = output_length(args.frames, cfg)
    print(f"devices: {jax.devices()}  jax {jax.__version__}")
    print(
        f"NanoFlow C={cfg.channels} L={cfg.n_layers} K={cfg.n_flows} G={cfg.n_groups}, "
        f"{args.frames} frames -> {t} samples per item"
    )
    print(f"{'batch':>5s} {'mode':9s} {'median s':>9s} {'kHz':>9s} {'GFLOP/s':>8s} {'SNR dB':>7s} {'compile s':>9s}")
    for batch in [int(b) for b in args.batch.split(",")]:
        mel = jax.random.normal(jax.random.PRNGKey(2), (batch, cfg.cond_channels, args.frames)) - 5.0
        z = jax.random.normal(jax.random.PRNGKey(3), (batch, t))
        cache = {"yes": True, "no": False}.get(args.cache_cond)
        if cache is None:
            cache = cache_cond_fits(cfg, batch, t)
        ref = None
        for mode in args.modes.split(","):
            t0 = time.perf_counter()
            opts = {
                k: {"true": True, "false": False}.get(v, v)
                for k, v in (o.split("=") for o in args.xla_options.split(",") if o)
            }
            fn = synthesis_fn(cfg, mode, False, cache, args.unroll).lower(params, mel, z).compile(opts or None)
            compile_s = time.perf_counter() - t0
            out = np.asarray(jax.block_until_ready(fn(params, mel, z)))
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                jax.block_until_ready(fn(params, mel, z))
                times.append(time.perf_counter() - t0)
            med = statistics.median(times)
            khz = batch * t / med / 1e3
            if ref is None:
                ref = out
            err = out - ref
            snr = 10 * np.log10(np.sum(ref**2) / max(np.sum(err**2), 1e-30)) if mode != "float32" else float("inf")
            gflops = khz * 1e3 * MFLOP_PER_SAMPLE / 1e3
            print(
                f"{batch:5d} {mode:9s} {med:9.3f} {khz:9.2f} {gflops:8.0f} {snr:7.1f} {compile_s:9.1f}",
                flush=True,
            )
            if not np.all(np.isfinite(out)):
                print(f"      {mode}: non-finite samples", flush=True)


if __name__ == "__main__":
    main()
