"""An official checkpoint + config written as a checkpoint folder of ours."""

from __future__ import annotations

from nanoflow_jax.checkpoints import check_new_folder, save_params_folder
from nanoflow_jax.convert.official_config import official_data_config, read_official
from nanoflow_jax.convert.official_params import load_official
from nanoflow_jax.files import resolve_path


def convert_official(checkpoint: str, official_config: str, out: str) -> str:
    """Write an official checkpoint + config as a checkpoint folder that `nf.load_checkpoint`,
    `synth.py --checkpoint` and `train.py --warm_start` accept; -> the folder (absolute)."""
    out = resolve_path(out)
    check_new_folder(out)  # before the (slow) load
    official = read_official(official_config)
    model, params = load_official(checkpoint, official)
    config = {
        "model": model.config.to_dict(),
        "data": official_data_config(official),
        "converted_from": resolve_path(checkpoint),
    }
    return save_params_folder(out, 0, params, {"config": config})
