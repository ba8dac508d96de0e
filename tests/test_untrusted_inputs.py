"""Hostile mels, official configs, WAVs and outputs: each is one error naming the file or field and the
problem, with nothing spent before it is checked and nothing partial written."""

import errno
import json
import os
import threading

import numpy as np
import pytest
import soundfile

from nanoflow_jax.audio.io import read_audio, write_wav
from nanoflow_jax.checkpoints import Checkpointer, save_params_folder
from nanoflow_jax.convert.official_config import config_from_official, official_data_config, read_official
from nanoflow_jax.errors import AudioReadError, CheckpointError, ConversionError, InputError, OutputError
from nanoflow_jax.files import atomic_write
from nanoflow_jax.models import ModelConfig
from nanoflow_jax.synth.loading import load_mel

G8 = ModelConfig(n_groups=8)  # 80 bands, hop 256, G = 8

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OFFICIAL = os.path.join(ROOT, "tests", "data", "nanoflow_small_config.json")


def one_line(err) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


def write_npy_header(path, shape, data_bytes: int):
    header = {"descr": "<f4", "fortran_order": False, "shape": shape}
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        f.write(b"\0" * data_bytes)


# ---- mels ----------------------------------------------------------------------------------------


def test_npy_header_claiming_more_than_the_file_holds_is_refused_unread(tmp_path):
    path = tmp_path / "liar.npy"
    write_npy_header(path, (80, 125_000_000), 1024)  # 40 GB claimed, 1 KB held
    with pytest.raises(InputError, match="declares shape") as e:
        load_mel(str(path), G8)
    assert str(path) in one_line(e)


def test_mel_longer_than_memory_allows_is_refused_before_reading(tmp_path):
    path = tmp_path / "long.npy"
    np.save(path, np.zeros((80, 400), np.float32))
    with pytest.raises(InputError, match="400 frames is more than the 100") as e:
        load_mel(str(path), G8, max_frames=100)
    one_line(e)


def test_empty_npy_and_a_folder_are_refused(tmp_path):
    (tmp_path / "empty.npy").write_bytes(b"")
    with pytest.raises(InputError, match="is empty"):
        load_mel(str(tmp_path / "empty.npy"), G8)
    (tmp_path / "d.npy").mkdir()
    with pytest.raises(InputError, match="is a folder"):
        load_mel(str(tmp_path / "d.npy"), G8)


def test_a_fifo_is_refused_without_blocking(tmp_path):
    path = tmp_path / "pipe.npy"
    os.mkfifo(path)
    result = []
    t = threading.Thread(target=lambda: result.append(pytest.raises(InputError, load_mel, str(path), G8)))
    t.daemon = True
    t.start()
    t.join(10)
    assert not t.is_alive(), "reading a FIFO blocked"
    assert "FIFO" in str(result[0].value)


def test_non_float_or_object_npy_is_refused(tmp_path):
    path = tmp_path / "ints.npy"
    np.save(path, np.zeros((80, 20), np.int64))
    with pytest.raises(InputError, match="floating-point"):
        load_mel(str(path), G8)


# ---- official configs --------------------------------------------------------------------------


def official(**changes) -> dict:
    with open(OFFICIAL) as f:
        cfg = json.load(f)
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        cfg[section][key] = value
    return cfg


def test_official_config_nested_deeply_is_one_line(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ConversionError, match="nests deeper") as e:
        read_official(str(path))
    assert str(path) in one_line(e)


def test_official_config_section_that_is_a_list_is_one_line(tmp_path):
    cfg = official()
    cfg["data_config"] = [1, 2]
    with pytest.raises(ConversionError, match="data_config must be an object, got list"):
        official_data_config(cfg)


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("data_config__sampling_rate", 10**9, "sampling_rate = 1000000000 is not allowed"),
        ("data_config__filter_length", 10**8, "filter_length = 100000000 is not allowed"),
        ("data_config__mel_fmax", "8k", "mel_fmax"),
    ],
)
def test_official_data_fields_out_of_range_are_refused(field, value, match):
    with pytest.raises(ConversionError, match=match):
        official_data_config(official(**{field: value}))


@pytest.mark.parametrize("value", [True, 8.7, "8"])
def test_official_model_integer_fields_must_be_integers(value):
    with pytest.raises(ConversionError, match="n_height .* an integer"):
        config_from_official(official(waveflow_config__n_height=value))


def test_an_accepted_official_config_still_loads():
    assert config_from_official(OFFICIAL).n_groups == 8
    assert official_data_config(OFFICIAL)["sample_rate"] == 22050


# ---- WAVs ---------------------------------------------------------------------------------------


def test_a_1_hz_wav_is_refused_before_resampling(tmp_path):
    path = tmp_path / "slow.wav"
    soundfile.write(path, np.zeros(10, np.float32), 1, subtype="FLOAT")
    with pytest.raises(AudioReadError, match="sample rate 1 Hz") as e:
        read_audio(path)
    assert e.value.kind == "out of range"


