"""A CPU-sized NanoFlow voice trained on recorded speech: the five Asterisk prompt speakers (en, es, fr,
it, ru; about two hours), resampled to 22.05 kHz, with the Tacotron2 mel TTS front-ends produce.

    python tools/make_speech_corpus.py --out data/asterisk
    python train.py --config=configs/speech.py --workdir=runs/speech [--config.train.max_minutes=70]
    python train.py --config=configs/speech.py:filter=lpc --workdir=runs/speech_lpc   # the source filter

The model is the largest that a CPU hour trains usefully, chosen with `python -m bench.speech_sizing` (figures in
bench/RESULTS.md): NanoFlow C=32, L=6 layers, K=4 flows, G=8 rows, D=64, 182,836 parameters, batch
4 x 8192 samples, float32. 10% of each speaker's prompts (by name) are held out; five of them are scored
with the quality metrics at each evaluation. Rerunning the command continues the run. The corpus is
band-limited to 7 kHz by G.722, so the voice's top mel bands are learnt from near-silence.
"""

import ml_collections

from configs import common
from nanoflow_jax.errors import ConfigError
from nanoflow_jax.models.audio_config import SOURCE_FILTERS

RECIPE = dict(
    model=dict(variant="nanoflow", n_flows=4, n_layers=6, channels=32, n_groups=8, embed_dim=64),
    data=dict(
        source="folder",
        path="data/asterisk",
        sample_rate=22050,
        segment_length=8192,
        test_fraction=0.1,
        test_split="per_folder",
    ),
    train=dict(
        seed=1234,
        batch_size=4,
        num_steps=200_000,
        learning_rate=1e-3,
        lr_decay_every=50_000,
        lr_decay_factor=0.5,
        grad_clip_norm=5.0,
        compute_dtype="float32",
        checkpoint_every=250,
        keep_checkpoints=40,
        eval_every=250,
        log_every=25,
        max_minutes=70.0,
    ),
    eval=dict(batch_size=4, num_crops=16, num_utterances=10, synth_seconds=3.0, temperature=0.8, quality_utterances=5),
)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """`configs/speech.py:filter=lpc` (or `gain`): the same recipe with the mel's source filter in front
    of the flow (`model.source_filter`)."""
    args = common.parse_arg(arg, filter="none")
    if args.filter not in SOURCE_FILTERS:
        raise ConfigError(f"configs/speech.py: filter={args.filter!r} is not one of {', '.join(SOURCE_FILTERS)}")
    return common.audio_config(common.layered(RECIPE, {"model": {"source_filter": args.filter}}))
