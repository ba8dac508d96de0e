"""NanoFlow at the sample rates and hops of other corpora and vocoder families (the paper's model and recipe,
configs/ljspeech.py, with another mel front-end).

    python train.py --config=configs/rates.py:VARIANT --workdir=runs/VARIANT --config.data.path=/data/corpus

VARIANT     rate       hop (upsampling)   FFT / window          band edge   the convention of
    16k     16 kHz     200 (10 x 20)      1024 / 800 (50 ms)    8 kHz       LibriTTS / ESPnet at 16 kHz
    24k     24 kHz     300 (10 x 30)      2048 / 1200 (50 ms)   12 kHz      LibriTTS, VCTK (ParallelWaveGAN)
    44k     44.1 kHz   512 (16 x 32)      2048 / 2048 (46 ms)   22.05 kHz   the HiFi-GAN family at 44.1 kHz
    48k     48 kHz     480 (20 x 24)      2048 / 1920 (40 ms)   24 kHz      the HiFi-GAN family at 48 kHz
Audio at another rate is resampled when it is read. The mel is ours (Tacotron2: natural log of the
magnitude mel, 80 bands); a front-end with another convention converts with `synth.py --mel_convention`.
Append `,demo` for the CPU-minutes shrink on the bundled corpus (resampled), as in configs/ljspeech.py.
Any hop that is a product of two even strides works the same way, e.g. configs/demo.py with
--config.data.sample_rate=24000 --config.data.hop_length=300 --config.data.win_length=1200.
"""

import ml_collections

from configs import common, ljspeech
from nanoflow_jax.errors import ConfigError

RATES = {
    "16k": dict(sample_rate=16000, hop_length=200, n_fft=1024, win_length=800, fmax=8000.0),
    "24k": dict(sample_rate=24000, hop_length=300, n_fft=2048, win_length=1200, fmax=12000.0),
    "44k": dict(sample_rate=44100, hop_length=512, n_fft=2048, win_length=2048, fmax=22050.0),
    "48k": dict(sample_rate=48000, hop_length=480, n_fft=2048, win_length=1920, fmax=24000.0),
}
# the demo shrink needs crops of at least a few hops and G dividing them at every rate
DEMO_SEGMENT = {"16k": 6400, "24k": 9600, "44k": 16384, "48k": 15360}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, variant="24k", demo=False)
    if arg.variant not in RATES:
        raise ConfigError(f"unknown variant {arg.variant!r}; known: {', '.join(RATES)}")
    demo = [ljspeech.DEMO, {"data": {"segment_length": DEMO_SEGMENT[arg.variant]}}] if arg.demo else []
    return common.audio_config(common.layered(ljspeech.RECIPE, *demo, {"data": RATES[arg.variant]}))
