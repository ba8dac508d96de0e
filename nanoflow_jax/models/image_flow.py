"""Multi-scale Glow and the NanoFlow scheme on images (the paper's CIFAR-10 experiments), as Flax modules.

Level l: 2x2 squeeze, K steps (`glow_step.GlowStep`) under `nn.scan`, then (except at the top) split off
half the channels under a learned Gaussian prior conditioned on the other half. The steps' params are
stacked (K, ...) per level; a shared estimator (NanoFlow) is the level's and broadcast to every step, so
the program does not grow with K.

The protocol is `AudioFlow`'s: `variables = model.init(rng, x)`, `model.apply(variables, x)` -> (latents,
log-det, prior log-density), `method="inverse"` -> (x, the inverse's own log-det), and `"sample" |
"bits_per_dim"`. x is the dequantised image in [-0.5, 0.5) (`flows.image.dequantize`). ActNorms are
initialised from data: `init` runs its batch through the steps in order, as the official code does. The
LU factors' fixed permutation and signs are the "buffers" collection (not trainable, not counted).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from nanoflow_jax.flows import bits_per_dim as to_bits_per_dim
from nanoflow_jax.flows import image as F
from nanoflow_jax.models.glow_estimators import ZeroConv, zero_conv_init
from nanoflow_jax.models.glow_step import (
    N_GATES,
    GlowStep,
    embed_channels,
    estimator_stack,
    level_shape,
    projection_kernel,
)
from nanoflow_jax.models.image_config import GlowConfig

Array = jax.Array
# each step its own params (stacked) and its own init randomness
_STEPS = dict(variable_axes={"params": 0, "buffers": 0}, split_rngs={"params": True})
SplitLatent = Callable[[Array, Array], Array]  # (prior mean, log-std) -> the half split off


class GlowLevel(nn.Module):
    """Level `level`: squeeze, K steps, split. remat: recompute each step's activations in the backward
    pass."""

    config: GlowConfig
    level: int
    dtype: Any = jnp.float32
    remat: bool = False

    @property
    def is_top(self) -> bool:
        return self.level == self.config.n_levels - 1

    @nn.compact
    def __call__(self, z: Array, reverse: bool = False, split_latent: SplitLatent | None = None):
        """Forward: z (B, H, W, C) -> (half kept, half split off (None at the top), log-det (B,), the split
        half's prior log-density (B,)). Reverse: z is the half kept and `split_latent` gives the other
        -> (the level's input, the inverse's log-det (B,))."""
        steps = GlowStep(self.config, self.level, self.dtype, name="steps")
        _, c = level_shape(self.config, self.level)
        prior = None if self.is_top else ZeroConv(c, 3, name="split_prior")  # (mean, log-std) of c / 2
        if reverse:
            if prior is not None:
                z = jnp.concatenate([z, split_latent(*_mean_and_log_std(prior(z)))], axis=-1)
            z, logdet = self._steps(steps, z, reverse=True)
            return F.unsqueeze2x2(z), logdet
        z, logdet = self._steps(steps, F.squeeze2x2(z))
        if prior is None:
            return z, None, logdet, jnp.zeros_like(logdet)
        kept, split = z[..., : c // 2], z[..., c // 2 :]
        return kept, split, logdet, F.gaussian_logp(split, *_mean_and_log_std(prior(kept)))

    def _steps(self, steps: GlowStep, z: Array, reverse: bool = False) -> tuple[Array, Array]:
        """The K steps under `nn.scan`; a shared estimator's params broadcast (carried at init, where the
        first step sets them)."""
        cfg = self.config
        init = self.is_initializing() and cfg.scheme.shared
        shared = None
        if init:
            shared = self._initial_shared(z)
        elif cfg.scheme.shared:
            # the initialiser is only evaluated for its shapes: Flax checks the stored params against them
            shared = self.param("shared", lambda _: self._initial_shared(z))

        def body(step, carry, index):
            z, logdet, used = carry if init else (*carry, shared)
            if reverse:
                z, ld = step.inverse(z, used)
            else:
                z, ld, used = step.forward(z, used, index)
            return ((z, logdet + ld, used) if init else (z, logdet + ld)), None

        if self.remat:
            body = nn.remat(body, prevent_cse=False)
        carry = (z, jnp.zeros((z.shape[0],), jnp.float32)) + ((shared,) if init else ())
        scan = nn.scan(body, length=cfg.n_flows, reverse=reverse, **_STEPS)
        carry, _ = scan(steps, carry, jnp.arange(cfg.n_flows))
        if init:
            self.param("shared", lambda _: carry[2])
        return carry[0], carry[1]

    def _initial_shared(self, z: Array) -> dict:
        """Placeholders of the shared params' shapes (the estimator's are set by the first step)."""
        cfg = self.config
        size, c = level_shape(cfg, self.level)
        inp = jax.ShapeDtypeStruct((z.shape[0], size, size, c // 2 + embed_channels(cfg, self.level)), jnp.float32)
        gates = jax.ShapeDtypeStruct((N_GATES, cfg.hidden), jnp.float32) if cfg.scheme.embedded else None
        shapes = jax.eval_shape(estimator_stack(cfg, self.dtype, parent=None).init, jax.random.PRNGKey(0), inp, gates)[
            "params"
        ]
        shared = {"estimator": jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)}
        if cfg.scheme.one_projection:
            shared["proj"] = zero_conv_init(projection_kernel(cfg), cfg.hidden, c)
        return shared


def _mean_and_log_std(h: Array) -> tuple[Array, Array]:
    """A prior convolution's output: mean and log-std are its even and odd channels."""
    return h[..., 0::2], h[..., 1::2]


