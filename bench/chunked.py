"""Chunked long-form synthesis: error against whole-utterance synthesis per overlap, time to the first
chunk, and peak memory against utterance length.

    python -m bench.chunked snr [--minutes 1] [--overlaps 0,4,8,16,32,56] [--chunk 512]
    python -m bench.chunked memory --minutes 10 [--mode chunked|whole]   # one process per figure

The model is the shipped voice (nanoflow_jax/voices), on a real speech mel: the bundled demo corpus'
sentences, each through our mel, joined end to end up to `--minutes`. Temperature 0.8, seed 0: the chunks
and the whole utterance use the same z. `snr` reports, per overlap, the SNR (dB) of the chunked audio
against the whole, the largest sample difference, the time to the first chunk (compiling included, and
once warm) and the total time. `memory` synthesises once and reports the process' peak RSS
(ru_maxrss), so run it in a fresh process per length.
"""

from __future__ import annotations

import argparse
import os
import resource
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def speech_mel(minutes: float, mel_cfg) -> object:
    import glob

    import numpy as np

    import nanoflow_jax as nf
    from nanoflow_jax.audio.io import read_audio, resample
    from nanoflow_jax.data.sources import DEMO_CORPUS

    mels, frames = [], 0
    need = int(minutes * 60 * mel_cfg.sample_rate / mel_cfg.hop_length)
    files = sorted(glob.glob(os.path.join(DEMO_CORPUS, "wavs", "*.wav")))
    while frames < need:
        for f in files:
            x, rate = read_audio(f)
            m = np.asarray(nf.mel_spectrogram(resample(x, rate, mel_cfg.sample_rate)[None], mel_cfg)[0])
            mels.append(m)
            frames += m.shape[1]
            if frames >= need:
                break
    return np.concatenate(mels, axis=1)[:, :need]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("snr", "memory"))
    ap.add_argument("--minutes", type=float, default=1.0)
    ap.add_argument("--overlaps", default="0,4,8,16,32,56")
    ap.add_argument("--chunk", type=int, default=512)
    ap.add_argument("--mode", choices=("chunked", "whole"), default="chunked")
    args = ap.parse_args()

    import jax
    import numpy as np

    import nanoflow_jax as nf
    from nanoflow_jax.synth import receptive_frames

    vocoder = nf.load_vocoder()
    model = vocoder.model
    mel = speech_mel(args.minutes, vocoder.mel_config)
    rng = jax.random.PRNGKey(0)
    print(f"mel: {mel.shape[1]} frames ({args.minutes:g} min); receptive field {receptive_frames(model.config)} frames")
    if args.what == "memory":
        t0 = time.perf_counter()
        if args.mode == "whole":
            audio = vocoder.synthesize(mel, temperature=0.8, rng=rng, chunk_frames=0)[0]
        else:
            pieces = vocoder.synthesize_chunks(mel, chunk_frames=args.chunk, temperature=0.8, rng=rng)
            audio = np.concatenate(list(pieces))
        wall = time.perf_counter() - t0
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"{args.mode}: {len(audio)} samples in {wall:.1f} s, peak RSS {peak:.0f} MiB")
        return
    t0 = time.perf_counter()
    whole = vocoder.synthesize(mel, temperature=0.8, rng=rng, chunk_frames=0)[0]
    print(f"whole utterance: {time.perf_counter() - t0:.1f} s")
    print(
        "| overlap (frames) | SNR against whole (dB) | max abs difference | first chunk, cold (s) "
        "| first chunk, warm (s) | total (s) |"
    )
    print("|---|---|---|---|---|---|")
    for overlap in map(int, args.overlaps.split(",")):
        kw = dict(chunk_frames=args.chunk, overlap_frames=overlap, temperature=0.8, rng=rng)
        firsts = []
        for _ in range(2):  # cold (compiles this chunk size), then warm
            t0 = time.perf_counter()
            gen = vocoder.synthesize_chunks(mel, **kw)
            pieces = [next(gen)]
            firsts.append(time.perf_counter() - t0)
        pieces += list(gen)
        total = time.perf_counter() - t0
        out = np.concatenate(pieces)
        err = out - whole
        snr = 10 * np.log10(np.sum(whole**2) / max(np.sum(err**2), 1e-30))
        print(
            f"| {overlap} | {snr:.1f} | {np.max(np.abs(err)):.2e} | {firsts[0]:.2f} | {firsts[1]:.2f} | {total:.1f} |"
        )


if __name__ == "__main__":
    main()
