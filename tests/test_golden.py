"""Parity with the official PyTorch implementation (golden arrays in tests/data, see tools/extract_golden.py)."""

import json
import os

import numpy as np
import pytest

import nanoflow_jax as nf
from tests.conftest import DATA

MODELS = ("waveflow_small", "nanoflow_naive_small", "nanoflow_decomp_small", "nanoflow_small")
CONFIGS = json.load(open(os.path.join(DATA, "golden_configs.json")))


def official_config(name):
    if name == "nanoflow_small":  # the full JSON file, as users have it
        return os.path.join(DATA, "nanoflow_small_config.json")
    return CONFIGS[name]["config"]


def flat(z2d):
    """Official (B, 1, G, W) layout -> (B, T)."""
    b, _, g, w = z2d.shape
    return z2d[:, 0].transpose(0, 2, 1).reshape(b, g * w)


@pytest.fixture(scope="module", params=MODELS)
def golden(request):
    name = request.param
    d = dict(np.load(os.path.join(DATA, name + ".npz")))
    state_dict = {k[len("param/") :]: v for k, v in d.items() if k.startswith("param/")}
    model, params = nf.load_official(state_dict, official_config(name))
    return name, d, model, params


def test_forward_matches_official(golden):
    name, d, model, params = golden
    z, logdet, ps = model.apply(params, d["x"], d["mel"], return_coupling_params=True)
    np.testing.assert_allclose(z, flat(d["z"]), atol=1e-5, rtol=0)
    np.testing.assert_allclose(float(nf.nll(z, logdet)), float(d["loss"]), atol=1e-5, rtol=0)
    # the official logdet is summed over the batch
    np.testing.assert_allclose(float(logdet.sum()), float(d["logdet"]), rtol=2e-6)
    if name != "nanoflow_naive_small":  # the official naive model has no per-flow debug output
        for k in range(model.config.n_flows):
            np.testing.assert_allclose(ps[k][..., 0], d[f"fwd_log_s/{k}"][:, 0], atol=1e-5, rtol=0)
            np.testing.assert_allclose(ps[k][..., 1], d[f"fwd_t/{k}"][:, 0], atol=1e-5, rtol=0)


def test_conditioner_matches_official(golden):
    _, d, model, params = golden
    c = model.apply(params, d["mel"], method=lambda m, mel: m.conditioner(mel))
    assert c.shape[1] == int(d["c_up_len"])
    np.testing.assert_allclose(np.swapaxes(c[:, :512], 1, 2), d["c_up_first512"], atol=1e-5, rtol=0)


def test_inverse_matches_official(golden):
    name, d, model, params = golden
    x = model.apply(params, flat(d["z"]), d["mel"], method="inverse")[0]
    np.testing.assert_allclose(x, d["x"], atol=1e-4, rtol=0)
    audio = model.apply(params, flat(d["z_syn"]), d["mel"], method="inverse")[0]
    np.testing.assert_allclose(audio, d["audio_syn_slow"], atol=1e-4, rtol=0)


def test_inference_params_same_function(golden):
    _, d, model, params = golden
    ip = nf.inference_params(model, params)
    leaves = [k for k, _ in __import__("jax").tree_util.tree_leaves_with_path(ip)]
    assert not any("'v'" in str(k) or "'g'" in str(k) for k in leaves), "weight norm not folded"
    z, logdet = model.apply(ip, d["x"], d["mel"])
    np.testing.assert_allclose(z, flat(d["z"]), atol=1e-5, rtol=0)
    np.testing.assert_allclose(float(nf.nll(z, logdet)), float(d["loss"]), atol=1e-5, rtol=0)


def test_flow_bias_table_matches_official_cache():
    d = np.load(os.path.join(DATA, "nanoflow_small.npz"))
    state_dict = {k[len("param/") :]: d[k] for k in d.files if k.startswith("param/")}
    model, params = nf.load_official(state_dict, official_config("nanoflow_small"))
    table = nf.inference_params(model, params)["params"]["flow_bias_table"]
    # official h_cache[i] belongs to flow K-1-i, shape (K, L, 2C, 1, 1)
    np.testing.assert_allclose(table[::-1], d["h_cache"][..., 0, 0], atol=1e-5, rtol=0)


