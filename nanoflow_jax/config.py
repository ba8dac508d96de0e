"""Model configuration: one frozen dataclass that every model builder reads."""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
from collections.abc import Mapping
from typing import Any

VARIANTS = ("waveflow", "nanoflow_naive", "nanoflow_decomp", "nanoflow")
INJECTIONS = ("additive", "multiplicative", "concat")
_log = logging.getLogger("nanoflow_jax")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of an audio flow (WaveFlow or the NanoFlow family).

    variant: "waveflow" (K estimators), "nanoflow_naive" (one estimator, one projection),
        "nanoflow_decomp" (one estimator, K projections) or "nanoflow" (+ flow indication embedding).
    n_flows K, n_layers L, channels C, n_groups G (rows of the 2-D layout), cond_channels (mel bands).
    height_dilation_cycle: layer i dilates height by 2 ** (i % cycle); 1 keeps every layer at 1 (the
        official n_layer_per_cycle). G = 32 or 64 need a cycle > 1 for the receptive field to cover G rows.
    embed_dim D and embed_injection (any of "additive", "multiplicative", "concat"): NanoFlow only.
    gate_form: "ones" (official: h + res * gate, gate initialised to 1) or "exp" (paper: exp(delta), 0 init).
    embed_weight_norm: weight norm on the per-layer embedding projections.
    shared_layers: NanoFlow / decomp: share only the bottom n estimator layers (paper App. B); None = all.
    coupling: "affine" or "spline" (rational-quadratic, `spline_bins`, `spline_tail_bound`).
    """

    variant: str = "nanoflow"
    n_flows: int = 8
    n_layers: int = 8
    channels: int = 128
    n_groups: int = 16
    cond_channels: int = 80
    height_dilation_cycle: int = 1
    embed_dim: int = 512
    embed_injection: tuple[str, ...] = ("additive", "multiplicative")
    gate_form: str = "ones"
    embed_weight_norm: bool = True
    shared_layers: int | None = None
    coupling: str = "affine"
    spline_bins: int = 32
    spline_tail_bound: float = 5.0

    def __post_init__(self):
        def fail(msg):
            raise ValueError(f"model config: {msg}")

        if self.variant not in VARIANTS:
            fail(f"variant {self.variant!r} is not one of {VARIANTS}")
        for name in ("n_flows", "n_layers", "channels", "n_groups", "cond_channels", "height_dilation_cycle"):
            if int(getattr(self, name)) < 1:
                fail(f"{name} must be a positive integer, got {getattr(self, name)}")
        object.__setattr__(self, "embed_injection", tuple(self.embed_injection))
        bad = [m for m in self.embed_injection if m not in INJECTIONS]
        if bad:
            fail(f"embed_injection {bad} not in {INJECTIONS}")
        if self.variant == "nanoflow" and not self.embed_injection:
            fail("nanoflow needs at least one embed_injection mode")
        if self.gate_form not in ("ones", "exp"):
            fail(f"gate_form must be 'ones' or 'exp', got {self.gate_form!r}")
        if self.coupling not in ("affine", "spline"):
            fail(f"coupling must be 'affine' or 'spline', got {self.coupling!r}")
        if self.shared_layers is not None:
            if self.variant not in ("nanoflow", "nanoflow_decomp"):
                fail("shared_layers (partial sharing) applies to nanoflow and nanoflow_decomp only")
            if not 0 < self.shared_layers <= self.n_layers:
                fail(f"shared_layers must be in 1..n_layers={self.n_layers}, got {self.shared_layers}")
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

    @classmethod
    def from_any(cls, cfg: Any) -> ModelConfig:
        """Accepts a ModelConfig, a mapping or an ml_collections ConfigDict (unknown keys are an error)."""
        return dataclass_from_any(cls, cfg, "model config")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["embed_injection"] = list(self.embed_injection)
        return d


@functools.cache
def _warn_short_receptive_field(rows: int, n_groups: int) -> None:
    # a valid flow (rows further up are simply not used) that the official code builds too: warn once
    _log.warning(
        "model config: each row's estimator sees %d rows of the n_groups=%d above and including it; "
        "raise height_dilation_cycle or n_layers to see all",
        rows,
        n_groups,
    )


def dataclass_from_any(cls: type, cfg: Any, what: str) -> Any:
    """An instance of the frozen dataclass `cls` from itself, a mapping or a ConfigDict; unknown keys
    are an error naming them (a "name" key is allowed and ignored)."""
    if isinstance(cfg, cls):
        return cfg
    if hasattr(cfg, "to_dict"):
        cfg = cfg.to_dict()
    if not isinstance(cfg, Mapping):
        raise TypeError(f"{what} must be a mapping or {cls.__name__}, got {type(cfg).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(cfg) - names - {"name"})
    if unknown:
        raise ValueError(f"{what}: unknown field(s) {unknown}; known: {sorted(names)}")
    return cls(**{k: v for k, v in cfg.items() if k in names})


def read_official(official: Any) -> Mapping:
    """An official JSON config (path or its dict) as a mapping; unreadable or invalid JSON is a ValueError."""
    if isinstance(official, (str, os.PathLike)):
        try:
            with open(official) as f:
                official = json.load(f)
        except OSError as e:
            raise ValueError(f"cannot read official config {official}: {e.strerror}") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"official config {official} is not valid JSON: {e}") from None
    if not isinstance(official, Mapping):
        raise TypeError(f"official config must be a path or a mapping, got {type(official).__name__}")
    return official


def official_section(official: Any) -> Mapping:
    """The model section (`waveflow_config`) of an official config, or the mapping itself if it is one."""
    official = read_official(official)
    return official.get("waveflow_config", official)


def config_from_official(official: Any) -> ModelConfig:
    """Model config equivalent to an official NanoFlow JSON config (path, its dict, or its
    `waveflow_config` section)."""
    sec = official_section(official)
    try:
        variant = sec.get("coupling_type", "waveflow")
        if variant not in VARIANTS:
            raise ValueError(f"official coupling_type {variant!r} is not one of {VARIANTS}")
        kw = dict(
            variant=variant,
            n_flows=int(sec["n_flow"]),
            n_layers=int(sec["n_layer"]),
            channels=int(sec["res_channels"]),
            n_groups=int(sec["n_height"]),
            cond_channels=int(sec.get("cin_channels", 80)),
            height_dilation_cycle=int(sec.get("n_layer_per_cycle", 1)),
        )
    except KeyError as e:
        raise ValueError(f"official config lacks field {e.args[0]!r}") from None
    if variant == "nanoflow":
        kw["embed_dim"] = int(sec.get("size_flow_embed", 512))
        # the official per-layer embedding projections are always weight-normed; its use_weightnorm_embed
        # puts weight norm on the embedding table itself, which the converter folds into the plain table
        kw["embed_weight_norm"] = True
    return ModelConfig(**kw)
