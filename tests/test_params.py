"""Parameter counts of configs/ against the official ones (the official code's models, paper Table 2)."""

import jax
import pytest

import nanoflow_jax as nf
from configs import ljspeech

# configs/ljspeech.py variant -> (inference count, training count)
TABLE = {
    "waveflow_c128": (22_335_714, 22_385_892),
    "waveflow_c64": (5_925_090, 5_950_180),
    "nanoflow_naive": (2_792_134, 2_798_408),
    "nanoflow_decomp": (2_793_954, 2_800_228),
    "nanoflow": (2_818_530, 3_865_188),
    "nanoflow_k16": (2_845_186, 4_936_324),
    "nanoflow_c64": (754_018, 1_279_396),
}


def test_every_variant_is_in_the_table():
    assert set(TABLE) == set(ljspeech.VARIANTS)


def shapes(name):
    cfg = ljspeech.get_config(name)
    model = nf.build_model(cfg.model)
    params = jax.eval_shape(lambda: nf.init_params(model, jax.random.PRNGKey(0)))
    inference = jax.eval_shape(lambda p: nf.inference_params(model, p), params)
    return model, params, inference


@pytest.mark.parametrize("name", list(TABLE))
def test_param_counts_match_official(name):
    _, params, inference = shapes(name)
    assert (nf.count_params(inference), nf.count_params(params)) == TABLE[name]


def test_count_does_not_depend_on_g():
    cfg = ljspeech.get_config("nanoflow_c64")
    for g, cycle in ((8, 1), (32, 3), (64, 5)):
        cfg.model.n_groups, cfg.model.height_dilation_cycle = g, cycle
        model = nf.build_model(cfg.model)
        params = jax.eval_shape(lambda model=model: nf.init_params(model, jax.random.PRNGKey(0)))
        inference = jax.eval_shape(lambda p, model=model: nf.inference_params(model, p), params)
        assert nf.count_params(inference) == TABLE["nanoflow_c64"][0]
