"""A small NanoFlow-Glow on the bundled demo crops (32x32 photos): a few minutes on a laptop CPU.

    python train.py --config=configs/glow_demo.py --workdir=runs/glow_demo [--config.model.variant=glow]

Writes test bpd to the console and TensorBoard, and sample grids at temperatures 0.7 and 1.0 to
runs/glow_demo/samples/. The same as configs/glow_cifar10.py:nanoflow,demo.
"""

import ml_collections

from configs import glow_cifar10


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return glow_cifar10.get_config(arg or "nanoflow,demo")
