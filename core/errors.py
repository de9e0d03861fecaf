"""User-facing errors: each carries one clear sentence naming what went wrong and where.

Code raises these instead of letting library tracebacks reach the user; the CLI prints the
sentence and exits with status 2. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class MoodlensError(Exception):
    """Base class: `str(err)` is the one sentence shown to the user."""


class ConfigError(MoodlensError):
    """A config file or key is missing, unknown or has a bad value."""


class AssetError(MoodlensError):
    """A model asset (Whisper, VAD, face landmarker, text encoder, weights) cannot be found."""


class MediaError(MoodlensError):
    """A media file, camera or microphone cannot be opened or decoded."""


class DataError(MoodlensError):
    """A dataset file, split or key is missing or holds bad values (NaN, wrong dims...)."""


class BackendError(MoodlensError):
    """A scoring backend is unavailable or failed to build."""
