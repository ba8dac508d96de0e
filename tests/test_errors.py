"""Which exceptions the command lines turn into one line: the package's own user-error types only; any
other exception is a bug and keeps its traceback."""

import subprocess
import sys

import pytest

from nanoflow_jax import errors
from nanoflow_jax.cli import run_cli

USER = [errors.ConfigError, errors.DataError, errors.InputError, errors.CheckpointError, errors.UsageError]


@pytest.mark.parametrize("kind", USER + [errors.AudioReadError, errors.ConversionError, errors.OutputError])
def test_user_errors_are_one_line_and_exit_2(kind, capsys):
    def fail():
        raise kind("the thing given is wrong\nsecond line")

    with pytest.raises(SystemExit) as e:
        run_cli(fail, "tool")
    assert e.value.code == 2
    assert capsys.readouterr().err == "tool: error: the thing given is wrong\n"


@pytest.mark.parametrize("kind", [ValueError, TypeError, KeyError, FileNotFoundError, IndexError])
def test_an_internal_bug_keeps_its_traceback(kind):
    def bug():
        raise kind("internal")

    with pytest.raises(kind):
        run_cli(bug, "tool")


def test_every_user_error_type_is_a_package_type():
    assert all(issubclass(t, errors.NanoflowError) for t in errors.USER_ERRORS)
    assert errors.TrainingError not in errors.USER_ERRORS


def test_synth_py_flags_that_do_not_go_together_are_one_line(tmp_path):
    out = subprocess.run(
        [sys.executable, "synth.py", "--mel", "a.npy", "--wav", "b.wav", "--out", str(tmp_path / "o.wav")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 2
    assert (
        out.stderr.strip().splitlines()[-1]
        == "synth.py: error: give exactly one input: --mel, --mel_dir, --wav or --wav_dir"
    )
    assert "Traceback" not in out.stderr
