"""The XLA flags the project's GPU programs are built for, set by the entry points before JAX starts.

A synthesis call is two nested loops (flows x rows) of small kernels: launched one by one it is bound by
launch latency, not arithmetic (bench/RESULTS.md, the deviceless GPU audit). XLA records a loop's body
as a CUDA graph by default, but the loop itself only with WHILE / CONDITIONAL in
`--xla_gpu_enable_command_buffer`; then one call is one graph launch. The flags only touch GPU
compilation; CPU programs are unchanged.

Library users: call `nanoflow_jax.gpu_flags.apply()` before the first JAX computation (XLA reads its
flags once, when the backend starts), or put `gpu_xla_flags()` in XLA_FLAGS yourself.
"""

from __future__ import annotations

import os

COMMAND_BUFFER = "--xla_gpu_enable_command_buffer=+WHILE,+CONDITIONAL"


def gpu_xla_flags() -> str:
    return COMMAND_BUFFER


def apply() -> None:
    """Add the project's GPU flags to XLA_FLAGS unless the user already chose a command-buffer setting."""
    current = os.environ.get("XLA_FLAGS", "")
    if "--xla_gpu_enable_command_buffer" not in current:
        os.environ["XLA_FLAGS"] = f"{current} {gpu_xla_flags()}".strip()
