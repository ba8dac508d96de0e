"""Where training audio comes from: an LJSpeech-layout folder, any folder of WAVs, a file list, or TFDS.

The official split: files sorted by name, the first `test_fraction` of them (10%: 1310 of LJSpeech's
13,100) are the test set, the rest train; in a multi-host run each host takes every P-th training file
and reads only those (and the test set). Each file read is decoded once up front: unreadable, empty,
silent or clipped files are left out and counted in one summary line, so nothing fails mid-run.
"""

from __future__ import annotations

import dataclasses
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from nanoflow_jax.audio.io import read_audio, resample
from nanoflow_jax.errors import AudioReadError, DataError
from nanoflow_jax.files import resolve_path

DEMO_CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo_corpus")
SILENCE_PEAK = 1e-4  # below this peak a file holds no usable signal
CLIP_LEVEL = 32766 / 32768
CLIP_FRACTION = 1e-3  # more than this share of samples at full scale: clipped


def _listed(path: str) -> list[str]:
    base = os.path.dirname(os.path.abspath(path))
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                p = line.split("|")[0]
                out.append(p if os.path.isabs(p) else os.path.join(base, p))
    return out


def list_files(source: str, path: str) -> list[str]:
    """Sorted audio paths for `source` in ("folder", "filelist"); path "demo" is the bundled corpus."""
    if not path:
        raise DataError(
            "no dataset given: set --config.data.path (an LJSpeech folder, a folder of wavs, "
            "or a file list with data.source=filelist)"
        )
    path = DEMO_CORPUS if path == "demo" else resolve_path(path)
    if source == "filelist":
        if not os.path.isfile(path):
            raise DataError(f"file list {path} does not exist")
        files = _listed(path)
    elif source == "folder":
        if not os.path.isdir(path):
            raise DataError(f"dataset folder {path} does not exist")
        meta = os.path.join(path, "metadata.csv")
        if os.path.isfile(meta) and os.path.isdir(os.path.join(path, "wavs")):  # LJSpeech layout
            with open(meta, encoding="utf-8") as f:
                ids = [line.split("|")[0] for line in f if line.strip()]
            files = [os.path.join(path, "wavs", i + ".wav") for i in ids]
        else:
            files = [
                os.path.join(root, n)
                for root, _, names in os.walk(path)
                for n in names
                if n.lower().endswith((".wav", ".flac"))
            ]
    else:
        raise DataError(f"unknown data.source {source!r}; expected 'folder', 'filelist' or 'tfds'")
    if not files:
        raise DataError(f"no audio files found in {path}")
    return sorted(files, key=os.path.basename)


@dataclasses.dataclass
class AudioSet:
    """Decoded, checked utterances at one sample rate (float32 in memory, or reloaded when too big)."""

    names: list[str]
    sample_rate: int
    audio: list[np.ndarray] | None  # None: decode on demand
    lengths: list[int]

    def __len__(self) -> int:
        return len(self.names)

    def load(self, i: int) -> np.ndarray:
        if self.audio is not None:
            return self.audio[i]
        x, sr = read_audio(self.names[i])
        return resample(x, sr, self.sample_rate)


def _check(path: str, sample_rate: int):
    try:
        x, sr = read_audio(path)
    except AudioReadError:
        return "unreadable", None, False
    if x.size == 0:
        return "empty", None, False
    peak = float(np.max(np.abs(x)))
    if peak < SILENCE_PEAK:
        return "silent", None, False
    if np.mean(np.abs(x) >= CLIP_LEVEL) > CLIP_FRACTION:
        return "clipped", None, False
    return "ok", resample(x, sr, sample_rate), sr != sample_rate


def load_splits(
    data: Any, log=print, process_index: int = 0, process_count: int = 1, keep_in_memory_mb: float = 2048
) -> tuple[AudioSet, AudioSet]:
    """(train shard of this host, test) from a config's `data` section (source, path, sample_rate,
    test_fraction)."""
    if data.source == "tfds":
        from nanoflow_jax.data.tfds import load_tfds_splits

        return load_tfds_splits(data, log)
    files = list_files(data.source, data.path)
    n_test = int(len(files) * data.test_fraction)
    test_files, train_files = files[:n_test], files[n_test:][process_index::process_count]
    mine = test_files + train_files
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        results = list(pool.map(lambda p: _check(p, data.sample_rate), mine))
    counts: dict[str, int] = {}
    for status, _, _ in results:
        counts[status] = counts.get(status, 0) + 1
    n_resampled = sum(r for s, _, r in results if s == "ok")
    skipped = {k: v for k, v in counts.items() if k != "ok"}
    who = f" (host {process_index} of {process_count})" if process_count > 1 else ""
    msg = f"data{who}: {counts.get('ok', 0)} of {len(mine)} files usable"
    if skipped:
        msg += ", skipped " + ", ".join(f"{v} {k}" for k, v in sorted(skipped.items()))
    if n_resampled:
        msg += f"; {n_resampled} resampled to {data.sample_rate} Hz"
    log(msg)
    good = [(f, x) for f, (s, x, _) in zip(mine, results, strict=True) if s == "ok"]
    if not good:
        raise DataError(f"no usable audio in {data.path}")
    total_mb = sum(x.nbytes for _, x in good) / 2**20
    in_memory = total_mb <= keep_in_memory_mb

    def make(items):
        return AudioSet(
            [f for f, _ in items],
            data.sample_rate,
            [x for _, x in items] if in_memory else None,
            [len(x) for _, x in items],
        )

    test_set = set(test_files)
    return make([g for g in good if g[0] not in test_set]), make([g for g in good if g[0] in test_set])
