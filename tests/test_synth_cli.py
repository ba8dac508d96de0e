"""synth.py, the converter, the denoiser and the exported synthesis, end to end on the official small
checkpoint (tests/data), against the official synthesis."""

import dataclasses
import json
import os
import subprocess
import sys
import wave

import jax
import numpy as np
import pytest

import nanoflow_jax as nf
from nanoflow_jax.audio.io import read_audio, write_wav
from nanoflow_jax.cli import run_cli
from nanoflow_jax.convert.write import convert_official
from nanoflow_jax.export import export_synthesis
from nanoflow_jax.models import ModelConfig
from nanoflow_jax.synth.command import SynthArgs, run
from nanoflow_jax.synth.denoise import Denoiser
from nanoflow_jax.synth.loading import load_mel
from tests.conftest import DATA
from tests.test_golden import flat

G8 = ModelConfig(n_groups=8)  # 80 bands, hop 256, G = 8

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PT = os.path.join(DATA, "nanoflow_small_official_ckpt.pt")
CONFIG = os.path.join(DATA, "nanoflow_small_config.json")


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    return convert_official(PT, CONFIG, str(tmp_path_factory.mktemp("ckpt") / "nanoflow_small"))


@pytest.fixture(scope="module")
def golden():
    return dict(np.load(os.path.join(DATA, "nanoflow_small.npz")))


def test_converted_checkpoint_synthesises_like_official(converted, golden):
    """The golden arrays were made from the same official weights as the .pt file (same seed)."""
    config, model, params = nf.load_checkpoint(converted)
    assert config.data.sample_rate == 22050 and model.config.n_flows == 4
    ref_model, ref_params = nf.load_official(PT, CONFIG)
    z = flat(golden["z_syn"])
    ours = nf.synthesize(model, params, golden["mel"], z=z)
    official = nf.synthesize(ref_model, ref_params, golden["mel"], z=z)
    np.testing.assert_allclose(ours, official, atol=1e-6, rtol=0)
    slow = ref_model.apply(ref_params, z, golden["mel"], method="inverse")[0]
    np.testing.assert_allclose(ours, slow, atol=1e-4, rtol=0)


def test_convert_refuses_non_empty_output(converted):
    with pytest.raises(ValueError, match="not empty"):
        convert_official(PT, CONFIG, converted)


def test_config_that_disagrees_names_the_field(tmp_path):
    cfg = json.load(open(CONFIG))
    cfg["waveflow_config"]["res_channels"] = 64
    path = tmp_path / "wrong.json"
    path.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="disagree on res_channels: the checkpoint has 32, the config says 64"):
        nf.load_official(PT, str(path))


def test_run_writes_pcm16_at_model_rate(converted, golden, tmp_path):
    mel_path = tmp_path / "utt.npy"
    np.save(mel_path, golden["mel"][0])
    out = tmp_path / "utt.wav"
    logs = []
    written = run(SynthArgs(mel=str(mel_path), checkpoint=converted, out=str(out), temperature=0.0), log=logs.append)
    assert written == [str(out)]
    with wave.open(str(out)) as w:
        assert (w.getsampwidth(), w.getframerate(), w.getnchannels()) == (2, 22050, 1)
        assert w.getnframes() == 256 * (golden["mel"].shape[2] - 3)
    # temperature 0: z = 0, so the file is the synthesis of zero noise, quantised to 16 bits
    config, model, params = nf.load_checkpoint(converted)
    want = nf.synthesize(model, params, golden["mel"][:1], z=np.zeros((1, 256 * 64)))[0]
    got, _ = read_audio(str(out))
    np.testing.assert_allclose(got, np.clip(want, -1, 1), atol=1.5 / 32768)
    assert "kHz" in logs[0] and "real-time factor" in logs[0]
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]


def test_chunked_run_streams_the_same_audio(converted, golden, tmp_path):
    """--chunk_frames: written chunk by chunk, the same samples as the whole utterance once the overlap
    covers the receptive field; the time to the first chunk is logged."""
    mel_path = tmp_path / "utt.npy"
    np.save(mel_path, golden["mel"][0])
    _, model, _ = nf.load_checkpoint(converted)
    whole = run(SynthArgs(mel=str(mel_path), checkpoint=converted, out=str(tmp_path / "whole.wav"), seed=3))
    logs = []
    overlap = nf.synth.receptive_frames(model.config)
    args = SynthArgs(
        mel=str(mel_path), checkpoint=converted, out=str(tmp_path / "chunked.wav"), seed=3, chunk_frames=16,
        overlap_frames=overlap,
    )  # fmt: skip
    chunked = run(args, log=logs.append)
    a, b = read_audio(whole[0])[0], read_audio(chunked[0])[0]
    assert a.shape == b.shape == (256 * (golden["mel"].shape[2] - 3),)
    np.testing.assert_allclose(a, b, atol=1.5 / 32768)
    assert "in chunks of 16 frames, the first after" in logs[0]
    with pytest.raises(ValueError, match="--denoise works on whole utterances"):
        run(dataclasses.replace(args, denoise=0.01))


