"""python -m nanoflow_jax.export --checkpoint runs/wave_g16 --frames 172 --batch 1 --out synth.jaxexport

Serialise the synthesis program (jax.export) for serving without this package's Python code.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from nanoflow_jax.checkpoints import checkpoint_dir
from nanoflow_jax.cli import parse_module_flags, run_cli
from nanoflow_jax.errors import UsageError
from nanoflow_jax.export import check_platforms, export_synthesis, save
from nanoflow_jax.files import check_not_input, resolve_path
from nanoflow_jax.models import POLICIES
from nanoflow_jax.synth.vocoder import load_vocoder


def define(fv: Any) -> None:
    from absl import flags

    flags.DEFINE_string("checkpoint", None, "A workdir or checkpoint folder.", flag_values=fv)
    flags.DEFINE_string("official", None, "An official .pt checkpoint (with --config).", flag_values=fv)
    flags.DEFINE_string("config", None, "The official JSON config.", flag_values=fv)
    flags.DEFINE_integer("frames", None, "Mel frames per item.", lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("batch", 1, "Items per call.", lower_bound=1, flag_values=fv)
    flags.DEFINE_enum("dtype", "float32", list(POLICIES), "Precision of the estimator's matmuls.", flag_values=fv)
    flags.DEFINE_string("platforms", None, "Comma-separated, e.g. cpu,cuda (default: this machine's).", flag_values=fv)
    flags.DEFINE_string("out", None, "The .jaxexport file to write.", flag_values=fv)
    for name in ("frames", "out"):
        flags.mark_flag_as_required(name, flag_values=fv)


def main(argv: list[str] | None = None) -> None:
    args, _ = parse_module_flags("export", __doc__, define, argv)

    def run():
        platforms = check_platforms(tuple(args.platforms.split(","))) if args.platforms is not None else None
        out = resolve_path(args.out)
        inputs = [f for f in (args.official, args.config) if f]
        check_not_input(out, inputs, [checkpoint_dir(args.checkpoint)] if args.checkpoint else [])
        if not (args.checkpoint or args.official):
            raise UsageError("give the model to export: --checkpoint DIR or --official CKPT.pt --config CONFIG.json")
        vocoder = load_vocoder(args.checkpoint, args.official, args.config)
        exported = export_synthesis(vocoder, args.frames, args.batch, args.dtype, platforms)
        info = {
            "model": dataclasses.asdict(vocoder.config),
            "mel": dataclasses.asdict(vocoder.mel_config),
            "frames": args.frames,
            "batch": args.batch,
            "dtype": args.dtype,
        }
        save(exported, out, info)
        print(
            f"wrote {out}: (mel {exported.in_avals[0].shape}, z {exported.in_avals[1].shape}) -> "
            f"audio {exported.out_avals[0].shape}, platforms {exported.platforms}; "
            "load it with nanoflow_jax.export.load"
        )

    run_cli(run, "export")


if __name__ == "__main__":
    main()
