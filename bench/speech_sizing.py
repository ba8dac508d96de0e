"""Steps per second of candidate vocoder sizes on this machine: which model a CPU-hour can train.

    python bench/speech_sizing.py [--steps 4] [--dtypes float32,bfloat16]

Each candidate (NanoFlow, the width / layers / flows / groups below) is the trainer's own jitted step
(mel on device + forward + backward + Adam) on a batch of crops: AOT-compiled, one warm-up step, then
`steps` timed steps, each blocked on; the median is printed with samples per second.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
CANDIDATES = {  # name: (model fields, batch, crop samples)
    "c32_l6_k4_g8": (dict(channels=32, n_layers=6, n_flows=4, n_groups=8, embed_dim=64), 4, 8192),
    "c48_l6_k6_g8": (dict(channels=48, n_layers=6, n_flows=6, n_groups=8, embed_dim=128), 4, 8192),
    "c64_l8_k8_g16": (dict(channels=64, n_layers=8, n_flows=8, n_groups=16, embed_dim=128), 2, 16384),
}


def time_candidate(name: str, dtype: str, steps: int) -> dict:
    import jax
    import numpy as np

    from bench.train_step import timed_steps
    from configs import ljspeech
    from nanoflow_jax.models.params import count_params
    from nanoflow_jax.train.run import task_from_config
    from nanoflow_jax.train.step import global_batch, make_mesh, replicate
    from nanoflow_jax.train.trainer import build_step, initial_state

    fields, batch, crop = CANDIDATES[name]
    cfg = ljspeech.get_config("nanoflow")
    cfg.model.update(fields)
    cfg.train.batch_size, cfg.data.segment_length, cfg.train.compute_dtype = batch, crop, dtype
    task = task_from_config(cfg)
    mesh = make_mesh()
    tx, _, step = build_step(task, mesh)
    state = replicate(initial_state(task, tx, jax.random.PRNGKey(0)), mesh)
    audio = 0.1 * np.random.default_rng(0).standard_normal((batch, crop)).astype(np.float32)
    x = global_batch(audio, mesh)
    compiled = step.lower(state, x).compile()
    state, _, times = timed_steps(compiled, state, x, steps)
    med = statistics.median(times)
    return {
        "name": name,
        "dtype": dtype,
        "params": count_params(state.params),
        "step_s": med,
        "samples_per_s": batch * crop / med,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--candidates", default=",".join(CANDIDATES))
    args = ap.parse_args()
    import jax

    print(f"jax {jax.__version__}, {os.cpu_count()} CPUs")
    print(f"{'candidate':16s} {'dtype':9s} {'params':>9s} {'step s':>7s} {'samples/s':>10s}")
    for name in args.candidates.split(","):
        for dtype in args.dtypes.split(","):
            r = time_candidate(name, dtype, args.steps)
            print(f"{name:16s} {dtype:9s} {r['params']:9,d} {r['step_s']:7.3f} {r['samples_per_s']:10.0f}", flush=True)


if __name__ == "__main__":
    main()
