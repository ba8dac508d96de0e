"""`Vocoder`: a model with its params folded once into the form synthesis reads and the mel settings its
inputs follow; it normalises and checks mels once (`prepare`) and dispatches to whole-batch or chunked
synthesis. `load_vocoder` builds one from a checkpoint, an official `.pt` / `.npz` with its config, a
converted folder, or nothing (the shipped voice). synth.py, evaluate, export, training-time quality and
the benchmarks all synthesise through it; `synthesize` / `synthesize_chunks` are thin wrappers."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np

from nanoflow_jax.audio.mel import MelConfig
from nanoflow_jax.models import POLICIES, AudioFlow, ModelConfig
from nanoflow_jax.models.audio_params import inference_params
from nanoflow_jax.synth.chunked import (
    DEFAULT_CHUNK_FRAMES,
    DEFAULT_OVERLAP_FRAMES,
    LONG_FRAMES,
    chunks_prepared,
)
from nanoflow_jax.synth.fast import (
    as_batch,
    check_mels,
    draw_noise,
    min_frames,
    output_length,
    synthesize_prepared,
)

DEFAULT_TEMPERATURE = 1.0  # the latent noise's std when neither the call nor the vocoder names one


@dataclasses.dataclass(frozen=True)
class PreparedMels:
    """Mels normalised and checked once (`Vocoder.prepare`): (bands, F) float32 each, the samples each
    gives, and whether they came as one (B, bands, F) array (then synthesis returns one (B, T) array)."""

    mels: tuple[np.ndarray, ...]
    lengths: tuple[int, ...]
    batched: bool


class Vocoder:
    """A vocoder ready to synthesise. `params` are folded into the inference form here, once (weight norm,
    the flow embedding's projections); `mel_config` (a MelConfig or a config's data section; None: unknown,
    then `sample_rate` is too) must agree with the model's hop and bands. `temperature`: the noise's std
    when a call gives none (a shipped voice's measured best; else DEFAULT_TEMPERATURE)."""

    def __init__(
        self, model: AudioFlow, params: Any, mel_config: Any = None, name: str = "", temperature: float | None = None
    ):
        self.model, self.name = model, name
        self.temperature = DEFAULT_TEMPERATURE if temperature is None else float(temperature)
        self.params = inference_params(model, params)
        self.mel_config = None if mel_config is None else MelConfig.from_any(mel_config)
        cfg = model.config
        if self.mel_config is not None and (
            mismatch := self.mel_config.model_mismatch(cfg.hop_length, cfg.cond_channels)
        ):
            raise ValueError(f"mel settings disagree with the model: {mismatch}")

    @property
    def config(self) -> ModelConfig:
        return self.model.config

    @property
    def sample_rate(self) -> int:
        if self.mel_config is None:
            raise ValueError("this vocoder was built without mel settings: its sample rate is unknown")
        return self.mel_config.sample_rate

    @property
    def hop_length(self) -> int:
        return self.config.hop_length

    @property
    def min_frames(self) -> int:
        """The fewest mel frames that give any audio."""
        return min_frames(self.config)

    def output_length(self, frames: int) -> int:
        """Samples synthesised from `frames` mel frames: hop * (frames - 3), down to a multiple of G."""
        return output_length(frames, self.config)

    def prepare(self, mel: Any) -> PreparedMels:
        """Normalise and check mels once: a (bands, F) or (B, bands, F) array, or a list of (bands, F_i)
        arrays; each finite and at least `min_frames` long (a ValueError otherwise)."""
        if isinstance(mel, PreparedMels):
            return mel
        mels, batched = as_batch(mel, self.config.cond_channels)
        lengths = check_mels(mels, self.config)
        return PreparedMels(tuple(mels), tuple(lengths), batched)

    def synthesize(
        self,
        mel: Any,
        *,
        temperature: float | None = None,
        dtype: str = "float32",
        z: Any = None,
        rng: jax.Array | None = None,
        chunk_frames: int | None = None,
        overlap_frames: int = DEFAULT_OVERLAP_FRAMES,
        bucket_frames: int | None = None,
        cache_cond: bool | None = None,
    ) -> Any:
        """Audio from mels (raw, as `prepare` takes them, or already prepared): the whole batch in one
        program (`fast.synthesize_prepared`: padding to shared buckets, `bucket_frames`, `cache_cond`), except
        that a batch holding a mel longer than `chunk_frames` is synthesised chunk by chunk from the same
        noise (`synthesize_chunks`), so memory is bounded whatever the length. chunk_frames None: chunk a
        batch with a mel longer than LONG_FRAMES, in chunks of DEFAULT_CHUNK_FRAMES; 0: never. z: the latent
        noise ((B, T) or a list of (T_i,)), else temperature * N(0, 1) from `rng` (default PRNGKey(0));
        temperature None: the vocoder's own (`Vocoder.temperature`).
        dtype: a precision policy; a non-finite result in reduced precision is redone in float32.
        Returns (B, T) for an array input, a list of 1-D arrays for a list."""
        _check_dtype(dtype)
        p = self.prepare(mel)
        noise = np.asarray(draw_noise(z, p.lengths, max(p.lengths), self._temperature(temperature), rng))
        longest = max(m.shape[1] for m in p.mels)
        if chunk_frames is None:
            chunk_frames = DEFAULT_CHUNK_FRAMES if longest > LONG_FRAMES else 0
        if not chunk_frames or longest <= chunk_frames:
            outs = synthesize_prepared(
                self.model, self.params, p.mels, p.lengths, noise, dtype, cache_cond, bucket_frames
            )
        else:
            outs = [
                np.concatenate(list(self._chunks(m, zs[:t], chunk_frames, overlap_frames, dtype)))
                for m, zs, t in zip(p.mels, noise, p.lengths, strict=True)
            ]
        return np.stack(outs) if p.batched else outs

    def synthesize_chunks(
        self,
        mel: Any,
        *,
        chunk_frames: int = DEFAULT_CHUNK_FRAMES,
        overlap_frames: int = DEFAULT_OVERLAP_FRAMES,
        temperature: float | None = None,
        dtype: str = "float32",
        z: Any = None,
        rng: jax.Array | None = None,
    ) -> Iterator[np.ndarray]:
        """One mel's ((bands, F) or (1, bands, F)) audio as consecutive 1-D pieces, each `chunk_frames` of
        output synthesised with `overlap_frames` of context either side (`chunked`), from the noise
        `synthesize` would draw: their concatenation is its audio up to the chunk edges' error (none once
        the overlap reaches `chunked.receptive_frames`)."""
        _check_dtype(dtype)
        p = self.prepare(mel)
        if len(p.mels) != 1:
            raise ValueError(f"chunked synthesis takes one mel, got {len(p.mels)}")
        noise = np.asarray(draw_noise(z, p.lengths, p.lengths[0], self._temperature(temperature), rng))[0]
        return self._chunks(p.mels[0], noise, chunk_frames, overlap_frames, dtype)

    def _temperature(self, temperature: float | None) -> float:
        return self.temperature if temperature is None else temperature

    def _chunks(self, mel, noise, chunk_frames, overlap_frames, dtype) -> Iterator[np.ndarray]:
        return chunks_prepared(
            self.model, self.params, mel, noise, chunk_frames=chunk_frames, overlap_frames=overlap_frames, dtype=dtype
        )

    def __repr__(self) -> str:
        cfg = self.config
        rate = f", {self.mel_config.sample_rate} Hz" if self.mel_config else ""
        return f"Vocoder({self.name or cfg.variant}: K={cfg.n_flows}, C={cfg.channels}, G={cfg.n_groups}{rate})"


def _check_dtype(dtype: str) -> None:
    if dtype not in POLICIES:
        raise ValueError(f"dtype must be one of {', '.join(POLICIES)}, got {dtype!r}")


def load_vocoder(
    checkpoint: str | None = None, official: str | None = None, config: str | None = None, voice: str | None = None
) -> Vocoder:
    """A Vocoder from a workdir or checkpoint folder of ours (a converted official one included), an official
    `.pt` / `.npz` with its JSON config, or, given nothing, a shipped voice (`voice`, default the package's).
    Every file passes the input gate; a mistake is one of the package's errors naming the file."""
    from nanoflow_jax.errors import UsageError
    from nanoflow_jax.synth.loading import load_model

    if checkpoint or official or config:
        if voice:
            raise UsageError("give a voice or a checkpoint, not both")
        model, params, mel_cfg = load_model(checkpoint, official, config)
        return Vocoder(model, params, mel_cfg, checkpoint or official or "")
    from nanoflow_jax.voices import DEFAULT_VOICE, load_voice, voice_info, voice_mel_config

    name = voice or DEFAULT_VOICE
    model, params = load_voice(name)
    return Vocoder(model, params, voice_mel_config(name), f"voice {name}", voice_info(name).get("temperature"))


def synthesize(model: AudioFlow, params: Any, mel: Any, **options: Any) -> Any:
    """`Vocoder(model, params).synthesize(mel, **options)`: for one call; build a Vocoder to synthesise
    many times without folding the params again."""
    return Vocoder(model, params).synthesize(mel, **options)


def synthesize_chunks(model: AudioFlow, params: Any, mel: Any, **options: Any) -> Iterator[np.ndarray]:
    """`Vocoder(model, params).synthesize_chunks(mel, **options)`."""
    return Vocoder(model, params).synthesize_chunks(mel, **options)
