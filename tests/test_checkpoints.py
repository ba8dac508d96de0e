"""Checkpoints lose nothing: the best (lowest) eval loss survives restarts, damaged checkpoints are caught
by their checksums and skipped on resume, non-finite states are never saved, one trainer per workdir."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from nanoflow_jax.average import average_checkpoints
from nanoflow_jax.checkpoints import Checkpointer
from nanoflow_jax.errors import CheckpointError, OutputError
from nanoflow_jax.files import WorkdirLock


def state(value: float) -> dict:
    w = np.random.default_rng(int(value * 1000)).standard_normal((64, 64)).astype(np.float32)  # incompressible
    return {"params": {"w": w, "b": np.arange(8, dtype=np.float32) + value}}


def save(directory, step, value, loss=None, keep=2):
    ckpt = Checkpointer(str(directory), keep=keep, async_save=False)  # a fresh manager: a restart each time
    saved = ckpt.save(step, state(value), {"config": {}}, None if loss is None else {"eval_loss": loss})
    ckpt.close()
    return saved


def steps(directory):
    return sorted(int(n) for n in os.listdir(directory) if n.isdigit())


def test_best_is_the_lowest_and_survives_restarts(tmp_path):
    for step, loss in enumerate([5.0, 1.0, 4.0, 3.0, 2.5], start=1):
        save(tmp_path, step, float(step), loss)
    assert steps(tmp_path) == [2, 4, 5]  # newest two, and step 2 (loss 1.0)
    for step in (6, 7, 8):  # unevaluated saves after a restart never push the best out
        save(tmp_path, step, float(step))
    assert steps(tmp_path) == [2, 7, 8]
    ckpt = Checkpointer(str(tmp_path), create=False, async_save=False)
    assert ckpt.eval_loss(2) == 1.0
    restored, meta = ckpt.restore(2)
    assert meta["eval_loss"] == 1.0
    np.testing.assert_array_equal(restored["params"]["w"], state(2.0)["params"]["w"])


def test_non_finite_state_is_not_saved_and_keeps_the_good_ones(tmp_path):
    save(tmp_path, 1, 1.0, 2.0, keep=1)
    ckpt = Checkpointer(str(tmp_path), keep=1, async_save=False)
    bad = state(1.0)
    bad["params"]["b"][3] = np.nan
    assert ckpt.save(2, bad, {"config": {}}) is False
    ckpt.close()
    assert steps(tmp_path) == [1]


def _array_files(directory, step):
    root = os.path.join(directory, str(step), "state")
    return [os.path.join(d, n) for d, _, names in os.walk(root) for n in names if d.endswith(os.sep + "d")]


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete", "metadata"])
def test_damaged_checkpoint_is_one_error_and_resume_falls_back(tmp_path, damage):
    save(tmp_path, 1, 1.0, keep=3)
    save(tmp_path, 2, 2.0, keep=3)
    files = _array_files(tmp_path, 2)
    assert files
    big = max(files, key=os.path.getsize)
    if damage == "flip":
        data = bytearray(open(big, "rb").read())
        for i in range(len(data) // 2, len(data) // 2 + 16):
            data[i] ^= 0xFF
        open(big, "wb").write(bytes(data))
    elif damage == "truncate":
        os.truncate(big, os.path.getsize(big) // 3)
    elif damage == "delete":
        for f in files:
            os.remove(f)
    else:
        with open(os.path.join(tmp_path, "2", "meta", "metadata"), "w") as f:
            f.write("\x00garbage{")
    ckpt = Checkpointer(str(tmp_path), create=False, async_save=False)
    with pytest.raises(CheckpointError, match=str(tmp_path / "2")):
        ckpt.restore(2)
    warnings = []
    step, restored, _ = ckpt.restore_newest_good(warn=warnings.append)
    assert step == 1 and len(warnings) == 1 and str(tmp_path / "2") in warnings[0]
    np.testing.assert_array_equal(restored["params"]["w"], state(1.0)["params"]["w"])


def test_average_refuses_non_finite_params(tmp_path):
    work = tmp_path / "w" / "checkpoints"
    save(work, 1, 1.0)
    ckpt = Checkpointer(str(work), keep=5, async_save=False)
    bad = state(2.0)
    bad["params"]["w"][0, 0] = np.inf
    # written behind the Checkpointer's back, as a damaged or foreign checkpoint would be
    import orbax.checkpoint as ocp

    ckpt.manager.save(2, args=ocp.args.Composite(state=ocp.args.StandardSave(bad), meta=ocp.args.JsonSave({})))
    ckpt.manager.wait_until_finished()
    ckpt.manager.close()
    with pytest.raises(CheckpointError, match="non-finite"):
        average_checkpoints(str(tmp_path / "w"), 2)
    assert not (tmp_path / "w" / "averaged").exists()


def test_workdir_lock_refuses_a_second_holder_and_a_killed_one_leaves_none(tmp_path):
    first = WorkdirLock(str(tmp_path))
    with pytest.raises(OutputError, match=f"pid {os.getpid()}"):
        WorkdirLock(str(tmp_path))
    first.release()
    code = f"import os; from nanoflow_jax.files import WorkdirLock as L; L({str(tmp_path)!r}); os.kill(os.getpid(), 9)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert r.returncode == -9
    WorkdirLock(str(tmp_path)).release()  # the kernel dropped the killed holder's lock


def test_unwritable_checkpoint_folder_is_one_error(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(OutputError):
        save(target / "ckpts", 1, 1.0)
    assert json.loads(json.dumps(target.read_text())) == "x"


@pytest.mark.slow
def test_train_resumes_past_a_damaged_checkpoint_and_refuses_a_changed_model(tmp_path):
    from tests.test_train import run_train

    work = tmp_path / "w"
    args = ["--config.train.checkpoint_every=2", "--config.train.eval_every=2"]
    r = run_train(work, "--config.train.num_steps=4", *args)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    ckpts = work / "checkpoints"
    assert steps(ckpts) == [2, 4]
    for f in _array_files(ckpts, 4):
        os.remove(f)
    r = run_train(work, "--config.train.num_steps=6", *args)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert f"checkpoint {ckpts / '4'} is damaged: its array data files are missing" in r.stdout
    assert "resumed from step 2" in r.stdout
    assert 6 in steps(ckpts)
    config_before = (work / "config.json").read_bytes()
    listing_before = sorted(os.listdir(ckpts))
    r = run_train(work, "--config.train.num_steps=8", "--config.model.channels=16", *args)
    errors = [ln for ln in r.stderr.splitlines() if "error" in ln]
    assert r.returncode == 2 and len(errors) == 1, r.stderr[-2000:]
    assert "model.channels 8 -> 16" in errors[0]
    assert (work / "config.json").read_bytes() == config_before and sorted(os.listdir(ckpts)) == listing_before


@pytest.mark.slow
def test_time_budget_stops_with_a_checkpoint_and_an_evaluation(tmp_path):
    from tests.test_train import run_train

    r = run_train(tmp_path / "w", "--config.train.num_steps=100000", "--config.train.max_minutes=0.0001")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "eval at step 1:" in r.stdout and "train.max_minutes=0.0001 spent: saved step 1" in r.stdout
    assert steps(tmp_path / "w" / "checkpoints") == [1]
