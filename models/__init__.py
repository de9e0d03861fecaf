"""The model zoo: one file per paper, one contract for all (see `batch.py` and `base.py`).

    from moodlens.models import build_model, MODEL_NAMES, MultimodalBatch
    model = build_model("hcrl_mfd")
    batch = model.example_inputs(2)
    out = model(*batch.tensors())      # SentimentOutput(fused, text, audio, vision), each (B,)
"""

from __future__ import annotations

import importlib
from typing import Any

from moodlens.models.batch import MultimodalBatch, SentimentOutput
from moodlens.core.errors import ConfigError

MODEL_NAMES = ("hcrl_mfd", "dashfusion", "dlf", "dar", "tecafn")


def model_module(name: str):
    if name not in MODEL_NAMES:
        raise ConfigError(f"Unknown model '{name}'; choose one of: {', '.join(MODEL_NAMES)}.")
    return importlib.import_module(f"moodlens.models.{name}")


def load_config(name: str, overrides: dict[str, Any] | None = None, path=None):
    from moodlens.models.config import load_model_config

    module = model_module(name)
    return load_model_config(name, module.Config, overrides, path)


def build_model(name: str, overrides: dict[str, Any] | None = None, config_path=None, **kwargs):
    """Build model `name` configured from configs/models/<name>.yaml (+ overrides)."""
    module = model_module(name)
    config = load_config(name, overrides, config_path)
    return module.Model(config, **kwargs)


__all__ = ["MODEL_NAMES", "MultimodalBatch", "SentimentOutput", "build_model", "load_config", "model_module"]
