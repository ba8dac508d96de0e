"""The README as a new user reads it: its set-up commands, its main job and its library snippet run as
written, in a fresh copy of the project, with the relative paths it gives."""

import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = open(os.path.join(ROOT, "README.md")).read()
# shorter than the demo's 120 steps (the job itself is unchanged): the run still checkpoints and evaluates
# twice and writes its sample at its last step
SHORTEN = [
    "--config.train.num_steps=40",
    "--config.data.segment_length=4000",
    "--config.train.eval_every=20",
    "--config.train.checkpoint_every=20",
    "--config.train.log_every=10",
    "--config.eval.num_utterances=2",
    "--config.eval.synth_seconds=0.5",
]


def readme_commands() -> list[str]:
    """Every command line of the README's bash blocks (continuation lines joined)."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        lines += block.replace("\\\n", " ").splitlines()
    return [ln.split("#")[0].strip() for ln in lines if ln.strip()]


def first_command(*needles: str) -> str:
    return next(c for c in readme_commands() if all(n in c for n in needles))


def job(command: str, script: str) -> list[str]:
    """The `.venv/bin/python script.py ...` part of a README line, run with this interpreter."""
    words = shlex.split(command.split("&&")[-1])
    assert words[0].endswith("python") and words[1] == script, command
    return [sys.executable, *words[1:]]


def fresh_copy(dest) -> str:
    """What a fresh clone of this working tree holds: tracked and not-ignored files, no runs/, no venv."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True, check=True
        ).stdout.decode()
        files = [f for f in listed.split("\0") if f]
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    for f in files:
        src = os.path.join(ROOT, f)
        if os.path.isfile(src):
            os.makedirs(os.path.dirname(os.path.join(dest, f)), exist_ok=True)
            shutil.copy2(src, os.path.join(dest, f))
    return str(dest)


def flag(words: list[str], name: str) -> str:
    value = next(w.split("=", 1)[1] for w in words if w.startswith(f"--{name}="))
    return value


def test_setup_commands_use_the_lock_and_ci_runs_the_test_command():
    setup = [c for c in readme_commands() if c.startswith("python3 -m venv .venv")]
    assert len(setup) == 2, setup
    for c in setup:
        assert "-c constraints.txt" in c, c  # the tested versions, not whatever is newest today
    ci = open(os.path.join(ROOT, ".ci", "run")).read()
    assert setup[1] in ci, "CI must run the README's test command verbatim"
    locked = {ln.split("==")[0].lower() for ln in open(os.path.join(ROOT, "constraints.txt")) if "==" in ln}
    assert {"jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "soundfile", "soxr", "pytest"} <= locked


def test_readme_main_job_and_synthesis_run_as_written(tmp_path):
    """The README's first train.py command, in a fresh copy with its relative --workdir: the demo trains
    (eval NLL falls), checkpoints, writes its sample; then the README's synth.py command against that
    run's checkpoint, and checkpoint averaging with a relative --workdir."""
    import jax
    import numpy as np

    import nanoflow_jax as nf

    clone = fresh_copy(tmp_path / "clone")
    train = job(first_command("train.py", "--config=configs/demo.py"), "train.py")
    workdir = flag(train, "workdir")
    assert not os.path.isabs(workdir)
    env = dict(os.environ, XLA_FLAGS="", PYTHONUNBUFFERED="1")
    r = subprocess.run(train + SHORTEN, cwd=clone, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    nll = [float(x) for x in re.findall(r"eval at step \d+: nll_crops (-?[\d.]+)", r.stdout)]
    assert len(nll) == 2 and nll[1] < nll[0] - 0.05, r.stdout[-3000:]
    run = os.path.join(clone, workdir)
    assert {"20", "40"} <= set(os.listdir(os.path.join(run, "checkpoints")))
    assert sorted(os.listdir(os.path.join(run, "samples"))) == ["step_40.wav", "step_40_mel.png"]
    assert any(n.startswith("events") for n in os.listdir(os.path.join(run, "tb")))

    synth = job(first_command("synth.py", f"--checkpoint {workdir}"), "synth.py")
    out = flag(synth, "out") if any(w.startswith("--out=") for w in synth) else synth[synth.index("--out") + 1]
    r = subprocess.run(synth, cwd=clone, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert os.path.getsize(os.path.join(clone, out)) > 44  # more than a WAV header

    average = [sys.executable, "-m", "nanoflow_jax.average", "--workdir", workdir, "--last", "2"]
    r = subprocess.run(average, cwd=clone, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "averaged 2 checkpoints (steps 20..40)" in r.stdout, r.stderr[-2000:]
    config, model, params = nf.load_checkpoint(os.path.join(run, "averaged"))
    _, _, p20 = nf.load_checkpoint(run, step=20)
    _, _, p40 = nf.load_checkpoint(run, step=40)
    a, b, c = (jax.tree.leaves(p)[0] for p in (params, p20, p40))
    np.testing.assert_allclose(a, (b + c) / 2, atol=1e-6)
    assert config.model.channels == 32 and model.config.channels == 32


def test_readme_library_snippet_runs(tmp_path):
    """As a user runs it: in a folder of their own, outside the repository (no `configs` on the path)."""
    snippet = re.findall(r"```python\n(.*?)```", README, re.S)[0]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run(
        [sys.executable, "-c", snippet], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stderr[-3000:]
    loss, err, n_train, n_infer = r.stdout.split()
    assert float(err) < 1e-4
    assert (int(n_train), int(n_infer)) == (3865188, 2818530)
