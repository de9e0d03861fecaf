"""Engine: the pipeline graph, its stream policies, statistics and the scored-window events.

`Sink` is what the pipeline hands its output to (the session recorder, the JSONL writer): every
captured audio chunk and frame, every face the tracker gave, every final event and every interim
one, then `close()`. It is called on pipeline threads, so a sink must neither block long nor raise.
`SinkBase` does nothing for each; subclass it and override what you need.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from moodlens.core.types import AudioChunk, FaceFeatures, VideoFrame
    from moodlens.realtime.engine.events import WindowEvent


@runtime_checkable
class Sink(Protocol):
    def on_audio(self, chunk: "AudioChunk") -> None: ...
    def on_frame(self, frame: "VideoFrame") -> None: ...
    def on_face(self, face: "FaceFeatures") -> None: ...
    def on_event(self, event: "WindowEvent") -> None: ...
    def on_interim(self, event: "WindowEvent") -> None: ...
    def close(self) -> None: ...


class SinkBase:
    """A `Sink` that ignores everything: override the methods a sink needs."""

    def on_audio(self, chunk: "AudioChunk") -> None:
        pass

    def on_frame(self, frame: "VideoFrame") -> None:
        pass

    def on_face(self, face: "FaceFeatures") -> None:
        pass

    def on_event(self, event: "WindowEvent") -> None:
        pass

    def on_interim(self, event: "WindowEvent") -> None:
        pass

    def close(self) -> None:
        pass
