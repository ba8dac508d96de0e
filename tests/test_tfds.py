"""data.source=tfds on tensorflow-datasets' own mock data for ljspeech (no download): the split, and each
host's shard of it. Needs the optional extra (pip install -e ".[tfds]"); skipped without it."""

import pytest

from nanoflow_jax.data import load_splits
from nanoflow_jax.data.audio_config import AudioDataConfig

tfds = pytest.importorskip("tensorflow_datasets")


def test_tfds_ljspeech_splits_and_shards_over_hosts():
    data = AudioDataConfig(source="tfds", path="", test_fraction=0.1)
    with tfds.testing.mock_data(num_examples=20):
        logs = []
        train, test = load_splits(data, logs.append)
        shards = [load_splits(data, logs.append, i, 2) for i in range(2)]
    assert (len(train), len(test)) == (18, 2)
    assert "20 of 20 utterances from TFDS ljspeech" in logs[0]
    assert "(host 1 of 2): 11 of 20" in logs[2]
    assert all(s[1].names == test.names for s in shards)  # every host evaluates the same test set
    a, b = (set(s[0].names) for s in shards)
    assert not a & b and a | b == set(train.names) and abs(len(a) - len(b)) <= 1
    assert not set(train.names) & set(test.names)
    x = train.load(0)
    assert x.dtype.name == "float32" and x.ndim == 1 and len(x) == train.lengths[0]
