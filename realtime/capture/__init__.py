"""Capture: timestamped sources (media files, webcam, microphone, synthetic) -> VideoFrame/AudioChunk.

`Source` is what the pipeline needs of a source; every source here (and `sessions.replay.RecordedSource`)
provides it (tests/test_interfaces.py checks).
"""

from __future__ import annotations

from typing import Iterator, Protocol, Union, runtime_checkable

from moodlens.core.types import AudioChunk, SourceStats, VideoFrame


@runtime_checkable
class Source(Protocol):
    """An iterable of `VideoFrame | AudioChunk` in time order, on one clock (seconds)."""

    has_audio: bool            # False: no audio stream (the pipeline then makes vision-only windows)
    has_video: bool            # False: no frames (no face tracking)
    duration: float | None     # seconds of media, None for live capture
    stats: SourceStats         # items in and dropped, updated while iterating

    def __iter__(self) -> Iterator[Union[VideoFrame, AudioChunk]]: ...

    def close(self) -> None: ...
