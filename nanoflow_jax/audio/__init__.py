"""Audio front-end: the Tacotron2 mel spectrogram (JAX) and WAV I/O / resampling (NumPy)."""

from nanoflow_jax.audio.io import AudioReadError, read_audio, resample, write_wav
from nanoflow_jax.audio.mel import MelConfig, mel_basis, mel_spectrogram, n_frames

__all__ = [
    "AudioReadError",
    "MelConfig",
    "mel_basis",
    "mel_spectrogram",
    "n_frames",
    "read_audio",
    "resample",
    "write_wav",
]
