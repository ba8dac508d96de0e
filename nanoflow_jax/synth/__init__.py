"""Synthesis: the cached fast inverse (`synthesize`), its one-row estimator, the denoiser, loading a
vocoder and its inputs, and what synth.py does (`command`)."""

from nanoflow_jax.synth.chunked import receptive_frames, synthesize, synthesize_chunks
from nanoflow_jax.synth.fast import output_length, synthesis_fn, synthesize_batch

__all__ = [
    "output_length",
    "receptive_frames",
    "synthesis_fn",
    "synthesize",
    "synthesize_batch",
    "synthesize_chunks",
]
