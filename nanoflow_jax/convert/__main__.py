"""python -m nanoflow_jax.convert official.pt --config official.json --out ckpts/nanoflow"""

from __future__ import annotations

import argparse

from nanoflow_jax.cli import run_cli
from nanoflow_jax.convert.write import convert_official


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m nanoflow_jax.convert", description="Convert an official NanoFlow / WaveFlow checkpoint."
    )
    ap.add_argument("checkpoint", help="official .pt (or .npz state_dict)")
    ap.add_argument("--config", required=True, help="the official JSON config it was trained with")
    ap.add_argument("--out", required=True, help="new checkpoint folder")
    args = ap.parse_args(argv)

    def run():
        out = convert_official(args.checkpoint, args.config, args.out)
        print(f"wrote {out}")

    run_cli(run, "convert")


if __name__ == "__main__":
    main()
