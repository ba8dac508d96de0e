"""Official PyTorch checkpoints and configs -> ours, by job: `torch_pickle` reads a `.pt` without torch,
`official_config` reads the JSON config, `official_params` maps the state_dict, `write` writes a
checkpoint folder; `python -m nanoflow_jax.convert` is the command."""

from nanoflow_jax.convert.official_config import config_from_official, official_data_config, read_official
from nanoflow_jax.convert.official_params import load_official, params_from_state_dict, state_dict_from
from nanoflow_jax.convert.torch_pickle import read_torch_checkpoint

__all__ = [
    "config_from_official",
    "load_official",
    "official_data_config",
    "params_from_state_dict",
    "read_official",
    "read_torch_checkpoint",
    "state_dict_from",
]
