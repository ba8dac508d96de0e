"""The audio flows' loss: the mean NLL per sample of audio under the model given its mel (computed from
the audio on the device, or a TTS model's own mel), and its per-utterance, masked form (the paper's
test LL). The Gaussian arithmetic is the flows' (`flows.likelihood`)."""

from __future__ import annotations

from collections.abc import Callable

from nanoflow_jax.audio.mel import MelConfig, mel_spectrogram
from nanoflow_jax.flows import nll, nll_per_item


def audio_nll(model, mel_cfg: MelConfig) -> Callable:
    """(params, audio (B, T)) -> mean NLL per sample, with the mel computed from the audio (on device):
    the training loss and the evaluation metric. A batch {"audio", "mel"} (data.source=pairs) brings its
    own mel, (B, bands, T // hop + 1)."""

    def fn(params, batch):
        if isinstance(batch, dict):
            audio, mel = batch["audio"], batch["mel"]
        else:
            audio, mel = batch, mel_spectrogram(batch, mel_cfg)
        z, logdet = model.apply(params, audio, mel)
        return nll(z, logdet)

    return fn


def utterance_nll(model, mel_cfg: MelConfig) -> Callable:
    """(params, audio (B, T) padded, lengths (B,)) -> (B,) NLL per sample of each item's first lengths[b]
    samples, exactly as each would give alone (mel and flow masked, `AudioFlow`'s `lengths`)."""

    def fn(params, audio, lengths):
        z, logdet = model.apply(params, audio, mel_spectrogram(audio, mel_cfg, lengths), lengths=lengths)
        return nll_per_item(z, logdet, lengths)

    return fn
