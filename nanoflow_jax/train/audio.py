"""The audio task: a flow vocoder (WaveFlow / NanoFlow) trained on random crops of a speech corpus, the
mel computed on the device inside the step; evaluation on fixed test crops and whole test utterances
(the paper's protocol), and a synthesised test sentence with its mel picture at the end."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nanoflow_jax.audio.io import write_wav
from nanoflow_jax.audio.mel import MelConfig, mel_spectrogram
from nanoflow_jax.convert import params_from_state_dict, state_dict_from
from nanoflow_jax.data import CropLoader, load_splits
from nanoflow_jax.data.audio_config import AudioDataConfig
from nanoflow_jax.errors import DataError
from nanoflow_jax.models import AudioFlow, ModelConfig
from nanoflow_jax.models.audio_params import init_params
from nanoflow_jax.models.params import count_params
from nanoflow_jax.schema import Bool, Float, Int, Section, field
from nanoflow_jax.synth import Vocoder
from nanoflow_jax.synth.scoring import CopySynthesisScorer
from nanoflow_jax.train import audio_eval, audio_loss
from nanoflow_jax.train.figures import mel_figure, save_png
from nanoflow_jax.train.optimizers import adam_halving
from nanoflow_jax.train.summaries import Writer
from nanoflow_jax.train.trainer import Task, TrainConfig


@dataclasses.dataclass(frozen=True)
class AudioTrainConfig(TrainConfig):
    """The audio task's optimiser: Adam with the learning rate multiplied by `lr_decay_factor` every
    `lr_decay_every` steps (the recipes' numbers are in configs/)."""

    lr_decay_every: int = field(200_000, Int(min=1), "steps between learning-rate decays")
    lr_decay_factor: float = field(0.5, Float(min=0.0, max=1.0, min_open=True), "learning-rate factor per decay")


@dataclasses.dataclass(frozen=True)
class AudioEvalConfig(Section):
    SECTION = "eval"

    batch_size: int = field(8, Int(min=1), "crops per evaluation batch")
    num_crops: int = field(64, Int(min=1), "fixed test crops of data.segment_length (at least eval.batch_size)")
    num_utterances: int | None = field(
        16, Int(min=0, optional=True), "whole test utterances evaluated (the paper's protocol); None: all"
    )
    synthesize: bool = field(True, Bool(), "write samples/step_N.wav and its mel picture at the end of the run")
    synth_seconds: float = field(
        3.0, Float(min=0.0, min_open=True), "seconds of the first test utterance to synthesise"
    )
    temperature: float = field(0.8, Float(min=0.0), "std of the latent noise of the sample")
    quality_utterances: int = field(
        0,
        Int(min=0, max=64),
        "test utterances (their first synth_seconds) synthesised at each evaluation and scored with the "
        "quality metrics (python -m nanoflow_jax.evaluate's), Griffin-Lim's beside them; 0: off",
    )

    def check_fields(self) -> None:
        if self.num_crops < self.batch_size:
            self.fail("num_crops", f"is not allowed: at least eval.batch_size = {self.batch_size}")


class AudioTask(Task):
    SECTIONS: ClassVar[dict[str, type[Section]]] = {
        "model": ModelConfig,
        "data": AudioDataConfig,
        "train": AudioTrainConfig,
        "eval": AudioEvalConfig,
    }
    LOSS_NAME: ClassVar[str] = "loss"

    def __init__(self, sections: dict[str, Section], workdir: str | None = None):
        super().__init__(sections, workdir)
        t = self.train
        self.model = AudioFlow(self.model_config, remat=t.remat, dtype=t.compute_dtype)
        self.eval_model = AudioFlow(self.model_config)  # true float32, no remat
        self.multiple = math.lcm(self.model_config.hop_length, self.model_config.n_groups)
        self._griffin_lim: dict[str, float] | None = None  # the baseline's quality, once

    def compile_for(self, platform: str) -> None:
        self.model = self.model.for_platform(platform)

    def check(self, n_devices: int) -> None:
        m, d = self.model_config, self.data
        if d.segment_length % m.n_groups:
            d.fail("segment_length", f"is not allowed: a multiple of model.n_groups = {m.n_groups}")
        if d.n_mels != m.cond_channels:
            d.fail("n_mels", f"is not allowed: must equal model.cond_channels = {m.cond_channels}")
        if d.source == "pairs" and d.segment_length % d.hop_length:
            d.fail("segment_length", f"is not allowed with pairs: a multiple of data.hop_length = {d.hop_length}")
        if d.hop_length != m.hop_length:
            d.fail("hop_length", f"is not allowed: must equal model.hop_length = {m.hop_length} (the upsampling)")

    def load_data(self, log: Callable) -> None:
        self.train_set, self.test_set = load_splits(self.data, log, jax.process_index(), jax.process_count())
        if len(self.test_set) == 0:
            raise DataError(
                f"the test split is empty: {len(self.train_set)} files with test_fraction={self.data.test_fraction}"
            )
        self.eval_crops = audio_eval.fixed_crops(self.test_set, self.eval.num_crops, self.data.segment_length)
        self.nll_fn = jax.jit(audio_loss.audio_nll(self.eval_model, self.data))
        self.utterance_nll_fn = jax.jit(audio_loss.utterance_nll(self.eval_model, self.data))

    def init_variables(self, rng: jax.Array) -> Any:
        return init_params(self.model, rng)

    def warm_start_file(self, path: str, variables: Any) -> Any:
        """Params from an official .pt / .npz checkpoint."""
        return params_from_state_dict(state_dict_from(path), self.model_config)

    def optimizer(self) -> tuple[optax.GradientTransformation, optax.Schedule]:
        t = self.train
        return adam_halving(t.learning_rate, t.lr_decay_every, t.lr_decay_factor, t.grad_clip_norm)

    def loss(self, params: Any, batch: jax.Array) -> jax.Array:
        return audio_loss.audio_nll(self.model, self.data)(params, batch)

    def batches(self, position: int) -> CropLoader:
        local = self.train.batch_size // jax.process_count()
        return CropLoader(
            self.train_set,
            local,
            self.data.segment_length,
            self.train.seed,
            jax.process_index(),
            position,
            mel_floor=math.log(self.data.clamp),
        )

    def evaluate(self, params: Any, step: int, writer: Writer, log: Callable) -> tuple[dict, float]:
        e = self.eval
        out = {"eval/nll_crops": audio_eval.nll_on_crops(self.nll_fn, params, self.eval_crops, e.batch_size)}
        if e.num_utterances != 0:
            full, _ = audio_eval.nll_on_utterances(
                self.utterance_nll_fn,
                params,
                self.test_set,
                e.num_utterances,
                self.multiple,
                e.batch_size * self.data.segment_length,
            )
            out.update({"eval/nll_utterances": full, "eval/ll_utterances": -full})
        if e.quality_utterances:
            out.update(self.quality(params, step))
        writer.scalars(step, out)
        log(f"eval at step {step}: " + ", ".join(f"{k.removeprefix('eval/')} {v:.4f}" for k, v in out.items()))
        return out, out["eval/nll_crops"]

    def quality(self, params: Any, step: int) -> dict[str, float]:
        """Mean quality metrics of copy synthesis on eval.quality_utterances test utterances, evenly spaced
        ("quality/..."), and Griffin-Lim's from the same mels ("quality_griffin_lim/...", computed once)."""
        from nanoflow_jax.audio import quality

        e, cfg = self.eval, MelConfig.from_any(self.data)
        rng = jax.random.fold_in(jax.random.PRNGKey(self.train.seed + 1), step)
        scorer = CopySynthesisScorer(Vocoder(self.eval_model, params, cfg))  # folded once for every utterance
        model_rows, gl_rows = [], []
        count, total = min(e.quality_utterances, len(self.test_set)), len(self.test_set)
        for i in (j * total // count for j in range(count)):  # spread over the split: every speaker
            x = self.test_set.load(i)[: int(e.synth_seconds * cfg.sample_rate)]
            scored = scorer(x, e.temperature, jax.random.fold_in(rng, i), griffin_lim=self._griffin_lim is None)
            if scored is None:
                continue
            model_rows.append(scored["model"])
            if "griffin_lim" in scored:
                gl_rows.append(scored["griffin_lim"])
        if self._griffin_lim is None and gl_rows:
            self._griffin_lim = {
                f"quality_griffin_lim/{k}": quality.finite_mean(r[k] for r in gl_rows) for k in quality.METRICS
            }
        out = {}
        if model_rows:
            out = {f"quality/{k}": quality.finite_mean(r[k] for r in model_rows) for k in quality.METRICS}
        return {**out, **(self._griffin_lim or {})}

    def finish(self, params: Any, step: int, writer: Writer, log: Callable) -> None:
        """Synthesise the first test utterance from its mel: samples/step_N.wav and a mel picture."""
        e = self.eval
        if not e.synthesize:
            return
        audio = self.test_set.load(0)[: int(e.synth_seconds * self.test_set.sample_rate)]
        audio = audio[: len(audio) // self.multiple * self.multiple]
        mel = mel_spectrogram(jnp.asarray(audio[None]), self.data)
        rng = jax.random.fold_in(jax.random.PRNGKey(self.train.seed), step)
        y = Vocoder(self.eval_model, params, self.data).synthesize(mel, temperature=e.temperature, rng=rng)[0]
        out = os.path.join(self.workdir, "samples")
        os.makedirs(out, exist_ok=True)
        if not np.all(np.isfinite(y)):
            log("synthesis gave non-finite samples; no sample written")
            return
        rate = self.test_set.sample_rate
        write_wav(os.path.join(out, f"step_{step}.wav"), y, rate)
        mel_syn = np.asarray(mel_spectrogram(jnp.asarray(y[None]), self.data)[0])
        name = os.path.basename(self.test_set.names[0])
        panels = {f"ground truth ({name})": np.asarray(mel[0]), f"synthesized, step {step}": mel_syn}
        img = mel_figure(panels, self.data.hop_length, rate)
        save_png(os.path.join(out, f"step_{step}_mel.png"), img)
        writer.audio(step, "sample/synthesized", y, rate)
        writer.audio(step, "sample/reference", audio[: len(y)], rate)
        writer.image(step, "sample/mel_reference_vs_synthesized", img)
        log(f"wrote {out}/step_{step}.wav and step_{step}_mel.png")

    def describe(self, params: Any) -> str:
        return f"model: {self.model_config.variant}, {count_params(params):,} parameters"
