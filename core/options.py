"""YAML -> option dataclasses, one convention for every options class.

`read_yaml` reads a mapping, `fill_dataclass` builds a dataclass from it refusing unknown keys and
values of the wrong type (typos must not pass silently as defaults), and the `Options` mixin gives
each options dataclass `from_dict(values, where)` and `check(where)`. Every refusal is a
`ConfigError` whose sentence names the file (or flag) and the key.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

import yaml

from moodlens.core.errors import ConfigError

T = TypeVar("T")


def configs_root() -> Path:
    """The shipped YAML configs (package data of moodlens.configs)."""
    return Path(str(importlib.resources.files("moodlens.configs")))


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"Config file {path} does not exist.")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"Config file {path} is not valid YAML{where}.") from None
    if not isinstance(data, dict):
        raise ConfigError(f"Config file {path} must hold a mapping of keys to values.")
    return data


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def fill_dataclass(cls: type[T], values: dict[str, Any], source: str) -> T:
    """Build `cls` from `values`, refusing unknown keys and values of the wrong type.

    A mapping given for a field whose default is itself an option dataclass fills that one the same
    way (nested sections). Fields left out keep their defaults, computed as the class computes them
    (`__post_init__` sees only the given values, so a default derived from another field follows it)."""
    known = {f.name: f for f in fields(cls) if f.init}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(
            f"{source}: unknown key '{unknown[0]}' for {cls.__name__} "
            f"(known keys: {', '.join(sorted(known))})."
        )
    checked = {}
    for key, value in values.items():
        default = _default(known[key])
        if default is not None and value is not None:
            if dataclasses.is_dataclass(default) and not isinstance(default, type):
                if isinstance(value, dict):
                    value = fill_dataclass(type(default), value, f"{source} ({key})")
                elif not isinstance(value, type(default)):
                    raise ConfigError(f"{source}: key '{key}' must be a mapping, got {value!r}.")
            elif isinstance(default, bool) and not isinstance(value, bool):
                raise ConfigError(f"{source}: key '{key}' must be true or false, got {value!r}.")
            elif isinstance(default, (int, float)) and not isinstance(default, bool):
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise ConfigError(f"{source}: key '{key}' must be a number, got {value!r}.")
                if isinstance(default, int) and isinstance(value, float) and not value.is_integer():
                    raise ConfigError(f"{source}: key '{key}' must be a whole number, got {value!r}.")
                value = type(default)(value)
            elif isinstance(default, (list, tuple)) and isinstance(value, (list, tuple)):
                value = type(default)(value)
        checked[key] = value
    return cls(**checked)


class Options:
    """Mixin for option dataclasses: `Cls.from_dict(values, where)` builds and checks one.

    Subclasses override `check(where)` to refuse values that are well typed but out of range;
    it raises `ConfigError` naming `where` (a file, a section, a flag) and the key.
    """

    @classmethod
    def from_dict(cls: type[T], values: dict[str, Any] | None, where: str = "options") -> T:
        if values is not None and not isinstance(values, dict):
            raise ConfigError(f"{where}: expected a mapping of keys to values, got {type(values).__name__}.")
        options = fill_dataclass(cls, dict(values or {}), where)
        options.check(where)
        return options

    def check(self, where: str = "options") -> None:
        """Refuse out-of-range values (no-op by default)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
