"""WaveFlow, C=64.

python train.py --config=configs/waveflow_c64.py --workdir=runs/waveflow_c64 --config.data.path=LJSpeech-1.1
"""

import ml_collections

from configs import wave_g16


def get_config() -> ml_collections.ConfigDict:
    c = wave_g16.get_config()
    c.model.variant = "waveflow"
    c.model.channels = 64
    return c
