"""Replay a recorded session, or rescore its media with a (new) model.

- `replay_events(session, speed)`: the recorded windows as `WindowEvent`s, each released when its
  window ended in the recording (divided by `speed`; speed 0 = all at once).
- `RecordedSource(session)`: the recorded audio (and video frames) as a pipeline source, in time
  order, like `MediaFileSource`; a face-features-only session yields placeholder frames whose faces
  come from `RecordedFaces` (passed to the pipeline as its vision stage), so no pixels are needed.
A rescore runs that source through the session runner (realtime/app/session.py `rescore_session`).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from typing import Iterator

import numpy as np

from moodlens.core.errors import DataError
from moodlens.realtime.capture.streams import merge_in_time
from moodlens.realtime.engine.events import WindowEvent
from moodlens.realtime.sessions.reader import RecordedSession
from moodlens.core.types import AUDIO_SAMPLE_RATE, AudioChunk, FaceFeatures, SourceStats, VideoFrame

CHUNK_SAMPLES = 512   # 32 ms, one Silero VAD frame (as the live sources)


def replay_events(session: RecordedSession, speed: float = 1.0,
                  stop: threading.Event | None = None) -> Iterator[WindowEvent]:
    """Yield the recorded windows at the pace they were scored: window i appears `end_i / speed`
    seconds after the start (plus its recorded latency). `speed <= 0` or inf: no waiting."""
    stop = stop or threading.Event()
    wall0 = time.monotonic()
    for w in session.windows:
        if speed > 0 and math.isfinite(speed):
            due = (w.end + w.latency_ms.get("total", 0.0) / 1000.0) / speed
            delay = wall0 + due - time.monotonic()
            if delay > 0 and stop.wait(delay):
                return
        if stop.is_set():
            return
        yield w


class RecordedFaces:
    """Stands in for the vision featurizer in a rescore of a face-features-only session: returns
    the recorded features of the frame at `t` (placeholder frames carry the recorded times)."""

    def __init__(self, faces: list[FaceFeatures]):
        self._by_t = {round(f.t, 6): f for f in faces}

    def wants(self, t: float) -> bool:
        return True

    def process(self, frame: VideoFrame) -> FaceFeatures:
        face = self._by_t.get(round(frame.t, 6))
        return face if face is not None else FaceFeatures(t=frame.t, values=None, face_present=False)

    def close(self) -> None:
        pass


class RecordedSource:
    """The session's audio and video as a pipeline source (`MediaFileSource`-like), on the session
    clock (0 = the first recorded item). `pace="realtime"` sleeps to play at recorded speed (times
    `speed`)."""

    def __init__(self, session: RecordedSession, pace: str = "fast", chunk_samples: int = CHUNK_SAMPLES,
                 speed: float = 1.0):
        self.session = session
        self.pace = pace
        self.speed = speed if speed > 0 else 1.0
        self.chunk_samples = chunk_samples
        self.stats = SourceStats()
        self.faces = session.read_faces() if session.faces_path is not None else []
        self.has_audio = session.audio_path is not None and session.audio_duration > 0
        self.has_video = session.video_path is not None or bool(self.faces)
        if not self.has_audio and not self.has_video:
            raise DataError(f"The session {session.folder} has neither recorded audio nor video to rescore "
                            f"(it was recorded without media).")
        self.duration = session.duration
        self._stop = threading.Event()

    def vision_stand_in(self) -> RecordedFaces | None:
        """The pipeline's vision stage for a face-features-only session (None when there is video)."""
        return RecordedFaces(self.faces) if self.faces and self.session.video_path is None else None

    def _audio_items(self) -> Iterator[AudioChunk]:
        if not self.has_audio:
            return
        offset = self.session._stream_offset("audio")
        audio = self.session.read_audio(offset, offset + self.session.audio_duration)
        for i in range(0, len(audio), self.chunk_samples):
            yield AudioChunk(t=offset + i / AUDIO_SAMPLE_RATE, samples=audio[i:i + self.chunk_samples])

    def _video_items(self) -> Iterator[VideoFrame]:
        if self.session.video_path is not None:
            yield from self.session.iter_frames()
        else:
            placeholder = np.zeros((2, 2, 3), np.uint8)
            for i, face in enumerate(self.faces):
                yield VideoFrame(t=face.t, image=placeholder, index=i)

    def __iter__(self) -> Iterator[AudioChunk | VideoFrame]:
        wall0 = time.monotonic()
        streams = [self._audio_items(), self._video_items() if self.has_video else iter(())]
        queues: list[deque] = [deque(), deque()]
        done = [False, False]
        while not self._stop.is_set():
            for stream, q, i in zip(streams, queues, range(2)):   # one item ahead per stream, read lazily
                if not q and not done[i]:
                    head = next(stream, None)
                    if head is None:
                        done[i] = True
                    else:
                        q.append((head.t, head))
            step = next(merge_in_time(queues[0], queues[1], done[0], done[1]), None)   # ties: audio first
            if step is None:
                return
            item = step[1]
            if self.pace == "realtime":
                delay = wall0 + item.t / self.speed - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    return
            if isinstance(item, VideoFrame):
                self.stats.frames_in += 1
            else:
                self.stats.audio_chunks_in += 1
            yield item

    def close(self) -> None:
        self._stop.set()

    def __enter__(self) -> "RecordedSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ReplayClock:
    """What the dashboard's `stats()` callback shows during a replay: the media clock advances at
    `speed`, the counters come from the windows replayed so far (their recorded latencies)."""

    def __init__(self, session: RecordedSession, speed: float):
        self.session = session
        self.speed = speed
        self.started = time.monotonic()
        self.replayed: list[WindowEvent] = []
        self.finished = False

    def add(self, event: WindowEvent) -> None:
        self.replayed.append(next(w for w in self.session.windows if w.id == event.id))

    def media_s(self) -> float:
        if self.finished or not (self.speed > 0 and math.isfinite(self.speed)):
            return max([w.end for w in self.replayed], default=0.0)
        return min(self.session.duration, (time.monotonic() - self.started) * self.speed)

    def snapshot(self):
        from moodlens.realtime.engine.stats import StatsSnapshot

        p50, p95 = {}, {}
        for key in ("asr", "features", "model", "total"):
            values = [w.latency_ms[key] for w in self.replayed if key in w.latency_ms]
            if values:
                p50[key], p95[key] = float(np.percentile(values, 50)), float(np.percentile(values, 95))
        stats = self.session.info.get("stats") or {}
        return StatsSnapshot(
            elapsed_s=time.monotonic() - self.started, media_s=self.media_s(), duration_s=self.session.duration,
            finished=self.finished, windows_closed=len(self.replayed), windows_scored=len(self.replayed),
            frames_in=int(stats.get("frames_written", 0)), latency_p50=p50, latency_p95=p95,
            has_audio=self.session.audio_path is not None,
            has_video=self.session.video_path is not None or self.session.faces_path is not None)
