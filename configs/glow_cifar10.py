"""Glow and NanoFlow-Glow on CIFAR-10 (the paper's Table 4), in bits per dimension.

    python train.py --config=configs/glow_cifar10.py:nanoflow --workdir=runs/cifar_nanoflow \
        --config.data.path=/data/cifar-10-python.tar.gz

VARIANT: glow, glow_large, nanoflow_naive, nanoflow_decomp, nanoflow, nanoflow_k48, nanoflow_alt
(default glow). Official recipe: hidden 256, K=32 steps x 3 levels, Adamax 5e-4, weight decay 5e-5,
linear warm-up (5 epochs), batch 64. The embedding width D is 1 (3 for nanoflow_k48): the widths that
reproduce the paper's parameter counts.
"""

import ml_collections

VARIANTS = ("glow", "glow_large", "nanoflow_naive", "nanoflow_decomp", "nanoflow", "nanoflow_k48", "nanoflow_alt")


def get_config(variant: str = "glow") -> ml_collections.ConfigDict:
    # an unknown name is reported by the model config as one line when training starts (an exception
    # here would surface as absl's flag-parsing traceback)
    variant = variant or "glow"
    c = ml_collections.ConfigDict()
    c.model = ml_collections.ConfigDict(
        dict(
            kind="image",
            variant="nanoflow" if variant == "nanoflow_k48" else variant,
            image_size=32,
            channels=3,
            hidden=256,
            n_levels=3,
            n_steps=48 if variant == "nanoflow_k48" else 32,
            embed_dim=3 if variant == "nanoflow_k48" else 1,
            lu=True,
            n_bits=8,
            actnorm_scale=1.0,
        )
    )
    c.data = ml_collections.ConfigDict(dict(source="cifar10", path=""))
    c.train = ml_collections.ConfigDict(
        dict(
            seed=0,
            batch_size=64,
            num_steps=3000 * 781,  # the paper's 3000 epochs of 50,000 images
            learning_rate=5e-4,
            warmup_steps=5 * 781,
            weight_decay=5e-5,
            grad_clip_norm=0.0,
            init_batch_size=512,  # ActNorm initialisation (official: 8 batches of 64)
            log_every=100,
            eval_every=781 * 10,
            checkpoint_every=781,
            keep_checkpoints=3,
            max_bad_steps=20,
        )
    )
    c.eval = ml_collections.ConfigDict(dict(batch_size=500, num_images=10000, num_samples=64, temperatures=(0.7, 1.0)))
    return c
