"""Data sources, checks, split and the resumable crop loader."""

import os
import threading

import ml_collections
import numpy as np
import pytest
import soundfile

from nanoflow_jax.audio import write_wav
from nanoflow_jax.data import DEMO_CORPUS, CropLoader, DataError, list_files, load_splits
from nanoflow_jax.data.images import ImageLoader
from nanoflow_jax.data.stream import host_shard


def data_cfg(path, source="folder", **kw):
    return ml_collections.ConfigDict(dict(source=source, path=str(path), sample_rate=22050, test_fraction=0.1) | kw)


def test_demo_corpus_is_ljspeech_layout():
    files = list_files("folder", "demo")
    assert len(files) == 40 and files == sorted(files, key=os.path.basename)
    assert all(f.startswith(os.path.join(DEMO_CORPUS, "wavs")) for f in files)
    lines = open(os.path.join(DEMO_CORPUS, "metadata.csv")).read().split("\n")
    assert len([ln for ln in lines if ln]) == 40
    size = sum(os.path.getsize(f) for f in files)
    assert size < 6 * 2**20


def test_official_split_first_tenth_is_test():
    logs = []
    train, test = load_splits(data_cfg("demo"), log=logs.append)
    names = sorted(list_files("folder", "demo"), key=os.path.basename)
    assert test.names == names[:4] and train.names == names[4:]
    assert logs == ["data: 40 of 40 files usable"]


def make_folder(tmp_path):
    rng = np.random.default_rng(0)
    good = [0.1 * rng.standard_normal(3000).astype(np.float32) for _ in range(10)]
    for i, x in enumerate(good):
        write_wav(tmp_path / f"good_{i:02d}.wav", x, 22050)
    write_wav(tmp_path / "silent.wav", np.zeros(3000, np.float32), 22050)
    clipped = np.sign(rng.standard_normal(3000)).astype(np.float32)
    write_wav(tmp_path / "clipped.wav", clipped, 22050)
    write_wav(tmp_path / "empty.wav", np.zeros(0, np.float32), 22050)
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF....not really a wave file")
    nan = np.full(3000, 0.1, np.float32)
    nan[7] = np.nan
    soundfile.write(tmp_path / "nan.wav", nan, 22050, subtype="FLOAT")
    soundfile.write(tmp_path / "one_hz.wav", np.zeros(10, np.float32), 1, subtype="FLOAT")
    sub = tmp_path / "other_rate"
    sub.mkdir()
    write_wav(sub / "good_16k.wav", 0.1 * rng.standard_normal(1600).astype(np.float32), 16000)
    return good


def test_bad_files_are_skipped_with_one_summary_line(tmp_path):
    make_folder(tmp_path)
    logs = []
    train, test = load_splits(data_cfg(tmp_path), log=logs.append)
    assert logs == [
        "data: 11 of 17 files usable, skipped 1 clipped, 1 empty, 1 non-finite, 1 out of range, 1 silent, "
        "1 unreadable; 1 resampled to 22050 Hz"
    ]
    # the split is by name, before the checks: the test file (first of 17) was the clipped one
    assert len(train) == 11 and len(test) == 0
    i = [os.path.basename(n) for n in train.names].index("good_16k.wav")
    assert train.lengths[i] == 2205  # 1600 samples at 16 kHz


def test_file_list_source(tmp_path):
    make_folder(tmp_path)
    (tmp_path / "list.txt").write_text("good_01.wav|some text\n# comment\n" + str(tmp_path / "good_02.wav") + "\n")
    assert [os.path.basename(f) for f in list_files("filelist", str(tmp_path / "list.txt"))] == [
        "good_01.wav",
        "good_02.wav",
    ]


@pytest.mark.parametrize(
    "path,source,match",
    [
        ("", "folder", "no dataset given"),
        ("/nonexistent/ljspeech", "folder", "does not exist"),
        ("/nonexistent/list.txt", "filelist", "does not exist"),
        ("demo", "s3", "unknown data.source"),
    ],
)
def test_bad_dataset_is_a_clear_error(path, source, match):
    with pytest.raises(DataError, match=match):
        load_splits(data_cfg(path, source), log=lambda *_: None)