class ImageFlow(nn.Module):
    """dtype: the precision policy of the estimators' convolutions (as `AudioFlow`'s); remat: recompute
    each step's activations in the backward pass."""

    config: GlowConfig
    dtype: Any = jnp.float32
    remat: bool = False

    def setup(self):
        cfg = self.config
        self.levels = [GlowLevel(cfg, level, self.dtype, self.remat) for level in range(cfg.n_levels)]
        _, c_top = level_shape(cfg, cfg.n_levels - 1)
        self.top_prior = ZeroConv(2 * c_top, 3)

    def _check(self, x: Array) -> Array:
        cfg = self.config
        want = (cfg.image_size, cfg.image_size, cfg.channels)
        if x.ndim != 4 or tuple(x.shape[1:]) != want:
            raise ValueError(f"images must be (batch, {', '.join(map(str, want))}), got shape {tuple(x.shape)}")
        return x

    def __call__(self, x: Array) -> tuple[list[Array], Array, Array]:
        """x (B, H, W, C) dequantised -> (latents [z_0 split off, ..., top], flow log-det (B,), prior
        log-density of the latents (B,)). At init, every ActNorm is initialised from this batch."""
        z, logdet, logp, zs = self._check(x), 0.0, 0.0, []
        for level in self.levels:
            z, split, ld, lp = level(z)
            logdet, logp = logdet + ld, logp + lp
            if split is not None:
                zs.append(split)
        logp = logp + F.gaussian_logp(z, *self._top_prior(z.shape))
        return zs + [z], logdet, logp

    def _top_prior(self, shape) -> tuple[Array, Array]:
        h = self.top_prior(jnp.zeros(shape[:3] + (2 * shape[3],)))
        return h[..., : shape[3]], h[..., shape[3] :]

    def _decode(self, z: Array, split_latent: Callable[[int], SplitLatent]) -> tuple[Array, Array]:
        """Top latent -> (x, the inverse's log-det); `split_latent(level)` gives the half split off there
        from its prior's (mean, log-std) (the latent itself, or a draw)."""
        logdet = 0.0
        for index in reversed(range(self.config.n_levels)):
            z, ld = self.levels[index](z, reverse=True, split_latent=split_latent(index))
            logdet = logdet + ld
        return z, logdet

    def inverse(self, zs: list[Array]) -> tuple[Array, Array]:
        """Latents as `__call__` returns them -> (x, log|dx/dz| (B,), the forward log-det negated)."""
        return self._decode(zs[-1], lambda level: lambda *_: zs[level])

    def sample(self, rng: jax.Array, n: int, temperature: float = 1.0) -> Array:
        """n images (n, H, W, C) as uint8 values 0..255, latents drawn at `temperature`."""
        cfg = self.config
        size, c = level_shape(cfg, cfg.n_levels - 1)
        keys = jax.random.split(rng, cfg.n_levels)

        def draw(key: jax.Array) -> SplitLatent:
            return lambda mean, logs: mean + jnp.exp(logs) * temperature * jax.random.normal(key, mean.shape)

        z = draw(keys[-1])(*self._top_prior((n, size, size, c)))
        z, _ = self._decode(z, lambda level: draw(keys[level]))
        n_bins = 2**cfg.n_bits
        return jnp.clip(jnp.floor((z + 0.5) * n_bins) * 2 ** (8 - cfg.n_bits), 0, 255).astype(jnp.uint8)

    def bits_per_dim(self, x: Array) -> Array:
        """Dequantised x (B, H, W, C) in [-0.5, 0.5) -> bits per dimension (B,), the official objective
        (log-det + prior log-density - log(n_bins) per dimension)."""
        cfg = self.config
        _, logdet, logp = self(x)
        ll = logdet + logp - math.log(2**cfg.n_bits) * cfg.dims
        return to_bits_per_dim(ll, cfg.dims)
