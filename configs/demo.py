"""A small NanoFlow trained on the bundled demo corpus: a few minutes on a laptop CPU.

    python train.py --config=configs/demo.py --workdir=runs/demo

Writes runs/demo/samples/step_N.wav (synthesised from a held-out mel) and step_N_mel.png, TensorBoard
logs in runs/demo/tb and checkpoints in runs/demo/checkpoints. Rerunning the command resumes. The same as
configs/ljspeech.py:nanoflow,demo.
"""

import ml_collections

from configs import ljspeech


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return ljspeech.get_config(arg or "nanoflow,demo")
