"""NanoFlow, the paper's vocoder: C=128, L=8, K=8 flows, G=16 rows, flow embedding D=512.

    python train.py --config=configs/wave_g16.py --workdir=runs/wave_g16 --config.data.path=LJSpeech-1.1

Every other config imports this one and overrides what differs; any field can also be overridden on the
command line, e.g. --config.train.batch_size=4.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()

    c.model = ml_collections.ConfigDict(
        dict(
            variant="nanoflow",
            n_flows=8,
            n_layers=8,
            channels=128,
            n_groups=16,
            cond_channels=80,
            height_dilation_cycle=1,
            embed_dim=512,
            embed_injection=("additive", "multiplicative"),
            gate_form="ones",
            embed_weight_norm=True,  # the official projections of the embedding are always weight-normed
            shared_layers=None,
            coupling="affine",
            spline_bins=32,
            spline_tail_bound=5.0,
        )
    )
    # shared_layers is None or an int: declare its type so the command line can set it
    c.model.shared_layers = ml_collections.FieldReference(None, field_type=int)

    c.data = ml_collections.ConfigDict(
        dict(
            source="folder",  # "folder" (LJSpeech layout or any folder of wavs), "filelist", "tfds"
            path="",
            sample_rate=22050,
            segment_length=16000,
            n_fft=1024,
            hop_length=256,
            win_length=1024,
            n_mels=80,
            fmin=0.0,
            fmax=8000.0,
            test_fraction=0.1,
        )
    )

    # the official recipe
    c.train = ml_collections.ConfigDict(
        dict(
            seed=1234,
            batch_size=8,
            num_steps=1_200_000,
            learning_rate=1e-3,
            lr_decay_every=200_000,
            lr_decay_factor=0.5,
            grad_clip_norm=5.0,
            checkpoint_every=5000,
            eval_every=5000,
            log_every=100,
            keep_checkpoints=3,
            max_bad_steps=20,  # this many non-finite steps in a row stop the run
            remat=False,  # recompute each flow step in the backward pass: less memory, ~1/3 more compute
            compute_dtype="float32",  # or "bfloat16": estimator in bf16; fp32 master weights, log-det, loss
            grad_accum_steps=1,
        )
    )

    c.eval = ml_collections.ConfigDict(
        dict(
            batch_size=8,
            num_crops=64,  # fixed test crops of data.segment_length
            synthesize=True,  # write samples/step_N.wav and a mel image at the end of the run
            synth_seconds=3.0,
            temperature=0.8,
        )
    )
    # whole test utterances evaluated (the paper's protocol); None for the whole test split
    c.eval.num_utterances = ml_collections.FieldReference(16, field_type=int)
    return c
