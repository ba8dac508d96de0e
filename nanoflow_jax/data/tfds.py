"""Optional: LJSpeech from TensorFlow Datasets (needs tensorflow and tensorflow-datasets installed; the
rest of the project never imports TensorFlow)."""

from __future__ import annotations

from typing import Any

import numpy as np

from nanoflow_jax.audio.io import resample
from nanoflow_jax.data.corpus import AudioSet
from nanoflow_jax.errors import DataError


def load_tfds_splits(data: Any, log=print) -> tuple[AudioSet, AudioSet]:
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
    audio = [resample(s.astype(np.float32) / 32768.0, sr, data.sample_rate) for _, s in items]
    names = [n for n, _ in items]
    log(f"data: {len(names)} utterances from TFDS ljspeech")
    n_test = int(len(names) * data.test_fraction)

    def make(sl):
        return AudioSet(names[sl], data.sample_rate, audio[sl], [len(a) for a in audio[sl]])

    return make(slice(n_test, None)), make(slice(0, n_test))
