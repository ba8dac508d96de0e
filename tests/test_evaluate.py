"""The evaluation command on recorded prompts of five speakers: the held-out split, the table, the JSON,
and a model that cannot vocode measured as worse than Griffin-Lim."""

import json
import math
import os

import jax
import numpy as np
import pytest

import nanoflow_jax as nf
from nanoflow_jax.checkpoints import save_params_folder
from nanoflow_jax.evaluate import held_out
from nanoflow_jax.evaluate.__main__ import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(ROOT, "tests", "data", "asterisk_sample")
SPLIT = {"source": "folder", "path": SAMPLE, "test_fraction": 0.1, "test_split": "per_folder"}
SPEAKERS = ["en_US_f_Allison", "es_MX_f_Allison", "fr_CA_f_June", "it_IT_m_Carlo", "ru_RU_f_IvrvoiceRU"]


def test_held_out_is_the_first_prompt_of_each_speaker():
    speakers = held_out(SPLIT, None, None)
    assert list(speakers) == SPEAKERS
    assert [os.path.basename(f[0]) for f in speakers.values()] == [
        "en-activated.wav",
        "es-conf-thereare.wav",
        "fr-call-waiting.wav",
        "it-agent-loggedoff.wav",
        "ru-activated.wav",
    ]
    assert all(len(f) == 1 for f in speakers.values())
    # a demo run's data section names the bundled corpus as "demo", as training reads it
    demo = held_out({"source": "folder", "path": "demo", "test_fraction": 0.1}, None, 2)
    assert [len(f) for f in demo.values()] == [2] and all(os.path.exists(f) for f in demo["demo_corpus"])


@pytest.fixture(scope="module")
def untrained(tmp_path_factory):
    """A checkpoint of an untrained (near-identity) model: its synthesis is the latent noise."""
    cfg = nf.ModelConfig(variant="nanoflow", n_flows=2, n_layers=2, channels=8, n_groups=8, embed_dim=4)
    model = nf.build_model(cfg)
    params = nf.init_params(model, jax.random.PRNGKey(0))
    data = dict(SPLIT, sample_rate=22050)
    folder = tmp_path_factory.mktemp("eval") / "untrained"
    return save_params_folder(str(folder), 0, params, {"config": {"model": cfg.to_dict(), "data": data}})


def test_evaluate_writes_the_table_and_every_figure(untrained, tmp_path, capsys):
    out = tmp_path / "eval.json"
    main(["--checkpoint", untrained, "--per_speaker", "1", "--griffin_lim_iters", "4", "--out", str(out)])
    table = capsys.readouterr().out
    assert "| **all** | model | 5 |" in table and "| **all** | Griffin-Lim (4 it.) | 5 |" in table
    result = json.loads(out.read_text())
    assert result["temperature"] == 0.8 and list(result["held_out"]) == SPEAKERS
    assert len(result["utterances"]) == 5
    for row in result["utterances"]:
        assert row["ll"] is not None and math.isfinite(row["ll"])
        for system in ("model", "griffin_lim", "lpc_noise"):
            assert set(row[system]) == {*nf.audio.quality.METRICS, "rtf"}
            assert row[system]["rtf"] > 0
    model, gl = result["mean"]["model"], result["mean"]["griffin_lim"]
    # white noise against a real inversion of the mel: the metrics must tell them apart
    assert model["log_mel_l1"] > 3 * gl["log_mel_l1"]
    assert model["stoi"] < gl["stoi"] and model["mcd_db"] > gl["mcd_db"]
    assert gl["ll"] is None  # Griffin-Lim has no likelihood
    # the floor of a source-filter model follows the mel's envelope: far closer to it than white noise
    floor = result["mean"]["lpc_noise"]
    assert "| **all** | noise through the mel's LPC envelope | 5 |" in table
    assert floor["log_mel_l1"] < 0.5 * model["log_mel_l1"] and floor["stoi"] > model["stoi"]
    # an untrained model is the identity (zero-initialised heads): its LL is the standard normal's of the
    # audio itself, -(ln(2 pi) + E[x^2]) / 2 per sample
    x, sr = nf.audio.read_audio(result["held_out"]["en_US_f_Allison"][0])
    x = nf.audio.resample(x, sr, 22050)
    x = x[: len(x) // 256 * 256].astype(np.float64)
    expected = -0.5 * (math.log(2 * math.pi) + np.mean(x**2))
    assert result["utterances"][0]["ll"] == pytest.approx(expected, abs=1e-4)


def test_evaluate_bad_arguments_are_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--checkpoint", "/nonexistent/run", "--out", "x.json"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("evaluate: error:")
    with pytest.raises(SystemExit) as e:
        main(["--per_speaker", "-1"])
    assert e.value.code == 2 and "--per_speaker" in capsys.readouterr().err


def test_evaluate_without_the_corpus_says_how_to_make_it(untrained, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--checkpoint", untrained, "--data", str(tmp_path / "missing")])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and "tools/make_speech_corpus.py" in err[0]
