"""Synthesis: the cached fast inverse (`synthesize`), its one-row estimator, the denoiser, loading a
vocoder and its inputs, and what synth.py does (`command`)."""

from nanoflow_jax.synth.fast import output_length, synthesis_fn, synthesize

__all__ = ["output_length", "synthesis_fn", "synthesize"]
