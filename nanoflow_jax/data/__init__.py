"""Data: audio corpora and their splits, crop loaders, images, and the bundled demo data."""

from nanoflow_jax.data.corpus import AudioSet
from nanoflow_jax.data.crops import CropLoader, crop
from nanoflow_jax.data.sources import DEMO_CORPUS, list_files, load_splits
from nanoflow_jax.errors import DataError

__all__ = ["DEMO_CORPUS", "AudioSet", "CropLoader", "DataError", "crop", "list_files", "load_splits"]
