"""Optional: LJSpeech from TensorFlow Datasets (needs tensorflow and tensorflow-datasets installed; the
rest of the project never imports TensorFlow)."""

from __future__ import annotations

from typing import Any

import numpy as np

from nanoflow_jax.audio.io import resample
from nanoflow_jax.data.corpus import AudioSet, to_int16
from nanoflow_jax.data.stream import host_shard
from nanoflow_jax.errors import DataError


def load_tfds_splits(data: Any, log=print, process_index: int = 0, process_count: int = 1) -> tuple[AudioSet, AudioSet]:
    """(train shard of this host, test) of TFDS ljspeech, split as the folder source splits: utterances
    sorted by id, the first data.test_fraction held out, each host taking every P-th training utterance."""
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise DataError(
            "data.source='tfds' needs tensorflow and tensorflow-datasets installed "
            "(pip install tensorflow tensorflow-datasets)"
        ) from None
    ds, info = tfds.load("ljspeech", split="train", with_info=True, data_dir=data.path or None)
    sr = info.features["speech"].sample_rate
    items = sorted(((ex["id"].decode(), ex["speech"]) for ex in tfds.as_numpy(ds)), key=lambda t: t[0])
    n_test = int(len(items) * data.test_fraction)
    test, train = items[:n_test], host_shard(items[n_test:], process_index, process_count, "training utterances")
    who = f" (host {process_index} of {process_count})" if process_count > 1 else ""
    log(f"data{who}: {len(test) + len(train)} of {len(items)} utterances from TFDS ljspeech")

    def make(part):
        audio = [to_int16(resample(s.astype(np.float32) / 32768.0, sr, data.sample_rate)) for _, s in part]
        return AudioSet([n for n, _ in part], data.sample_rate, audio, [len(a) for a in audio])

    return make(train), make(test)
