"""The audio flows' structure: the scan against an unrolled loop, the inference form, sharing, the row
layout, the spline, errors. (Invertibility and log-determinants of every flow: tests/test_flow_invariants.py.)"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nanoflow_jax as nf
from nanoflow_jax.flows import flip_rows, from_rows, shift_rows, spline, to_rows
from tests.helpers import TINY_MODELS, max_err, model_and_params, tiny


class _Unrolled(nf.AudioFlow):
    """The flows in a Python loop instead of `nn.scan` (a check of the scan; its program grows with K)."""

    def _scan(self, step, carry, xs, reverse=False):
        k = self.config.n_flows
        ys = [None] * k
        for i in reversed(range(k)) if reverse else range(k):
            carry, ys[i] = step(self, carry, jax.tree.map(lambda a, i=i: a[i], xs))
        return carry, (None if ys[0] is None else jax.tree.map(lambda *a: jnp.stack(a), *ys))


@pytest.mark.parametrize("variant", list(TINY_MODELS))
def test_scan_equals_unrolled_loop(variant):
    cfg = tiny(variant)
    model, params, audio, mel = model_and_params(cfg)
    z, logdet = model.apply(params, audio, mel)
    unrolled = _Unrolled(cfg)
    z2, logdet2 = unrolled.apply(params, audio, mel)
    assert max_err(z, z2) < 1e-5 and max_err(logdet, logdet2) < 1e-4
    x2 = unrolled.apply(params, z, mel, method="inverse")[0]
    assert max_err(x2, audio) < 1e-5


@pytest.mark.parametrize("variant", list(TINY_MODELS))
def test_inference_params_compute_the_same_function(variant):
    cfg = tiny(variant)
    model, params, audio, mel = model_and_params(cfg)
    ip = nf.inference_params(model, params)
    z, logdet = model.apply(params, audio, mel)
    z2, logdet2 = model.apply(ip, audio, mel)
    assert max_err(z, z2) < 1e-5 and max_err(logdet, logdet2) < 1e-4
    assert max_err(model.apply(ip, z, mel, method="inverse")[0], audio) < 1e-5
    assert nf.count_params(ip) <= nf.count_params(params)


@pytest.mark.parametrize("variant", ["naive", "decomp", "nanoflow", "nanoflow_partial"])
def test_shared_estimator_size_does_not_depend_on_k(variant):
    sizes = {}
    for k in (2, 8):
        cfg = dataclasses.replace(tiny(variant), n_flows=k)
        shapes = jax.eval_shape(lambda cfg=cfg: nf.init_params(nf.build_model(cfg), jax.random.PRNGKey(0)))
        sizes[k] = nf.count_params(shapes["params"]["estimator"])
    assert sizes[2] == sizes[8] > 0


def test_waveflow_estimators_are_stacked_per_flow():
    for k in (2, 5):
        cfg = dataclasses.replace(tiny("waveflow"), n_flows=k)
        shapes = jax.eval_shape(lambda cfg=cfg: nf.init_params(nf.build_model(cfg), jax.random.PRNGKey(0)))
        p = shapes["params"]
        assert "estimator" not in p
        assert all(a.shape[0] == k for a in jax.tree.leaves(p["per_flow_estimator"]))


def test_per_flow_estimators_are_distinct_at_init():
    model, params, *_ = model_and_params(tiny("waveflow"))
    v = params["params"]["per_flow_estimator"]["layer_0"]["conv"]["v"]
    assert max_err(v[0], v[1]) > 1e-3


# -- pure flow algebra --------------------------------------------------------------------------
def test_squeeze_layout_and_roundtrip():
    x = jnp.arange(2 * 12).reshape(2, 12).astype(jnp.float32)
    x2d = to_rows(x, 4)
    assert x2d.shape == (2, 4, 3)
    assert float(x2d[1, 2, 1]) == float(x[1, 1 * 4 + 2])  # x2d[b, i, j] = x[b, j*G + i]
    np.testing.assert_array_equal(from_rows(x2d), x)
    np.testing.assert_array_equal(flip_rows(flip_rows(x2d)), x2d)
    s = shift_rows(x2d, 0)  # down the rows
    np.testing.assert_array_equal(s[:, 0], 0)
    np.testing.assert_array_equal(s[:, 1:], x2d[:, :-1])
    up = jax.jit(shift_rows)(x2d, jnp.int32(1))  # up the rows: the mirror image
    np.testing.assert_array_equal(up, flip_rows(shift_rows(flip_rows(x2d), 0)))
    with pytest.raises(ValueError, match="multiple of n_groups"):
        to_rows(jnp.zeros((1, 10)), 4)


def test_spline_identity_inverse_and_derivative():
    bins, bound = 6, 2.0
    x = jnp.linspace(-3.0, 3.0, 41)
    zero = jnp.zeros((41, spline.n_params(bins)))
    y, ld = spline.forward(x, zero, bound)
    assert max_err(y, x) < 1e-5 and max_err(ld, 0.0) < 1e-5
    # one spline for every element, so y must rise along x
    p = jnp.broadcast_to(jax.random.normal(jax.random.PRNGKey(0), zero.shape[1:]), zero.shape)
    y, ld = spline.forward(x, p, bound)
    assert max_err(y, x) > 1e-2
    assert bool(jnp.all(jnp.diff(y) > 0)), "spline must be increasing"
    x2, ld2 = spline.inverse(y, p, bound)
    assert max_err(x2, x) < 1e-5 and max_err(ld, -ld2) < 1e-5
    dydx = jax.vmap(jax.grad(lambda xi, pi: spline.forward(xi, pi, bound)[0]))(x, p)
    assert max_err(jnp.log(dydx), ld) < 1e-4


def test_bad_inputs_are_clear_errors():
    cfg = tiny("nanoflow")
    model, params, audio, mel = model_and_params(cfg)
    with pytest.raises(ValueError, match="multiple of n_groups"):
        model.apply(params, audio[:, :-1], mel)
    with pytest.raises(ValueError, match=r"mel must be \(batch, 5, frames\)"):
        model.apply(params, audio, mel[:, :3])
    with pytest.raises(ValueError, match="condition at most"):
        model.apply(params, jnp.zeros((2, 4 * 100)), mel)
    with pytest.raises(ValueError, match=r"\(batch, samples\)"):
        model.apply(params, audio[0], mel)


def test_nll_per_item_is_the_loss_per_item_and_masks_padding():
    from nanoflow_jax.flows import nll, nll_per_item

    z = jax.random.normal(jax.random.PRNGKey(0), (3, 64))
    logdet = jnp.asarray([1.0, -2.0, 0.5])
    per = nll_per_item(z, logdet)
    np.testing.assert_allclose(per.mean(), nll(z, logdet), rtol=1e-6)
    for b in range(3):
        np.testing.assert_allclose(per[b], nll(z[b : b + 1], logdet[b : b + 1]), rtol=1e-6)
    lengths = jnp.asarray([64, 40, 8])
    padded = z.at[1, 40:].set(1e3).at[2, 8:].set(-1e3)  # what lies past an item's length is ignored
    masked = nll_per_item(padded, logdet, lengths)
    for b, t in enumerate([64, 40, 8]):
        np.testing.assert_allclose(masked[b], nll(z[b : b + 1, :t], logdet[b : b + 1]), rtol=1e-6)
