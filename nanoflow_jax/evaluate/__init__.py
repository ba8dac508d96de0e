"""A vocoder measured as speech: copy synthesis of held-out recordings, beside Griffin-Lim from the same mel.

For each held-out utterance (the run's own test split, the first `per_speaker` of each speaker folder):
the test log-likelihood of the whole utterance (the paper's protocol, nats per sample), every metric of
`audio.quality` for the model's synthesis, for Griffin-Lim's and for noise through the mel's own
all-pole envelope (the floor of a source-filter model: `synth.scoring`), and each one's real-time factor (wall
seconds per audio second, after a warm-up of that shape). Means per speaker and overall.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nanoflow_jax.audio import quality
from nanoflow_jax.audio.io import read_audio, resample
from nanoflow_jax.audio.mel import MelConfig
from nanoflow_jax.data.sources import list_files, split_test
from nanoflow_jax.errors import DataError
from nanoflow_jax.synth import Vocoder
from nanoflow_jax.synth.scoring import CopySynthesisScorer
from nanoflow_jax.train.audio_eval import bucket_length
from nanoflow_jax.train.audio_loss import utterance_nll

SYSTEMS = ("model", "griffin_lim", "lpc_noise")
COLUMNS = ("ll", *quality.METRICS, "rtf")


def held_out(data: dict[str, Any], path: str | None, per_speaker: int | None) -> dict[str, list[str]]:
    """{speaker folder: its first `per_speaker` test files} of a run's data section (its split rules)."""
    root = path or data.get("path")
    source = data.get("source", "folder")
    if source == "tfds" or not root:
        raise DataError("evaluation needs a folder of recordings: give --data DIR")
    if source == "folder" and root != "demo" and not os.path.isdir(root):  # "demo": the bundled corpus
        raise DataError(
            f"no recordings at {root}: give --data DIR (for the shipped voice's corpus: "
            f"python tools/make_speech_corpus.py --out {root})"
        )
    files = list_files(source, root)
    test = split_test(files, data.get("test_fraction", 0.1), data.get("test_split", "sorted"))
    speakers: dict[str, list[str]] = {}
    for f in test:
        folder = os.path.dirname(f)
        speaker = os.path.basename(os.path.dirname(folder) if os.path.basename(folder) == "wavs" else folder)
        speakers.setdefault(speaker, []).append(f)
    return {s: fs[:per_speaker] if per_speaker else fs for s, fs in sorted(speakers.items())}


def _progress(i: int, n: int, what: str) -> None:
    # a one-line counter on stderr: not worth a progress-bar dependency
    if sys.stderr.isatty():
        sys.stderr.write(f"\r[{i}/{n}] {what[:60]:<60}")
        sys.stderr.flush()
    else:
        print(f"[{i}/{n}] {what}", file=sys.stderr, flush=True)


def evaluate(
    model: Any,
    params: Any,
    mel_cfg: MelConfig,
    speakers: dict[str, list[str]],
    temperature: float = 0.8,
    seed: int = 0,
    griffin_lim_iters: int = 32,
    progress: Callable[[int, int, str], None] = _progress,
    baseline: bool = True,
) -> dict[str, Any]:
    """Per-utterance and mean figures (see the module docstring) as a JSON-ready dict; without
    `baseline`, the model's alone (Griffin-Lim's figures NaN)."""
    rate = mel_cfg.sample_rate
    scorer = CopySynthesisScorer(Vocoder(model, params, mel_cfg), griffin_lim_iters, seed, timed=True)
    nll_fn = jax.jit(utterance_nll(model, mel_cfg))
    rng = jax.random.PRNGKey(seed)
    files = [(s, f) for s, fs in speakers.items() for f in fs]
    rows = []
    for i, (speaker, path) in enumerate(files):
        progress(i, len(files), os.path.basename(path))
        x, sr = read_audio(path)
        x = scorer.trim(resample(x, sr, rate))
        if x is None:
            continue
        padded = bucket_length(len(x), scorer.multiple)
        audio = np.zeros((1, padded), np.float32)
        audio[0, : len(x)] = x
        nll = float(nll_fn(params, jnp.asarray(audio), jnp.asarray([len(x)], jnp.int32))[0])
        scored = scorer(x, temperature, jax.random.fold_in(rng, i), griffin_lim=baseline, floor=baseline)
        if scored is None:  # the model's synthesis was not finite
            continue
        row = {"speaker": speaker, "file": os.path.basename(path), "seconds": scored["seconds"], "ll": -nll}
        row["model"] = scored["model"]
        for system in SYSTEMS[1:]:
            row[system] = scored.get(system, dict.fromkeys((*quality.METRICS, "rtf"), math.nan))
        rows.append(row)
    progress(len(files), len(files), "done")
    if sys.stderr.isatty():
        sys.stderr.write("\n")
    if not rows:
        raise DataError("no held-out utterance was long enough to evaluate")
    return {
        "temperature": temperature,
        "seed": seed,
        "griffin_lim_iters": griffin_lim_iters,
        "sample_rate": rate,
        "utterances": rows,
        "per_speaker": {s: _means([r for r in rows if r["speaker"] == s]) for s in speakers},
        "mean": _means(rows),
    }


def _means(rows: list[dict]) -> dict[str, dict[str, float]]:
    out = {}
    for system in SYSTEMS:
        vals = {}
        for col in COLUMNS:
            vals[col] = quality.finite_mean(r["ll"] if col == "ll" else r[system][col] for r in rows)
        if system != "model":
            vals["ll"] = math.nan  # the baselines have no likelihood
        out[system] = vals
    out["n"] = len(rows)
    return out


def json_safe(obj: Any) -> Any:
    """NaN / Inf -> None (JSON has no NaN), recursively."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


def markdown_table(result: dict[str, Any]) -> str:
    """Mean per speaker and overall, model beside Griffin-Lim."""
    head = "| speaker | system | n | " + " | ".join(COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 3)]
    groups = [*result["per_speaker"].items(), ("**all**", result["mean"])]
    for speaker, means in groups:
        for system in SYSTEMS:
            vals = means[system]
            cells = ["" if math.isnan(vals[c]) else f"{vals[c]:.3f}" for c in COLUMNS]
            name = {
                "model": "model",
                "griffin_lim": f"Griffin-Lim ({result['griffin_lim_iters']} it.)",
                "lpc_noise": "noise through the mel's LPC envelope",
            }[system]
            lines.append(f"| {speaker} | {name} | {means['n']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
