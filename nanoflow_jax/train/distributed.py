"""Multi-host start-up."""

from __future__ import annotations

import jax

from nanoflow_jax.errors import UsageError


def initialize(coordinator: str | None, num_processes: int = 1, process_id: int = 0) -> None:
    """Join a multi-process run (no-op for a single process). On CPU the collectives go over gloo."""
    if not coordinator and num_processes == 1:
        return
    if not coordinator:
        raise UsageError("--num_processes > 1 needs --coordinator=HOST:PORT")
    if not 0 <= process_id < num_processes:
        raise UsageError(f"--process_id must be in 0..{num_processes - 1}, got {process_id}")
    if jax.config.jax_platforms in (None, "", "cpu") and "cuda" not in str(jax.config.jax_platforms):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator, num_processes, process_id)
