"""Shared command-line plumbing: user mistakes become one clear line on stderr and a non-zero exit."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

from nanoflow_jax.errors import USER_ERRORS, TrainingError


def run_cli(fn: Callable[[], object], prog: str) -> None:
    try:
        fn()
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


def flag_parser(prog: str, flag_values: Any = None) -> Callable[[list[str]], list[str]]:
    """An absl `flags_parser` for `app.run` (or for `flag_values`): a flag that does not parse (a wrong type,
    a config field that does not exist) is one line on stderr and exit code 2, like every other user
    mistake."""

    def parse(argv: list[str]) -> list[str]:
        from absl import flags

        try:
            return (flag_values or flags.FLAGS)(argv)
        except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
            if os.environ.get("NANOFLOW_TRACEBACK"):
                raise
            msg = str(e).strip() or type(e).__name__
            if isinstance(e, AttributeError | KeyError):  # ml_collections' answer to an unknown field
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
