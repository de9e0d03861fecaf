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


class OutputError(MoodlensError):
    """An output path (file or folder) cannot be written: checked before any work starts."""


class RunFailed(MoodlensError):
    """The run finished but something the user asked for failed (every clip, the recording...).

    Unlike the other errors this is not bad input: the CLI prints the sentence and exits 1."""

    exit_code = 1


# ---- exit-code policy (docs/reliability.md): one meaning per code, for every command ----------
EXIT_OK = 0            # the run did everything asked
EXIT_FAILED = 1        # the run finished, but something the user asked for failed (RunFailed)
EXIT_BAD_INPUT = 2     # bad input, refused with one sentence before (or instead of) the work
EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM; what was recorded so far is kept


def exit_code_for(err: MoodlensError) -> int:
    return int(getattr(err, "exit_code", EXIT_BAD_INPUT))
