"""Fine-tuning on a TTS model's mels: data.source=pairs, (wav, mel .npy) pairs, frame-aligned crops, the
length check, and a warm-started run on them."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import nanoflow_jax as nf
from nanoflow_jax.audio.io import read_audio, write_wav
from nanoflow_jax.audio.mel import MelConfig
from nanoflow_jax.data import CropLoader, load_splits
from nanoflow_jax.data.audio_config import AudioDataConfig
from nanoflow_jax.data.sources import DEMO_CORPUS
from tests.conftest import DATA

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOP = 256


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """10 demo sentences with our mel of each (one frame short, as many TTS models give), one mel 40 frames
    short, one wav with no mel."""
    root = tmp_path_factory.mktemp("pairs")
    (root / "wavs").mkdir()
    (root / "mels").mkdir()
    names = sorted(os.listdir(os.path.join(DEMO_CORPUS, "wavs")))[:12]
    for i, name in enumerate(names):
        x, rate = read_audio(os.path.join(DEMO_CORPUS, "wavs", name))
        x = x[: 2 * rate]
        write_wav(root / "wavs" / name, x, rate)
        x, _ = read_audio(root / "wavs" / name)  # the 16-bit samples the loader will see
        mel = np.asarray(nf.mel_spectrogram(x[None])[0])
        stem = os.path.splitext(name)[0]
        if i == 10:
            mel = mel[:, :-40]
        if i != 11:
            np.save(root / "mels" / f"{stem}.npy", (mel[:, :-1] if i % 2 else mel).T)  # (frames, bands) too
    return root


def test_pairs_load_with_one_counted_line_and_frame_aligned_crops(pairs):
    data = AudioDataConfig(source="pairs", path=str(pairs), test_fraction=0.1)
    logs = []
    train, test = load_splits(data, logs.append)
    assert len(train) + len(test) == 10
    assert "10 of 12 files usable, skipped 1 with a mel of another length, 1 without a mel" in logs[0]
    loader = CropLoader(train, 3, 8192, seed=0)
    batch = next(loader)
    loader.close()
    assert batch["audio"].shape == (3, 8192) and batch["mel"].shape == (3, 80, 8192 // HOP + 1)
    # the given mel of a crop is our mel of the crop's audio, away from the crop's reflected edges
    ours = np.asarray(nf.mel_spectrogram(batch["audio"], MelConfig()))
    np.testing.assert_allclose(batch["mel"][:, :, 3:-3], ours[:, :, 3:-3], atol=1e-3)


def test_pairs_need_crops_of_whole_frames():
    from configs import demo
    from nanoflow_jax.errors import ConfigError
    from nanoflow_jax.train.run import task_from_config

    c = demo.get_config()
    c.data.source, c.data.segment_length = "pairs", 8000
    with pytest.raises(ConfigError, match="data.segment_length = 8000 is not allowed with pairs"):
        task_from_config(c).check(1)


def test_fine_tune_an_official_model_on_pairs(pairs, tmp_path):
    official = json.load(open(os.path.join(DATA, "nanoflow_small_config.json")))
    model = nf.config_from_official(official)
    fields = ("n_flows", "n_layers", "channels", "n_groups", "embed_dim", "variant")
    cmd = [
        sys.executable,
        "train.py",
        "--config=configs/demo.py",
        f"--workdir={tmp_path / 'run'}",
        f"--warm_start={os.path.join(DATA, 'nanoflow_small_official_ckpt.pt')}",
        "--config.data.source=pairs",
        f"--config.data.path={pairs}",
        "--config.data.segment_length=4096",
        "--config.train.batch_size=2",
        "--config.train.num_steps=3",
        "--config.train.log_every=1",
        "--config.eval.batch_size=2",
        "--config.eval.num_crops=2",
        "--config.eval.num_utterances=1",
        "--config.eval.synthesize=False",
        *[f"--config.model.{f}={getattr(model, f)}" for f in fields],
    ]
    env = dict(os.environ, XLA_FLAGS="")
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    text = out.stdout + out.stderr
    assert "skipped 1 with a mel of another length, 1 without a mel" in text
    assert "warm start" in text.lower()
    losses = [float(v) for v in __import__("re").findall(r"loss (-?[\d.]+)", text)]
    assert losses and all(np.isfinite(losses))
