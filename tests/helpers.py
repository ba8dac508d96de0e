"""Shared test helpers: tiny configs and params perturbed away from the near-identity init."""

import dataclasses
import functools

import jax
import jax.numpy as jnp

import nanoflow_jax as nf

TINY = nf.ModelConfig(variant="nanoflow", n_flows=3, n_layers=2, channels=8, n_groups=4, cond_channels=5, embed_dim=4)

# every architecture option we support, on tiny shapes
TINY_MODELS = {
    "waveflow": dict(variant="waveflow"),
    "naive": dict(variant="nanoflow_naive"),
    "decomp": dict(variant="nanoflow_decomp"),
    "nanoflow": dict(variant="nanoflow"),
    "nanoflow_even_k": dict(variant="nanoflow", n_flows=4),
    "nanoflow_exp_gate": dict(variant="nanoflow", gate_form="exp"),
    "nanoflow_additive": dict(variant="nanoflow", embed_injection=("additive",)),
    "nanoflow_mult": dict(variant="nanoflow", embed_injection=("multiplicative",)),
    "nanoflow_concat": dict(variant="nanoflow", embed_injection=("concat",)),
    "nanoflow_all_inject_wn": dict(
        variant="nanoflow", embed_injection=("additive", "multiplicative", "concat"), embed_weight_norm=True
    ),
    "nanoflow_partial": dict(variant="nanoflow", n_layers=3, shared_layers=1),
    "decomp_partial": dict(variant="nanoflow_decomp", n_layers=3, shared_layers=2),
    "dilation_cycle": dict(variant="nanoflow", n_groups=8, n_layers=3, height_dilation_cycle=2),
}


def tiny(name: str, coupling: str = "affine") -> nf.ModelConfig:
    extra = {"spline_bins": 4, "spline_tail_bound": 3.0} if coupling == "spline" else {}
    return dataclasses.replace(TINY, coupling=coupling, **extra, **TINY_MODELS[name])


def perturb(params, rng, scale: float = 0.3):
    """Randomise the zero-initialised heads (and gates) so every flow does real work."""
    p = jax.tree.map(lambda a: a, params)
    heads = p["params"]["proj_heads"]
    keys = jax.random.split(rng, 4)
    heads["kernel"] = scale * jax.random.normal(keys[0], heads["kernel"].shape)
    heads["bias"] = 0.1 * jax.random.normal(keys[1], heads["bias"].shape)
    heads["scale"] = 0.05 * jax.random.normal(keys[2], heads["scale"].shape)
    if "flow_gates" in p["params"]:
        g = p["params"]["flow_gates"]
        p["params"]["flow_gates"] = g + 0.1 * jax.random.normal(keys[3], g.shape)
    return p


def inputs(cfg: nf.ModelConfig, batch: int = 2, width: int = 8, frames: int = 1, seed: int = 0):
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    t = cfg.n_groups * width
    audio = 0.5 * jax.random.normal(k1, (batch, t))
    mel = jax.random.normal(k2, (batch, cfg.cond_channels, frames))
    return audio, mel


@functools.cache
def _init(cfg: nf.ModelConfig, seed: int):
    # params do not depend on the input length: init on the smallest input; tests share each config's
    # params (initialising a model costs seconds of compilation)
    model = nf.build_model(cfg)
    return perturb(jax.jit(model.init)(jax.random.PRNGKey(seed), *inputs(cfg, 1, 1)), jax.random.PRNGKey(seed + 1))


def model_and_params(cfg: nf.ModelConfig, seed: int = 0, **inputs_kw):
    audio, mel = inputs(cfg, **inputs_kw)
    params = jax.tree.map(lambda a: a, _init(cfg, seed))  # fresh containers: callers may edit them
    return nf.build_model(cfg), params, audio, mel


def max_err(a, b) -> float:
    return float(jnp.max(jnp.abs(jnp.asarray(a) - jnp.asarray(b))))
