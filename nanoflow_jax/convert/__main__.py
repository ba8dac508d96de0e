"""python -m nanoflow_jax.convert official.pt --config official.json --out ckpts/nanoflow

Convert an official NanoFlow / WaveFlow checkpoint (.pt, or a .npz state_dict) into a checkpoint folder of
ours (synth.py --checkpoint DIR, nf.load_checkpoint).
"""

from __future__ import annotations

from typing import Any

from nanoflow_jax.cli import parse_module_flags, run_cli
from nanoflow_jax.convert.write import convert_official
from nanoflow_jax.errors import UsageError


def define(fv: Any) -> None:
    from absl import flags

    flags.DEFINE_string("config", None, "The official JSON config the checkpoint was trained with.", flag_values=fv)
    flags.DEFINE_string("out", None, "The new checkpoint folder.", flag_values=fv)
    for name in ("config", "out"):
        flags.mark_flag_as_required(name, flag_values=fv)


def main(argv: list[str] | None = None) -> None:
    args, rest = parse_module_flags("convert", __doc__, define, argv)

    def run():
        if len(rest) != 1:
            raise UsageError(f"give one official checkpoint (.pt or .npz) before the flags, got {len(rest)}")
        out = convert_official(rest[0], args.config, args.out)
        print(f"wrote {out}")

    run_cli(run, "convert")


if __name__ == "__main__":
    main()
