"""Multi-scale Glow and the NanoFlow scheme on images (the paper's CIFAR-10 experiments), as a Flax module.

Level l: 2x2 squeeze, K steps, then (except at the top) split off half the channels under a learned
Gaussian prior conditioned on the other half. Step: ActNorm -> invertible 1x1 conv -> affine coupling
whose estimator sees the first half of the channels (`image_config.IMAGE_VARIANTS` lists the estimator
schemes). Per-step params are stacked (K, ...) per level and scanned over with `lax.scan`, the shared
estimator closed over, so the program does not grow with K.

The protocol is `AudioFlow`'s: `variables = model.init(rng, x)`, `model.apply(variables, x)` -> (latents,
log-det, prior log-density), and `method="inverse" | "sample" | "bits_per_dim"`. x is the dequantised image
in [-0.5, 0.5) (`flows.image.dequantize`). ActNorms are initialised from data: `init` runs its batch through
the steps in order, as the official code does. The LU factors' fixed permutation and signs are the
"buffers" collection (not trainable, not counted).
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from nanoflow_jax.flows import bits_per_dim as to_bits_per_dim
from nanoflow_jax.flows import image as F
from nanoflow_jax.models.glow_estimators import ConvStack, zero_conv, zero_conv_init
from nanoflow_jax.models.image_config import CONV_STACKS, GlowConfig, ImageVariant

Array = jax.Array
N_GATES = 6  # the official per-step gate array is (6, hidden) whatever the stack's depth


class ImageFlow(nn.Module):
    """dtype: the precision policy of the estimators' convolutions (as `AudioFlow`'s); remat: recompute
    each step's activations in the backward pass."""

    config: GlowConfig
    dtype: Any = jnp.float32
    remat: bool = False

    @property
    def scheme(self) -> ImageVariant:
        return self.config.scheme

    @property
    def proj_kernel(self) -> int:
        return 3 if self.scheme.stack == "small" else 1

    def _estimator(self) -> ConvStack:
        """The estimator stack, applied functionally with a step's (or the level's shared) params."""
        cfg = self.config
        return ConvStack(cfg.hidden, CONV_STACKS[self.scheme.stack], cfg.actnorm_scale, self.dtype, parent=None)

    # shapes
    def level_shape(self, level: int) -> tuple[int, int]:
        """(spatial size, channels) of level `level`'s steps."""
        cfg = self.config
        size = cfg.image_size // 2 ** (level + 1)
        c = cfg.channels * 4 * 2**level  # x4 by each squeeze, /2 by each split
        return size, c

    def embed_channels(self, level: int) -> int:
        return self.config.embed_dim * 2**level if self.scheme.embedded else 0

    @nn.compact
    def __call__(self, x: Array) -> tuple[list[Array], Array, Array]:
        """x (B, H, W, C) dequantised -> (latents [z_0 split off, ..., top], flow log-det (B,), prior
        log-density of the latents (B,)). At init, every ActNorm is initialised from this batch."""
        self._check(x)
        if self.is_initializing():
            params, buffers = self._initial_variables(self.make_rng("params"), x)
            for name, value in params.items():
                self.param(name, lambda _, v=value: v)
            for name, value in buffers.items():
                self.variable("buffers", name, lambda v=value: v)
        return self.transform(x)

    # one step, forward and inverse
    def _estimator_input(self, z1: Array, step: dict) -> tuple[Array, Array | None]:
        """z1, with the step's normalised embedding map concatenated (NanoFlow), and its gates."""
        if not self.scheme.embedded:
            return z1, None
        e, _ = F.actnorm_forward(step["embedding"][None], step["embed_actnorm"])
        e = jnp.broadcast_to(e, z1.shape[:3] + e.shape[-1:])
        return jnp.concatenate([z1, e], axis=-1), step["gates"]

    def _estimate(self, z1: Array, step: dict, shared: dict | None) -> Array:
        est = shared["estimator"] if self.scheme.shared else step["estimator"]
        h = self._estimator().apply({"params": est}, *self._estimator_input(z1, step))
        return zero_conv(h, shared["proj"] if self.scheme.one_projection else step["proj"])

    def _step_forward(self, z: Array, step: dict, fixed: dict, shared: dict | None):
        z, ld1 = F.actnorm_forward(z, step["actnorm"])
        w, logdet_w = F.invconv_weight(step["invconv"], fixed)
        z, ld2 = F.invconv_forward(z, w, logdet_w)
        c = z.shape[-1] // 2
        z1, z2 = z[..., :c], z[..., c:]
        z2, ld3 = F.coupling_forward(z2, self._estimate(z1, step, shared))
        return jnp.concatenate([z1, z2], axis=-1), ld1 + ld2 + ld3

    def _step_inverse(self, z: Array, step: dict, fixed: dict, shared: dict | None):
        c = z.shape[-1] // 2
        z1, z2 = z[..., :c], z[..., c:]
        z2, ld3 = F.coupling_inverse(z2, self._estimate(z1, step, shared))
        w, logdet_w = F.invconv_weight(step["invconv"], fixed)
        z, ld2 = F.invconv_inverse(jnp.concatenate([z1, z2], axis=-1), w, logdet_w)
        z, ld1 = F.actnorm_inverse(z, step["actnorm"])
        return z, ld1 + ld2 + ld3

    def _initial_variables(self, rng: jax.Array, x: Array) -> tuple[dict, dict]:
        """(params, buffers) with every ActNorm initialised from x: the batch goes through the steps in
        order, each ActNorm set from its own input."""
        # the steps run one by one (each ActNorm needs its input), each as a compiled call: one
        # compilation per level instead of op-by-op dispatch
        est_init, step_forward = jax.jit(self._estimator().init), jax.jit(self._step_forward)
        cfg = self.config
        shared_scheme, one_proj = self.scheme.shared, self.scheme.one_projection
        params: dict[str, Any] = {}
        buffers: dict[str, Any] = {}
        z = x
        for level in range(cfg.n_levels):
            z = F.squeeze2x2(z)
            size, c = z.shape[1], z.shape[-1]
            lrng = jax.random.fold_in(rng, 100 + level)
            shared: dict[str, Any] | None = {} if shared_scheme else None
            if shared_scheme and one_proj:
                shared["proj"] = zero_conv_init(self.proj_kernel, cfg.hidden, c)
            steps, fixeds = [], []
            for k in range(cfg.n_steps):
                srng = jax.random.fold_in(lrng, k)
                step: dict[str, Any] = {"actnorm": F.actnorm_stats(z, cfg.actnorm_scale)}
                z_an, _ = F.actnorm_forward(z, step["actnorm"])
                if cfg.lu:
                    step["invconv"], fixed = F.lu_init(jax.random.fold_in(srng, 0), c)
                else:
                    rot = jnp.linalg.qr(jax.random.normal(jax.random.fold_in(srng, 0), (c, c)))[0]
                    step["invconv"] = {"weight": rot}
                    fixed = {}
                if not (shared_scheme and one_proj):
                    step["proj"] = zero_conv_init(self.proj_kernel, cfg.hidden, c)
                w, logdet_w = F.invconv_weight(step["invconv"], fixed)
                z_in, _ = F.invconv_forward(z_an, w, logdet_w)
                if self.scheme.embedded:
                    e_ch = self.embed_channels(level)
                    step["embedding"] = jax.random.normal(jax.random.fold_in(srng, 1), (size, size, e_ch))
                    step["embed_actnorm"] = F.actnorm_stats(step["embedding"], cfg.actnorm_scale)
                    step["gates"] = jnp.zeros((N_GATES, cfg.hidden))
                inp, gates = self._estimator_input(z_in[..., : c // 2], step)
                if not shared_scheme:
                    step["estimator"] = est_init(jax.random.fold_in(srng, 2), inp, gates)["params"]
                elif k == 0:  # the shared stack's ActNorms are set by the level's first step, as officially
                    shared["estimator"] = est_init(jax.random.fold_in(lrng, 999), inp, gates)["params"]
                z, _ = step_forward(z, step, fixed, shared)
                steps.append(step)
                fixeds.append(fixed)
            lp = {"steps": jax.tree.map(lambda *a: jnp.stack(a), *steps)}
            if shared is not None:
                lp["shared"] = shared
            if level < cfg.n_levels - 1:
                lp["split_prior"] = zero_conv_init(3, c // 2, c)
                z = z[..., : c // 2]
            params[f"level_{level}"] = lp
            buffers[f"level_{level}"] = jax.tree.map(lambda *a: jnp.stack(a), *fixeds) if fixeds[0] else {}
        c_top = z.shape[-1]
        params["top_prior"] = zero_conv_init(3, 2 * c_top, 2 * c_top)
        return params, buffers

    def _check(self, x: Array) -> Array:
        cfg = self.config
        want = (cfg.image_size, cfg.image_size, cfg.channels)
        if x.ndim != 4 or tuple(x.shape[1:]) != want:
            raise ValueError(f"images must be (batch, {', '.join(map(str, want))}), got shape {tuple(x.shape)}")
        return x

    # the flow
    def _level_scan(self, level: int, z: Array, reverse: bool = False):
        lp = self.variables["params"][f"level_{level}"]
        fixed = self.variables.get("buffers", {}).get(f"level_{level}", {})
        shared = lp.get("shared")
        fn = self._step_inverse if reverse else self._step_forward
        body = lambda z, xs: fn(z, *xs, shared)  # noqa: E731
        z, lds = jax.lax.scan(jax.checkpoint(body) if self.remat else body, z, (lp["steps"], fixed), reverse=reverse)
        return z, jnp.sum(lds, axis=0)

    def transform(self, x: Array) -> tuple[list[Array], Array, Array]:
        """x (B, H, W, C) continuous -> (latents [z_0 split off, ..., top], flow log-det (B,), prior
        log-density of the latents (B,))."""
        cfg = self.config
        z, logdet, logp, zs = x, 0.0, 0.0, []
        for level in range(cfg.n_levels):
            z = F.squeeze2x2(z)
            z, ld = self._level_scan(level, z)
            logdet = logdet + ld
            if level < cfg.n_levels - 1:
                c = z.shape[-1] // 2
                z1, z2 = z[..., :c], z[..., c:]
                logp = logp + F.gaussian_logp(z2, *self._split_prior(level, z1))
                zs.append(z2)
                z = z1
        mean, logs = self._top_prior(z.shape)
        logp = logp + F.gaussian_logp(z, mean, logs)
        zs.append(z)
        return zs, logdet, logp

    def _split_prior(self, level: int, z1: Array) -> tuple[Array, Array]:
        """(mean, log-std) of the half split off at `level`, given the half kept."""
        h = zero_conv(z1, self.variables["params"][f"level_{level}"]["split_prior"])
        return h[..., 0::2], h[..., 1::2]

    def _top_prior(self, shape) -> tuple[Array, Array]:
        h = zero_conv(jnp.zeros(shape[:3] + (2 * shape[3],)), self.variables["params"]["top_prior"])
        c = shape[3]
        return h[..., :c], h[..., c:]

    def _decode(self, z: Array, split_latent) -> Array:
        """Top latent -> x; `split_latent(level, z1)` gives the half split off at `level`, given the half
        kept (the latent itself, or a draw from its prior)."""
        for level in reversed(range(self.config.n_levels)):
            if level < self.config.n_levels - 1:
                z = jnp.concatenate([z, split_latent(level, z)], axis=-1)
            z, _ = self._level_scan(level, z, reverse=True)
            z = F.unsqueeze2x2(z)
        return z

    def inverse(self, zs: list[Array]) -> Array:
        """Latents as `__call__` returns them -> x."""
        return self._decode(zs[-1], lambda level, _: zs[level])

    def sample(self, rng: jax.Array, n: int, temperature: float = 1.0) -> Array:
        """n images (n, H, W, C) as uint8 values 0..255, latents drawn at `temperature`."""
        cfg = self.config
        size, c = self.level_shape(cfg.n_levels - 1)
        keys = jax.random.split(rng, cfg.n_levels)

        def draw(key, mean, logs):
            return mean + jnp.exp(logs) * temperature * jax.random.normal(key, mean.shape)

        z = draw(keys[-1], *self._top_prior((n, size, size, c)))
        z = self._decode(z, lambda level, z1: draw(keys[level], *self._split_prior(level, z1)))
        n_bins = 2**cfg.n_bits
        return jnp.clip(jnp.floor((z + 0.5) * n_bins) * 2 ** (8 - cfg.n_bits), 0, 255).astype(jnp.uint8)

    def bits_per_dim(self, x: Array) -> Array:
        """Dequantised x (B, H, W, C) in [-0.5, 0.5) -> bits per dimension (B,), the official objective
        (log-det + prior log-density - log(n_bins) per dimension)."""
        cfg = self.config
        _, logdet, logp = self.transform(x)
        ll = logdet + logp - math.log(2**cfg.n_bits) * cfg.dims
        return to_bits_per_dim(ll, cfg.dims)
