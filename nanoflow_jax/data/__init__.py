"""Data: audio sources and splits, the crop loader, and the bundled demo corpus."""

from nanoflow_jax.data.loader import CropLoader, crop
from nanoflow_jax.data.sources import DEMO_CORPUS, AudioSet, DataError, list_files, load_splits

__all__ = ["DEMO_CORPUS", "AudioSet", "CropLoader", "DataError", "crop", "list_files", "load_splits"]
