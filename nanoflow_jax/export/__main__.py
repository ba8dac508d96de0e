"""python -m nanoflow_jax.export --checkpoint runs/wave_g16 --frames 172 --batch 1 --out synth.jaxexport"""

from __future__ import annotations

import argparse

from nanoflow_jax.cli import run_cli
from nanoflow_jax.export import export_synthesis, save
from nanoflow_jax.models import POLICIES
from nanoflow_jax.synth.loading import load_vocoder


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m nanoflow_jax.export", description="Serialise the synthesis program.")
    ap.add_argument("--checkpoint", help="workdir or checkpoint folder")
    ap.add_argument("--official", help="official .pt checkpoint (with --config)")
    ap.add_argument("--config", help="official JSON config")
    ap.add_argument("--frames", type=int, required=True, help="mel frames per item")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--dtype", default="float32", choices=list(POLICIES))
    ap.add_argument("--platforms", default=None, help="comma-separated, e.g. cpu,cuda (default: this machine's)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    def run():
        model, params, _ = load_vocoder(args.checkpoint, args.official, args.config)
        platforms = tuple(args.platforms.split(",")) if args.platforms else None
        exported = export_synthesis(model, params, args.frames, args.batch, args.dtype, platforms)
        save(exported, args.out)
        print(
            f"wrote {args.out}: (mel {exported.in_avals[0].shape}, z {exported.in_avals[1].shape}) -> "
            f"audio {exported.out_avals[0].shape}, platforms {exported.platforms}"
        )

    run_cli(run, "export")


if __name__ == "__main__":
    main()
