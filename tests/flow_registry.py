"""Every flow and bijection of the package, audio and image, in one registry for the generic invariants
(tests/test_flow_invariants.py): a new flow is one entry here and gets every check.

An entry builds a `Case`: an input x of batch 1, `forward(x) -> (y, log|det dy/dx| (1,))` with y any
pytree, `inverse(y) -> (x, its own log-det)`, and the tolerances the round trip is held to."""

from __future__ import annotations

import dataclasses
import functools
import zlib
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from nanoflow_jax.flows import SIGMOID_AFFINE
from nanoflow_jax.flows import image as F
from nanoflow_jax.flows import source_filter as sf
from nanoflow_jax.models import GlowConfig, ImageFlow
from nanoflow_jax.models.image_config import IMAGE_VARIANTS
from nanoflow_jax.models.source_filter import block_envelope
from tests.helpers import TINY_MODELS, model_and_params, tiny


@dataclasses.dataclass
class Case:
    x: jax.Array
    forward: Callable[[jax.Array], tuple[Any, jax.Array]]
    inverse: Callable[[Any], tuple[jax.Array, jax.Array]]
    x_atol: float = 1e-5
    logdet_rtol: float = 1e-4
    logdet_atol: float = 1e-3


# -- audio: every model variant, both couplings ----------------------------------------------------------
AUDIO_CASES = [(v, "affine") for v in TINY_MODELS] + [
    (v, "spline") for v in ("waveflow", "naive", "nanoflow", "nanoflow_partial")
]


def _audio(variant: str, coupling: str) -> Case:
    model, params, audio, mel = model_and_params(tiny(variant, coupling), batch=1, width=4)
    return Case(
        audio,
        lambda a: model.apply(params, a, mel),
        lambda z: model.apply(params, z, mel, method="inverse"),
        x_atol=1e-5 if coupling == "affine" else 1e-4,
    )


# -- the source filter: on a model, and the bare bijection -------------------------------------------------
# hop 16 and a 64-point mel, so a 64-sample clip spans four blocks of different filters
SOURCE_FILTER = dict(hop_length=16, lpc_order=4, n_fft=64, win_length=64, sample_rate=4000, fmax=2000.0)


def source_filter_config(mode: str):
    return dataclasses.replace(tiny("nanoflow"), source_filter=mode, **SOURCE_FILTER)


def _audio_source_filter(mode: str) -> Case:
    model, params, audio, mel = model_and_params(source_filter_config(mode), batch=1, width=16, frames=5)
    return Case(audio, lambda a: model.apply(params, a, mel), lambda z: model.apply(params, z, mel, method="inverse"))


def _source_filter_bijection() -> Case:
    cfg = source_filter_config("lpc")
    mel = 2.0 * jax.random.normal(jax.random.PRNGKey(5), (1, cfg.cond_channels, 5))
    a, log_gain = block_envelope(mel, cfg, 4)
    hop = cfg.hop_length

    def forward(x):
        e, log_det = sf.whiten(x, a, log_gain, hop)
        return e, jnp.sum(log_det, axis=1)

    def inverse(e):
        return sf.colour(e, a, log_gain, hop)[0], jnp.sum(sf.per_sample(log_gain, hop, e.shape[1]), axis=1)

    return Case(0.3 * jax.random.normal(jax.random.PRNGKey(6), (1, 4 * hop)), forward, inverse, logdet_rtol=1e-5)


# -- images: every Glow / NanoFlow-Glow variant, and each kind of step on its own ------------------------
IMAGE_SIZE = 8


@functools.cache
def image_model(variant: str) -> tuple[ImageFlow, Any, jax.Array]:
    """A tiny image flow of `variant`, its variables (projections and priors perturbed, so no coupling is
    the identity) and a batch of images."""
    cfg = GlowConfig(variant=variant, image_size=IMAGE_SIZE, hidden=8, n_levels=2, n_flows=2, embed_dim=2)
    model = ImageFlow(cfg)
    images = jax.random.randint(jax.random.PRNGKey(0), (6, IMAGE_SIZE, IMAGE_SIZE, 3), 0, 256)
    variables = jax.jit(model.init)(jax.random.PRNGKey(1), F.dequantize(images, jax.random.PRNGKey(1)))

    def perturb(path, a):
        names = {getattr(k, "key", None) for k in path}
        if names & {"proj", "split_prior", "top_prior", "gates"}:
            return a + 0.05 * jax.random.normal(jax.random.PRNGKey(zlib.crc32(str(path).encode())), a.shape)
        return a

    return model, jax.tree_util.tree_map_with_path(perturb, variables), images


def _image(variant: str) -> Case:
    model, v, images = image_model(variant)
    x = F.dequantize(images[:1], jax.random.PRNGKey(2))
    return Case(
        x,
        lambda a: model.apply(v, a)[:2],
        lambda zs: model.apply(v, zs, method="inverse"),
        logdet_rtol=1e-5,
    )


def _half_coupled(transform, x, h):
    """The second half of x's channels through `transform` with params from the estimator output h."""
    y, log_det = transform(x[..., 2:], F.coupling_pairs(h))
    return jnp.concatenate([x[..., :2], y], -1), jnp.sum(log_det, axis=(1, 2, 3))


STEP_TYPES = {
    "actnorm": (
        F.actnorm_forward,
        F.actnorm_inverse,
        lambda rng, c: {"bias": jax.random.normal(rng, (c,)), "logs": 0.3 * jax.random.normal(rng, (c,))},
    ),
    "invconv_lu": (
        lambda x, p: F.invconv_forward(x, *F.invconv_weight(*p)),
        lambda y, p: F.invconv_inverse(y, *F.invconv_weight(*p)),
        lambda rng, c: F.lu_init(rng, c),
    ),
    "invconv_plain": (
        lambda x, p: F.invconv_forward(x, *F.invconv_weight(p, None)),
        lambda y, p: F.invconv_inverse(y, *F.invconv_weight(p, None)),
        lambda rng, c: {"weight": jax.random.normal(rng, (c, c))},
    ),
    "glow_coupling": (
        lambda x, h: _half_coupled(SIGMOID_AFFINE.forward, x, h),
        lambda y, h: _half_coupled(SIGMOID_AFFINE.inverse, y, h),
        lambda rng, c: jax.random.normal(rng, (1, 2, 2, 4)),
    ),
}


def _step(name: str) -> Case:
    fwd, inv, make = STEP_TYPES[name]
    p = make(jax.random.PRNGKey(3), 4)
    x = jax.random.normal(jax.random.PRNGKey(4), (1, 2, 2, 4))
    return Case(x, lambda a: fwd(a, p), lambda y: inv(y, p), logdet_rtol=1e-6, logdet_atol=1e-6)


FLOWS: dict[str, Callable[[], Case]] = {
    **{f"audio/{v}/{c}": functools.partial(_audio, v, c) for v, c in AUDIO_CASES},
    **{f"audio/source_filter/{m}": functools.partial(_audio_source_filter, m) for m in ("gain", "lpc")},
    "bijection/source_filter": _source_filter_bijection,
    **{f"image/{v}": functools.partial(_image, v) for v in IMAGE_VARIANTS},
    **{f"step/{n}": functools.partial(_step, n) for n in STEP_TYPES},
}
