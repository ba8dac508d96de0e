"""What `synth.py` does: read mels (or wavs, through our mel), load a model, synthesise, write wavs.

Inputs are checked before anything is compiled, and every failure is one line naming the file and what
was expected. WAVs are written atomically, one file at a time, so an error never leaves a partial file.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import time
from typing import Any

import jax

from nanoflow_jax.audio.conventions import CONVENTIONS, check_filterbank, convention_warning, load_stats, to_model_mel
from nanoflow_jax.audio.io import write_wav, write_wav_stream
from nanoflow_jax.errors import InputError, UsageError
from nanoflow_jax.files import check_input_file, check_not_input, check_output_file, resolve_path
from nanoflow_jax.models import POLICIES
from nanoflow_jax.schema import Choice, Float, Int, Section, Text, field, rule_of
from nanoflow_jax.synth.chunked import DEFAULT_OVERLAP_FRAMES
from nanoflow_jax.synth.denoise import Denoiser
from nanoflow_jax.synth.fast import bucket_batch, bucket_frames_for
from nanoflow_jax.synth.loading import load_mel, wav_mel
from nanoflow_jax.synth.vocoder import PreparedMels, Vocoder, load_vocoder

DEFAULT_OUT = "synth_out"


def _path(doc: str) -> Any:
    return field(None, Text(nonempty=True, optional=True), doc)


@dataclasses.dataclass(frozen=True)
class SynthArgs(Section):
    """synth.py's flags (each field is a flag of the same name)."""

    SECTION = "synth.py"

    mel: str | None = _path("A .npy mel spectrogram.")
    mel_dir: str | None = _path("A folder of .npy mel spectrograms.")
    wav: str | None = _path("A wav file: copy-synthesis through the model's own mel front-end.")
    wav_dir: str | None = _path("A folder of wav files (copy-synthesis).")
    checkpoint: str | None = _path(
        "A workdir or checkpoint folder (ours, or one made by nanoflow_jax.convert); none: the shipped voice."
    )
    official: str | None = _path("An official PyTorch checkpoint (.pt); needs --config.")
    config: str | None = _path("The official JSON config that goes with --official.")
    out: str | None = _path("Output .wav (one input) or folder (default synth_out/).")
    temperature: float | None = field(
        None,
        Float(min=0.0, optional=True),
        "Std of the latent noise (0.6-1.0 is usual); default: the shipped voice's measured best, else 1.0.",
    )
    dtype: str = field("float32", Choice(tuple(POLICIES)), "Precision of the estimator's matmuls.")
    denoise: float = field(0.0, Float(min=0.0), "Denoiser strength (e.g. 0.01); 0 is off.")
    batch: int = field(
        1, Int(min=1, max=1024), "Mels synthesised together (different lengths are padded, then trimmed)."
    )
    bucket: int = field(
        0,
        Int(min=0, max=10_000),
        "Pad frame counts to a multiple of this so lengths share compilations (0: eight per octave).",
    )
    seed: int = field(0, Int(min=0), "Seed of the latent noise.")
    mel_convention: str = field(
        "tacotron2",
        Choice(CONVENTIONS),
        "The front-end that made the --mel / --mel_dir inputs: tacotron2 (ours, natural log), hifigan "
        "(half a hop later, interpolated) or espnet (log10, normalised: needs --mel_stats).",
    )
    mel_stats: str | None = _path("ESPnet / ParallelWaveGAN stats.npy, (2, bands): the log10 mel's mean, then scale.")
    mel_fmin: float | None = field(
        None, Float(min=0.0, optional=True), "The front-end's lowest mel band edge in Hz (default: the model's)."
    )
    mel_fmax: float | None = field(
        None, Float(min=0.0, optional=True), "The front-end's highest mel band edge in Hz (default: the model's)."
    )
    chunk_frames: int = field(
        0,
        Int(min=0, max=1_000_000),
        "Synthesise each input in chunks of this many frames, writing audio as it comes (bounded memory "
        "for any length); 0: whole utterances (inputs longer than 2048 frames are chunked all the same).",
    )
    overlap_frames: int = field(
        DEFAULT_OVERLAP_FRAMES, Int(min=0, max=100_000), "Frames of context either side of each chunk."
    )

    @classmethod
    def label(cls, name: str) -> str:
        return f"--{name}"


def _files(folder: str, ext: str) -> list[str]:
    if not os.path.isdir(folder):
        raise InputError(f"input folder {folder} does not exist")
    files = sorted(glob.glob(os.path.join(folder, f"*{ext}")))
    if not files:
        raise InputError(f"no {ext} files in {folder}")
    return files


