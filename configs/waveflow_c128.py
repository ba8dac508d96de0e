"""WaveFlow, C=128 (K=8 separate estimators).

python train.py --config=configs/waveflow_c128.py --workdir=runs/waveflow_c128 --config.data.path=LJSpeech-1.1
"""

import ml_collections

from configs import wave_g16


def get_config() -> ml_collections.ConfigDict:
    c = wave_g16.get_config()
    c.model.variant = "waveflow"
    return c
