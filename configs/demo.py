"""A small NanoFlow trained on the bundled demo corpus: a few minutes on a laptop CPU.

    python train.py --config=configs/demo.py --workdir=runs/demo

Writes runs/demo/samples/step_N.wav (synthesised from a held-out mel) and step_N_mel.png, TensorBoard
logs in runs/demo/tb and checkpoints in runs/demo/checkpoints. Rerunning the command resumes.
"""

import ml_collections

from configs import wave_g16


def get_config() -> ml_collections.ConfigDict:
    c = wave_g16.get_config()
    c.model.update(n_flows=4, n_layers=6, channels=32, n_groups=8, embed_dim=64)
    c.data.path = "demo"
    c.data.segment_length = 8000
    c.train.update(
        batch_size=4,
        num_steps=120,
        learning_rate=1e-3,
        lr_decay_every=80,
        checkpoint_every=40,
        eval_every=40,
        log_every=10,
    )
    c.eval.update(batch_size=4, num_crops=8, num_utterances=4, synth_seconds=2.0)
    return c
