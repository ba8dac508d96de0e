"""Every command line the README shows (its bash blocks and the `python ...` commands in its text) names
only flags its program defines, spelt as the program spells them, and only config fields that exist:
a README that tells users `--mel-dir` where the flag is `--mel_dir` fails here. The runnable ones run in
test_readme.py and the tests of each program."""

import functools
import importlib
import os
import re
import shlex
import subprocess
import sys

import pytest

from tests.test_readme import README, ROOT, readme_commands


def prose_commands() -> list[str]:
    """`python ...` commands quoted in the README's text (a line break inside the quote joined)."""
    text = re.sub(r"```.*?```", "", README, flags=re.S)
    return [" ".join(c.split()) for c in re.findall(r"`(python3? [^`]+)`", text)]


def invocations() -> list[tuple[str, list[str]]]:
    """(program, its words after the program) for every python invocation the README shows."""
    out = []
    for command in readme_commands() + prose_commands():
        for part in command.split("&&"):
            words = shlex.split(part.split("|")[0].split(">")[0])
            if not words or not words[0].endswith(("python", "python3")) or len(words) < 2:
                continue
            if words[1] == "-m":
                if words[2].startswith("nanoflow_jax"):
                    out.append((words[2], words[3:]))
            elif words[1].endswith(".py"):
                out.append((words[1], words[2:]))
    return out


@functools.cache
def defined_flags(program: str) -> frozenset[str]:
    """The flag names a program's --help(full) lists."""
    cmd = [sys.executable, "-m", program] if not program.endswith(".py") else [sys.executable, program]
    help_flag = "--helpfull" if program in ("train.py", "synth.py") else "--help"
    env = dict(os.environ, XLA_FLAGS="")
    out = subprocess.run([*cmd, help_flag], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    names = re.findall(r"(?:^|\s)--(?:\[no\])?([A-Za-z][\w.-]*)", out.stdout + out.stderr)
    assert names, f"{program} {help_flag} listed no flags: {out.stdout[-500:]} {out.stderr[-500:]}"
    return frozenset(names)


def config_fields(config_arg: str) -> dict:
    """The ConfigDict of a `--config=configs/file.py[:ARG]` as a nested dict."""
    path, _, arg = config_arg.partition(":")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    return module.get_config(arg) if arg else module.get_config()


INVOCATIONS = invocations()


def test_the_readme_shows_every_program():
    programs = {p for p, _ in INVOCATIONS}
    assert {"train.py", "synth.py", "nanoflow_jax.convert", "nanoflow_jax.export", "nanoflow_jax.evaluate"} <= programs
    assert "nanoflow_jax.average" in programs


@pytest.mark.parametrize("program,words", INVOCATIONS, ids=[" ".join([p, *w])[:80] for p, w in INVOCATIONS])
def test_readme_command_uses_defined_flags_and_fields(program, words):
    flags = [w[2:].split("=")[0] for w in words if w.startswith("--")]
    config = next((w.split("=", 1)[1] for w in words if w.startswith("--config=")), None)
    defined = defined_flags(program)
    for name in flags:
        if program == "train.py" and name.startswith("config."):
            section, field = name.split(".")[1:3]
            fields = config_fields(config)
            assert section in fields and field in fields[section], f"{name}: no such field in {config}"
            continue
        assert name in defined, f"{program}: --{name} is not one of its flags"
