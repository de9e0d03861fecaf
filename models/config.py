"""Model configs: dataclasses filled from configs/models/<name>.yaml plus overrides.

An unknown key is refused with a sentence naming the file and the key (typos must not pass
silently as defaults).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar


from moodlens.core.options import configs_root, fill_dataclass, read_yaml
from moodlens.core.schema import LIVE_AUDIO_DIM, LIVE_VISION_DIM

T = TypeVar("T")


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


def load_model_config(name: str, config_cls: type[T], overrides: dict[str, Any] | None = None,
                      path: str | Path | None = None) -> T:
    path = Path(path) if path else configs_root() / "models" / f"{name}.yaml"
    values = read_yaml(path) if path.exists() else {}
    values.pop("model", None)  # the file may name its model for readability
    merged = {**values, **(overrides or {})}
    return fill_dataclass(config_cls, merged, str(path))


def config_to_dict(config) -> dict[str, Any]:
    return dataclasses.asdict(config)
