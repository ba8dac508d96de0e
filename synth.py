"""Synthesise speech from mel spectrograms with a trained (or converted official) model.

    python synth.py --mel file.npy --checkpoint runs/wave_g16 [--out out.wav] [--temperature 0.8]
                    [--dtype bfloat16] [--denoise 0.01]
    python synth.py --mel-dir mels/ --checkpoint runs/wave_g16 --out wavs/ --batch 8
    python synth.py --wav speech.wav --checkpoint runs/demo          # copy-synthesis through our mel
    python synth.py --mel file.npy --official waveflow.pt --config waveflow.json

A mel is (80, F), (1, 80, F) or (F, 80) float, natural-log Tacotron2 scale; F frames give 256 * (F - 3)
samples. Output: 16-bit PCM WAV at the model's sample rate, written atomically.
"""

from absl import app, flags, logging

flags.DEFINE_string("mel", None, "A .npy mel spectrogram.")
flags.DEFINE_string("mel_dir", None, "A folder of .npy mel spectrograms.")
flags.DEFINE_string("wav", None, "A wav file: copy-synthesis through the model's own mel front-end.")
flags.DEFINE_string("wav_dir", None, "A folder of wav files (copy-synthesis).")
flags.DEFINE_string("checkpoint", None, "A workdir or checkpoint folder (ours, or one made by nanoflow_jax.convert).")
flags.DEFINE_string("official", None, "An official PyTorch checkpoint (.pt); needs --config.")
flags.DEFINE_string("config", None, "The official JSON config that goes with --official.")
flags.DEFINE_string("out", None, "Output .wav (one input) or folder (default synth_out/).")
flags.DEFINE_float("temperature", 1.0, "Std of the latent noise (0.6-1.0 is usual).")
flags.DEFINE_enum("dtype", "float32", ["float32", "float16", "bfloat16"], "Compute type of the estimator.")
flags.DEFINE_float("denoise", 0.0, "Denoiser strength (e.g. 0.01); 0 is off.")
flags.DEFINE_integer("batch", 1, "Mels synthesised together (different lengths are padded, then trimmed).")
flags.DEFINE_integer("bucket", 32, "Pad frame counts to a multiple of this so that lengths share compilations.")
flags.DEFINE_integer("seed", 0, "Seed of the latent noise.")
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    from nanoflow_jax.cli import run_cli
    from nanoflow_jax.synth.cli import from_flags, run

    run_cli(lambda: run(from_flags(FLAGS)), "synth.py")


if __name__ == "__main__":
    app.run(main)
