"""Glow and NanoFlow-Glow on CIFAR-10 (the paper's Table 4), in bits per dimension.

    python train.py --config=configs/glow_cifar10.py:VARIANT --workdir=runs/cifar_VARIANT \
        --config.data.path=/data/cifar-10-python.tar.gz

VARIANT (trainable parameters of the official models; paper bpd after 3000 epochs):
    glow             (default) small estimator per step       15,972,912   3.40
    glow_large       6 x conv3x3 per step                    287,488,560   3.30
    nanoflow_naive   one glow_large stack and projection        9,263,064   3.40
    nanoflow_decomp  one stack per level, K projections         9,934,896   3.32
    nanoflow         decomp + embedding maps and gates         10,113,264   3.27
    nanoflow_k48     48 steps per level, D=3                   10,718,544   3.25
    nanoflow_alt     the nanoflow scheme on the small stack     6,961,392
The recipe (official): hidden 256, K=32 steps x 3 levels, Adamax 5e-4, weight decay 5e-5, linear
warm-up over 5 epochs, batch 64. The embedding width D is 1 (3 for nanoflow_k48): the widths that give
the official parameter counts.
"""

import ml_collections

from configs import common
from nanoflow_jax.errors import ConfigError
from nanoflow_jax.train.image import ImageTask

EPOCH = 781  # steps of batch 64 over CIFAR-10's 50,000 training images

VARIANTS = {  # model fields that differ from GlowConfig's defaults (Glow)
    "glow": {},
    "glow_large": dict(variant="glow_large"),
    "nanoflow_naive": dict(variant="nanoflow_naive"),
    "nanoflow_decomp": dict(variant="nanoflow_decomp"),
    "nanoflow": dict(variant="nanoflow"),
    "nanoflow_k48": dict(variant="nanoflow", n_flows=48, embed_dim=3),
    "nanoflow_alt": dict(variant="nanoflow_alt"),
}


# the official recipe's numbers (the sections' other fields keep their declared defaults)
RECIPE = dict(
    train=dict(
        seed=0,
        batch_size=64,
        num_steps=3000 * EPOCH,
        learning_rate=5e-4,
        warmup_steps=5 * EPOCH,
        weight_decay=5e-5,
        init_batch_size=512,
        eval_every=10 * EPOCH,
        checkpoint_every=EPOCH,
    ),
)
# a few CPU minutes on the bundled demo crops (configs/glow_demo.py is nanoflow,demo)
DEMO = dict(
    model=dict(hidden=32, n_levels=2, n_flows=4, embed_dim=1),
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


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, variant="glow", demo=False)
    if arg.variant not in VARIANTS:
        raise ConfigError(f"unknown variant {arg.variant!r}; known: {', '.join(VARIANTS)}")
    fields = common.layered(RECIPE, {"model": VARIANTS[arg.variant]}, DEMO if arg.demo else {})
    return common.task_config(ImageTask.SECTIONS, fields)
