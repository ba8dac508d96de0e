"""Synthesis: the cached fast inverse (`synthesize`), the denoiser and the command-line tool."""

from nanoflow_jax.synth.fast import output_length, synthesis_fn, synthesize

__all__ = ["output_length", "synthesis_fn", "synthesize"]
