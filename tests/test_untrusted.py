"""Untrusted files: each hostile input is built here and gives one error naming the file and the problem
(exit 2 on the command line), with no out-of-bounds read, no unbounded memory and nothing written."""

import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nanoflow_jax.convert.torch_pickle import read_torch_checkpoint
from nanoflow_jax.errors import ConversionError
from tests.untrusted_files import Raw, Storage, Tensor, write_pt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def refused(path, match):
    with pytest.raises(ConversionError, match=match) as e:
        read_torch_checkpoint(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)
    return str(e.value)


def test_a_well_formed_archive_loads_exactly(tmp_path):
    data = np.arange(24, dtype=np.float32)
    s = Storage("0", data)
    tree = {"model": {"w": Tensor(s, 2, (3, 4), (4, 1)), "t": Tensor(s, 1, (2, 3), (1, 2)), "step": 7}}
    out = read_torch_checkpoint(write_pt(tmp_path / "ok.pt", tree, [s]))
    np.testing.assert_array_equal(out["model"]["w"], data[2:14].reshape(3, 4))
    np.testing.assert_array_equal(out["model"]["t"], np.array([[1, 3, 5], [2, 4, 6]], np.float32))
    assert out["model"]["step"] == 7


@pytest.mark.parametrize(
    "offset,size,stride",
    [(0, (5, 5), (5, 1)), (20, (5,), (1,)), (0, (2, 5), (20, 1)), (10**12, (1,), (1,)), (0, (2,), (2**62,))],
)
def test_tensor_reaching_past_its_storage_is_refused(tmp_path, offset, size, stride):
    s = Storage("0", np.zeros(24, np.float32))
    path = write_pt(tmp_path / "oob.pt", {"w": Tensor(s, offset, size, stride)}, [s])
    msg = refused(path, "tensor w: size")
    assert "of a storage of 24" in msg


@pytest.mark.parametrize(
    "size,stride,offset,match",
    [
        ((10**6, 10**6), (10**6, 1), 0, "elements is more than"),
        ((-1, 4), (4, 1), 0, "are invalid"),
        ((2, 2), (2,), 0, "are invalid"),
        ((2.5,), (1,), 0, "are invalid"),
        ((2,), (True,), 0, "are invalid"),
        ((2,), (1,), -3, "offset"),
        ((2,), (1,), "x", "offset"),
    ],
)
def test_bad_size_stride_offset_is_refused(tmp_path, size, stride, offset, match):
    s = Storage("0", np.zeros(24, np.float32))
    refused(write_pt(tmp_path / "bad.pt", {"w": Tensor(s, offset, size, stride)}, [s]), match)


