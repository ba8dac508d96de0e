"""Training-step time and peak memory of NanoFlow C=128 (configs/wave_g16.py), batch 2 x 16,000 samples.

    python bench/train_step.py [--steps 5] [--modes float32,float32_remat,bfloat16_remat]

Each mode runs in a fresh subprocess (so its peak resident memory is its own): AOT-compile the jitted step
(mel on device + forward + backward + Adam), one warm-up step, then `steps` timed steps, each blocked on.
Prints the median step time, the process's peak RSS and XLA's own estimate of the step's temporary buffers.
Compare with the official code run in the same sitting (../shared/official-bench).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
MODES = {
    "float32": ("float32", False),
    "float32_remat": ("float32", True),
    "bfloat16_remat": ("bfloat16", True),
    "bfloat16": ("bfloat16", False),
}


def timed_steps(compiled, state, batch, steps: int):
    """One warm-up step, then `steps` timed ones, each blocked on: -> (state, last metrics, seconds)."""
    import jax

    state, m = compiled(state, batch)
    jax.block_until_ready(m)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        state, m = compiled(state, batch)
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t0)
    return state, m, times


def run_one(mode: str, steps: int) -> dict:
    sys.path.insert(0, ROOT)
    import jax
    import numpy as np

    from configs import wave_g16
    from nanoflow_jax.train.run import task_from_config
    from nanoflow_jax.train.step import global_batch, make_mesh, replicate
    from nanoflow_jax.train.trainer import build_step, initial_state

    cfg = wave_g16.get_config()
    cfg.train.compute_dtype, cfg.train.remat = MODES[mode]
    task = task_from_config(cfg)  # the trainer's own task, step and state
    mesh = make_mesh()
    tx, _, step = build_step(task, mesh)
    state = replicate(initial_state(task, tx, jax.random.PRNGKey(0)), mesh)
    audio = 0.1 * np.random.default_rng(0).standard_normal((2, 16000)).astype(np.float32)
    batch = global_batch(audio, mesh)
    t0 = time.perf_counter()
    compiled = step.lower(state, batch).compile()
    compile_s = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    state, m, times = timed_steps(compiled, state, batch, steps)
    return {
        "mode": mode,
        "median_s": statistics.median(times),
        "min_s": min(times),
        "compile_s": compile_s,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "xla_temp_gib": (mem.temp_size_in_bytes if mem else float("nan")) / 2**30,
        "loss": float(m["loss"]),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--modes", default="float32,float32_remat,bfloat16_remat")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.steps)))
        return
    import jax

    print(
        f"jax {jax.__version__}, {jax.devices()[0].platform} x {jax.device_count()}, {os.cpu_count()} CPUs; "
        "NanoFlow C=128 K=8 L=8 G=16 D=512, batch 2 x 16000"
    )
    print(f"{'mode':12s} {'median s':>9s} {'peak RSS GiB':>13s} {'XLA temp GiB':>13s} {'compile s':>9s}")
    for mode in args.modes.split(","):
        out = subprocess.run(
            [sys.executable, __file__, "--one", mode, "--steps", str(args.steps)],
            capture_output=True,
            text=True,
            check=True,
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"{mode:12s} {r['median_s']:9.2f} {r['peak_rss_gib']:13.2f} {r['xla_temp_gib']:13.2f} {r['compile_s']:9.1f}"
        )


if __name__ == "__main__":
    main()
