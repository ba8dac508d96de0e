"""Multi-scale Glow and the NanoFlow scheme on images (the paper's CIFAR-10 experiments).

Level l: 2x2 squeeze, K steps, then (except at the top) split off half the channels under a learned
Gaussian prior conditioned on the other half. Step: ActNorm -> invertible 1x1 conv -> affine coupling
whose estimator sees the first half of the channels. Estimators (`VARIANTS`):
- glow: per step conv3x3 -> conv1x1 (each with ActNorm, ReLU), zero-init 3x3 projection;
- glow_large: per step 6 x conv3x3, zero-init 1x1 projection;
- nanoflow_naive / nanoflow_decomp: one glow_large stack per level for all K steps, with one projection
  (naive) or one per step (decomp);
- nanoflow: decomp plus a per-step embedding map (D * 2^l channels, own ActNorm) concatenated to the
  estimator's input and per-step gates exp(g) before each ReLU;
- nanoflow_alt: the nanoflow scheme on the small glow stack (per-step 3x3 projections).

Params are plain dicts: per-step parts stacked (K, ...) and scanned over with `lax.scan`, the shared
estimator closed over, so the program does not grow with K. ActNorms are initialised from data:
`ImageFlow.init(rng, images)` runs the first batch through the steps in order, as the official code does.
The LU factors' fixed permutation and signs are in a separate "buffers" tree (not trainable, not counted).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from nanoflow_jax.config import dataclass_from_any
from nanoflow_jax.flows import image as F
from nanoflow_jax.models.layers import conv2d

Array = jnp.ndarray

# variant -> (estimator stack, shared per level, one projection per level, embedding and gates)
VARIANTS = {
    "glow": ("small", False, False, False),
    "glow_large": ("large", False, False, False),
    "nanoflow_naive": ("large", True, True, False),
    "nanoflow_decomp": ("large", True, False, False),
    "nanoflow": ("large", True, False, True),
    "nanoflow_alt": ("small", True, False, True),
}
STACKS = {"small": (3, 1), "large": (3, 3, 3, 3, 3, 3)}  # kernel sizes of the estimator's convs
N_GATES = 6  # the official per-step gate array is (6, hidden) whatever the stack's depth


@dataclasses.dataclass(frozen=True)
class GlowConfig:
    variant: str = "glow"
    image_size: int = 32
    channels: int = 3
    hidden: int = 256
    n_levels: int = 3
    n_steps: int = 32
    embed_dim: int = 1  # D: the level-l embedding map has D * 2**l channels
    lu: bool = True
    n_bits: int = 8
    actnorm_scale: float = 1.0
    kind: str = "image"

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown image variant {self.variant!r}; expected one of {sorted(VARIANTS)}")
        if self.image_size % 2**self.n_levels:
            raise ValueError(f"image_size {self.image_size} is not divisible by 2**n_levels = {2**self.n_levels}")
        for name in ("hidden", "n_levels", "n_steps", "embed_dim", "channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @classmethod
    def from_any(cls, cfg: Any) -> GlowConfig:
        return dataclass_from_any(cls, cfg, "image model config")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def dims(self) -> int:
        return self.image_size**2 * self.channels


# -- estimators (Flax) ---------------------------------------------------------------------------------
class ActNorm(nn.Module):
    """Per-channel affine, initialised at `init` so that its output on that batch has zero mean and
    `scale` standard deviation per channel."""

    scale: float = 1.0

    @nn.compact
    def __call__(self, x: Array) -> Array:
        stats = lambda: F.actnorm_stats(x, self.scale)  # noqa: E731  (only evaluated at init)
        bias = self.param("bias", lambda _: stats()["bias"])
        logs = self.param("logs", lambda _: stats()["logs"])
        return (x + bias) * jnp.exp(logs)


class SameConv(nn.Module):
    """k x k "same" convolution without bias, N(0, 0.05) init; `fast_grad` as in layers.conv2d."""

    features: int
    kernel: int
    fast_grad: bool = True

    @nn.compact
    def __call__(self, x: Array) -> Array:
        k = self.kernel
        w = self.param("kernel", nn.initializers.normal(0.05), (k, k, x.shape[-1], self.features))
        pad = ((k // 2, k // 2),) * 2
        if self.fast_grad:
            return conv2d(x, w, pad)
        return jax.lax.conv_general_dilated(x, w, (1, 1), pad, dimension_numbers=("NHWC", "HWIO", "NHWC"))


class ConvStack(nn.Module):
    """Convs (no bias) each followed by ActNorm, an optional gate exp(g_i), and ReLU."""

    hidden: int
    kernels: tuple[int, ...]
    actnorm_scale: float = 1.0
    fast_conv_grad: bool = True

    @nn.compact
    def __call__(self, x: Array, gates: Array | None = None) -> Array:
        for i, k in enumerate(self.kernels):
            x = SameConv(self.hidden, k, self.fast_conv_grad, name=f"Conv_{i}")(x)
            x = ActNorm(self.actnorm_scale)(x)
            if gates is not None:
                x = x * jnp.exp(gates[i])
            x = nn.relu(x)
        return x


def zero_conv_init(k: int, c_in: int, c_out: int) -> dict:
    """The zero-initialised output conv: (conv(x) + bias) * exp(3 * logs)."""
    return {"kernel": jnp.zeros((k, k, c_in, c_out)), "bias": jnp.zeros((c_out,)), "logs": jnp.zeros((c_out,))}


def zero_conv(x: Array, p: dict) -> Array:
    y = jax.lax.conv_general_dilated(x, p["kernel"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return (y + p["bias"]) * jnp.exp(3.0 * p["logs"])


# -- the flow ------------------------------------------------------------------------------------------
class ImageFlow:
    """images (B, H, W, C) in [0, 255] -> latents, bits per dimension, samples. Stateless: every method
    takes the variables {"params", "buffers"} that `init` returns."""

    def __init__(self, config: GlowConfig, fast_conv_grad: bool = True):
        """fast_conv_grad: the estimator's convolutions use the explicit gradient of layers.conv2d (XLA
        on CPU runs the derived one ~17x slower inside the step scan); False allows jax.jvp / jacfwd."""
        self.config = config
        stack, self.shared, self.one_proj, self.embedded = VARIANTS[config.variant]
        self.kernels = STACKS[stack]
        self.proj_kernel = 3 if stack == "small" else 1
        self.estimator = ConvStack(config.hidden, self.kernels, config.actnorm_scale, fast_conv_grad)

    # shapes
    def level_shape(self, level: int) -> tuple[int, int]:
        """(spatial size, channels) of level `level`'s steps."""
        cfg = self.config
        size = cfg.image_size // 2 ** (level + 1)
        c = cfg.channels * 4 * 2**level  # x4 by each squeeze, /2 by each split
        return size, c

    def embed_channels(self, level: int) -> int:
        return self.config.embed_dim * 2**level if self.embedded else 0

    # one step, forward and inverse
    def _estimator_input(self, z1: Array, step: dict) -> tuple[Array, Array | None]:
        """z1, with the step's normalised embedding map concatenated (NanoFlow), and its gates."""
        if not self.embedded:
            return z1, None
        e, _ = F.actnorm_forward(step["embedding"][None], step["embed_actnorm"])
        e = jnp.broadcast_to(e, z1.shape[:3] + e.shape[-1:])
        return jnp.concatenate([z1, e], axis=-1), step["gates"]

    def _estimate(self, z1: Array, step: dict, shared: dict | None) -> Array:
        est = shared["estimator"] if self.shared else step["estimator"]
        h = self.estimator.apply({"params": est}, *self._estimator_input(z1, step))
        return zero_conv(h, shared["proj"] if self.one_proj else step["proj"])

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

    # init
    def init(self, rng: jax.Array, images: Array) -> dict:
        """Variables for this model, with every ActNorm initialised from `images` (B, H, W, C), uint8
        values: the batch goes through the steps in order, each ActNorm set from its own input."""
        # the steps run one by one (each ActNorm needs its input), each as a compiled call: one
        # compilation per level instead of op-by-op dispatch
        est_init, step_forward = jax.jit(self.estimator.init), jax.jit(self._step_forward)
        cfg = self.config
        x = F.dequantize(self._check(images), jax.random.fold_in(rng, 1), cfg.n_bits)
        params: dict[str, Any] = {}
        buffers: dict[str, Any] = {}
        z = x
        for level in range(cfg.n_levels):
            z = F.squeeze2x2(z)
            size, c = z.shape[1], z.shape[-1]
            lrng = jax.random.fold_in(rng, 100 + level)
            shared: dict[str, Any] | None = {} if self.shared else None
            if self.shared and self.one_proj:
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
                if not (self.shared and self.one_proj):
                    step["proj"] = zero_conv_init(self.proj_kernel, cfg.hidden, c)
                w, logdet_w = F.invconv_weight(step["invconv"], fixed)
                z_in, _ = F.invconv_forward(z_an, w, logdet_w)
                if self.embedded:
                    e_ch = self.embed_channels(level)
                    step["embedding"] = jax.random.normal(jax.random.fold_in(srng, 1), (size, size, e_ch))
                    step["embed_actnorm"] = F.actnorm_stats(step["embedding"], cfg.actnorm_scale)
                    step["gates"] = jnp.zeros((N_GATES, cfg.hidden))
                inp, gates = self._estimator_input(z_in[..., : c // 2], step)
                if not self.shared:
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
        return {"params": params, "buffers": buffers}

    def _check(self, images: Array) -> Array:
        cfg = self.config
        want = (cfg.image_size, cfg.image_size, cfg.channels)
        if images.ndim != 4 or tuple(images.shape[1:]) != want:
            raise ValueError(f"images must be (batch, {', '.join(map(str, want))}), got shape {tuple(images.shape)}")
        return images

    # the flow
    def _level_scan(self, variables: dict, level: int, z: Array, reverse: bool = False):
        lp = variables["params"][f"level_{level}"]
        fixed = variables["buffers"][f"level_{level}"]
        shared = lp.get("shared")
        fn = self._step_inverse if reverse else self._step_forward
        z, lds = jax.lax.scan(lambda z, xs: fn(z, *xs, shared), z, (lp["steps"], fixed), reverse=reverse)
        return z, jnp.sum(lds, axis=0)

    def transform(self, variables: dict, x: Array) -> tuple[list[Array], Array, Array]:
        """x (B, H, W, C) continuous -> (latents [z_0 split off, ..., top], flow log-det (B,), prior
        log-density of the latents (B,))."""
        cfg = self.config
        z, logdet, logp, zs = x, 0.0, 0.0, []
        for level in range(cfg.n_levels):
            z = F.squeeze2x2(z)
            z, ld = self._level_scan(variables, level, z)
            logdet = logdet + ld
            if level < cfg.n_levels - 1:
                c = z.shape[-1] // 2
                z1, z2 = z[..., :c], z[..., c:]
                logp = logp + F.gaussian_logp(z2, *self._split_prior(variables, level, z1))
                zs.append(z2)
                z = z1
        mean, logs = self._top_prior(variables, z.shape)
        logp = logp + F.gaussian_logp(z, mean, logs)
        zs.append(z)
        return zs, logdet, logp

    def _split_prior(self, variables: dict, level: int, z1: Array) -> tuple[Array, Array]:
        """(mean, log-std) of the half split off at `level`, given the half kept."""
        h = zero_conv(z1, variables["params"][f"level_{level}"]["split_prior"])
        return h[..., 0::2], h[..., 1::2]

    def _top_prior(self, variables: dict, shape) -> tuple[Array, Array]:
        h = zero_conv(jnp.zeros(shape[:3] + (2 * shape[3],)), variables["params"]["top_prior"])
        c = shape[3]
        return h[..., :c], h[..., c:]

    def _decode(self, variables: dict, z: Array, split_latent) -> Array:
        """Top latent -> x; `split_latent(level, z1)` gives the half split off at `level`, given the half
        kept (the latent itself, or a draw from its prior)."""
        for level in reversed(range(self.config.n_levels)):
            if level < self.config.n_levels - 1:
                z = jnp.concatenate([z, split_latent(level, z)], axis=-1)
            z, _ = self._level_scan(variables, level, z, reverse=True)
            z = F.unsqueeze2x2(z)
        return z

    def inverse(self, variables: dict, zs: list[Array]) -> Array:
        """Latents as `transform` returns them -> x."""
        return self._decode(variables, zs[-1], lambda level, _: zs[level])

    def sample(self, variables: dict, rng: jax.Array, n: int, temperature: float = 1.0) -> Array:
        """n images (n, H, W, C) as uint8 values 0..255, latents drawn at `temperature`."""
        cfg = self.config
        size, c = self.level_shape(cfg.n_levels - 1)
        keys = jax.random.split(rng, cfg.n_levels)

        def draw(key, mean, logs):
            return mean + jnp.exp(logs) * temperature * jax.random.normal(key, mean.shape)

        z = draw(keys[-1], *self._top_prior(variables, (n, size, size, c)))
        z = self._decode(variables, z, lambda level, z1: draw(keys[level], *self._split_prior(variables, level, z1)))
        n_bins = 2**cfg.n_bits
        return jnp.clip(jnp.floor((z + 0.5) * n_bins) * 2 ** (8 - cfg.n_bits), 0, 255).astype(jnp.uint8)

    def bits_per_dim(self, variables: dict, x: Array) -> Array:
        """Dequantised x (B, H, W, C) in [-0.5, 0.5) -> bits per dimension (B,), the official objective
        (log-det + prior log-density - log(n_bins) per dimension)."""
        cfg = self.config
        _, logdet, logp = self.transform(variables, x)
        ll = logdet + logp - math.log(2**cfg.n_bits) * cfg.dims
        return F.bits_per_dim(ll, cfg.dims)
