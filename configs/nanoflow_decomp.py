"""NanoFlow-decomp, one shared estimator with K=8 projection heads.

python train.py --config=configs/nanoflow_decomp.py --workdir=runs/nanoflow_decomp --config.data.path=LJSpeech-1.1
"""

import ml_collections

from configs import wave_g16


def get_config() -> ml_collections.ConfigDict:
    c = wave_g16.get_config()
    c.model.variant = "nanoflow_decomp"
    return c
