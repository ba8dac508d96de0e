"""Every path a user gives works relative to the current directory (and with `~`): checkpoint folders,
outputs, export targets, averaging, data folders. The tests chdir into a temporary folder on purpose."""

import os

import numpy as np
import pytest

import nanoflow_jax as nf
from nanoflow_jax.average import average_checkpoints
from nanoflow_jax.convert.write import convert_official
from nanoflow_jax.data import load_splits
from nanoflow_jax.export.__main__ import main as export_main
from nanoflow_jax.files import resolve_path
from nanoflow_jax.synth.command import SynthArgs, run
from tests.conftest import DATA
from tests.test_data import data_cfg, make_folder

PT = os.path.join(DATA, "nanoflow_small_official_ckpt.pt")
CONFIG = os.path.join(DATA, "nanoflow_small_config.json")


def test_resolve_path_expands_home_and_current_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_path("runs/x") == str(tmp_path / "runs" / "x")
    assert resolve_path("~/data") == str(tmp_path / "home" / "data")
    assert resolve_path("/abs/p") == "/abs/p"


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_checkpoint_synthesis_export_and_average_with_relative_paths(in_tmp, capsys):
    assert convert_official(PT, CONFIG, "converted") == str(in_tmp / "converted")
    assert os.path.isdir(in_tmp / "converted")
    config, model, params = nf.load_checkpoint("converted")
    assert model.config.n_flows == 4
    np.save("mel.npy", np.load(os.path.join(DATA, "nanoflow_small.npz"))["mel"][0, :, :12])
    assert run(SynthArgs(mel="mel.npy", checkpoint="converted", out="wavs/mel.wav"), log=lambda *_: None)
    assert os.path.getsize(in_tmp / "wavs" / "mel.wav") == 44 + 2 * 256 * 9
    export_main(["--checkpoint", "converted", "--frames", "8", "--out", "out/synth.jaxexport"])
    assert os.path.getsize(in_tmp / "out" / "synth.jaxexport") > 0
    out, steps = average_checkpoints("converted", 1, out="averaged")
    assert steps == [0] and os.path.isdir(in_tmp / "averaged")
    _, _, averaged = nf.load_checkpoint("averaged")
    np.testing.assert_array_equal(averaged["params"]["flow_gates"], params["params"]["flow_gates"])


def test_data_folder_relative(in_tmp):
    os.makedirs("corpus")
    make_folder(in_tmp / "corpus")
    train, _ = load_splits(data_cfg("corpus"), log=lambda *_: None)
    assert len(train) == 11 and all(os.path.isabs(n) for n in train.names)
