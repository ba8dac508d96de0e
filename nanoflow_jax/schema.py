"""Declared config sections: every field of every config section has a type, an allowed range or set of
choices and a one-line description, declared once next to the code it configures.

A section is a frozen dataclass deriving from `Section` whose fields are made with `field(default, rule,
doc)`. Building one checks each field against its rule, then the section's cross-field rules
(`check_fields`); a mistake is one `ConfigError` line naming the field, the value and what is allowed:

    config: train.batch_size = 0 is not allowed: an integer >= 1

`Section.from_any` builds a section from a mapping, an ml_collections ConfigDict or the section itself,
refusing unknown keys. The rules are plain data, so tests can draw values inside and outside each
field's range. No dependencies beyond the standard library: this module is a leaf.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, ClassVar

from nanoflow_jax.errors import ConfigError


# -- rules -----------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Rule:
    """What a field accepts. `optional`: None is allowed too."""

    optional: bool = dataclasses.field(default=False, kw_only=True)

    def accepts(self, value: Any) -> bool:
        return (value is None and self.optional) or (value is not None and self._accepts(value))

    def _accepts(self, value: Any) -> bool:
        raise NotImplementedError

    def coerce(self, value: Any) -> Any:
        """The stored form of an accepted value (e.g. a list from JSON as a tuple)."""
        return value

    def describe(self) -> str:
        text = self._describe()
        return f"{text}, or None" if self.optional else text

    def _describe(self) -> str:
        raise NotImplementedError


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _bounds(lo, hi, lo_open: bool = False, hi_open: bool = False) -> str:
    parts = []
    if lo is not None:
        parts.append(f"{'>' if lo_open else '>='} {lo:g}")
    if hi is not None:
        parts.append(f"{'<' if hi_open else '<='} {hi:g}")
    return " and ".join(parts)


@dataclasses.dataclass(frozen=True)
class Int(Rule):
    min: int | None = None
    max: int | None = None

    def _accepts(self, v: Any) -> bool:
        return _is_int(v) and (self.min is None or v >= self.min) and (self.max is None or v <= self.max)

    def _describe(self) -> str:
        bounds = _bounds(self.min, self.max)
        return f"an integer {bounds}" if bounds else "an integer"


@dataclasses.dataclass(frozen=True)
class Float(Rule):
    min: float | None = None
    max: float | None = None
    min_open: bool = False
    max_open: bool = False

    def _accepts(self, v: Any) -> bool:
        if not (_is_int(v) or isinstance(v, float)) or not math.isfinite(v):
            return False
        if self.min is not None and (v <= self.min if self.min_open else v < self.min):
            return False
        return self.max is None or (v < self.max if self.max_open else v <= self.max)

    def coerce(self, v: Any) -> Any:
        return None if v is None else float(v)

    def _describe(self) -> str:
        bounds = _bounds(self.min, self.max, self.min_open, self.max_open)
        return f"a finite number {bounds}" if bounds else "a finite number"


@dataclasses.dataclass(frozen=True)
class Bool(Rule):
    def _accepts(self, v: Any) -> bool:
        return isinstance(v, bool)

    def _describe(self) -> str:
        return "True or False"


@dataclasses.dataclass(frozen=True)
class Choice(Rule):
    choices: tuple = ()

    def _accepts(self, v: Any) -> bool:
        return any(v == c and type(v) is type(c) for c in self.choices)

    def _describe(self) -> str:
        return "one of " + ", ".join(repr(c) for c in self.choices)


@dataclasses.dataclass(frozen=True)
class Subset(Rule):
    """A tuple of distinct names from `choices` (a list is accepted and stored as a tuple)."""

    choices: tuple = ()
    min_size: int = 0

    def _accepts(self, v: Any) -> bool:
        return (
            isinstance(v, (tuple, list))
            and all(isinstance(x, str) and x in self.choices for x in v)
            and len(set(v)) == len(v) >= self.min_size
        )

    def coerce(self, v: Any) -> Any:
        return None if v is None else tuple(v)

    def _describe(self) -> str:
        least = f"at least {self.min_size} " if self.min_size else ""
        return f"a tuple of {least}distinct names from {', '.join(map(repr, self.choices))}"


@dataclasses.dataclass(frozen=True)
class Text(Rule):
    """Any string (a path, a name); `nonempty` refuses ""."""

    nonempty: bool = False

    def _accepts(self, v: Any) -> bool:
        return isinstance(v, str) and (bool(v) or not self.nonempty)

    def _describe(self) -> str:
        return "a non-empty string" if self.nonempty else "a string"


@dataclasses.dataclass(frozen=True)
class Floats(Rule):
    """A non-empty tuple of numbers, each within the element rule `each`."""

    each: Float = Float()

    def _accepts(self, v: Any) -> bool:
        return isinstance(v, (tuple, list)) and len(v) > 0 and all(self.each.accepts(x) for x in v)

    def coerce(self, v: Any) -> Any:
        return None if v is None else tuple(float(x) for x in v)

    def _describe(self) -> str:
        return f"a non-empty tuple of numbers, each {self.each.describe().removeprefix('a finite number ')}"


def field(default: Any, rule: Rule, doc: str) -> Any:
    """A section field: its default, the rule its values must satisfy and what it means."""
    return dataclasses.field(default=default, metadata={"rule": rule, "doc": doc})


def rule_of(f: dataclasses.Field) -> Rule:
    return f.metadata["rule"]


# -- sections ----------------------------------------------------------------------------------------------
class Section:
    """Base of the config sections (frozen dataclasses): field checks, cross-field checks, conversion."""

    SECTION: ClassVar[str] = "config"

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            rule, value = rule_of(f), getattr(self, f.name)
            if not rule.accepts(value):
                self.fail(f.name, f"is not allowed: {rule.describe()}")
            object.__setattr__(self, f.name, rule.coerce(value))
        self.check_fields()

    def check_fields(self) -> None:
        """Cross-field rules of the section: raise with `self.fail(name, why)`."""

    def fail(self, name: str, why: str) -> None:
        raise ConfigError(f"{self.label(name)} = {getattr(self, name)!r} {why}")

    @classmethod
    def label(cls, name: str) -> str:
        """How errors name a field."""
        return f"{cls.SECTION}.{name}"

    @classmethod
    def from_any(cls, cfg: Any = None, source: str = "config", **overrides) -> Any:
        """From None (the defaults), an instance, a mapping or a ConfigDict; unknown keys are an error.
        Errors start with `source` (e.g. the file the values came from)."""
        if isinstance(cfg, cls) and not overrides:
            return cfg
        if isinstance(cfg, Section):
            cfg = cfg.to_dict()
        if hasattr(cfg, "to_dict"):
            cfg = cfg.to_dict()
        if not isinstance(cfg, Mapping | None):
            raise ConfigError(f"{source}: section {cls.SECTION} must be a mapping, got {type(cfg).__name__}")
        cfg = dict(cfg or {}) | overrides
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(cfg) - names)
        if unknown:
            raise ConfigError(
                f"{source}: unknown field(s) {cls.SECTION}.{unknown[0]}; known: {', '.join(sorted(names))}"
            )
        try:
            return cls(**cfg)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None

    def to_dict(self) -> dict:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _plain(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def describe(cls: type) -> list[tuple[str, Any, str, str]]:
    """(how errors name it, default, allowed values, meaning) for every field of a section class."""
    return [(cls.label(f.name), f.default, rule_of(f).describe(), f.metadata["doc"]) for f in dataclasses.fields(cls)]
