"""Shared command-line plumbing: user mistakes become one clear line on stderr and a non-zero exit."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

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
