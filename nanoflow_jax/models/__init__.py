"""Flax modules: conditioner, estimator (2-D WaveNet), projection heads and the scanned flow model."""

from nanoflow_jax.models.waveflow import DTYPES, HOP, AudioFlow

__all__ = ["DTYPES", "AudioFlow", "HOP"]