def test_a_wav_with_nan_samples_is_refused(tmp_path):
    path = tmp_path / "nan.wav"
    x = np.full(100, 0.1, np.float32)
    x[5] = np.nan
    soundfile.write(path, x, 16000, subtype="FLOAT")
    with pytest.raises(AudioReadError, match="NaN") as e:
        read_audio(path)
    assert e.value.kind == "non-finite"


# ---- outputs ------------------------------------------------------------------------------------


def test_a_full_disk_during_a_write_is_one_line_and_leaves_nothing(tmp_path):
    def full(_f):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    target = tmp_path / "out.wav"
    with pytest.raises(OutputError, match="No space left on device") as e:
        atomic_write(target, full)
    assert str(target) in one_line(e)
    assert os.listdir(tmp_path) == []


def test_writing_under_a_file_or_onto_a_folder_is_one_line(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match="cannot write"):
        write_wav(tmp_path / "f" / "a.wav", np.zeros(10, np.float32), 22050)
    (tmp_path / "d.wav").mkdir()
    with pytest.raises(OutputError, match="it is a folder"):
        write_wav(tmp_path / "d.wav", np.zeros(10, np.float32), 22050)


def test_params_folder_refuses_a_file_non_finite_and_leaves_nothing_on_failure(tmp_path, monkeypatch):
    params = {"w": np.ones(3, np.float32)}
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        save_params_folder(str(tmp_path / "file"), 0, params, {})
    with pytest.raises(CheckpointError, match="non-finite"):
        save_params_folder(str(tmp_path / "nan"), 0, {"w": np.full(3, np.nan, np.float32)}, {})
    assert not (tmp_path / "nan").exists()

    import nanoflow_jax.checkpoints as ck

    def fail(self, *a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ck.Checkpointer, "save", fail)
    with pytest.raises(OutputError, match="No space left"):
        save_params_folder(str(tmp_path / "full"), 0, params, {})
    assert sorted(os.listdir(tmp_path)) == ["file"]  # no folder, no temporary left behind


def test_params_folder_round_trips(tmp_path):
    out = save_params_folder(str(tmp_path / "p"), 7, {"w": np.arange(3, dtype=np.float32)}, {"config": {}})
    assert sorted(os.listdir(tmp_path)) == ["p"]
    ckpt = Checkpointer(out, create=False, async_save=False)
    state, _ = ckpt.restore(7)
    ckpt.close()
    np.testing.assert_array_equal(state["params"]["w"], [0, 1, 2])


def test_converter_out_naming_a_file_is_one_line_exit_2(tmp_path):
    import subprocess
    import sys

    pt = os.path.join(ROOT, "tests", "data", "nanoflow_small_official_ckpt.pt")
    out = tmp_path / "taken"
    out.write_text("keep me")
    cmd = [sys.executable, "-m", "nanoflow_jax.convert", pt, "--config", OFFICIAL, "--out", str(out)]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "is a file, not a folder" in lines[0], r.stderr
    assert out.read_text() == "keep me" and sorted(os.listdir(tmp_path)) == ["taken"]


def test_a_training_checkpoint_on_a_full_disk_is_refused_and_the_last_good_one_stays(tmp_path, monkeypatch):
    import collections
    import shutil

    ckpt = Checkpointer(str(tmp_path / "ckpts"), keep=1, async_save=False)
    state = {"params": {"w": np.ones(1000, np.float32)}}
    ckpt.save(1, state, {})
    ckpt.wait()
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: usage(1 << 30, 1 << 30, 1 << 20))
    with pytest.raises(OutputError, match=r"1.0 MiB free.*step 1\) is intact") as e:
        ckpt.save(2, state, {})
    one_line(e)
    assert ckpt.all_steps() == [1]  # keep=1 did not prune the good one for a save that never happened
    monkeypatch.undo()
    ckpt.close()
    restored, _ = Checkpointer(str(tmp_path / "ckpts"), create=False).restore(1)
    np.testing.assert_array_equal(restored["params"]["w"], state["params"]["w"])


def test_synth_on_a_damaged_checkpoint_is_one_line_naming_it(tmp_path):
    import subprocess
    import sys

    from nanoflow_jax.convert.write import convert_official

    pt = os.path.join(ROOT, "tests", "data", "nanoflow_small_official_ckpt.pt")
    folder = convert_official(pt, OFFICIAL, str(tmp_path / "ckpt"))
    arrays = [os.path.join(d, n) for d, _, ns in os.walk(folder) for n in ns if d.endswith(os.sep + "d")]
    big = max(arrays, key=os.path.getsize)
    data = bytearray(open(big, "rb").read())
    data[len(data) // 2] ^= 0xFF
    open(big, "wb").write(bytes(data))
    mel = tmp_path / "m.npy"
    np.save(mel, np.zeros((80, 20), np.float32))
    cmd = [sys.executable, "synth.py", "--mel", str(mel), "--checkpoint", folder, "--out", str(tmp_path / "o.wav")]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1 and folder in lines[0], r.stderr
    assert not (tmp_path / "o.wav").exists()
