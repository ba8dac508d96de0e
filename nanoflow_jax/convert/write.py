"""An official checkpoint + config written as a checkpoint folder of ours."""

from __future__ import annotations

import os

from nanoflow_jax.checkpoints import save_params_folder
from nanoflow_jax.convert.official_config import official_data_config, read_official
from nanoflow_jax.convert.official_params import load_official
from nanoflow_jax.errors import OutputError
from nanoflow_jax.files import resolve_path


def convert_official(checkpoint: str, official_config: str, out: str) -> str:
    """Write an official checkpoint + config as a checkpoint folder that `nf.load_checkpoint`,
    `synth.py --checkpoint` and `train.py --warm_start` accept; -> the folder (absolute)."""
    out = resolve_path(out)
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):  # before the (slow) load
        what = "is not empty" if os.path.isdir(out) else "is a file, not a folder"
        raise OutputError(f"output folder {out} {what}")
    official = read_official(official_config)
    model, params = load_official(checkpoint, official)
    config = {
        "model": model.config.to_dict(),
        "data": official_data_config(official),
        "converted_from": resolve_path(checkpoint),
    }
    return save_params_folder(out, 0, params, {"config": config})
