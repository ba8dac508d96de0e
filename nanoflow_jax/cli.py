"""Shared command-line plumbing: user mistakes become one clear line on stderr and a non-zero exit."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

from nanoflow_jax.errors import USER_ERRORS, TrainingError


class Terminated(BaseException):
    """SIGTERM, raised in the main thread like KeyboardInterrupt so that every `finally` runs: a
    temporary output being written is removed, not left beside the real one."""


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated()


def run_cli(fn: Callable[[], object], prog: str) -> None:
    """Run a command's body: a user mistake (the package's own error types) is one line on stderr and exit
    2, SIGINT exit 130, SIGTERM exit 143 (each after the temporary outputs are cleaned up); any other
    exception is a bug and keeps its traceback. The project's GPU flags (`gpu_flags`) are set first.
    (train.py's trainer sets its own SIGTERM handler for the
    training loop: save, then exit.)"""
    import signal

    from nanoflow_jax.gpu_flags import apply as apply_gpu_flags

    apply_gpu_flags()  # before any computation starts the backend
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        fn()
    except Terminated:
        print(f"{prog}: terminated", file=sys.stderr)
        sys.exit(143)
    except TrainingError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        sys.exit(3)
    except USER_ERRORS as e:
        if os.environ.get("NANOFLOW_TRACEBACK"):
            raise
        msg = e.args[0] if e.args and isinstance(e.args[0], str) else str(e)
        msg = msg.splitlines()[0] if msg else type(e).__name__
        if len(msg) > 400:
            msg = msg[:400] + "... (set NANOFLOW_TRACEBACK=1 for the full error)"
        print(f"{prog}: error: {msg}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        sys.exit(130)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _config_file_value(argv: list[str]) -> str | None:
    for i, a in enumerate(argv):
        if a.startswith("--config="):
            return a.split("=", 1)[1]
        if a == "--config" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def check_config_file(value: str) -> None:
    """`--config=FILE.py[:ARG]`: the file exists, is a regular file and a Python config file (ours are
    Python; an official JSON config goes to the converter). A UsageError / InputError naming it."""
    from nanoflow_jax.errors import UsageError
    from nanoflow_jax.files import check_input_file

    path = value.split(":", 1)[0]
    if not path.endswith(".py"):
        hint = " (an official JSON config goes to nanoflow_jax.convert)" if path.endswith(".json") else ""
        raise UsageError(f"--config {path} is not allowed: a configs/*.py file, optionally with :ARG{hint}")
    check_input_file(path, "config file")


def _user_error_in(e: BaseException) -> BaseException | None:
    """The package's own error that caused `e` (a library wrapping it, as ml_collections' config loader
    does), or None."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, USER_ERRORS):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def flag_parser(prog: str, flag_values: Any = None) -> Callable[[list[str]], list[str]]:
    """An absl `flags_parser` for `app.run` (or for `flag_values`): a flag that does not parse (a wrong type,
    a config file that is missing or not a config, a config field that does not exist) is one line on
    stderr and exit code 2, like every other user mistake."""

    def parse(argv: list[str]) -> list[str]:
        from absl import flags

        fv = flag_values or flags.FLAGS
        try:
            value = _config_file_value(argv[1:]) if "config" in fv else None
            if value and fv["config"].flag_type().startswith("config"):
                check_config_file(value)
            return fv(argv)
        except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
            if os.environ.get("NANOFLOW_TRACEBACK"):
                raise
            msg = str(e).strip() or type(e).__name__
            if (cause := _user_error_in(e)) is not None:  # ml_collections puts the traceback in its text
                lines = [ln for ln in str(cause).splitlines() if ln.strip()]
                msg = lines[-1].split(f"{type(cause).__name__}: ", 1)[-1] if lines else type(cause).__name__
            elif isinstance(e, AttributeError | KeyError):  # ml_collections' answer to an unknown field
                name = msg.strip("\"'")
                flag = next((a.split("=")[0] for a in argv[1:] if f".{name}" in a.split("=")[0]), name)
                msg = f"{flag}: no such config field"
            print(f"{prog}: error: {msg.splitlines()[0]}", file=sys.stderr)
            sys.exit(2)

    return parse


def parse_module_flags(prog: str, doc: str, define: Callable[[Any], None], argv: list[str] | None) -> tuple:
    """absl flags of the command `python -m nanoflow_jax.{prog}` in their own FlagValues (so several commands can
    live in one process, e.g. the tests): `define(flag_values)` declares them; -> (flag values, positional
    arguments). `--help` prints them and exits 0; a flag that does not parse is one line and exit 2, as in
    train.py and synth.py."""
    from absl import flags

    fv = flags.FlagValues()
    define(fv)
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--help" in argv or "-h" in argv:
        print(f"usage: python -m nanoflow_jax.{prog} [flags]\n\n{doc.strip()}\n\n{fv.get_help()}")
        sys.exit(0)
    rest = flag_parser(prog, fv)([prog, *argv])
    return fv, rest[1:]


DEFAULT_COMPILATION_CACHE = "~/.cache/nanoflow_jax/xla"


def define_compilation_cache_flag() -> None:
    """The --compilation_cache flag of train.py and synth.py."""
    from absl import flags

    flags.DEFINE_string(
        "compilation_cache",
        DEFAULT_COMPILATION_CACHE,
        "JAX's persistent compilation cache: compiled programs are reused across runs ('none': off).",
    )


def use_compilation_cache(path: str | None) -> None:
    """JAX's persistent compilation cache in `path` (None, "" or "none": off): a program compiled once is
    read back by every later run with the same shapes, versions and flags (restarts, evaluations)."""
    if not path or path.lower() in ("none", "off"):
        return
    import jax

    from nanoflow_jax.files import resolve_path

    jax.config.update("jax_compilation_cache_dir", resolve_path(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