def _inputs(args: SynthArgs) -> list[tuple[str, str]]:
    """[(kind, path)] with kind "mel" or "wav"."""
    given = [
        (k, v)
        for k, v in (("mel", args.mel), ("mel_dir", args.mel_dir), ("wav", args.wav), ("wav_dir", args.wav_dir))
        if v
    ]
    if len(given) != 1:
        raise UsageError("give exactly one input: --mel, --mel_dir, --wav or --wav_dir")
    kind, path = given[0]
    if kind == "mel_dir":
        return [("mel", f) for f in _files(path, ".npy")]
    if kind == "wav_dir":
        return [("wav", f) for f in _files(path, ".wav")]
    check_input_file(path, f"--{kind} file")  # missing, a folder, a FIFO, a symlink loop: one line, now
    return [(kind, path)]


def _out_paths(args: SynthArgs, inputs: list[tuple[str, str]]) -> list[str]:
    stems = [os.path.splitext(os.path.basename(p))[0] + ".wav" for _, p in inputs]
    single = args.mel or args.wav
    if single and args.out and not os.path.isdir(args.out):
        if not args.out.lower().endswith(".wav"):
            raise UsageError(f"--out {args.out} must end in .wav (or be an existing folder)")
        return [args.out]
    outs = [os.path.join(args.out or resolve_path(DEFAULT_OUT), s) for s in stems]
    if len(set(outs)) < len(outs):
        twice = next(o for o in outs if outs.count(o) > 1)
        raise UsageError(f"two inputs would both be written to {twice}: give inputs with different names")
    return outs


def _check_outputs(args: SynthArgs, inputs: list[tuple[str, str]], outs: list[str]) -> None:
    """Inputs are never outputs: no output may be an input file (however it is reached) or lie inside an
    input folder; checked before anything is read or compiled."""
    from nanoflow_jax.checkpoints import checkpoint_dir

    files = [p for _, p in inputs] + [f for f in (args.mel_stats, args.official, args.config) if f]
    folders = [d for d in (args.mel_dir, args.wav_dir) if d]
    if args.checkpoint:
        folders.append(checkpoint_dir(args.checkpoint))
    for out in outs:
        check_not_input(out, files, folders)
        check_output_file(out)


def _check_flags(args: SynthArgs) -> None:
    """Flags that do nothing without another are refused, not ignored."""
    if args.mel_stats and args.mel_convention != "espnet":
        raise UsageError("--mel_stats goes with --mel_convention espnet (the only convention with stats)")
    if args.mel_convention == "espnet" and not args.mel_stats:
        raise UsageError("--mel_convention espnet needs --mel_stats (the stats.npy the mels were normalised with)")
    if args.mel_convention == "tacotron2" and (args.mel_fmin is not None or args.mel_fmax is not None):
        raise UsageError("--mel_fmin / --mel_fmax describe another front-end's mels: give --mel_convention too")
    if (args.wav or args.wav_dir) and (args.mel_convention != "tacotron2" or args.mel_stats):
        raise UsageError("--mel_convention and --mel_stats describe --mel inputs; wavs go through the model's own mel")
    if args.chunk_frames and args.denoise > 0:
        raise UsageError("--denoise works on whole utterances: leave out --chunk_frames to use it")
    if not args.chunk_frames and args.overlap_frames != DEFAULT_OVERLAP_FRAMES:
        raise UsageError("--overlap_frames goes with --chunk_frames")


PATHS = ("mel", "mel_dir", "wav", "wav_dir", "checkpoint", "official", "config", "out", "mel_stats")


