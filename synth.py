"""Synthesise speech from mel spectrograms with a trained (or converted official) model.

    python synth.py --mel file.npy --checkpoint runs/wave_g16 [--out out.wav] [--temperature 0.8]
                    [--dtype bfloat16] [--denoise 0.01]
    python synth.py --mel_dir mels/ --checkpoint runs/wave_g16 --out wavs/ --batch 8
    python synth.py --wav speech.wav --checkpoint runs/demo          # copy-synthesis through our mel
    python synth.py --mel file.npy --official waveflow.pt --config waveflow.json

    python synth.py --mel long.npy --chunk_frames 512                  # streamed, bounded memory
    python synth.py --mel hifigan_mel.npy --mel_convention hifigan     # or espnet with --mel_stats stats.npy

A mel is (80, F), (1, 80, F) or (F, 80) float, natural-log Tacotron2 scale (other front-ends' mels
convert with --mel_convention); F frames give hop * (F - 3) samples. Output: 16-bit PCM WAV at the
model's sample rate, written atomically.
"""

from absl import app, flags, logging

from nanoflow_jax.cli import define_compilation_cache_flag
from nanoflow_jax.synth.command import define_flags

define_flags()
define_compilation_cache_flag()
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    from nanoflow_jax.cli import run_cli, use_compilation_cache
    from nanoflow_jax.synth.command import from_flags, run

    def synth():
        args = from_flags(FLAGS)  # every flag mistake is one line before anything starts
        use_compilation_cache(FLAGS.compilation_cache)
        run(args)

    run_cli(synth, "synth.py")


if __name__ == "__main__":
    from nanoflow_jax.cli import flag_parser

    app.run(main, flags_parser=flag_parser("synth.py"))
