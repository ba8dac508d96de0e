"""The speech voice's learning curve: test LL and copy-synthesis quality of saved checkpoints against
steps, with Griffin-Lim from the same mels beside them (measured once; it does not train).

    python -m bench.speech_curve --workdir runs/speech [--steps 250,500,...] [--per_speaker 2] \
        [--temperature 0.8] --out bench/speech_curve.json --plot bench/speech_curve.png

Each checkpoint is evaluated on the same held-out prompts (the run's per-speaker test split, the first
`per_speaker` of each speaker) with `nanoflow_jax.evaluate.evaluate`; the JSON holds every mean.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

PANELS = (
    ("ll", "test LL (nats / sample)"),
    ("log_mel_l1", "log-mel L1"),
    ("mcd_db", "MCD (dB)"),
    ("stoi", "STOI"),
    ("pesq_wb", "PESQ (wideband)"),
    ("lsd_db", "log-spectral distance (dB)"),
)


def plot(curve: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [p["step"] for p in curve["points"]]
    fig, axes = plt.subplots(2, 3, figsize=(12, 6.5))
    for ax, (key, title) in zip(axes.flat, PANELS, strict=True):
        ax.plot(steps, [p["mean"]["model"][key] for p in curve["points"]], "o-", label="NanoFlow")
        gl = curve["griffin_lim"][key]
        if gl is not None and math.isfinite(gl):
            ax.axhline(gl, color="gray", ls="--", label="Griffin-Lim (32 it.)")
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes.flat[0].legend()
    fig.suptitle(f"{curve['data']}: {curve['n']} held-out prompts, temperature {curve['temperature']}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--steps", default=None, help="comma-separated (default: every saved checkpoint)")
    ap.add_argument("--per_speaker", type=int, default=2)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--out", required=True)
    ap.add_argument("--plot", default=None)
    args = ap.parse_args()

    from nanoflow_jax.audio.mel import MelConfig
    from nanoflow_jax.checkpoints import Checkpointer, checkpoint_dir, load_checkpoint
    from nanoflow_jax.evaluate import evaluate, held_out, json_safe

    ckpt = Checkpointer(checkpoint_dir(args.workdir), create=False, async_save=False)
    saved = ckpt.all_steps()
    ckpt.close()
    steps = [int(s) for s in args.steps.split(",")] if args.steps else saved
    curve = {"workdir": args.workdir, "temperature": args.temperature, "points": [], "griffin_lim": None}
    quiet = lambda *_: None  # noqa: E731
    for i, step in enumerate(steps):
        config, model, params = load_checkpoint(args.workdir, step)
        data = dict(config["data"])
        speakers = held_out(data, None, args.per_speaker)
        t0 = time.perf_counter()
        result = evaluate(
            model, params, MelConfig.from_any(data), speakers, args.temperature, progress=quiet, baseline=i == 0
        )
        if i == 0:
            curve.update(
                data=data["path"],
                n=result["mean"]["n"],
                griffin_lim=result["mean"]["griffin_lim"],
                held_out={s: [os.path.basename(f) for f in fs] for s, fs in speakers.items()},
            )
        curve["points"].append({"step": step, "mean": result["mean"], "per_speaker": result["per_speaker"]})
        m = result["mean"]["model"]
        print(
            f"step {step}: LL {m['ll']:.4f}, log-mel L1 {m['log_mel_l1']:.3f}, MCD {m['mcd_db']:.2f} dB, "
            f"STOI {m['stoi']:.3f}, PESQ {m['pesq_wb']:.2f} ({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(json_safe(curve), f, indent=1)
    if curve["griffin_lim"]:
        g = curve["griffin_lim"]
        print(
            f"Griffin-Lim: log-mel L1 {g['log_mel_l1']:.3f}, MCD {g['mcd_db']:.2f} dB, STOI {g['stoi']:.3f}, "
            f"PESQ {g['pesq_wb']:.2f}"
        )
    if args.plot:
        plot(curve, args.plot)
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    from nanoflow_jax.cli import run_cli

    run_cli(main, "bench.speech_curve")
