"""NanoFlow-naive, one estimator and one projection applied K=8 times.

python train.py --config=configs/nanoflow_naive.py --workdir=runs/nanoflow_naive --config.data.path=LJSpeech-1.1
"""

import ml_collections

from configs import wave_g16


def get_config() -> ml_collections.ConfigDict:
    c = wave_g16.get_config()
    c.model.variant = "nanoflow_naive"
    return c
