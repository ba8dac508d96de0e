"""NanoFlow with K=16 flows and a D=1024 flow embedding.

python train.py --config=configs/nanoflow_k16.py --workdir=runs/nanoflow_k16 --config.data.path=LJSpeech-1.1
"""

import ml_collections

from configs import wave_g16


def get_config() -> ml_collections.ConfigDict:
    c = wave_g16.get_config()
    c.model.n_flows = 16
    c.model.embed_dim = 1024
    return c
