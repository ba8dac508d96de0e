"""Average the params of a run's last checkpoints (the official recipe's final step: a plain mean of
every stored tensor).

    python -m nanoflow_jax.average --workdir runs/wave_g16 --last 10 [--out runs/wave_g16/averaged]

The result is a checkpoint folder that `nf.load_checkpoint`, `synth.py --checkpoint` and
`train.py --warm_start` accept.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np

from nanoflow_jax.checkpoints import Checkpointer, checkpoint_dir, save_params_folder
from nanoflow_jax.cli import parse_module_flags, run_cli
from nanoflow_jax.errors import CheckpointError, InputError, UsageError
from nanoflow_jax.files import check_not_input, resolve_path
from nanoflow_jax.models import abstract_variables, build_model, model_config


def _model_section(config: Any) -> Any:
    return config.get("model") if isinstance(config, dict) else None


def average_checkpoints(workdir: str, last: int, out: str | None = None) -> tuple[str, list[int]]:
    """Write the mean params of the `last` newest checkpoints of `workdir`; -> (out folder, steps used).
    Before any array is read: the output is outside the checkpoints folder, and every checkpoint declares
    the same model config and the same array shapes as the newest (a mean of different models is refused)."""
    if last < 1:
        raise UsageError(f"--last must be at least 1, got {last}")
    src = checkpoint_dir(workdir)
    if not os.path.isdir(src):
        raise InputError(f"workdir {workdir} does not exist")
    out = resolve_path(out) if out else os.path.join(resolve_path(workdir), "averaged")
    check_not_input(out, input_folders=[src])
    ckpt = Checkpointer(src, create=False, async_save=False)
    steps = sorted(ckpt.all_steps())[-last:]
    if not steps:
        raise CheckpointError(f"no checkpoints in {workdir}")
    config = ckpt.read_meta(steps[-1]).get("config")
    expected = None
    if isinstance(_model_section(config), dict):  # the model its config builds, before any array is read
        expected = abstract_variables(build_model(model_config(config["model"], ckpt.meta_path(steps[-1]))))
    newest = ckpt.check_declared(steps[-1], expected, prefix="params/")
    declared = {k: v for k, v in newest.items() if k.startswith("params/")}
    for s in steps[:-1]:
        where = os.path.join(src, str(s))
        if _model_section(ckpt.read_meta(s).get("config")) != _model_section(config):
            raise CheckpointError(f"checkpoint {where} holds another model than step {steps[-1]}: not averaged")
        theirs = {k: v for k, v in ckpt.declared_arrays(s).items() if k.startswith("params/")}
        if theirs != declared:
            diff = sorted(set(theirs.items()) ^ set(declared.items()))[0][0]
            raise CheckpointError(f"checkpoint {where}: array {diff} differs from step {steps[-1]}'s: not averaged")
    total = None
    for s in steps:
        state, _ = ckpt.restore(s)
        p = jax.tree.map(lambda a: np.asarray(a, np.float64), state["params"])
        total = p if total is None else jax.tree.map(np.add, total, p)
    ckpt.close()
    mean = jax.tree.map(lambda a: (a / len(steps)).astype(np.float32), total)
    return save_params_folder(out, steps[-1], mean, {"config": config, "averaged_steps": steps}), steps


def define(fv: Any) -> None:
    from absl import flags

    flags.DEFINE_string("workdir", None, "The run whose checkpoints are averaged.", flag_values=fv)
    flags.DEFINE_integer("last", 10, "How many of the newest checkpoints.", flag_values=fv)
    flags.DEFINE_string("out", None, "Output folder (default: WORKDIR/averaged).", flag_values=fv)
    flags.mark_flag_as_required("workdir", flag_values=fv)


def main(argv: list[str] | None = None) -> None:
    args, _ = parse_module_flags("average", __doc__, define, argv)

    def run():
        out, steps = average_checkpoints(args.workdir, args.last, args.out)
        print(f"averaged {len(steps)} checkpoints (steps {steps[0]}..{steps[-1]}) into {out}")

    run_cli(run, "average")


if __name__ == "__main__":
    main()