def run(args: SynthArgs, log=print) -> list[str]:
    """Synthesise every input; -> the wav paths written. Every input is checked before the first
    compilation, one at a time (a folder of mels is never held at once: each batch is read when its turn
    comes)."""
    args = dataclasses.replace(args, **{k: resolve_path(getattr(args, k)) for k in PATHS if getattr(args, k)})
    _check_flags(args)
    inputs = _inputs(args)
    outs = _out_paths(args, inputs)
    _check_outputs(args, inputs, outs)
    vocoder = load_vocoder(args.checkpoint, args.official, args.config)
    if not (args.checkpoint or args.official or args.config):
        from nanoflow_jax.voices import voice_banner

        log(f"no --checkpoint or --official: {voice_banner()}")
    cfg, mel_cfg, rate = vocoder.config, vocoder.mel_config, vocoder.sample_rate
    stats = None
    if args.mel_convention != "tacotron2":
        check_filterbank(mel_cfg, args.mel_fmin, args.mel_fmax, args.mel_convention)
        if args.mel_stats:
            stats = load_stats(args.mel_stats, cfg.cond_channels)

    def load(kind: str, path: str, warn: bool = False) -> PreparedMels:
        """One input as the vocoder's checked mel: read, converted, checked once (errors name the file)."""
        if kind == "wav":
            mel = wav_mel(path, mel_cfg, cfg)
        else:
            mel = to_model_mel(load_mel(path, cfg), args.mel_convention, mel_cfg, stats)
            warning = convention_warning(mel, mel_cfg) if warn else None
            if warning:
                log(f"warning: {os.path.basename(path)}: {warning}")
        try:
            return vocoder.prepare(mel)
        except ValueError as e:
            raise InputError(f"{path}: {e}") from None

    kept = {}  # one input is kept from the check to its synthesis; a folder's are read again in turn
    for i, (kind, path) in enumerate(inputs):  # check every input before the first compilation
        if len(inputs) == 1:
            kept[i] = load(kind, path, warn=True)
        else:
            load(kind, path, warn=True)  # checked and let go: a folder is never held at once

    def mels(lo: int, hi: int) -> PreparedMels:
        items = [kept[i] if i in kept else load(*inputs[i]) for i in range(lo, hi)]
        return PreparedMels(tuple(p.mels[0] for p in items), tuple(p.lengths[0] for p in items), False)

    denoiser = Denoiser(vocoder, dtype=args.dtype) if args.denoise > 0 else None
    rng = jax.random.PRNGKey(args.seed)
    if args.chunk_frames:
        return _run_chunked(args, vocoder, mels, outs, rng, log)
    written, total_audio, total_wall = [], 0.0, 0.0
    seen_shapes = set()
    for start in range(0, len(inputs), args.batch):
        batch = mels(start, min(start + args.batch, len(inputs)))
        longest = max(m.shape[1] for m in batch.mels)
        shape = (bucket_batch(len(batch.mels)), bucket_frames_for(longest, args.bucket or None))
        t0 = time.perf_counter()
        audio = vocoder.synthesize(
            batch,
            temperature=args.temperature,
            dtype=args.dtype,
            rng=jax.random.fold_in(rng, start),
            bucket_frames=args.bucket or None,
        )
        wall = time.perf_counter() - t0
        note = "" if shape in seen_shapes else " (includes compiling)"
        seen_shapes.add(shape)
        secs = sum(len(a) for a in audio) / rate
        total_audio, total_wall = total_audio + secs, total_wall + wall
        for a, path in zip(audio, outs[start : start + args.batch], strict=True):
            if denoiser is not None:
                a = denoiser(a, args.denoise)
            write_wav(path, a, rate)
            written.append(path)
        names = ", ".join(os.path.basename(p) for p in outs[start : start + args.batch])
        log(f"{names}: {secs:.2f} s of audio in {wall:.2f} s{note}: {_speed(secs, wall, rate)}")
    if len(inputs) > 1:
        log(f"total: {total_audio:.2f} s of audio in {total_wall:.2f} s: {_speed(total_audio, total_wall, rate)}")
    return written


def _run_chunked(args: SynthArgs, vocoder: Vocoder, mels, outs, rng, log) -> list[str]:
    """Each input chunk by chunk, each chunk written as it comes; the time to the first chunk logged."""
    rate = vocoder.sample_rate
    for i, path in enumerate(outs):
        mel = mels(i, i + 1)
        t0 = time.perf_counter()
        first: list[float] = []

        def pieces(mel=mel, i=i, t0=t0, first=first):
            for piece in vocoder.synthesize_chunks(
                mel,
                chunk_frames=args.chunk_frames,
                overlap_frames=args.overlap_frames,
                temperature=args.temperature,
                dtype=args.dtype,
                rng=jax.random.fold_in(rng, i),
            ):
                if not first:
                    first.append(time.perf_counter() - t0)
                yield piece

        n = write_wav_stream(path, pieces(), rate)
        wall = time.perf_counter() - t0
        log(
            f"{os.path.basename(path)}: {n / rate:.2f} s of audio in chunks of {args.chunk_frames} frames, the "
            f"first after {first[0]:.2f} s (includes compiling), all in {wall:.2f} s: {_speed(n / rate, wall, rate)}"
        )
    return outs


def _speed(audio_s: float, wall_s: float, rate: int) -> str:
    khz = audio_s * rate / wall_s / 1e3
    return f"{khz:.1f} kHz, real-time factor {wall_s / audio_s:.3f} ({audio_s / wall_s:.1f}x real time)"


def define_flags() -> None:
    """absl flags for every SynthArgs field, with its default and description (checked by SynthArgs)."""
    from absl import flags

    for f in dataclasses.fields(SynthArgs):
        rule = rule_of(f)
        define = (
            flags.DEFINE_integer if isinstance(rule, Int) else flags.DEFINE_float if isinstance(rule, Float) else None
        )
        (define or flags.DEFINE_string)(f.name, f.default, f.metadata["doc"])


def from_flags(flags: Any) -> SynthArgs:
    """SynthArgs from parsed absl flags of the same names."""
    return SynthArgs(**{f.name: getattr(flags, f.name) for f in dataclasses.fields(SynthArgs)})
