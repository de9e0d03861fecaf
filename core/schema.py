"""Constants shared by every layer, defined once here (torch-free, so light modules need not import
the heavy ones that use them)."""

from __future__ import annotations

import platform
import sys
from importlib import metadata

# The three input streams, in the order every batch, event and file lists them.
MODALITIES = ("text", "audio", "vision")

# Live featurizer dims (realtime/perception/features): 40-d librosa audio frames, 64-d MediaPipe face.
LIVE_AUDIO_DIM = 40
LIVE_VISION_DIM = 64

# Scoring backends, fastest first (the order `auto` tries them in).
BACKEND_NAMES = ("tensorrt", "compile", "onnxruntime", "eager")
BACKEND_CHOICES = ("auto",) + BACKEND_NAMES

# Dataset splits and the names data files and label columns use for them.
SPLITS = ("train", "valid", "test")
SPLIT_ALIASES = {"train": "train", "valid": "valid", "dev": "valid", "val": "valid", "validation": "valid",
                 "test": "test"}

# What each artifact records about the libraries that shaped it.
FEATURE_LIBRARIES = ("librosa", "mediapipe", "tokenizers", "numpy")     # featurizer config (checked)
CHECKPOINT_LIBRARIES = ("moodlens", "torch", "numpy")                    # checkpoints
SESSION_LIBRARIES = ("moodlens", "torch", "numpy", "av", "faster-whisper", "ctranslate2", "mediapipe",
                     "onnxruntime", "librosa")                           # recorded sessions


def versions(dists, *, absent: str | None = "absent", runtime: bool = False) -> dict[str, str]:
    """Installed versions of `dists` from package metadata (no imports). A missing one is given as
    `absent`, or left out when `absent` is None; `runtime` adds the Python version and platform first."""
    found = {"python": sys.version.split()[0], "platform": platform.platform()} if runtime else {}
    for dist in dists:
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            if absent is not None:
                found[dist] = absent
    return found