def test_corrupt_archives_and_pickles_are_one_line(tmp_path):
    s = Storage("0", np.arange(1, 5, dtype=np.float32))
    good = write_pt(tmp_path / "good.pt", {"w": Tensor(s)}, [s])
    raw = open(good, "rb").read()
    cases = {
        "garbage.pt": (b"\x80\x02garbage that is no pickle at all", "not a valid checkpoint pickle"),
        "truncated.pt": (None, "not a valid checkpoint pickle|damaged"),
        "setitems.pt": (b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01u.", "not a valid checkpoint pickle"),
    }
    for name, (pkl, match) in cases.items():
        if pkl is None:
            from tests.untrusted_files import pickle_bytes

            pkl = pickle_bytes({"w": Tensor(s)})[:-7]
        refused(write_pt(tmp_path / name, {}, [s], pkl=pkl), match)
    # a flipped byte inside a stored member: the zip CRC catches it
    i = raw.index(s.data.tobytes()) + 5
    bad = bytearray(raw)
    bad[i] ^= 0xFF
    (tmp_path / "crc.pt").write_bytes(bytes(bad))
    refused(tmp_path / "crc.pt", "damaged archive .*CRC")
    (tmp_path / "notzip.pt").write_bytes(b"not a zip")
    refused(tmp_path / "notzip.pt", "not a readable PyTorch checkpoint")


def test_storages_that_are_not_storages_or_named_wrongly_are_refused(tmp_path):
    s = Storage("0", np.zeros(4, np.float32))
    refused(write_pt(tmp_path / "list.pt", {"w": Tensor([1, 2, 3])}, [s]), "its storage is a list")
    refused(write_pt(tmp_path / "str.pt", {"w": Tensor("abc")}, [s]), "its storage is a str")
    wrong = Storage("7", np.zeros(4, np.float32))
    refused(write_pt(tmp_path / "key.pt", {"w": Tensor(wrong)}, [s]), "names storage '7', which the archive")
    short = {"w": Raw("torch._utils", "_rebuild_tensor_v2", (("PID", ("storage", "x")), 0, (1,), (1,)))}
    refused(write_pt(tmp_path / "pid.pt", short, [s]), "a persistent id is not")
    called = {"w": Raw("torch", "FloatStorage", (4,))}
    refused(write_pt(tmp_path / "call.pt", called, [s]), "calls the storage type FloatStorage")


def test_memory_bombs_are_refused_before_memory_is_spent(tmp_path):
    # a few hundred bytes of shared nested lists: 2**40 nodes if expanded
    a: list = []
    for _ in range(40):
        a = [a, a]
    path = write_pt(tmp_path / "lists.pt", {"w": a})
    assert os.path.getsize(path) < 2000
    refused(path, "expand to more than")
    # a storage declaring 10 elements whose member inflates to 64 MiB: read stops at the declared size
    s = Storage("0", np.zeros(10, np.float32))
    path = tmp_path / "bomb.pt"
    with zipfile.ZipFile(path, "w") as z:
        from tests.untrusted_files import pickle_bytes

        z.writestr("archive/data.pkl", pickle_bytes({"w": Tensor(s)}))
        z.writestr("archive/data/0", b"\0" * 2**26, compress_type=zipfile.ZIP_DEFLATED)
    assert os.path.getsize(path) < 2**20
    refused(path, "does not hold its declared 40 bytes")
    # a storage declaring 2 GiB: over the file's total before anything is read
    big = Storage("0", np.zeros(4, np.float32), numel=2**29)
    refused(write_pt(tmp_path / "big.pt", {"w": Tensor(big, 0, (2**27,), (1,))}, [big]), "exceed")


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 40),
    size=st.lists(st.integers(0, 6), min_size=0, max_size=3),
    stride=st.lists(st.integers(0, 12), min_size=3, max_size=3),
    offset=st.integers(0, 45),
)
def test_any_size_stride_offset_loads_what_torch_would_or_is_refused(tmp_path_factory, n, size, stride, offset):
    stride = stride[: len(size)]
    data = np.arange(n, dtype=np.float32) + 0.5
    s = Storage("0", data)
    path = write_pt(tmp_path_factory.mktemp("p") / "t.pt", {"w": Tensor(s, offset, tuple(size), tuple(stride))}, [s])
    numel = int(np.prod(size)) if size else 1
    extent = offset + sum((a - 1) * b for a, b in zip(size, stride, strict=True)) + 1
    if numel and extent > n:
        refused(path, "reach element")
        return
    got = read_torch_checkpoint(path)["w"]
    assert got.shape == tuple(size)
    for idx in np.ndindex(*size):  # torch's definition of a strided view
        assert got[idx] == data[offset + sum(i * b for i, b in zip(idx, stride, strict=True))]


def test_synth_official_on_a_hostile_pt_is_one_line_exit_2(tmp_path):
    s = Storage("0", np.zeros(24, np.float32))
    pt = write_pt(tmp_path / "oob.pt", {"model": {"w": Tensor(s, 0, (100, 100), (100, 1))}}, [s])
    cfg = os.path.join(ROOT, "tests", "data", "nanoflow_small_config.json")
    mel = tmp_path / "m.npy"
    np.save(mel, np.zeros((80, 20), np.float32))
    r = subprocess.run(
        [
            sys.executable,
            "synth.py",
            "--mel",
            str(mel),
            "--official",
            pt,
            "--config",
            cfg,
            "--out",
            str(tmp_path / "o.wav"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("synth.py: error: " + pt), r.stderr
    assert not (tmp_path / "o.wav").exists()
