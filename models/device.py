"""Which torch device to run on: one decision for scoring, benchmarks, training and evaluation."""

from __future__ import annotations

import torch

from moodlens.core.errors import BackendError, ConfigError


def resolve_device(device: str | torch.device | None = "auto", local_rank: int = 0) -> torch.device:
    """`auto`/None → the GPU when PyTorch sees one, else the CPU; `cuda` → `cuda:<local_rank>` (one process per GPU
    under torchrun); anything else is checked, and refused in one sentence when it cannot run here."""
    if device is None or str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if str(device) == "cuda" and torch.cuda.is_available():
        device = f"cuda:{local_rank}"
    try:
        device = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"Unknown device '{device}'; use auto, cpu, cuda or cuda:N.") from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"Device '{device}' is not supported; use auto, cpu or cuda.")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BackendError(f"Device '{device}' was asked for but no CUDA GPU is visible to PyTorch; use --device cpu.")
    return device
