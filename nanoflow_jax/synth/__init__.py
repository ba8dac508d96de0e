"""Synthesis: `Vocoder` (a model with its params folded once and its mel settings, which checks mels once
and dispatches to whole-batch or chunked synthesis), the cached fast inverse it runs (`fast`), long-form
chunking (`chunked`), loading models and inputs (`loading`), the denoiser, and what synth.py does
(`command`)."""

from nanoflow_jax.synth.chunked import receptive_frames
from nanoflow_jax.synth.fast import output_length, synthesis_fn
from nanoflow_jax.synth.vocoder import PreparedMels, Vocoder, load_vocoder, synthesize, synthesize_chunks

__all__ = [
    "PreparedMels",
    "Vocoder",
    "load_vocoder",
    "output_length",
    "receptive_frames",
    "synthesis_fn",
    "synthesize",
    "synthesize_chunks",
]
