"""Perception: voice activity (vad), speech to text (asr) and the featurizers (features/).

`FaceTracker` is what the pipeline needs of its vision stage: `features.vision.VisionFeaturizer`
(MediaPipe) and `sessions.replay.RecordedFaces` (recorded features) provide it.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from moodlens.core.types import FaceFeatures, VideoFrame


@runtime_checkable
class FaceTracker(Protocol):
    def wants(self, t: float) -> bool:
        """Whether the frame at `t` should be processed (the tracker's own frame rate)."""

    def process(self, frame: VideoFrame) -> FaceFeatures: ...

    def close(self) -> None: ...
