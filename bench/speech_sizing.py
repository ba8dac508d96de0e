"""Steps per second of candidate vocoder sizes on this machine: which model a CPU-hour can train.

    python -m bench.speech_sizing [--steps 4] [--dtypes float32,bfloat16]

Each candidate (NanoFlow, the width / layers / flows / groups below) is the trainer's own jitted step
(mel on device + forward + backward + Adam) on a batch of crops: AOT-compiled, one warm-up step, then
`steps` timed steps, each blocked on; the median is printed with samples per second.
"""

from __future__ import annotations

import argparse
import os

import jax

from nanoflow_jax.models import AudioFlow
from nanoflow_jax.models.audio_params import init_params

CANDIDATES = {  # name: (model fields, batch, crop samples)
    "c32_l6_k4_g8": (dict(channels=32, n_layers=6, n_flows=4, n_groups=8, embed_dim=64), 4, 8192),
    "c48_l6_k6_g8": (dict(channels=48, n_layers=6, n_flows=6, n_groups=8, embed_dim=128), 4, 8192),
    "c64_l8_k8_g16": (dict(channels=64, n_layers=8, n_flows=8, n_groups=16, embed_dim=128), 2, 16384),
}


def time_candidate(name: str, dtype: str, steps: int) -> dict:
    from bench.common import median, paper_model, timed, train_program
    from nanoflow_jax.models.params import count_params

    fields, batch, crop = CANDIDATES[name]
    cfg = paper_model(**fields)
    run, _ = train_program(cfg, dtype, batch, crop)
    times, _ = timed(run, steps)
    step_s = median(times)
    params = count_params(jax.eval_shape(lambda: init_params(AudioFlow(cfg), jax.random.PRNGKey(0)))["params"])
    return {"name": name, "dtype": dtype, "params": params, "step_s": step_s, "samples_per_s": batch * crop / step_s}


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
