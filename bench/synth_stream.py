"""Synthesis of a stream of mels of different lengths, as a server sees them: how much of the time goes
to compiling. Uses only the public API (`nf.synthesize`), so it runs on any version of the package.

    python -m bench.synth_stream [--count 12] [--min-frames 64] [--max-frames 128] [--dtype bfloat16]

The paper's NanoFlow (C=128 K=8 L=8 G=16, random weights); `count` mels with lengths drawn uniformly from
[min, max) frames, synthesised one at a time, twice: the first pass includes every compilation the
lengths cause, the second reuses them. Prints both passes' wall time and kHz, and how many distinct
program shapes the first pass needed (one per length, or one per bucket).
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=12)
    ap.add_argument("--min-frames", type=int, default=64)
    ap.add_argument("--max-frames", type=int, default=128)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--bucket-frames", type=int, default=None, help="nf.synthesize's bucket_frames (default: its)")
    ap.add_argument(
        "--padding",
        default=None,
        help="instead: one mel of --min-frames frames padded to each of these frame counts (e.g. 65,72,80): "
        "median time of 3 runs after a warm-up",
    )
    args = ap.parse_args()
    import jax
    import numpy as np

    import nanoflow_jax as nf
    from bench.common import median, paper_model, timed

    model = nf.build_model(paper_model())
    params = nf.inference_params(model, nf.init_params(model, jax.random.PRNGKey(0)))
    rng = np.random.default_rng(0)
    if args.padding:
        mel = rng.standard_normal((80, args.min_frames)).astype(np.float32) - 5.0
        for padded in (int(f) for f in args.padding.split(",")):
            times, _ = timed(lambda p=padded: nf.synthesize(model, params, mel, dtype=args.dtype, bucket_frames=p), 3)
            print(f"{args.min_frames} frames padded to {padded}: {median(times):.2f} s", flush=True)
        return
    frames = rng.integers(args.min_frames, args.max_frames, args.count)
    mels = [rng.standard_normal((80, int(f))).astype(np.float32) - 5.0 for f in frames]
    device = jax.devices()[0].device_kind
    print(f"jax {jax.__version__}, {device}; {args.count} mels of {sorted(frames.tolist())} frames")
    for name in ("first pass (compiles)", "second pass"):
        samples, t0 = 0, time.perf_counter()
        for m in mels:
            kw = {} if args.bucket_frames is None else {"bucket_frames": args.bucket_frames}
            samples += len(nf.synthesize(model, params, m, dtype=args.dtype, **kw)[0])
        wall = time.perf_counter() - t0
        print(f"{name:22s} {wall:7.1f} s  {samples / wall / 1e3:7.2f} kHz", flush=True)
    print(f"distinct mel lengths: {len(set(frames.tolist()))}")


if __name__ == "__main__":
    main()