def test_pt_checkpoint_loads_without_torch():
    """The torch-free reader gives the checkpoint's exact tensors (the golden params were saved from the
    same weights), and the model loaded from the .pt computes the official z."""
    from nanoflow_jax.convert import read_torch_checkpoint

    d = np.load(os.path.join(DATA, "nanoflow_small.npz"))
    pt = os.path.join(DATA, "nanoflow_small_official_ckpt.pt")
    checkpoint = read_torch_checkpoint(pt)
    tensors = checkpoint["model"]
    golden = {k[len("param/") :]: d[k] for k in d.files if k.startswith("param/")}
    assert set(tensors) == set(golden) | {"h_cache"}
    for name, want in golden.items():
        assert tensors[name].dtype == np.float32 and tensors[name].shape == want.shape, name
        np.testing.assert_array_equal(tensors[name], want, err_msg=name)
    np.testing.assert_array_equal(tensors["h_cache"], d["h_cache"])
    model, params = nf.load_official(pt, official_config("nanoflow_small"))
    z, logdet = model.apply(params, d["x"], d["mel"])
    np.testing.assert_allclose(z, flat(d["z"]), atol=1e-5, rtol=0)
    np.testing.assert_allclose(float(nf.nll(z, logdet)), float(d["loss"]), atol=1e-5, rtol=0)
    assert model.config.embed_weight_norm  # the official embedding projections are always weight-normed
    assert "v" in params["params"]["estimator"]["layer_0"]["embed_proj"]


def _state_dict(name):
    d = np.load(os.path.join(DATA, name + ".npz"))
    return {k[len("param/") :]: d[k] for k in d.files if k.startswith("param/")}


def test_missing_tensor_is_named():
    sd = _state_dict("nanoflow_decomp_small")
    del sd["flows.2.proj_log_s_t.conv.bias"]
    with pytest.raises(ValueError, match=r"flows\.2\.proj_log_s_t\.conv\.bias"):
        nf.load_official(sd, CONFIGS["nanoflow_decomp_small"]["config"])


def test_unknown_tensor_is_named():
    sd = _state_dict("nanoflow_decomp_small")
    sd["flows.9.proj_log_s_t.scale"] = np.zeros((1, 2, 1, 1), np.float32)
    with pytest.raises(ValueError, match=r"flows\.9\.proj_log_s_t\.scale"):
        nf.load_official(sd, CONFIGS["nanoflow_decomp_small"]["config"])


def test_misshaped_tensor_is_named():
    sd = _state_dict("nanoflow_decomp_small")
    sd["estimator.net.res_blocks.1.res_skip_conv.weight_v"] = np.zeros((64, 31, 1, 1), np.float32)
    with pytest.raises(ValueError, match=r"layer_1.*res_skip.*shape"):
        nf.load_official(sd, CONFIGS["nanoflow_decomp_small"]["config"])


def test_config_mismatch_is_an_error():
    sd = _state_dict("nanoflow_decomp_small")
    cfg = dict(CONFIGS["nanoflow_decomp_small"]["config"], res_channels=64)
    with pytest.raises(ValueError, match="disagree on res_channels: the checkpoint has 32, the config says 64"):
        nf.load_official(sd, cfg)


def test_official_model_with_short_receptive_field_and_normed_embedding(caplog):
    """An official NanoFlow whose estimator sees 11 of G=16 rows, with a weight-normed embedding table
    (tools/make_official_golden.py): it loads (one warning), and forward, slow inverse and fast
    synthesis match the official code."""
    d = dict(np.load(os.path.join(DATA, "nanoflow_short_field.npz")))
    state_dict = {k[len("param/") :]: v for k, v in d.items() if k.startswith("param/")}
    assert "flow_embedding.weight_g" in state_dict
    with caplog.at_level("WARNING", logger="nanoflow_jax"):
        model, params = nf.load_official(state_dict, os.path.join(DATA, "nanoflow_short_field.json"))
    assert model.config.receptive_rows == 11 and model.config.n_groups == 16
    z, logdet = model.apply(params, d["x"], d["mel"])
    np.testing.assert_allclose(z, flat(d["z"]), atol=1e-5, rtol=0)
    np.testing.assert_allclose(float(nf.nll(z, logdet)), float(d["loss"]), atol=1e-5, rtol=0)
    z_syn = flat(d["z_syn"])
    slow = model.apply(params, z_syn, d["mel"], method="inverse")[0]
    np.testing.assert_allclose(slow, d["audio_syn"], atol=1e-4, rtol=0)
    fast = nf.synthesize(model, params, d["mel"], z=z_syn)
    np.testing.assert_allclose(fast, d["audio_syn"], atol=1e-4, rtol=0)
