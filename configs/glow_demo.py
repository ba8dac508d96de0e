"""A small NanoFlow-Glow on the bundled demo crops (32x32 photos): a few minutes on a laptop CPU.

    python train.py --config=configs/glow_demo.py --workdir=runs/glow_demo [--config.model.variant=glow]

Writes test bpd to the console and TensorBoard, and sample grids at temperatures 0.7 and 1.0 to
runs/glow_demo/samples/.
"""

import ml_collections

from configs import glow_cifar10


def get_config() -> ml_collections.ConfigDict:
    return glow_cifar10.get_config(
        "nanoflow",
        model=dict(hidden=32, n_levels=2, n_steps=4, embed_dim=1),
        data=dict(source="demo"),
        train=dict(
            batch_size=32,
            num_steps=300,
            warmup_steps=20,
            learning_rate=2e-3,
            init_batch_size=64,
            log_every=20,
            eval_every=100,
            checkpoint_every=100,
        ),
        eval=dict(batch_size=64, num_images=128, num_samples=16),
    )
