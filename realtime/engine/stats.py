"""Pipeline statistics: rate meters, the live counters and the snapshot the dashboard renders.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
from moodlens.realtime.engine.events import LATENCY_KEYS, LATENCY_KEYS_V2

_END = object()          # end of stream marker passed down the queues
_POLL_S = 0.05           # how often blocked stages look at the stop event


# ---------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------

class RateMeter:
    """Items per second over the last `span_s` seconds of wall time."""

    def __init__(self, span_s: float = 2.0):
        self.span_s = span_s
        self._times: deque[float] = deque()

    def tick(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._times.append(now)
        while self._times and now - self._times[0] > self.span_s:
            self._times.popleft()

    def rate(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        times = [t for t in list(self._times) if now - t <= self.span_s]
        if len(times) < 2:
            return 0.0
        return (len(times) - 1) / max(times[-1] - times[0], 1e-6)


@dataclass
class StatsSnapshot:
    """A consistent copy of the pipeline counters, for the dashboard and reports."""

    elapsed_s: float = 0.0                 # wall time since start
    media_s: float = 0.0                   # newest capture time, relative to the first item
    duration_s: float | None = None        # file duration (None when live)
    finished: bool = False
    frames_in: int = 0
    frames_dropped: int = 0                # by the source and by the face stage together
    audio_chunks_dropped: int = 0
    faces_processed: int = 0
    faces_found: int = 0
    video_fps: float = 0.0
    face_fps: float = 0.0
    windows_closed: int = 0
    windows_scored: int = 0
    windows_merged: int = 0
    windows_dropped: int = 0
    asr_backlog: int = 0
    # Speculative end of utterance: emitted by the VAD, decoded, reused by the final, dropped after
    # decoding (speech resumed, or the final differed), skipped before decoding (stale).
    spec_emitted: int = 0
    spec_started: int = 0
    spec_used: int = 0
    spec_discarded: int = 0
    spec_skipped: int = 0
    spec_wasted_ms: float = 0.0            # Whisper wall time of discarded speculative decodes
    spec_wasted_cpu_ms: float = 0.0        # process CPU time during them (an upper bound: other threads run too)
    interims_emitted: int = 0
    interims_skipped: int = 0              # previews not decoded because Whisper had finals (or a newer preview)
    latency_p50: dict[str, float] = field(default_factory=dict)   # stage -> ms
    latency_p95: dict[str, float] = field(default_factory=dict)
    has_audio: bool = True
    has_video: bool = True
    face_now: bool | None = None           # was a face in the newest processed frame (None: none yet)
    audio_db: float | None = None          # loudness of the newest audio (dBFS, peak over ~0.3 s)


class PipelineStats:
    """Counters and latency histories, updated by the stage threads."""

    STAGES = (*LATENCY_KEYS, *LATENCY_KEYS_V2, "face")

    def __init__(self, history: int = 500):
        self._lock = threading.Lock()
        self.started = time.monotonic()
        self.first_t: float | None = None
        self.last_t: float | None = None
        self.duration_s: float | None = None
        self.finished = False
        self.finished_at: float | None = None   # monotonic time the last event came out
        self.frames_in = 0
        self.frames_dropped = 0
        self.source = None                 # the source; its `stats` are read at snapshot time (LiveSource
                                           # sums its devices' counters anew on every read)
        self.faces_processed = 0
        self.faces_found = 0
        self.windows_closed = 0
        self.windows_scored = 0
        self.windows_merged = 0
        self.windows_dropped = 0
        self.asr_backlog = 0
        self.spec_emitted = self.spec_started = self.spec_used = self.spec_discarded = self.spec_skipped = 0
        self.spec_wasted_ms = self.spec_wasted_cpu_ms = 0.0
        self.interims_emitted = self.interims_skipped = 0
        self.has_audio = True
        self.has_video = True
        self.face_now: bool | None = None
        self._levels: deque[float] = deque(maxlen=10)     # dBFS of the last ten 32 ms chunks
        self.latency: dict[str, deque[float]] = {k: deque(maxlen=history) for k in self.STAGES}
        self._video_rate = RateMeter()
        self._face_rate = RateMeter()

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + n)

    def saw(self, t: float, frame: bool = False) -> None:
        with self._lock:
            if self.first_t is None:
                self.first_t = t
            self.last_t = t if self.last_t is None else max(self.last_t, t)
            if frame:
                self.frames_in += 1
                self._video_rate.tick()

    def audio_level(self, samples: np.ndarray) -> None:
        rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if len(samples) else 0.0
        self._levels.append(20.0 * np.log10(max(rms, 1e-6)))

    def face(self, found: bool, ms: float) -> None:
        with self._lock:
            self.faces_processed += 1
            self.faces_found += int(found)
            self.face_now = found
            self.latency["face"].append(ms)
            self._face_rate.tick()

    def record_latency(self, latency_ms: dict[str, float]) -> None:
        with self._lock:
            for k, v in latency_ms.items():
                if k in self.latency:
                    self.latency[k].append(float(v))

    def snapshot(self) -> StatsSnapshot:
        with self._lock:
            p50, p95 = {}, {}
            for k, values in self.latency.items():
                if values:
                    arr = np.fromiter(values, dtype=np.float64)
                    p50[k], p95[k] = float(np.percentile(arr, 50)), float(np.percentile(arr, 95))
            src = getattr(self.source, "stats", None)
            media = (self.last_t - self.first_t) if self.first_t is not None else 0.0
            return StatsSnapshot(
                elapsed_s=(self.finished_at or time.monotonic()) - self.started, media_s=media, duration_s=self.duration_s,
                finished=self.finished, frames_in=self.frames_in,
                frames_dropped=self.frames_dropped + (getattr(src, "frames_dropped", 0) if src else 0),
                audio_chunks_dropped=getattr(src, "audio_chunks_dropped", 0) if src else 0,
                faces_processed=self.faces_processed, faces_found=self.faces_found,
                # Running: the rate over the last seconds; finished: the average over the media.
                video_fps=self._video_rate.rate() if not self.finished else self.frames_in / max(media, 1e-6),
                face_fps=self._face_rate.rate() if not self.finished else self.faces_processed / max(media, 1e-6),
                windows_closed=self.windows_closed, windows_scored=self.windows_scored,
                windows_merged=self.windows_merged, windows_dropped=self.windows_dropped,
                asr_backlog=self.asr_backlog,
                spec_emitted=self.spec_emitted, spec_started=self.spec_started, spec_used=self.spec_used,
                spec_discarded=self.spec_discarded, spec_skipped=self.spec_skipped,
                spec_wasted_ms=self.spec_wasted_ms, spec_wasted_cpu_ms=self.spec_wasted_cpu_ms,
                interims_emitted=self.interims_emitted, interims_skipped=self.interims_skipped,
                latency_p50=p50, latency_p95=p95,
                has_audio=self.has_audio, has_video=self.has_video, face_now=self.face_now,
                audio_db=max(self._levels) if self._levels else None,
            )


