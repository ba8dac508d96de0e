"""The audio flow's params: initialisation without data, expected shapes, and the inference form
(weight norm and the embedding projections folded)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from nanoflow_jax.models.audio_flow import AudioFlow
from nanoflow_jax.models.layers import weight_norm


def dummy_inputs(model: AudioFlow, batch: int = 1, frames: int = 1):
    """The smallest (audio, mel) the model takes: at least one column of G samples."""
    cfg = model.config
    frames = max(frames, -(-cfg.n_groups // cfg.hop_length))
    t = cfg.hop_length * frames // cfg.n_groups * cfg.n_groups
    return jnp.zeros((batch, t), jnp.float32), jnp.zeros((batch, cfg.cond_channels, frames), jnp.float32)


def init_params(model: AudioFlow, rng: jax.Array) -> dict:
    """Training-form params for `model` without a real batch."""
    return model.init(rng, *dummy_inputs(model))


def expected_shapes(model: AudioFlow) -> Any:
    return jax.eval_shape(lambda: init_params(model, jax.random.PRNGKey(0)))


def _fold_weight_norm(tree: Any, stacked: bool = False) -> Any:
    if not isinstance(tree, dict):
        return tree
    if "v" in tree and "g" in tree:
        out = {k: v for k, v in tree.items() if k not in ("v", "g")}
        fold = jax.vmap(weight_norm) if stacked else weight_norm
        out["kernel"] = fold(jnp.asarray(tree["v"]), jnp.asarray(tree["g"]))
        return out
    return {k: _fold_weight_norm(v, stacked or k == "per_flow_estimator") for k, v in tree.items()}


def _drop(tree: Any, key: str) -> Any:
    if not isinstance(tree, dict):
        return tree
    return {k: _drop(v, key) for k, v in tree.items() if k != key}


def inference_params(model: AudioFlow, params: Any) -> dict:
    """Training-form params -> the form used for synthesis: weight norm folded into plain kernels and,
    for NanoFlow's additive embedding, the per-layer projections of every flow embedding folded into a
    (K, L, 2C) `flow_bias_table` (the embedding is kept only when concatenative injection needs it).
    The model accepts both forms and computes the same function."""
    cfg = model.config
    p = dict(params["params"])
    if "flow_bias_table" in p:
        return {"params": _fold_weight_norm(p)}
    if cfg.injects("additive"):
        p["flow_bias_table"] = model.apply(params, method=AudioFlow.flow_bias)
        p = _drop(p, "embed_proj")
        if not cfg.injects("concat"):
            del p["flow_embedding"]
    return {"params": _fold_weight_norm(p)}
