"""Nothing lost, round 2 (issue 27): every class of hostile or mistaken input builds its own file here and is
either read exactly or refused in one line naming it, before any work and without touching the inputs."""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import tracemalloc
import zipfile

import numpy as np
import pytest
import soundfile

from nanoflow_jax.audio.io import read_audio
from nanoflow_jax.checkpoints import Checkpointer, load_checkpoint, save_params_folder
from nanoflow_jax.cli import run_cli
from nanoflow_jax.convert.official_params import state_dict_from
from nanoflow_jax.errors import (
    AudioReadError,
    CheckpointError,
    ConfigError,
    ConversionError,
    InputError,
    OutputError,
    UsageError,
)
from nanoflow_jax.files import atomic_write, read_npz
from nanoflow_jax.synth.command import SynthArgs, run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "data")
OFFICIAL_PT = os.path.join(DATA, "nanoflow_small_official_ckpt.pt")
OFFICIAL_CONFIG = os.path.join(DATA, "nanoflow_small_config.json")


def one_line(err) -> str:
    text = str(err.value)
    assert text and "\n" not in text, text
    return text


def cli(*args, timeout=120):
    r = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    return r.returncode, [ln for ln in r.stderr.splitlines() if ln.strip()]


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    from nanoflow_jax.convert.write import convert_official

    return convert_official(OFFICIAL_PT, OFFICIAL_CONFIG, str(tmp_path_factory.mktemp("conv") / "ckpt"))


@pytest.fixture
def checkpoint(converted, tmp_path):
    """A private copy of the converted checkpoint to damage."""
    return shutil.copytree(converted, tmp_path / "ckpt")


def write_wav24(path, seconds=0.5, rate=22050, channels=1):
    x = 0.1 * np.sin(np.arange(int(seconds * rate)) / 7.0)
    soundfile.write(path, np.repeat(x[:, None], channels, axis=1), rate, subtype="PCM_24")
    return path


# ---- data loss: inputs are never outputs ------------------------------------------------------------------


def test_synth_refuses_to_write_over_the_wav_it_reads_and_leaves_it_intact(tmp_path):
    wav = write_wav24(tmp_path / "x.wav")
    before = wav.read_bytes()
    code, lines = cli("synth.py", "--wav", str(wav), "--out", str(wav))
    assert code == 2 and len(lines) == 1 and "is the input" in lines[0], lines
    assert wav.read_bytes() == before


@pytest.mark.parametrize("out", ["same", "inside", "symlink"])
def test_synth_refuses_outputs_that_are_inputs_however_reached(tmp_path, out):
    d = tmp_path / "wavs"
    d.mkdir()
    write_wav24(d / "a.wav")
    if out == "same":
        args = SynthArgs(wav_dir=str(d), out=str(d))
    elif out == "inside":
        args = SynthArgs(wav_dir=str(d), out=str(d / "sub"))
    else:
        os.symlink(d / "a.wav", tmp_path / "link.wav")
        args = SynthArgs(wav=str(d / "a.wav"), out=str(tmp_path / "link.wav"))
    with pytest.raises(OutputError) as e:
        run(args, log=lambda *_: None)
    assert str(d) in one_line(e)
    assert sorted(os.listdir(d)) == ["a.wav"]


def test_other_commands_refuse_outputs_inside_their_inputs(checkpoint, tmp_path):
    from nanoflow_jax.average import average_checkpoints
    from nanoflow_jax.export.__main__ import main as export_main

    with pytest.raises(OutputError, match="inside the input folder"):
        average_checkpoints(str(checkpoint), 1, str(checkpoint / "avg"))
    with pytest.raises(SystemExit) as e:
        export_main(["--official", OFFICIAL_PT, "--config", OFFICIAL_CONFIG, "--frames", "8", "--out", OFFICIAL_PT])
    assert e.value.code == 2


def test_training_refuses_a_workdir_inside_its_corpus(tmp_path):
    from configs import demo
    from nanoflow_jax.train.run import train

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    config = demo.get_config()
    with config.unlocked():
        config.data.path = str(corpus)
        config.data.source = "folder"
    with pytest.raises(OutputError, match="--workdir"):
        train(config, str(corpus / "run"), log=lambda *_: None)