def test_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="no audio files"):
        load_splits(data_cfg(tmp_path), log=lambda *_: None)
    (tmp_path / "x.wav").write_bytes(b"junk")
    with pytest.raises(DataError, match="no usable audio"):
        load_splits(data_cfg(tmp_path), log=lambda *_: None)


def test_loader_is_deterministic_resumable_and_sharded():
    train, _ = load_splits(data_cfg("demo"), log=lambda *_: None)
    a = CropLoader(train, 4, 1000, seed=3)
    first = [next(a) for _ in range(12)]  # 48 items: crosses an epoch boundary (36 files)
    state = a.state()
    more = [next(a) for _ in range(3)]
    a.close()
    assert state == {"position": 48}
    b = CropLoader(train, 4, 1000, seed=3, position=state["position"])
    resumed = [next(b) for _ in range(3)]
    b.close()
    for x, y in zip(more, resumed, strict=True):
        np.testing.assert_array_equal(x, y)
    assert all(x.shape == (4, 1000) and x.dtype == np.float32 for x in first)
    assert not np.array_equal(first[0], first[1])
    c = CropLoader(train, 4, 1000, seed=4)
    assert not np.array_equal(next(c), first[0])
    c.close()
    shards = [load_splits(data_cfg("demo"), lambda *_: None, i, 2)[0] for i in range(2)]
    assert sorted(shards[0].names + shards[1].names) == sorted(train.names)
    assert not set(shards[0].names) & set(shards[1].names)
    hosts = [CropLoader(shards[i], 2, 1000, seed=3, process_index=i) for i in range(2)]
    h0, h1 = next(hosts[0]), next(hosts[1])
    for h in hosts:
        h.close()
    assert not np.array_equal(h0, h1)


def test_one_stream_for_both_tasks():
    """Audio crops and image batches are one position-indexed stream: the same items at the same positions
    across epochs, no thread of their own (the trainer's prefetcher is the one thread), and one host
    sharding, disjoint and covering."""
    train, _ = load_splits(data_cfg("demo"), log=lambda *_: None)
    n = len(train)
    threads = threading.active_count()
    crops = CropLoader(train, 4, 1000, seed=3)
    # image i is filled with the value i, so a dequantised batch says which images it holds
    images = ImageLoader(np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None, None], (n, 2, 2, 3)), 4, 3)
    for position in range(0, 2 * n, 4):  # two epochs
        held = np.floor((next(images)[:, 0, 0, 0] + 0.5) * 256).astype(int)
        assert list(held) == [idx for idx, _, _ in crops.items(position)]
        next(crops)
    assert threading.active_count() == threads
    crops.close()
    with pytest.raises(StopIteration):
        next(crops)
    assert [list(host_shard(range(5), i, 2)) for i in range(2)] == [[0, 2, 4], [1, 3]]
    with pytest.raises(DataError, match="1 training items for 2 hosts"):
        host_shard([0], 1, 2)


def test_corpus_in_memory_is_int16_and_crops_match_decoding_on_demand():
    """Held as int16 (the demo corpus is 16-bit PCM: exact), or decoded per crop by worker threads when
    it exceeds data.max_memory_gb: the same batches either way."""
    logs = []
    memory, _ = load_splits(data_cfg("demo", max_memory_gb=8.0), log=logs.append)
    disk, _ = load_splits(data_cfg("demo", max_memory_gb=0.0), log=logs.append)
    assert memory.in_memory and memory.audio[0].dtype == np.int16 and not disk.in_memory
    assert "decoded per crop" in logs[1] and "decoded per crop" not in logs[0]
    a, b = CropLoader(memory, 4, 1000, seed=5), CropLoader(disk, 4, 1000, seed=5, workers=3)
    for _ in range(3):
        np.testing.assert_array_equal(next(a), next(b))
    a.close()
    b.close()
    np.testing.assert_array_equal(memory.load(2), disk.load(2))
