"""Input-pipeline throughput: can the host feed an accelerator?

    python -m bench.loader [--data demo] [--batch 32] [--segment 16000] [--seconds 10] [--accelerator DIR]

Measures this host's training batches per second three ways, each for `--seconds` after one warm-up
batch: the corpus in memory (int16, cropped), the corpus decoded per crop by 1 and by 2 worker threads
(data.max_memory_gb=0), and the in-memory batches through `device_batches` (the trainer's prefetcher,
which also puts each batch on the device). It prints samples/s against what one batch-32 step of the
paper's NanoFlow consumes on an H200: from the train rows of a `python -m bench.accelerator` run (--accelerator
DIR) when given, else estimated at 40% MFU (3 x 44.6 MFLOP per sample, 989 TFLOP/s bf16 peak).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time


def rate(loader, seconds: float, batch: int, segment: int, close: bool = True) -> float:
    next(loader)  # warm-up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        b = next(loader)
        getattr(b, "block_until_ready", lambda: None)()
        n += 1
    elapsed = time.perf_counter() - t0
    if close:
        loader.close()
    return n * batch * segment / elapsed


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="demo", help="a corpus folder (default: the bundled demo corpus)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--segment", type=int, default=16000)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--accelerator", default=None, help="a bench.accelerator output folder")
    args = ap.parse_args()

    import jax

    from nanoflow_jax.data import CropLoader, load_splits
    from nanoflow_jax.data.audio_config import AudioDataConfig
    from nanoflow_jax.data.prefetch import device_batches
    from nanoflow_jax.train.step import make_mesh

    print(f"{cpu_name()}, {os.cpu_count()} CPUs; jax {jax.__version__} on {jax.devices()[0].platform}")
    results = {}
    for label, gb, workers in (
        ("in memory (int16)", 8.0, None),
        ("decoded, 1 worker", 0.0, 1),
        ("decoded, 2 workers", 0.0, 2),
    ):
        train, _ = load_splits(AudioDataConfig(path=args.data, max_memory_gb=gb), log=lambda *_: None)
        loader = CropLoader(train, args.batch, args.segment, seed=0, workers=workers)
        results[label] = rate(loader, args.seconds, args.batch, args.segment)
    train, _ = load_splits(AudioDataConfig(path=args.data), log=lambda *_: None)
    mesh = make_mesh(jax.devices()[:1])
    prefetched = device_batches(CropLoader(train, args.batch, args.segment, seed=0), mesh)
    results["in memory, on the device (prefetcher)"] = rate(prefetched, args.seconds, args.batch, args.segment)

    need, source = None, "estimate: 40% MFU of 989 TFLOP/s, 3 x 44.6 MFLOP per sample"
    if args.accelerator:
        rows = [json.loads(line) for line in open(os.path.join(args.accelerator, "accelerator.jsonl"))]
        train_rows = [r for r in rows if r.get("case") == "train" and r.get("batch") == 32 and "samples_per_s" in r]
        if train_rows:
            best = max(train_rows, key=lambda r: r["samples_per_s"])
            need, source = best["samples_per_s"], f"measured: {best['device_kind']} {best['dtype']} batch 32"
    if need is None:
        need = 0.4 * 989.4e12 / (3 * 44.6e6)
    print(f"one H200 step of batch 32 x {args.segment} consumes {need:,.0f} samples/s ({source})")
    for label, r in results.items():
        print(f"{label:40s} {r:14,.0f} samples/s  {r / need:7.1f}x what the step consumes")


if __name__ == "__main__":
    main()
