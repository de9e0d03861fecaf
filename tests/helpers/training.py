"""A tiny HCRL-MFD on tiny synthetic data: the trainer tests' common set-up."""

from __future__ import annotations

from moodlens.train.data import DataOptions, make_synthetic
from moodlens.train.trainer import TrainConfig

TINY = {"text_hidden": 16, "audio_hidden": 16, "vision_hidden": 16, "shared_dim": 16, "fusion_hidden": 16,
        "heads": 2, "encoder_layers": 1, "decouple_layers": 1, "audio_dim": 6, "vision_dim": 5}


def tiny_data(train: int = 64, valid: int = 32, test: int = 32):
    return make_synthetic(DataOptions(synthetic_sizes=(train, valid, test), audio_dim=6, vision_dim=5,
                                      synthetic_text_len=8, synthetic_audio_len=8, synthetic_vision_len=6))


def tiny_config(**overrides) -> TrainConfig:
    base = {"model": "hcrl_mfd", "model_overrides": dict(TINY), "epochs": 3, "batch_size": 8, "learning_rate": 1e-2,
            "seeds": [7], "early_stop": 5, "num_threads": 1}
    base.update(overrides)
    return TrainConfig(**base)
