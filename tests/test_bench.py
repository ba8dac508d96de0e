"""The benchmarks that a lent GPU machine runs cannot rot: their smoke modes run here, on the bare set of
packages that machine has."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# not on the GPU machine: the benchmark must not import them (scipy is: JAX itself depends on it, and its
# CPU linear algebra loads it)
ABSENT_THERE = ("ml_collections", "tensorboardX", "soundfile", "PIL", "matplotlib", "soxr", "orbax", "tensorstore")


@pytest.mark.slow
def test_accelerator_smoke(tmp_path):
    probe = (
        "import runpy, sys; sys.argv = ['bench.accelerator', '--smoke', '--out', sys.argv[1]]; "
        "runpy.run_module('bench.accelerator', run_name='__main__', alter_sys=True); "
        "print('MODULES', sorted({m.split('.')[0] for m in sys.modules}))"
    )
    env = dict(os.environ, XLA_FLAGS="")
    r = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert r.stdout.startswith("jax ") and "XLA_FLAGS=" in r.stdout.splitlines()[1]
    rows = [json.loads(line) for line in open(tmp_path / "accelerator.jsonl")]
    synth = [r for r in rows if r["case"] == "synth"]
    train = [r for r in rows if r["case"] == "train"]
    assert len(synth) == 4 and len(train) == 2, rows
    assert all("error" not in r and "skipped" not in r for r in rows), rows
    assert all(r["khz"] > 0 for r in synth) and all(r["snr_db"] > 30 for r in synth if r["dtype"] != "float32")
    assert all(r["samples_per_s"] > 0 and r["flops"] > 0 and r["mfu"] is None for r in train)  # a CPU: no peak
    assert "| float16 | 8 | True |" in open(tmp_path / "accelerator.md").read()
    assert "| float16 | 8 | True |" in r.stdout  # the table is printed, not only written
    loaded = eval(r.stdout.split("MODULES", 1)[1])
    assert not set(loaded) & set(ABSENT_THERE), sorted(set(loaded) & set(ABSENT_THERE))


@pytest.mark.slow
def test_accelerator_budget_skips_what_would_not_fit(tmp_path):
    env = dict(os.environ, XLA_FLAGS="")
    cmd = [
        sys.executable,
        "-m",
        "bench.accelerator",
        "--smoke",
        "--only",
        "synth",
        "--budget-s",
        "0",
        "--out",
        str(tmp_path),
    ]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [json.loads(line) for line in open(tmp_path / "accelerator.jsonl")]
    assert len(rows) == 4 and all("skipped" in r and "khz" not in r for r in rows), rows
    assert "would take" in open(tmp_path / "accelerator.md").read()


def test_paper_model_is_the_configs():
    """The benchmarks' model is configs/wave_g16.py's, not one typed in beside it."""
    from bench.common import paper_model
    from configs import wave_g16
    from nanoflow_jax.models import model_config

    assert paper_model() == model_config(wave_g16.get_config().model)
    assert paper_model(n_flows=4) == model_config({**wave_g16.get_config().model.to_dict(), "n_flows": 4})


def test_bench_scripts_share_one_module():
    """No benchmark edits sys.path or writes its own timing loop: they run as `python -m bench.NAME` and
    time with `bench.common.timed`."""
    names = [n for n in os.listdir(os.path.join(ROOT, "bench")) if n.endswith(".py") and n != "common.py"]
    for name in names:
        text = open(os.path.join(ROOT, "bench", name)).read()
        assert "sys.path" not in text, name
        assert "python bench/" not in text, name
        # the profiled run and a throughput loop over seconds are not repeat timings
        assert text.count("block_until_ready") <= {"profile_cpu.py": 1, "loader.py": 1}.get(name, 0), name
