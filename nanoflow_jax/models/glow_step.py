"""One Glow step as a Flax module: ActNorm -> invertible 1x1 convolution -> affine coupling of the second
half of the channels, given the first through the estimator. `GlowStep.forward` and `.inverse` each
return their own log-determinant; the image flow runs a level's K steps under `nn.scan`, so their params
are stacked (K, ...).

Schemes (`image_config.IMAGE_VARIANTS`): Glow gives each step its own estimator; the NanoFlow variants
share one per level, passed in as params (`shared`: {"estimator"[, "proj"]}), and add a per-step
embedding map (normalised by its own ActNorm) to its input and gates to its activations.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from nanoflow_jax.flows import SIGMOID_AFFINE
from nanoflow_jax.flows import image as F
from nanoflow_jax.models.glow_estimators import ActNorm, ConvStack, ZeroConv, zero_conv
from nanoflow_jax.models.image_config import CONV_STACKS, GlowConfig

Array = jax.Array
N_GATES = 6  # the official per-step gate array is (6, hidden) whatever the stack's depth


def level_shape(config: GlowConfig, level: int) -> tuple[int, int]:
    """(spatial size, channels) of level `level`'s steps: x4 channels by each squeeze, /2 by each split."""
    return config.image_size // 2 ** (level + 1), config.channels * 4 * 2**level


def embed_channels(config: GlowConfig, level: int) -> int:
    return config.embed_dim * 2**level if config.scheme.embedded else 0


def estimator_stack(config: GlowConfig, dtype: Any, **module_args: Any) -> ConvStack:
    """The estimator of `config`'s scheme; `parent=None` gives it unbound (a level's shared one is applied
    from its params)."""
    return ConvStack(config.hidden, CONV_STACKS[config.scheme.stack], config.actnorm_scale, dtype, **module_args)


def projection_kernel(config: GlowConfig) -> int:
    return 3 if config.scheme.stack == "small" else 1


class InvConv1x1(nn.Module):
    """The invertible 1x1 convolution, a random rotation at init: in LU form (the permutation and signs
    fixed, in the "buffers" collection) or a plain matrix."""

    lu: bool = True

    @nn.compact
    def __call__(self, x: Array, reverse: bool = False) -> tuple[Array, Array]:
        c = x.shape[-1]
        if self.lu:
            # one rotation gives the trainable factors and the fixed ones, so it is drawn once, at init;
            # after it, Flax still evaluates the initialisers' shapes (to check the stored params)
            if self.is_initializing():
                lu = F.lu_init(self.make_rng("params"), c)
            else:
                lu = jax.eval_shape(lambda: F.lu_init(jax.random.PRNGKey(0), c))
            trainable, fixed = ({n: _value(a) for n, a in part.items()} for part in lu)
            p = {name: self.param(name, init) for name, init in trainable.items()}
            fixed = {name: self.variable("buffers", name, init, None).value for name, init in fixed.items()}
        else:
            p = {"weight": self.param("weight", lambda r: jnp.linalg.qr(jax.random.normal(r, (c, c)))[0])}
            fixed = None
        w, logdet_w = F.invconv_weight(p, fixed)
        return F.invconv_inverse(x, w, logdet_w) if reverse else F.invconv_forward(x, w, logdet_w)


def _value(a: Any) -> Any:
    """An initialiser giving `a`, or zeros of its shape where `a` is only a shape."""
    if isinstance(a, jax.ShapeDtypeStruct):
        return lambda *_: jnp.zeros(a.shape, a.dtype)
    return lambda *_: a


class GlowStep(nn.Module):
    """Step of level `level`; dtype: the precision policy of the estimator's convolutions."""

    config: GlowConfig
    level: int
    dtype: Any = jnp.float32

    def setup(self):
        cfg, scheme = self.config, self.config.scheme
        size, c = level_shape(cfg, self.level)
        self.actnorm = ActNorm(cfg.actnorm_scale)
        self.invconv = InvConv1x1(cfg.lu)
        if not scheme.shared:
            self.estimator = estimator_stack(cfg, self.dtype)
        if not scheme.one_projection:
            self.proj = ZeroConv(c, projection_kernel(cfg))
        if scheme.embedded:
            shape = (size, size, embed_channels(cfg, self.level))
            self.embedding = self.param("embedding", nn.initializers.normal(1.0), shape)
            self.embed_actnorm = ActNorm(cfg.actnorm_scale)
            self.gates = self.param("gates", nn.initializers.zeros, (N_GATES, cfg.hidden))

    def estimator_input(self, z1: Array) -> tuple[Array, Array | None]:
        """z1, with the step's normalised embedding map concatenated (NanoFlow), and its gates."""
        if not self.config.scheme.embedded:
            return z1, None
        e, _ = self.embed_actnorm(self.embedding[None])
        e = jnp.broadcast_to(e, z1.shape[:3] + e.shape[-1:])
        return jnp.concatenate([z1, e], axis=-1), self.gates

    def _coupling_params(self, z1: Array, shared: dict | None, index: Array | None) -> tuple[Array, dict | None]:
        """-> (the coupling's (..., c, 2) params, `shared` as used). At init, step 0 initialises the shared
        estimator from its own input (as officially) and `index` says which step this is."""
        inp, gates = self.estimator_input(z1)
        scheme = self.config.scheme
        if scheme.shared:
            stack = estimator_stack(self.config, self.dtype, parent=None)
            if self.is_initializing():
                fresh = stack.init(self.make_rng("params"), inp, gates)["params"]
                first = lambda a, b: jnp.where(index == 0, a, b)  # noqa: E731
                shared = {**shared, "estimator": jax.tree.map(first, fresh, shared["estimator"])}
            h = stack.apply({"params": shared["estimator"]}, inp, gates)
        else:
            h = self.estimator(inp, gates)
        h = zero_conv(h, shared["proj"]) if scheme.one_projection else self.proj(h)
        return F.coupling_pairs(h), shared

    def forward(self, z: Array, shared: dict | None = None, index: Array | None = None):
        """z (B, h, w, c) -> (output, log-determinant (B,), `shared` as used)."""
        z, ld_actnorm = self.actnorm(z)
        z, ld_conv = self.invconv(z)
        c = z.shape[-1] // 2
        p, shared = self._coupling_params(z[..., :c], shared, index)
        z2, ld_coupling = SIGMOID_AFFINE.forward(z[..., c:], p)
        logdet = ld_actnorm + ld_conv + jnp.sum(ld_coupling, axis=(1, 2, 3))
        return jnp.concatenate([z[..., :c], z2], axis=-1), logdet, shared

    def inverse(self, y: Array, shared: dict | None = None) -> tuple[Array, Array]:
        """y (B, h, w, c) -> (input, the inverse's log-determinant (B,))."""
        c = y.shape[-1] // 2
        p, _ = self._coupling_params(y[..., :c], shared, None)
        z2, ld_coupling = SIGMOID_AFFINE.inverse(y[..., c:], p)
        z, ld_conv = self.invconv(jnp.concatenate([y[..., :c], z2], axis=-1), reverse=True)
        z, ld_actnorm = self.actnorm(z, reverse=True)
        return z, ld_actnorm + ld_conv + jnp.sum(ld_coupling, axis=(1, 2, 3))
