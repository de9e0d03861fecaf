"""Model configs: dataclasses filled from configs/models/<name>.yaml plus overrides.

An unknown key is refused with a sentence naming the file and the key (typos must not pass
silently as defaults).
"""

from __future__ import annotations

import dataclasses
import importlib.resources
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

import yaml

from moodlens.realtime.errors import ConfigError

T = TypeVar("T")

# Live featurizer dims (realtime/features): audio 40-d librosa frames, vision 64-d MediaPipe face.
LIVE_AUDIO_DIM = 40
LIVE_VISION_DIM = 64


@dataclass
class BaseModelConfig:
    """Fields every model shares. Paper-specific fields live in each model's Config subclass."""

    text_encoder: str | None = None       # local path to a HF BERT-style encoder; None = all-MiniLM-L6-v2
    text_encoder_trainable_layers: int = 0  # 0 = frozen, -1 = all, N = top N layers fine-tuned
    text_dim: int = 384                    # hidden size of the text encoder (checked when loading)
    text_max_len: int = 50
    audio_dim: int = LIVE_AUDIO_DIM
    vision_dim: int = LIVE_VISION_DIM
    output_range: float = 3.0             # labels live in [-output_range, output_range]
    dropout: float = 0.1


def configs_root() -> Path:
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


def fill_dataclass(cls: type[T], values: dict[str, Any], source: str) -> T:
    """Build `cls` from `values`, refusing unknown keys and values of the wrong type."""
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(
            f"{source}: unknown key '{unknown[0]}' for {cls.__name__} "
            f"(known keys: {', '.join(sorted(known))})."
        )
    defaults = cls()
    checked = {}
    for key, value in values.items():
        default = getattr(defaults, key)
        if default is not None and value is not None:
            if isinstance(default, bool) and not isinstance(value, bool):
                raise ConfigError(f"{source}: key '{key}' must be true or false, got {value!r}.")
            if isinstance(default, (int, float)) and not isinstance(default, bool):
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise ConfigError(f"{source}: key '{key}' must be a number, got {value!r}.")
                if isinstance(default, int) and isinstance(value, float) and not value.is_integer():
                    raise ConfigError(f"{source}: key '{key}' must be a whole number, got {value!r}.")
                value = type(default)(value)
            if isinstance(default, (list, tuple)) and isinstance(value, (list, tuple)):
                value = type(default)(value)
        checked[key] = value
    return dataclasses.replace(defaults, **checked)


def load_model_config(name: str, config_cls: type[T], overrides: dict[str, Any] | None = None,
                      path: str | Path | None = None) -> T:
    path = Path(path) if path else configs_root() / "models" / f"{name}.yaml"
    values = read_yaml(path) if path.exists() else {}
    values.pop("model", None)  # the file may name its model for readability
    merged = {**values, **(overrides or {})}
    return fill_dataclass(config_cls, merged, str(path))


def config_to_dict(config) -> dict[str, Any]:
    return dataclasses.asdict(config)
