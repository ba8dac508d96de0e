"""NanoFlow, the paper's vocoder: C=128, L=8, K=8 flows, G=16 rows, flow embedding D=512, on LJSpeech.

    python train.py --config=configs/wave_g16.py --workdir=runs/wave_g16 --config.data.path=LJSpeech-1.1

The same as configs/ljspeech.py:nanoflow, which lists the other variants.
"""

import ml_collections

from configs import ljspeech


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return ljspeech.get_config(arg or "nanoflow")
