"""The `data` section of an audio run: where the corpus is, how it is split and cropped, and its mel."""

from __future__ import annotations

import dataclasses

from nanoflow_jax.audio.mel import MelConfig
from nanoflow_jax.schema import Choice, Float, Int, Text, field


@dataclasses.dataclass(frozen=True)
class AudioDataConfig(MelConfig):
    source: str = field(
        "folder",
        Choice(("folder", "filelist", "tfds", "pairs")),
        "folder (LJSpeech layout or any folder of wavs), filelist (a text file of paths), tfds, or pairs "
        "(a folder of wavs each with a .npy mel of the same name: a TTS model's ground-truth-aligned mels)",
    )
    path: str = field("", Text(), "the dataset folder or file list (demo: the bundled corpus)")
    segment_length: int = field(16000, Int(min=1), "samples per training crop (a multiple of model.n_groups)")
    test_fraction: float = field(
        0.1, Float(min=0.0, max=1.0, min_open=True, max_open=True), "first share of the sorted files kept for test"
    )
    test_split: str = field(
        "sorted",
        Choice(("sorted", "per_folder")),
        "sorted: the first test_fraction of all files by name; per_folder: of each folder's (per speaker)",
    )
    pair_tolerance_frames: int = field(
        2,
        Int(min=0, max=1000),
        "pairs: how far mel frames x hop may differ from the wav's samples (in frames) before the pair is skipped",
    )
    max_memory_gb: float = field(
        8.0, Float(min=0.0), "keep the decoded corpus in memory (int16) when it fits in this; else read per crop"
    )

    def check_fields(self) -> None:
        super().check_fields()
        if self.segment_length < self.n_fft // 2 + 1:
            self.fail("segment_length", f"is not allowed: more than data.n_fft / 2 = {self.n_fft // 2} samples")
