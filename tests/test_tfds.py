"""data.source=tfds on tensorflow-datasets' own mock data for ljspeech (no download): the split, and each
host's shard of it. Needs the optional extra (pip install -e ".[tfds]"; the dev extra includes it).
TensorFlow is imported in a child process only, so the rest of the suite runs without it."""

import importlib.util
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def check_tfds_ljspeech() -> None:
    import tensorflow_datasets as tfds

    from nanoflow_jax.data import load_splits
    from nanoflow_jax.data.audio_config import AudioDataConfig

    data = AudioDataConfig(source="tfds", path="", test_fraction=0.1)
    with tfds.testing.mock_data(num_examples=20):
        logs = []
        train, test = load_splits(data, logs.append)
        shards = [load_splits(data, logs.append, i, 2) for i in range(2)]
    assert (len(train), len(test)) == (18, 2), (len(train), len(test))
    assert "20 of 20 utterances from TFDS ljspeech" in logs[0], logs
    assert "(host 1 of 2): 11 of 20" in logs[2], logs
    assert all(s[1].names == test.names for s in shards)  # every host evaluates the same test set
    a, b = (set(s[0].names) for s in shards)
    assert not a & b and a | b == set(train.names) and abs(len(a) - len(b)) <= 1
    assert not set(train.names) & set(test.names)
    x = train.load(0)
    assert x.dtype.name == "float32" and x.ndim == 1 and len(x) == train.lengths[0]
    print("tfds ok")


@pytest.mark.skipif(importlib.util.find_spec("tensorflow_datasets") is None, reason="the tfds extra is not installed")
def test_tfds_ljspeech_splits_and_shards_over_hosts():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
    out = subprocess.run(
        [sys.executable, "-c", "from tests.test_tfds import check_tfds_ljspeech as c; c()"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0 and "tfds ok" in out.stdout, out.stdout[-3000:] + out.stderr[-3000:]
