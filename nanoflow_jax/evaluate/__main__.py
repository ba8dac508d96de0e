"""python -m nanoflow_jax.evaluate [--checkpoint DIR | --official CKPT.pt --config CONFIG.json]
       [--data DIR] [--per_speaker 4] [--temperature 0.8] --out results.json

With no model flag, the shipped voice. The held-out prompts are those of the run's (or voice's) own
test split, read from --data (default: the path the run trained on). Prints a markdown table of the
means per speaker and overall, model beside Griffin-Lim; --out gets every figure per utterance too.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any

from nanoflow_jax.cli import parse_module_flags, run_cli
from nanoflow_jax.errors import UsageError

DEFAULT_SPLIT = {"source": "folder", "test_fraction": 0.1, "test_split": "per_folder"}
DEFAULT_TEMPERATURE = 0.8


def define(fv: Any) -> None:
    from absl import flags

    d = dict(flag_values=fv)
    flags.DEFINE_string("checkpoint", None, "A workdir or checkpoint folder of ours.", **d)
    flags.DEFINE_integer("step", None, "The checkpoint's step (default: the newest).", **d)
    flags.DEFINE_string("official", None, "An official PyTorch checkpoint (.pt); needs --config.", **d)
    flags.DEFINE_string("config", None, "The official JSON config that goes with --official.", **d)
    flags.DEFINE_string("data", None, "Folder of recordings (default: the run's data.path).", **d)
    flags.DEFINE_integer("per_speaker", 4, "Held-out utterances per speaker (0: all).", **d)
    flags.DEFINE_float(
        "temperature", None, "Std of the latent noise (default: the shipped voice's measured best, else 0.8).", **d
    )
    flags.DEFINE_integer("seed", 0, "Seed of the latent noise.", **d)
    flags.DEFINE_integer("griffin_lim_iters", 32, "Griffin-Lim iterations of the baseline.", **d)
    flags.DEFINE_string("out", None, "JSON file for every figure.", **d)


def main(argv: list[str] | None = None) -> None:
    args, _ = parse_module_flags("evaluate", __doc__, define, argv)

    def run():
        from nanoflow_jax.checkpoints import checkpoint_dir
        from nanoflow_jax.evaluate import evaluate, held_out, json_safe, markdown_table
        from nanoflow_jax.files import atomic_write, check_not_input, check_output_file, resolve_path

        if args.temperature is not None and (not math.isfinite(args.temperature) or args.temperature < 0):
            raise UsageError(f"--temperature {args.temperature} is not allowed: a finite number >= 0")
        if args.per_speaker < 0 or args.griffin_lim_iters < 1:
            raise UsageError("--per_speaker must be >= 0 and --griffin_lim_iters >= 1")
        if args.step is not None and not args.checkpoint:
            raise UsageError("--step goes with --checkpoint")
        out = None
        if args.out:  # checked before the work, not after it
            out = resolve_path(args.out)
            check_output_file(out)
            inputs = [f for f in (args.official, args.config) if f]
            folders = [d for d in (args.data, args.checkpoint and checkpoint_dir(args.checkpoint)) if d]
            check_not_input(out, inputs, folders)
        model, params, mel_cfg, data, name, step, own_temperature = _load(args)
        temperature = args.temperature if args.temperature is not None else own_temperature or DEFAULT_TEMPERATURE
        speakers = held_out(data, args.data, args.per_speaker or None)
        result = evaluate(model, params, mel_cfg, speakers, temperature, args.seed, args.griffin_lim_iters)
        command = "python -m nanoflow_jax.evaluate " + " ".join(sys.argv[1:] if argv is None else argv)
        result = {
            "model": name,
            "step": step,
            "command": command,
            "data": args.data or data.get("path"),
            "held_out": speakers,
            **result,
        }
        print(markdown_table(result))
        if out:
            text = json.dumps(json_safe(result), indent=1) + "\n"
            atomic_write(out, lambda f: f.write(text.encode()))
            print(f"wrote {out}")

    run_cli(run, "evaluate")


def _load(args):
    from nanoflow_jax.audio.mel import MelConfig
    from nanoflow_jax.synth.loading import load_model

    if args.checkpoint:
        if args.official or args.config:
            raise UsageError("give either --checkpoint or --official with --config")
        from nanoflow_jax.checkpoints import Checkpointer, checkpoint_dir, load_checkpoint

        config, model, params = load_checkpoint(args.checkpoint, args.step)
        step = args.step
        if step is None:
            ckpt = Checkpointer(checkpoint_dir(args.checkpoint), create=False, async_save=False)
            step = ckpt.latest_step()
            ckpt.close()
        data = dict(DEFAULT_SPLIT)
        data.update({k: v for k, v in dict(config.get("data", {})).items() if k in (*DEFAULT_SPLIT, "path")})
        return model, params, MelConfig.from_any(config["data"]), data, args.checkpoint, step, None
    if args.official or args.config:
        model, params, mel_cfg = load_model(None, args.official, args.config)
        return model, params, mel_cfg, dict(DEFAULT_SPLIT), args.official, None, None
    from nanoflow_jax.voices import DEFAULT_VOICE, load_voice, voice_info

    model, params = load_voice()
    info = voice_info()
    step = info.get("training", {}).get("step")
    name = f"voice {DEFAULT_VOICE}"
    return model, params, MelConfig.from_any(info["data"]), info["data"], name, step, info.get("temperature")


if __name__ == "__main__":
    main()