# ---- hangs: FIFOs are refused unopened ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ckpt.pt", "ckpt.npz"])
def test_a_fifo_as_an_official_checkpoint_is_refused_without_blocking(tmp_path, name):
    fifo = tmp_path / name
    os.mkfifo(fifo)
    result = {}

    def read():
        try:
            state_dict_from(str(fifo))
        except InputError as e:
            result["error"] = str(e)

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive() and "FIFO" in result["error"]


# ---- unbounded memory -----------------------------------------------------------------------------------


def _npz_of_zeros(path, n):
    """A small .npz whose one member declares n float32 zeros (deflated: ~1 KB per MB)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z, z.open("w.npy", "w", force_zip64=True) as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (n,)})
        block = bytes(1 << 20)
        for _ in range(n * 4 // len(block)):
            f.write(block)
    return path


def test_an_npz_declaring_more_than_its_budget_is_refused_before_reading(tmp_path):
    path = _npz_of_zeros(tmp_path / "bomb.npz", 64 << 20)  # 256 MiB declared, ~250 KB on disk
    assert os.path.getsize(path) < 1 << 20
    tracemalloc.start()
    with pytest.raises(InputError, match="would need 256 MiB") as e:
        read_npz(path, "official checkpoint", budget=32 << 20)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 8 << 20 and str(path) in one_line(e)


def test_an_official_npz_is_bounded_by_the_model_it_must_fit(tmp_path):
    from nanoflow_jax.convert import load_official

    path = _npz_of_zeros(tmp_path / "bomb.npz", 16 << 20)  # 64 MiB: far beyond the small model's params
    with pytest.raises(InputError, match="would need 64 MiB"):
        load_official(str(path), OFFICIAL_CONFIG)


def test_checkpoint_arrays_are_checked_against_the_model_before_reading(checkpoint, monkeypatch):
    """The stored config says C=32; arrays declared for another model are refused from the metadata alone."""
    meta = checkpoint / "0" / "meta" / "metadata"
    stored = json.loads(meta.read_text())
    stored["config"]["model"]["channels"] = 48
    meta.write_text(json.dumps(stored))

    def no_read(*a, **k):
        raise AssertionError("arrays were read")

    monkeypatch.setattr("orbax.checkpoint.CheckpointManager.restore", no_read)
    with pytest.raises(CheckpointError, match="is declared .*its model needs") as e:
        load_checkpoint(str(checkpoint))
    assert str(checkpoint) in one_line(e)


def test_checkpoint_arrays_beyond_the_memory_budget_are_refused_unread(checkpoint, monkeypatch):
    monkeypatch.setattr("nanoflow_jax.checkpoint_gate.memory_budget", lambda: 1 << 10)
    with pytest.raises(CheckpointError, match="declares .* MiB of arrays") as e:
        load_checkpoint(str(checkpoint))
    one_line(e)


def test_a_sparse_gigabyte_metadata_file_is_refused_by_its_size(checkpoint):
    os.truncate(checkpoint / "0" / "meta" / "metadata", 1 << 30)
    tracemalloc.start()
    with pytest.raises(CheckpointError, match="at most") as e:
        load_checkpoint(str(checkpoint))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 64 << 20 and "metadata" in one_line(e)


def test_a_multichannel_wav_is_read_in_blocks_and_budgeted_by_its_own_header(tmp_path):
    path = write_wav24(tmp_path / "six.wav", seconds=20, rate=48000, channels=6)
    mono = 20 * 48000 * 4
    tracemalloc.start()
    x, rate = read_audio(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert rate == 48000 and x.shape == (20 * 48000,)
    assert peak < 2 * mono  # one mono copy and a block, not the 6-channel array (6x mono)
    np.testing.assert_allclose(x[:1000], soundfile.read(path, dtype="float32")[0][:1000, 0], atol=1e-6)
    with pytest.raises(AudioReadError, match="20 s at 48000 Hz in 6 channels would need") as e:
        read_audio(path, max_bytes=mono // 2)
    one_line(e)
    # what the caller builds per second of the file counts too: the file's own rate, not the model's
    with pytest.raises(AudioReadError, match="would need"):
        read_audio(path, max_bytes=2 * mono, extra_bytes_per_second=48000 * 8.0)


def test_a_mel_folder_is_streamed_one_batch_at_a_time(tmp_path, monkeypatch):
    import weakref

    import nanoflow_jax.synth.command as command

    d = tmp_path / "mels"
    d.mkdir()
    for i in range(6):
        np.save(d / f"m{i}.npy", np.full((80, 12), -5.0, np.float32))
    alive, most = [], []
    real = command.Vocoder.prepare

    def prepare(self, mel):
        p = real(self, mel)
        alive.append(weakref.ref(p.mels[0]))
        return p

    def synthesize(self, prepared, **kw):
        import gc

        gc.collect()
        most.append(sum(r() is not None for r in alive))
        return [np.zeros(8, np.float32) for _ in prepared.mels]

    monkeypatch.setattr(command.Vocoder, "prepare", prepare)
    monkeypatch.setattr(command.Vocoder, "synthesize", synthesize)
    written = run(SynthArgs(mel_dir=str(d), out=str(tmp_path / "out"), batch=2), log=lambda *_: None)
    assert len(written) == 6 and most and max(most) <= 2  # the batch, not the folder


# ---- crash: exports carry their integrity ---------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from nanoflow_jax.convert import load_official
    from nanoflow_jax.export import export_synthesis, save
    from nanoflow_jax.synth import Vocoder

    model, params = load_official(OFFICIAL_PT, OFFICIAL_CONFIG)
    path = str(tmp_path_factory.mktemp("export") / "synth.jaxexport")
    save(export_synthesis(Vocoder(model, params), frames=8), path, {"frames": 8})
    return path


def test_an_export_round_trips_through_load(exported):
    import jax.numpy as jnp

    from nanoflow_jax.export import load

    program, info = load(exported)
    assert info["frames"] == 8 and len(info["sha256"]) == 64
    mel, z = (jnp.zeros(a.shape, a.dtype) for a in program.in_avals)
    assert program.call(mel, z).shape == tuple(info["out_shapes"][0])


@pytest.mark.parametrize("damage", ["flip_program", "flip_info", "truncate", "append", "foreign"])
def test_a_damaged_export_is_one_line_never_a_crash(exported, tmp_path, damage):
    data = bytearray(open(exported, "rb").read())
    if damage == "flip_program":
        data[len(data) // 2] ^= 0x01
    elif damage == "flip_info":
        data[30] ^= 0x20
    elif damage == "truncate":
        data = data[: len(data) - 100]
    elif damage == "append":
        data += b"\0"
    else:
        data = data[data.index(b"\n", 30) + 1 :]  # the bare serialised program
    path = tmp_path / "bad.jaxexport"
    path.write_bytes(bytes(data))
    code = (
        "import sys\nfrom nanoflow_jax.cli import run_cli\nfrom nanoflow_jax.export import load\n"
        f"run_cli(lambda: load({str(path)!r}), 'load')\n"
    )
    rc, lines = cli("-c", code)
    assert rc == 2 and len(lines) == 1 and str(path) in lines[0], lines  # not a segmentation fault (-11)


# ---- silent wrong outputs -------------------------------------------------------------------------------


def test_a_checkpoint_whose_mel_hop_disagrees_with_its_model_is_refused(checkpoint):
    meta = checkpoint / "0" / "meta" / "metadata"
    stored = json.loads(meta.read_text())
    stored["config"]["data"]["hop_length"] = 128
    stored["config"]["data"]["win_length"] = 1024
    meta.write_text(json.dumps(stored))
    with pytest.raises(ConfigError, match="hop_length = 128 but the model's hop_length is 256") as e:
        load_checkpoint(str(checkpoint))
    one_line(e)


def test_average_refuses_checkpoints_of_different_models(tmp_path):
    from nanoflow_jax.average import average_checkpoints

    work = tmp_path / "run" / "checkpoints"
    ckpt = Checkpointer(str(work), keep=5, async_save=False)
    config = {"note": "params of no model: only their shapes are compared"}
    ckpt.save(1, {"params": {"w": np.ones(3, np.float32)}}, {"config": config})
    ckpt.save(2, {"params": {"w": np.ones(4, np.float32)}}, {"config": config})
    ckpt.close()
    with pytest.raises(CheckpointError, match="params/w differs") as e:
        average_checkpoints(str(tmp_path / "run"), 2, str(tmp_path / "avg"))
    one_line(e)
    assert not (tmp_path / "avg").exists()


def test_average_checks_the_newest_checkpoint_against_its_model(checkpoint, tmp_path):
    from nanoflow_jax.average import average_checkpoints

    meta = checkpoint / "0" / "meta" / "metadata"
    stored = json.loads(meta.read_text())
    stored["config"]["model"]["n_layers"] += 1
    meta.write_text(json.dumps(stored))
    with pytest.raises(CheckpointError, match="its model needs|missing array") as e:
        average_checkpoints(str(checkpoint), 1, str(tmp_path / "avg"))
    one_line(e)


def test_export_validates_platforms_and_frame_counts(converted, capsys):
    from nanoflow_jax.export.__main__ import main as export_main

    for flags, words in (
        (["--platforms", "bogus"], "--platforms"),
        (["--frames", str(2**24)], "2**31"),
    ):
        argv = ["--checkpoint", converted, "--frames", "8", "--out", "/tmp/never.jaxexport", *flags]
        with pytest.raises(SystemExit) as e:
            export_main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 2 and len(err) == 1 and words in err[0], err
    assert not os.path.exists("/tmp/never.jaxexport")


@pytest.mark.parametrize(
    "args, words",
    [
        ({"mel_stats": "stats.npy"}, "--mel_stats goes with --mel_convention espnet"),
        ({"mel_fmax": 8000.0}, "--mel_fmin / --mel_fmax"),
        ({"overlap_frames": 3}, "--overlap_frames goes with --chunk_frames"),
        ({"chunk_frames": 64, "denoise": 0.1}, "--denoise"),
    ],
)
def test_flags_that_do_nothing_alone_are_refused(tmp_path, args, words):
    mel = tmp_path / "m.npy"
    np.save(mel, np.zeros((80, 12), np.float32))
    with pytest.raises(UsageError, match=words):
        run(SynthArgs(mel=str(mel), out=str(tmp_path / "o.wav"), **args), log=lambda *_: None)


def test_a_pickle_naming_a_foreign_global_is_a_conversion_error(tmp_path):
    from untrusted_files import Raw, write_pt

    path = write_pt(tmp_path / "evil.pt", Raw("torch", "Module", ()))
    with pytest.raises(ConversionError) as e:
        state_dict_from(path)
    assert str(path) in one_line(e) or "not a state_dict" in one_line(e)


# ---- tracebacks become one line -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["text", "folder", "object", "truncated"])
def test_broken_npz_files_are_one_line(tmp_path, kind):
    path = tmp_path / "ckpt.npz"
    if kind == "text":
        path.write_text("not a zip")
    elif kind == "folder":
        path.mkdir()
    elif kind == "object":
        np.savez(path, a=np.array([{"x": 1}], dtype=object))
    else:
        np.savez(path, a=np.arange(1000, dtype=np.float32))
        path.write_bytes(path.read_bytes()[:-300])
    with pytest.raises(InputError) as e:
        read_npz(path, "official checkpoint")
    assert str(path) in one_line(e)


def test_a_float64_mel_beyond_float32_is_one_line(tmp_path):
    mel = tmp_path / "big.npy"
    np.save(mel, np.full((80, 12), 1e300))
    with pytest.raises(InputError, match="float32's range"):
        run(SynthArgs(mel=str(mel), out=str(tmp_path / "o.wav")), log=lambda *_: None)


def test_checkpoint_metadata_that_is_not_utf8_or_has_no_params_is_one_line(checkpoint, tmp_path):
    meta = checkpoint / "0" / "meta" / "metadata"
    good = meta.read_bytes()
    meta.write_bytes(b"\xff\xfe" + good)
    with pytest.raises(CheckpointError, match="not UTF-8") as e:
        load_checkpoint(str(checkpoint))
    one_line(e)
    meta.write_bytes(good)
    empty = save_params_folder(str(tmp_path / "noparams"), 0, {"w": np.ones(2, np.float32)}, json.loads(good))
    shutil.rmtree(os.path.join(empty, "0", "state"))
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(empty)
    one_line(e)


@pytest.mark.parametrize(
    "config, words",
    [("missing.py", "does not exist"), ("x.json", "is not allowed"), ("configs/demo.py:bogus", "unknown variant")],
)
def test_train_config_mistakes_are_one_clear_line(tmp_path, config, words):
    if config == "x.json":
        config = str(tmp_path / "x.json")
        open(config, "w").write("{}")
    code, lines = cli("train.py", f"--config={config}", f"--workdir={tmp_path / 'w'}")
    assert code != 0 and len(lines) == 1 and words in lines[0], lines


def test_evaluate_refuses_a_nan_temperature_and_a_bad_out_before_working(tmp_path, capsys):
    from nanoflow_jax.evaluate.__main__ import main as evaluate_main

    (tmp_path / "file").write_text("x")
    for argv in (["--temperature", "nan"], ["--out", str(tmp_path / "file" / "r.json")]):
        with pytest.raises(SystemExit) as e:
            evaluate_main(argv)
        assert e.value.code == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1


# ---- unclear lines --------------------------------------------------------------------------------------


def test_unclear_lines_name_the_problem(tmp_path):
    os.symlink(tmp_path / "loop", tmp_path / "loop")
    with pytest.raises(AudioReadError, match="symlink loop"):
        read_audio(tmp_path / "loop")
    locked = write_wav24(tmp_path / "locked.wav")
    os.chmod(locked, 0)
    if os.access(locked, os.R_OK):  # root reads everything
        pytest.skip("running as root: permissions are not enforced")
    with pytest.raises(AudioReadError, match="permission denied"):
        read_audio(locked)


def test_out_under_a_file_and_upper_case_wav(tmp_path):
    mel = tmp_path / "m.npy"
    np.save(mel, np.zeros((80, 12), np.float32))
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        atomic_write(str(tmp_path / "file" / "o.wav"), lambda f: f.write(b"x"))
    from nanoflow_jax.synth.command import _out_paths

    assert _out_paths(SynthArgs(mel=str(mel), out=str(tmp_path / "X.WAV")), [("mel", str(mel))]) == [
        str(tmp_path / "X.WAV")
    ]


# ---- litter: SIGTERM removes the temporary output -------------------------------------------------------


def test_sigterm_while_writing_leaves_no_temporary_file(tmp_path):
    out = tmp_path / "o.wav"

    def body():
        def write(f):
            f.write(b"partial")
            os.kill(os.getpid(), signal.SIGTERM)
            f.write(b"never")

        atomic_write(str(out), write, suffix=".wav")

    with pytest.raises(SystemExit) as e:
        run_cli(body, "synth.py")
    assert e.value.code == 143
    assert os.listdir(tmp_path) == []


# ---- no code runs: CIFAR-10's pickled batches -----------------------------------------------------------


def test_a_cifar_batch_is_read_with_array_globals_only(tmp_path):
    import pickle

    from nanoflow_jax.data.images import load_cifar10
    from nanoflow_jax.errors import DataError

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rows = np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(pickle.dumps({b"data": rows, b"labels": [0, 1]}, protocol=2))
    train, test = load_cifar10(str(tmp_path))
    assert train.shape == (10, 32, 32, 3) and test.shape == (2, 32, 32, 3)
    np.testing.assert_array_equal(test[0], rows[0].reshape(3, 32, 32).transpose(1, 2, 0))

    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    (folder / "test_batch").write_bytes(pickle.dumps({b"data": Evil()}, protocol=2))
    with pytest.raises(DataError, match="refusing the global posix.mkdir") as e:
        load_cifar10(str(tmp_path))
    one_line(e)
    assert not marker.exists()


def test_an_official_pt_is_bounded_by_the_model_it_must_fit(tmp_path):
    from untrusted_files import Storage, Tensor, write_pt

    from nanoflow_jax.convert import load_official

    big = Storage("0", np.zeros(8 << 20, np.float32))  # 32 MiB: more than the small model's params allow
    path = write_pt(tmp_path / "big.pt", {"w": Tensor(big)}, [big])
    with pytest.raises(ConversionError, match="exceed") as e:
        load_official(path, OFFICIAL_CONFIG)
    one_line(e)
