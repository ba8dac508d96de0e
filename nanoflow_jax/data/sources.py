"""Where training audio comes from: an LJSpeech-layout folder, any folder of WAVs, a file list, or TFDS.

The official split: files sorted by name, the first `test_fraction` of them (10%: 1310 of LJSpeech's
13,100) are the test set, the rest train; in a multi-host run each host takes every P-th training file
and reads only those (and the test set). Each file read is decoded once up front: unreadable,
non-finite, out-of-range, empty, silent or clipped files are left out and counted in one summary
line, so nothing fails mid-run.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from nanoflow_jax.audio.io import read_audio, read_mel, resample
from nanoflow_jax.audio.mel import MelConfig
from nanoflow_jax.data.corpus import AudioSet, to_int16
from nanoflow_jax.data.stream import host_shard
from nanoflow_jax.errors import AudioReadError, DataError, InputError
from nanoflow_jax.files import read_text_file, resolve_path

DEMO_CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo_corpus")
SILENCE_PEAK = 1e-4  # below this peak a file holds no usable signal
CLIP_LEVEL = 32766 / 32768
CLIP_FRACTION = 1e-3  # more than this share of samples at full scale: clipped


MAX_LIST_BYTES = 256 << 20


def _text(path: str, what: str) -> str:
    """A file list or metadata.csv through the input gate (regular file, size, UTF-8), as a DataError."""
    try:
        return read_text_file(path, what, MAX_LIST_BYTES)
    except InputError as e:
        raise DataError(str(e)) from None


def _listed(path: str) -> list[str]:
    base = os.path.dirname(os.path.abspath(path))
    out = []
    for line in _text(path, "file list").splitlines():
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
            ids = [line.split("|")[0] for line in _text(meta, "metadata file").splitlines() if line.strip()]
            files = [os.path.join(path, "wavs", i + ".wav") for i in ids]
        else:
            files = [
                os.path.join(root, n)
                for root, _, names in os.walk(path)
                for n in names
                if n.lower().endswith((".wav", ".flac"))
            ]
    elif source == "pairs":
        if not os.path.isdir(path):
            raise DataError(f"pairs folder {path} does not exist")
        files = [os.path.join(root, n) for root, _, names in os.walk(path) for n in names if n.lower().endswith(".wav")]
    else:
        raise DataError(f"unknown data.source {source!r}; expected 'folder', 'filelist', 'tfds' or 'pairs'")
    if not files:
        raise DataError(f"no audio files found in {path}")
    return sorted(files, key=os.path.basename)


def split_test(files: list[str], fraction: float, how: str = "sorted") -> list[str]:
    """The test files of a sorted file list: its first `fraction` ("sorted", the official split), or the
    first `fraction` of each folder's files ("per_folder": every speaker of a multi-speaker corpus held
    out alike, at least one file each)."""
    if how == "sorted":
        return files[: int(len(files) * fraction)]
    folders: dict[str, list[str]] = {}
    for f in files:
        folders.setdefault(os.path.dirname(f), []).append(f)
    return [f for group in folders.values() for f in group[: max(1, int(len(group) * fraction))]]


class _Budget:
    """Bytes left for the in-memory corpus, shared by the decoding threads."""

    def __init__(self, nbytes: int):
        self.left, self._lock = nbytes, threading.Lock()

    def take(self, nbytes: int) -> bool:
        with self._lock:
            self.left -= nbytes
            return self.left >= 0


def mel_files(root: str) -> dict[str, str]:
    """{stem: path} of the .npy files under `root` (pairs: a wav's mel has its stem)."""
    return {
        os.path.splitext(n)[0]: os.path.join(r, n) for r, _, names in os.walk(root) for n in names if n.endswith(".npy")
    }


def _pair_mel(path: str, mels: dict[str, str], n_samples: int, data: Any) -> tuple[str, np.ndarray | None]:
    """The mel paired with a wav of `n_samples` (at data.sample_rate): -> (status, mel or None). Ours has
    n // hop + 1 frames; a TTS model's may differ by data.pair_tolerance_frames (the crops keep to the
    shorter of the two)."""
    mel_path = mels.get(os.path.splitext(os.path.basename(path))[0])
    if mel_path is None:
        return "without a mel", None
    try:
        mel = read_mel(mel_path, data.n_mels, n_samples // data.hop_length + 1 + data.pair_tolerance_frames)
    except InputError:
        return "with an unreadable or too long mel", None
    if abs(mel.shape[1] * data.hop_length - n_samples) > (data.pair_tolerance_frames + 1) * data.hop_length:
        return "with a mel of another length", None
    return "ok", mel


def _check(path: str, sample_rate: int, budget: _Budget, pair=None):
    """-> (status, int16 samples or None once the memory budget is spent, length, resampled, mel)."""
    try:
        x, sr = read_audio(path)
    except AudioReadError as e:
        return e.kind, None, 0, False, None
    if x.size == 0:
        return "empty", None, 0, False, None
    peak = float(np.max(np.abs(x)))
    if peak < SILENCE_PEAK:
        return "silent", None, 0, False, None
    if np.mean(np.abs(x) >= CLIP_LEVEL) > CLIP_FRACTION:
        return "clipped", None, 0, False, None
    x = to_int16(resample(x, sr, sample_rate))
    mel = None
    if pair is not None:
        status, mel = _pair_mel(path, pair[0], len(x), pair[1])
        if mel is None:
            return status, None, 0, False, None
        budget.take(mel.nbytes)  # pairs keep their mels in memory whatever the budget
    return "ok", (x if budget.take(x.nbytes) else None), len(x), sr != sample_rate, mel


def load_splits(data: Any, log=print, process_index: int = 0, process_count: int = 1) -> tuple[AudioSet, AudioSet]:
    """(train shard of this host, test) from a config's `data` section (source, path, sample_rate,
    test_fraction, max_memory_gb). Every file is decoded once to check it; the corpus stays in memory as
    int16 when it fits in max_memory_gb, else it is decoded again per crop."""
    if data.source == "tfds":
        from nanoflow_jax.data.tfds import load_tfds_splits

        return load_tfds_splits(data, log, process_index, process_count)
    files = list_files(data.source, data.path)
    test_files = split_test(files, data.test_fraction, getattr(data, "test_split", "sorted"))
    held_out = set(test_files)
    train_files = host_shard([f for f in files if f not in held_out], process_index, process_count, "training files")
    mine = test_files + train_files
    max_gb = getattr(data, "max_memory_gb", 8.0)
    budget = _Budget(int(max_gb * 2**30))
    pair = (mel_files(resolve_path(data.path)), data) if data.source == "pairs" else None
    with ThreadPoolExecutor(max_workers=max(2, min(8, os.cpu_count() or 1))) as pool:
        results = list(pool.map(lambda p: _check(p, data.sample_rate, budget, pair), mine))
    counts: dict[str, int] = {}
    for status, *_ in results:
        counts[status] = counts.get(status, 0) + 1
    n_resampled = sum(r for s, _, _, r, _ in results if s == "ok")
    skipped = {k: v for k, v in counts.items() if k != "ok"}
    who = f" (host {process_index} of {process_count})" if process_count > 1 else ""
    msg = f"data{who}: {counts.get('ok', 0)} of {len(mine)} files usable"
    if skipped:
        msg += ", skipped " + ", ".join(f"{v} {k}" for k, v in sorted(skipped.items()))
    if n_resampled:
        msg += f"; {n_resampled} resampled to {data.sample_rate} Hz"
    in_memory = budget.left >= 0
    if not in_memory:
        msg += f"; more than data.max_memory_gb={max_gb:g}: decoded per crop"
    log(msg)
    good = [(f, x, n, m) for f, (s, x, n, _, m) in zip(mine, results, strict=True) if s == "ok"]
    if not good:
        raise DataError(f"no usable audio in {data.path}")

    def make(items):
        return AudioSet(
            [f for f, _, _, _ in items],
            data.sample_rate,
            [x for _, x, _, _ in items] if in_memory else None,
            [n for _, _, n, _ in items],
            [m for *_, m in items] if pair else None,
            data.hop_length if pair else MelConfig.hop_length,
        )

    return make([g for g in good if g[0] not in held_out]), make([g for g in good if g[0] in held_out])