def test_mel_dir_batches_and_wav_copy_synthesis(converted, golden, tmp_path):
    src = tmp_path / "mels"
    src.mkdir()
    np.save(src / "a.npy", golden["mel"][0])
    np.save(src / "b.npy", golden["mel"][1][:, :40].T)  # (frames, bands) is accepted
    np.save(src / "c.npy", golden["mel"][1][None, :, :20])  # (1, bands, frames) too
    out = tmp_path / "out"
    written = run(SynthArgs(mel_dir=str(src), checkpoint=converted, out=str(out), batch=2, dtype="bfloat16"))
    assert sorted(os.path.basename(w) for w in written) == ["a.wav", "b.wav", "c.wav"]
    assert [read_audio(w)[0].shape[0] for w in sorted(written)] == [256 * 64, 256 * 37, 256 * 17]
    wav = tmp_path / "speech.wav"
    write_wav(wav, golden["x"][0], 22050)
    [path] = run(SynthArgs(wav=str(wav), checkpoint=converted, out=str(tmp_path / "copy.wav"), denoise=0.01))
    assert read_audio(path)[0].shape[0] == 256 * (16384 // 256 + 1 - 3)


def _synth(*args, cwd=ROOT):
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "synth.py"), *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def test_cli_official_checkpoint_and_errors(golden, tmp_path, capsys):
    mel = tmp_path / "m.npy"
    np.save(mel, golden["mel"][0, :, :12])
    out = tmp_path / "o.wav"
    ok = _synth("--mel", str(mel), "--official", PT, "--config", CONFIG, "--out", str(out), "--temperature", "0.8")
    assert ok.returncode == 0, ok.stderr
    assert "s of audio in" in ok.stdout and out.exists()

    bad = {
        "nan.npy": np.full((80, 12), np.nan, np.float32),
        "bands.npy": np.zeros((64, 12), np.float32),
        "short.npy": np.zeros((80, 3), np.float32),
        "rank.npy": np.zeros((2, 80, 12), np.float32),
        "int.npy": np.zeros((80, 12), np.int32),
    }
    for name, arr in bad.items():
        np.save(tmp_path / name, arr)
    (tmp_path / "junk.npy").write_text("not numpy")
    cases = {
        "nan.npy": "NaN or Inf",
        "bands.npy": "80 mel bands",
        "short.npy": "needs at least 4 frames",
        "rank.npy": "(80, frames)",
        "int.npy": "floating-point",
        "junk.npy": "cannot read",
        "missing.npy": "does not exist",
    }
    # through the real command line: one line on stderr, exit code 2, no file
    for name in ("nan.npy", "junk.npy"):
        out = tmp_path / f"{name}.wav"
        r = _synth("--mel", str(tmp_path / name), "--official", PT, "--config", CONFIG, "--out", str(out))
        assert r.returncode == 2, (name, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and cases[name] in lines[0], (name, r.stderr)
        assert not out.exists()
    # the rest through the same error handler in this process (saves a JAX start-up each)
    cfg = json.load(open(CONFIG))
    cfg["waveflow_config"]["n_flow"] = 8
    (tmp_path / "k8.json").write_text(json.dumps(cfg))
    more = {
        (str(mel), "--checkpoint", str(tmp_path / "nowhere")): "does not exist",
        (str(mel), "--official", str(tmp_path / "k8.json")): "disagree on n_flow",
    }
    for name, message in cases.items():
        more[(str(tmp_path / name), "--official", CONFIG)] = message
    for (mel_path, kind, where), message in more.items():
        out = tmp_path / "x.wav"
        model = dict(checkpoint=where) if kind == "--checkpoint" else dict(official=PT, config=where)
        args = SynthArgs(mel=mel_path, out=str(out), **model)
        with pytest.raises(SystemExit) as exit_info:
            run_cli(lambda args=args: run(args), "synth.py")
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (mel_path, err)
        assert not out.exists()


def test_denoiser_removes_the_bias_spectrum(golden):
    model, params = nf.load_official(PT, CONFIG)
    den = Denoiser(nf.Vocoder(model, params), frames=24)
    audio = nf.synthesize(model, params, golden["mel"][:1], rng=jax.random.PRNGKey(0), temperature=0.5)[0]
    np.testing.assert_allclose(den(audio, 0.0), audio, atol=1e-5)  # strength 0: STFT round trip only
    cleaned = den(audio, 0.5)
    assert cleaned.shape == audio.shape and np.all(np.isfinite(cleaned))
    # the bias spectrum's share of the energy drops
    spec = lambda a: np.abs(den._stft(a)).mean(axis=1)  # noqa: E731
    b = den.bias_spectrum[:, 0]
    assert np.dot(spec(cleaned), b) < np.dot(spec(audio), b)


def test_export_round_trip(golden):
    model, params = nf.load_official(PT, CONFIG)
    exported = export_synthesis(nf.Vocoder(model, params), frames=12, batch=2)
    restored = jax.export.deserialize(exported.serialize())
    mel = golden["mel"][:, :, :12]
    z = np.random.RandomState(0).randn(2, 256 * 9).astype(np.float32)
    np.testing.assert_allclose(restored.call(mel, z), nf.synthesize(model, params, mel, z=z), atol=1e-6, rtol=0)


def test_load_mel_layouts(tmp_path):
    m = np.random.RandomState(0).randn(80, 30).astype(np.float32)
    for i, arr in enumerate([m, m[None], m.T, m.astype(np.float64)]):
        np.save(tmp_path / f"{i}.npy", arr)
        np.testing.assert_array_equal(load_mel(str(tmp_path / f"{i}.npy"), G8), m)
