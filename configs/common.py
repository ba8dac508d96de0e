"""Shared by the config files: the `file.py:ARG` parser and ConfigDicts built from the declared sections
(their defaults live once, next to the code they configure)."""

from __future__ import annotations

import dataclasses
import types

import ml_collections

from nanoflow_jax.errors import ConfigError
from nanoflow_jax.schema import Float, Int, Section, rule_of


def parse_arg(arg: str | None, **defaults) -> types.SimpleNamespace:
    """big_vision-style config argument: "nanoflow_k16,demo" or "variant=nanoflow_k16,demo=True"; a bare
    word is the first default's value (the variant), or True for a boolean default."""
    values = dict(defaults)
    first = next(iter(defaults))
    for item in filter(None, (arg or "").split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            key, value = (item, "True") if isinstance(defaults.get(item), bool) else (first, item)
        if key not in defaults:
            raise ConfigError(f"unknown config argument {key!r}; known: {', '.join(defaults)}")
        values[key] = value == "True" if isinstance(defaults[key], bool) else type(defaults[key])(value)
    return types.SimpleNamespace(**values)


def section(cls: type[Section], **overrides) -> ml_collections.ConfigDict:
    """A ConfigDict of a section's declared defaults with `overrides`; a field that may be None keeps
    its type, so the command line can still set it."""
    cfg = ml_collections.ConfigDict()
    for f in dataclasses.fields(cls):
        value, rule = overrides.pop(f.name, f.default), rule_of(f)
        if value is None and rule.optional:
            kind = int if isinstance(rule, Int) else float if isinstance(rule, Float) else str
            value = ml_collections.FieldReference(None, field_type=kind)
        setattr(cfg, f.name, value)
    if overrides:
        raise ConfigError(f"{cls.__name__} has no field(s) {sorted(overrides)}")
    return cfg


def layered(*layers: dict[str, dict]) -> dict[str, dict]:
    """Section-wise overrides ({section: {field: value}}) merged in order, a later layer's field winning:
    e.g. a recipe, then a variant's model fields, then a demo shrink."""
    merged: dict[str, dict] = {}
    for layer in layers:
        for name, fields in layer.items():
            merged[name] = merged.get(name, {}) | fields
    return merged


def task_config(sections: dict[str, type[Section]], overrides: dict[str, dict]) -> ml_collections.ConfigDict:
    """A run's ConfigDict: every one of a task's `sections` from its declared defaults and `overrides`
    ({section: {field: value}})."""
    unknown = sorted(set(overrides) - set(sections))
    if unknown:
        raise ConfigError(f"no section(s) {unknown}; the task has {', '.join(sections)}")
    c = ml_collections.ConfigDict()
    for name, cls in sections.items():
        setattr(c, name, section(cls, **overrides.get(name, {})))
    return c


def audio_config(overrides: dict[str, dict]) -> ml_collections.ConfigDict:
    """An audio run's `task_config`. The model's mel fields follow data's (one reference each), so
    `--config.data.hop_length=300` also sets the conditioner's upsampling (and the source filter's
    analysis follows the data's mel)."""
    from nanoflow_jax.train.audio import AudioTask

    c = task_config(AudioTask.SECTIONS, overrides)
    for name in ("hop_length", "sample_rate", "n_fft", "win_length", "fmin", "fmax"):
        setattr(c.model, name, c.data.get_ref(name))
    return c
