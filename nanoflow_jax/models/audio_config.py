"""The audio flow's hyper-parameters (WaveFlow and the NanoFlow family): one frozen, checked section."""

from __future__ import annotations

import dataclasses
import functools
import logging
import math

from nanoflow_jax.schema import Bool, Choice, Float, Int, Section, Subset, field

VARIANTS = ("waveflow", "nanoflow_naive", "nanoflow_decomp", "nanoflow")
INJECTIONS = ("additive", "multiplicative", "concat")
SOURCE_FILTERS = ("none", "gain", "lpc")
_log = logging.getLogger("nanoflow_jax")


@functools.cache
def _warn_short_receptive_field(rows: int, n_groups: int) -> None:
    # a valid flow that the official code builds too (rows further up are simply not used): warn once
    _log.warning(
        "model config: each row's estimator sees %d rows of the n_groups=%d above and including it; "
        "raise height_dilation_cycle or n_layers to see all",
        rows,
        n_groups,
    )


def upsample_strides(hop: int) -> tuple[int, int] | None:
    """Two even strides whose product is `hop`, the pair closest to sqrt(hop) with the smaller first (a
    transposed convolution of kernel 2s, stride s and padding s/2 centres each frame exactly only for
    even s), or None when there is none (hop not a multiple of 4)."""
    pairs = [(a, hop // a) for a in range(2, math.isqrt(hop) + 1, 2) if hop % a == 0 and (hop // a) % 2 == 0]
    return pairs[-1] if pairs else None


@dataclasses.dataclass(frozen=True)
class ModelConfig(Section):
    """Hyper-parameters of an audio flow; the defaults are the paper's NanoFlow (C=128, K=8, G=16,
    D=512). `build_model(config)` makes the `AudioFlow`."""

    SECTION = "model"

    kind: str = field("audio", Choice(("audio",)), "model family: the audio flows")
    variant: str = field(
        "nanoflow",
        Choice(VARIANTS),
        "waveflow: K estimators; nanoflow_naive: one estimator and projection; nanoflow_decomp: one "
        "estimator, K projections; nanoflow: decomp plus the flow indication embedding",
    )
    n_flows: int = field(8, Int(min=1), "K, the flow steps")
    n_layers: int = field(8, Int(min=1), "L, residual layers of the estimator")
    channels: int = field(128, Int(min=1), "C, residual channels of the estimator")
    n_groups: int = field(16, Int(min=1), "G, rows of the 2-D layout (samples per column)")
    cond_channels: int = field(80, Int(min=1), "mel bands of the conditioning")
    hop_length: int = field(
        256,
        Int(min=4, max=4096),
        "samples per mel frame: the conditioner's two transposed convolutions upsample by two even strides "
        "whose product is this (256 = 16 x 16, the official; 200 = 10 x 20, 300 = 10 x 30, 480 = 20 x 24)",
    )
    height_dilation_cycle: int = field(
        1, Int(min=1), "layer i dilates height by 2 ** (i % cycle); the official n_layer_per_cycle"
    )
    embed_dim: int = field(512, Int(min=1), "D, width of the flow indication embedding (nanoflow)")
    embed_injection: tuple = field(
        ("additive", "multiplicative"), Subset(INJECTIONS), "how nanoflow injects the flow embedding"
    )
    gate_form: str = field(
        "ones", Choice(("ones", "exp")), "multiplicative gate: official h + res * g (g from 1) or exp(delta)"
    )
    embed_weight_norm: bool = field(True, Bool(), "weight norm on the per-layer embedding projections")
    shared_layers: int | None = field(
        None, Int(min=1, optional=True), "nanoflow / decomp: share only the bottom n layers (None: all)"
    )
    coupling: str = field("affine", Choice(("affine", "spline")), "element-wise coupling of each flow")
    spline_bins: int = field(32, Int(min=1), "bins of the rational-quadratic spline coupling")
    spline_tail_bound: float = field(5.0, Float(min=0.0, min_open=True), "spline interval [-B, B]")
    source_filter: str = field(
        "none",
        Choice(SOURCE_FILTERS),
        "an exact filter between the waveform and the flow, from the mel's envelope: none; gain (x / g per "
        "block); lpc (A(z) x / g: the flow models the excitation)",
    )
    lpc_order: int = field(24, Int(min=1, max=64), "order p of the source filter's all-pole envelope")
    # the mel front-end the source filter inverts (configs keep them one reference with data.*)
    sample_rate: int = field(22050, Int(min=1000, max=384_000), "sample rate of the mel (source filter)")
    n_fft: int = field(1024, Int(min=2, max=16_384), "FFT size of the mel (source filter)")
    win_length: int = field(1024, Int(min=1, max=16_384), "window length of the mel (source filter)")
    fmin: float = field(0.0, Float(min=0.0), "lowest mel filter edge in Hz (source filter)")
    fmax: float = field(8000.0, Float(min=0.0, min_open=True), "highest mel filter edge in Hz (source filter)")

    def check_fields(self) -> None:
        if self.variant == "nanoflow" and not self.embed_injection:
            self.fail("embed_injection", "is not allowed: nanoflow needs at least one injection mode")
        if self.shared_layers is not None:
            if self.variant not in ("nanoflow", "nanoflow_decomp"):
                self.fail("shared_layers", f"is not allowed for variant {self.variant!r}: nanoflow or decomp only")
            if self.shared_layers > self.n_layers:
                self.fail("shared_layers", f"is not allowed: at most model.n_layers = {self.n_layers}")
        if self.source_filter != "none" and self.lpc_order > self.hop_length:
            self.fail("lpc_order", f"is not allowed: at most model.hop_length = {self.hop_length}")
        if upsample_strides(self.hop_length) is None:
            self.fail("hop_length", "is not allowed: a product of two even strides (a multiple of 4)")
        if self.receptive_rows < self.n_groups:
            _warn_short_receptive_field(self.receptive_rows, self.n_groups)

    # -- derived ---------------------------------------------------------------------------------
    @property
    def n_shared(self) -> int:
        """Estimator layers shared by all flows (0 for WaveFlow)."""
        if self.variant == "waveflow":
            return 0
        return self.n_layers if self.shared_layers is None else self.shared_layers

    @property
    def strides(self) -> tuple[int, int]:
        """The conditioner's two upsampling strides, in order (their product is the hop)."""
        return upsample_strides(self.hop_length)

    @property
    def n_heads(self) -> int:
        return 1 if self.variant == "nanoflow_naive" else self.n_flows

    def injects(self, mode: str) -> bool:
        return self.variant == "nanoflow" and mode in self.embed_injection

    def height_dilation(self, layer: int) -> int:
        return 2 ** (layer % self.height_dilation_cycle)

    @property
    def receptive_rows(self) -> int:
        """Rows above and including the current one that the causal estimator can see (input is shifted,
        so 1 + the sum of 2*d_h over layers)."""
        return 1 + sum(2 * self.height_dilation(i) for i in range(self.n_layers))
