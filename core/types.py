"""Typed, timestamped items that flow between realtime stages (MediaPipe-style streams).

All timestamps are seconds on one monotonic clock per session: for live capture,
`time.monotonic()` at capture; for files, media time (pts) offset by the session start.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

AUDIO_SAMPLE_RATE = 16_000


@dataclass(frozen=True)
class VideoFrame:
    t: float                 # capture / presentation time, seconds
    image: np.ndarray        # (H, W, 3) uint8 RGB
    index: int = 0           # frame number in its stream


@dataclass(frozen=True)
class AudioChunk:
    t: float                 # time of the first sample, seconds
    samples: np.ndarray      # (N,) float32 mono at AUDIO_SAMPLE_RATE, in [-1, 1]

    @property
    def duration(self) -> float:
        return len(self.samples) / AUDIO_SAMPLE_RATE


@dataclass
class FaceFeatures:
    """Per-frame face features from the vision featurizer (None fields when no face)."""

    t: float
    values: np.ndarray | None   # (Dv,) float32, or None when no face was found
    face_present: bool


@dataclass
class Window:
    """An utterance (or fixed) window: its span, its audio, and the face features inside it."""

    id: int
    start: float
    end: float
    audio: np.ndarray                                   # (N,) float32 16 kHz mono
    faces: list[FaceFeatures] = field(default_factory=list)
    interim: bool = False        # True when cut by the maximum length while speech goes on
    closed_at: float = 0.0       # monotonic time when the window was closed (end of utterance detected)
    # "final": a closed window (scored once); "speculative": the utterance as it stands after a short
    # silence, before min_silence_s confirms its end (its transcript is reused only by an identical
    # final); "preview": the open utterance so far (an interim transcript, superseded by its final).
    kind: str = "final"
    speech_end: float | None = None   # clock time of the last voiced sample the VAD saw (None: no VAD)
    speech_end_mono: float | None = None  # monotonic time that sample was spoken (set by the pipeline)
    merged: int = 1              # closed windows merged into this one (the ASR queue, when behind)

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass
class SourceStats:
    """Counters every source keeps; dropped items are reported, never silently piled up."""

    frames_in: int = 0
    frames_dropped: int = 0
    audio_chunks_in: int = 0
    audio_chunks_dropped: int = 0
