"""The image flow's hyper-parameters (multi-scale Glow and the NanoFlow scheme on images, the paper's
CIFAR-10 experiments): one frozen, checked section, and what each variant is made of."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

from nanoflow_jax.schema import Bool, Choice, Float, Int, Section, field


class ImageVariant(NamedTuple):
    stack: str  # the estimator's conv stack: "small" (3x3, 1x1) or "large" (6 x 3x3)
    shared: bool  # one estimator per level for all its steps
    one_projection: bool  # ... and one output projection too (naive)
    embedded: bool  # per-step embedding map concatenated to the estimator input, and gates


IMAGE_VARIANTS = {
    "glow": ImageVariant("small", False, False, False),
    "glow_large": ImageVariant("large", False, False, False),
    "nanoflow_naive": ImageVariant("large", True, True, False),
    "nanoflow_decomp": ImageVariant("large", True, False, False),
    "nanoflow": ImageVariant("large", True, False, True),
    "nanoflow_alt": ImageVariant("small", True, False, True),
}
CONV_STACKS = {"small": (3, 1), "large": (3, 3, 3, 3, 3, 3)}  # kernel sizes of the estimator's convs


@dataclasses.dataclass(frozen=True)
class GlowConfig(Section):
    """Hyper-parameters of an image flow; the defaults are the paper's Glow on CIFAR-10."""

    SECTION = "model"

    kind: str = field("image", Choice(("image",)), "model family: the image flows")
    variant: str = field("glow", Choice(tuple(IMAGE_VARIANTS)), "estimator scheme (see IMAGE_VARIANTS)")
    image_size: int = field(32, Int(min=1), "height and width of the images")
    channels: int = field(3, Int(min=1), "colour channels")
    hidden: int = field(256, Int(min=1), "channels of the estimator's convolutions")
    n_levels: int = field(3, Int(min=1), "levels of the multi-scale flow (a 2x2 squeeze each)")
    n_flows: int = field(32, Int(min=1), "K, flow steps per level")
    embed_dim: int = field(1, Int(min=1), "D: the level-l embedding map has D * 2**l channels (nanoflow)")
    lu: bool = field(True, Bool(), "invertible 1x1 convolutions in LU form")
    n_bits: int = field(8, Int(min=1, max=8), "bits per colour value modelled")
    actnorm_scale: float = field(1.0, Float(min=0.0, min_open=True), "ActNorm output scale at init")

    def check_fields(self) -> None:
        if self.image_size % 2**self.n_levels:
            self.fail("image_size", f"is not allowed: a multiple of 2 ** model.n_levels = {2**self.n_levels}")
        if self.dims >= 2**31:  # the per-image dimension count is an int32 in the programs
            self.fail("image_size", "is not allowed: image_size ** 2 * model.channels must be below 2 ** 31")

    @property
    def dims(self) -> int:
        return self.image_size**2 * self.channels

    @property
    def scheme(self) -> ImageVariant:
        return IMAGE_VARIANTS[self.variant]
