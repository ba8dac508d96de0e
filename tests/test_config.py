"""Model configs: validation, and equivalence of configs/ with the official JSON configs."""

import json

import pytest

import nanoflow_jax as nf
from configs import ljspeech


def official(coupling, channels=128, n_flow=8, **extra):
    sec = dict(
        model_name="x",
        cin_channels=80,
        res_channels=channels,
        n_height=16,
        n_layer=8,
        n_flow=n_flow,
        n_layer_per_cycle=1,
        coupling_type=coupling,
        **extra,
    )
    return {"train_config": {}, "waveflow_config": sec}


OFFICIAL = {  # configs/ljspeech.py variant -> the official JSON it reproduces
    "waveflow_c128": official("waveflow"),
    "waveflow_c64": official("waveflow", channels=64),
    "nanoflow_naive": official("nanoflow_naive"),
    "nanoflow_decomp": official("nanoflow_decomp"),
    "nanoflow": official("nanoflow", size_flow_embed=512, use_weightnorm_embed="False"),
    "nanoflow_k16": official("nanoflow", n_flow=16, size_flow_embed=1024, use_weightnorm_embed="False"),
}


@pytest.mark.parametrize("name", list(OFFICIAL))
def test_configs_mirror_official(name, tmp_path):
    ours = nf.ModelConfig.from_any(ljspeech.get_config(name).model)
    theirs = nf.config_from_official(OFFICIAL[name])
    for f in ("variant", "n_flows", "n_layers", "channels", "n_groups", "height_dilation_cycle"):
        assert getattr(ours, f) == getattr(theirs, f), f
    if ours.variant == "nanoflow":
        assert (ours.embed_dim, ours.embed_weight_norm) == (theirs.embed_dim, theirs.embed_weight_norm)
    # the same from a JSON path and from the bare waveflow_config section
    path = tmp_path / "c.json"
    path.write_text(json.dumps(OFFICIAL[name]))
    assert nf.config_from_official(str(path)) == theirs == nf.config_from_official(OFFICIAL[name]["waveflow_config"])


@pytest.mark.parametrize(
    "bad,match",
    [
        (dict(variant="glowish"), "variant"),
        (dict(n_flows=0), "n_flows"),
        (dict(embed_injection=("additive", "sideways")), "embed_injection"),
        (dict(gate_form="sigmoid"), "gate_form"),
        (dict(coupling="cubic"), "coupling"),
        (dict(variant="waveflow", shared_layers=2), "shared_layers"),
        (dict(shared_layers=9), "shared_layers"),
    ],
)
def test_bad_model_config_is_a_clear_error(bad, match):
    with pytest.raises(ValueError, match=match):
        nf.ModelConfig(**bad)


def test_short_receptive_field_is_one_warning(caplog):
    """G rows beyond the estimator's reach are valid (the official code builds such models): a warning
    naming the rows seen, once per shape, not an error."""
    from nanoflow_jax.models.audio_config import _warn_short_receptive_field

    _warn_short_receptive_field.cache_clear()  # earlier tests may have built this shape
    with caplog.at_level("WARNING", logger="nanoflow_jax"):
        cfg = nf.ModelConfig(n_groups=16, n_layers=5)
        nf.ModelConfig(n_groups=16, n_layers=5)
    assert cfg.receptive_rows == 11
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "sees 11 rows of the n_groups=16" in lines[0], lines


def test_unknown_field_is_named():
    with pytest.raises(ValueError, match="model.n_flow;"):
        nf.build_model({"n_flow": 8})


def test_official_config_errors(tmp_path):
    with pytest.raises(ValueError, match="n_flow"):
        nf.config_from_official({"waveflow_config": {"res_channels": 64}})
    with pytest.raises(ValueError, match="coupling_type"):
        nf.config_from_official(official("glow"))
    with pytest.raises(ValueError, match="missing.json does not exist"):
        nf.config_from_official(str(tmp_path / "missing.json"))
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(ValueError, match="not valid JSON"):
        nf.config_from_official(str(tmp_path / "bad.json"))
