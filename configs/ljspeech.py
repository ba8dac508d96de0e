"""LJSpeech vocoders: the paper's NanoFlow, its ablations and WaveFlow (paper Tables 1 and 2).

    python train.py --config=configs/ljspeech.py:VARIANT --workdir=runs/VARIANT --config.data.path=/data/LJSpeech-1.1

VARIANT (parameters at inference / in training, paper Table 2):
    nanoflow         the default: C=128, L=8, K=8, G=16, D=512          2,818,530 /  3,865,188
    nanoflow_k16     K=16 flows, D=1024                                 2,845,186 /  4,936,324
    nanoflow_naive   one estimator and one projection for all flows     2,792,134 /  2,798,408
    nanoflow_decomp  one estimator, K projection heads                  2,793,954 /  2,800,228
    nanoflow_c64     C=64                                                 754,018 /  1,279,396
    waveflow_c128    K separate estimators                             22,335,714 / 22,385,892
    waveflow_c64     C=64                                               5,925,090 /  5,950,180
Append `,demo` for the CPU-minutes shrink on the bundled demo corpus (configs/demo.py is nanoflow,demo).
Any field can be overridden: --config.train.batch_size=4 --config.model.channels=64.
The recipe (the official code's): Adam 1e-3 halved every 200k steps, batch 8 of 16,000-sample crops,
grad-norm clip 5, 1.2M steps; evaluation and checkpoints every 5k steps.
"""

import ml_collections

from configs import common
from nanoflow_jax.errors import ConfigError

VARIANTS = {  # model fields that differ from ModelConfig's defaults (the paper's NanoFlow)
    "nanoflow": {},
    "nanoflow_k16": dict(n_flows=16, embed_dim=1024),
    "nanoflow_naive": dict(variant="nanoflow_naive"),
    "nanoflow_decomp": dict(variant="nanoflow_decomp"),
    "nanoflow_c64": dict(channels=64),
    "waveflow_c128": dict(variant="waveflow"),
    "waveflow_c64": dict(variant="waveflow", channels=64),
}
# the official recipe's numbers (the sections' other fields keep their declared defaults)
RECIPE = dict(
    train=dict(
        seed=1234,
        batch_size=8,
        num_steps=1_200_000,
        learning_rate=1e-3,
        lr_decay_every=200_000,
        lr_decay_factor=0.5,
        grad_clip_norm=5.0,
        checkpoint_every=5000,
        eval_every=5000,
    ),
)
# a few CPU minutes on the bundled corpus: a small NanoFlow, short crops, 120 steps
DEMO = dict(
    model=dict(n_flows=4, n_layers=6, channels=32, n_groups=8, embed_dim=64),
    data=dict(path="demo", segment_length=8000),
    train=dict(batch_size=4, num_steps=120, lr_decay_every=80, checkpoint_every=40, eval_every=40, log_every=10),
    eval=dict(batch_size=4, num_crops=8, num_utterances=4, synth_seconds=2.0),
)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, variant="nanoflow", demo=False)
    if arg.variant not in VARIANTS:
        raise ConfigError(f"unknown variant {arg.variant!r}; known: {', '.join(VARIANTS)}")
    return common.audio_config(common.layered(RECIPE, {"model": VARIANTS[arg.variant]}, DEMO if arg.demo else {}))
