"""Copy synthesis scored as speech, one owner for `python -m nanoflow_jax.evaluate` and training-time quality
logging: a recording cut to whole columns, its mel, the vocoder's synthesis (and Griffin-Lim's from the
same mel), each scored against the one reference segment they all cover by every `audio.quality` metric."""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Any

import jax
import numpy as np

from nanoflow_jax.audio import quality
from nanoflow_jax.models import ModelConfig
from nanoflow_jax.models.source_filter import colour
from nanoflow_jax.synth.fast import bucket_frames_for
from nanoflow_jax.synth.vocoder import Vocoder

MIN_HOPS = 8  # shorter recordings are skipped: too little speech to score
FLOOR_ORDER = 24


@functools.lru_cache(maxsize=4)
def _noise_through_envelope(cfg: ModelConfig):
    return jax.jit(lambda mel, noise: colour(noise, mel, cfg)[0])


class CopySynthesisScorer:
    """Scores a `vocoder`'s copy synthesis of recordings at its sample rate. `timed`: each system's wall
    time is measured after a warm-up of its shape (one per frame bucket), as a real-time factor "rtf"."""

    def __init__(self, vocoder: Vocoder, griffin_lim_iters: int = 32, seed: int = 0, timed: bool = False):
        self.vocoder, self.griffin_lim_iters, self.seed, self.timed = vocoder, griffin_lim_iters, seed, timed
        cfg = vocoder.config
        self.multiple = math.lcm(cfg.hop_length, cfg.n_groups)
        self._warm: set[int] = set()
        m = vocoder.mel_config
        self._floor_config = dataclasses.replace(
            cfg,
            source_filter="lpc",
            lpc_order=min(FLOOR_ORDER, cfg.hop_length),
            **{k: getattr(m, k) for k in ("sample_rate", "n_fft", "win_length", "fmin", "fmax")},
        )

    def trim(self, x: np.ndarray) -> np.ndarray | None:
        """`x` cut to whole columns of G samples and whole hops; None when shorter than MIN_HOPS hops."""
        t = len(x) // self.multiple * self.multiple
        return x[:t] if t >= MIN_HOPS * self.vocoder.hop_length else None

    def __call__(
        self, x: np.ndarray, temperature: float, rng: jax.Array, griffin_lim: bool = True, floor: bool = False
    ) -> dict[str, Any] | None:
        """{"seconds", "model": {metric: value, ("rtf")}, "griffin_lim": {...}, "lpc_noise": {...} when
        asked} of recording `x` (trimmed here), or None when it is too short or the model's synthesis is
        not finite. "lpc_noise" is the floor a source-filter model starts from: noise of the temperature's
        std through the mel's own all-pole envelope (`models.source_filter`, order 24), nothing learnt."""
        x = self.trim(np.asarray(x, np.float32))
        if x is None:
            return None
        mel_cfg = self.vocoder.mel_config
        mel = quality.log_mel(x, mel_cfg)
        bucket = bucket_frames_for(mel.shape[1])
        warm = self.timed and bucket not in self._warm
        y, wall = self._run(
            lambda: np.asarray(self.vocoder.synthesize(mel, temperature=temperature, rng=rng)[0]), warm=warm
        )
        self._warm.add(bucket)
        if not np.all(np.isfinite(y)):
            return None
        outputs = {"model": (y, wall)}
        if griffin_lim:
            outputs["griffin_lim"] = self._run(
                lambda: quality.griffin_lim(mel, mel_cfg, self.griffin_lim_iters, self.seed), warm=False
            )
        if floor:
            noise = temperature * jax.random.normal(jax.random.fold_in(rng, 1), (1, len(y)))
            run = _noise_through_envelope(self._floor_config)
            outputs["lpc_noise"] = self._run(lambda: np.asarray(run(mel[None], noise)[0]), warm=self.timed)
        n = min(len(x), *(len(out) for out, _ in outputs.values()))  # one reference segment for every system
        row: dict[str, Any] = {"seconds": n / mel_cfg.sample_rate}
        for system, (out, wall) in outputs.items():
            row[system] = quality.all_metrics(x[:n], out[:n], mel, mel_cfg)
            if self.timed:
                row[system]["rtf"] = wall / (len(out) / mel_cfg.sample_rate)
        return row

    @staticmethod
    def _run(fn, warm: bool) -> tuple[np.ndarray, float]:
        if warm:
            fn()  # compile this shape
        t0 = time.perf_counter()
        out = fn()
        return out, time.perf_counter() - t0
