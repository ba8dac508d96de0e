"""Mel upsampler: two weight-normed ConvTranspose2d(1 -> 1, (3, 2s), stride (1, s), padding (1, s/2)) stages,
each followed by LeakyReLU(0.4), over the mel treated as a one-channel (bands x frames) image. The strides
multiply to the hop (the official 16 x 16 = 256; `ModelConfig.strides` for others), so F frames give
hop * F samples. Always true float32 (one channel: cheap)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from nanoflow_jax.models.layers import kernel_param, torch_uniform

Array = jax.Array


class UpsampleStage(nn.Module):
    stride: int = 16
    kernel_h: int = 3

    @nn.compact
    def __call__(self, x: Array) -> Array:  # (B, bands, frames, 1) -> (B, bands, frames * stride, 1)
        kh, kw = self.kernel_h, 2 * self.stride
        fan_in = kh * kw  # PyTorch counts a transposed conv's fan-in over its output channels (1 here)
        w = kernel_param(self, (kh, kw, 1), fan_in, True)[..., 0]
        y = transposed_conv(x[..., 0], w, self.stride)[..., None]
        y = y + self.param("bias", torch_uniform(fan_in), (1,))
        return nn.leaky_relu(y, 0.4)


def transposed_conv(x: Array, w: Array, stride: int) -> Array:
    """ConvTranspose2d(1 -> 1, (kh, 2s), stride (1, s), padding ((kh - 1) // 2, s / 2)) of x (B, bands, F)
    with weight w (kh, 2s) -> (B, bands, F * s), as multiply-adds: frame f spreads x[f] * w[r] over
    the 2s samples from f * s - s / 2 on, so each output block of s samples is frame f's first half of
    the kernel plus frame f - 1's second half. Not a convolution call: on a GPU a convolution is a cuDNN
    call, which XLA 0.10 cannot record in a CUDA graph (bench/RESULTS.md); these are fused elementwise
    kernels on every backend."""
    kh, s = w.shape[0], stride
    pad = (kh - 1) // 2
    xp = jnp.pad(x, ((0, 0), (pad, kh - 1 - pad), (0, 0)))
    bands = x.shape[1]
    # out row h reads input rows h + pad - k for kernel row k (a transposed conv flips the kernel)
    spread = sum(xp[:, pad + (pad - k) : pad + (pad - k) + bands, :, None] * w[k] for k in range(kh))
    first, second = spread[..., :s], spread[..., s:]  # (B, bands, F, s) each
    blocks = jnp.pad(first, ((0, 0), (0, 0), (0, 1), (0, 0))) + jnp.pad(second, ((0, 0), (0, 0), (1, 0), (0, 0)))
    flat = blocks.reshape(blocks.shape[:2] + (-1,))  # (B, bands, (F + 1) * s)
    return flat[..., s // 2 : s // 2 + x.shape[2] * s]


class Conditioner(nn.Module):
    """(B, bands, F) mel -> (B, hop * F, bands) per-sample conditioning. With `valid_frames` (B,) each
    item is its first frames only (the rest padding): every stage's input beyond the item is zeroed, as
    if it were absent, so the first hop * valid_frames samples are what the item alone would give."""

    strides: tuple[int, ...] = (16, 16)

    @nn.compact
    def __call__(self, mel: Array, valid_frames: Array | None = None) -> Array:
        x, scale = mel[..., None], 1
        for i, stride in enumerate(self.strides):
            if valid_frames is not None:
                upsampled = scale * valid_frames[:, None, None, None]
                x = jnp.where(jnp.arange(x.shape[2])[None, None, :, None] < upsampled, x, 0.0)
            x = UpsampleStage(stride, name=f"stage_{i}")(x)
            scale *= stride
        return jnp.swapaxes(x[..., 0], 1, 2)
