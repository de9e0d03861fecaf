"""Stream plumbing shared by the capture sources: pacing, audio chunking, frame-rate decimation,
time-ordered merge of two streams and the drop-oldest bounded queue of the live sources.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Callable, Iterator, Union

import numpy as np
from moodlens.core.errors import ConfigError
from moodlens.core.types import AUDIO_SAMPLE_RATE, AudioChunk, SourceStats, VideoFrame

Item = Union[VideoFrame, AudioChunk]
CHUNK_SAMPLES = 512            # 32 ms at 16 kHz
PACES = ("fast", "realtime")
# A file whose decoded media stops this much before its declared duration is called truncated.
# A jump in audio timestamps longer than this (lost packets) is filled with silence.
AUDIO_GAP_FILL_S = 0.02


def _check_pace(pace: str) -> None:
    if pace not in PACES:
        raise ConfigError(f"pace must be one of {PACES}, not '{pace}'.")


class _Pacer:
    """Sleeps so that media time `t` is reached `t` seconds after the first call (interruptible)."""

    def __init__(self, pace: str, stop: threading.Event):
        self.realtime = pace == "realtime"
        self.stop = stop
        self.wall0: float | None = None

    def wait_until(self, media_t: float) -> None:
        if not self.realtime:
            return
        now = time.monotonic()
        if self.wall0 is None:
            self.wall0 = now - max(media_t, 0.0)
        delay = self.wall0 + media_t - now
        if delay > 0:
            self.stop.wait(delay)


class _AudioChunker:
    """Accumulates 16 kHz mono samples and cuts them into fixed chunks with exact sample times."""

    def __init__(self, chunk_samples: int):
        self.chunk_samples = chunk_samples
        self.start_t: float | None = None
        self.emitted = 0
        self._pending: list[np.ndarray] = []
        self._pending_len = 0

    def add(self, samples: np.ndarray, t: float | None) -> list[tuple[float, np.ndarray]]:
        """Add samples whose first one plays at `t` (None: right after the previous ones)."""
        if self.start_t is None:
            self.start_t = t or 0.0
        elif t is not None:
            # Audio lost to a damaged packet leaves a hole: fill it with silence so later audio
            # keeps its place on the clock next to the video.
            gap = int(round((t - self.start_t) * AUDIO_SAMPLE_RATE)) - (self.emitted + self._pending_len)
            if gap > AUDIO_GAP_FILL_S * AUDIO_SAMPLE_RATE:
                samples = np.concatenate([np.zeros(gap, dtype=np.float32), samples])
        self._pending.append(samples)
        self._pending_len += len(samples)
        return self._cut(final=False)

    def finish(self) -> list[tuple[float, np.ndarray]]:
        return self._cut(final=True)

    def _cut(self, final: bool) -> list[tuple[float, np.ndarray]]:
        if self._pending_len < self.chunk_samples and not (final and self._pending_len):
            return []
        data = np.concatenate(self._pending) if len(self._pending) > 1 else self._pending[0]
        out = []
        n = self.chunk_samples
        whole = len(data) // n
        for i in range(whole):
            out.append((self.start_t + self.emitted / AUDIO_SAMPLE_RATE, data[i * n:(i + 1) * n].copy()))
            self.emitted += n
        rest = data[whole * n:]
        if final and len(rest):
            out.append((self.start_t + self.emitted / AUDIO_SAMPLE_RATE, rest.copy()))
            self.emitted += len(rest)
            rest = rest[:0]
        self._pending = [rest] if len(rest) else []
        self._pending_len = len(rest)
        return out


class _FpsDecimator:
    """Keeps frames at most `fps` per second of media time (None keeps every frame)."""

    def __init__(self, fps: float | None):
        if fps is not None and fps <= 0:
            raise ConfigError(f"video_fps must be positive, not {fps}.")
        self.step = None if fps is None else 1.0 / fps
        self.next_t: float | None = None

    def keep(self, t: float) -> bool:
        if self.step is None:
            return True
        if self.next_t is None or t >= self.next_t - 1e-6:
            self.next_t = (self.next_t if self.next_t is not None else t) + self.step
            if self.next_t <= t:               # a gap in the stream: re-anchor on this frame
                self.next_t = t + self.step
            return True
        return False


def _merge_in_time(video: deque, audio: deque, video_done: bool, audio_done: bool) -> Iterator[tuple[float, object]]:
    """Pop (t, item) pairs in time order from two per-stream queues that are each already in order."""
    while True:
        if video and audio:
            yield (video.popleft() if video[0][0] <= audio[0][0] else audio.popleft())
        elif video and audio_done:
            yield video.popleft()
        elif audio and video_done:
            yield audio.popleft()
        else:
            return


# ---------------------------------------------------------------------------------------------
# Bounded queue with drop-oldest and the threaded live sources
# ---------------------------------------------------------------------------------------------

def _count_dropped(stats: SourceStats, item) -> None:
    if isinstance(item, VideoFrame):
        stats.frames_dropped += 1
    else:
        stats.audio_chunks_dropped += 1


class DropOldestQueue:
    """A bounded FIFO: putting into a full queue drops the oldest item and calls `on_drop(item)`."""

    def __init__(self, maxsize: int, on_drop: Callable[[object], None], notify: threading.Event | None = None):
        if maxsize < 1:
            raise ConfigError(f"queue size must be at least 1, not {maxsize}.")
        self.maxsize = maxsize
        self._items: deque = deque()
        self._cond = threading.Condition()
        self._on_drop = on_drop
        self.notify = notify

    def put(self, item) -> None:
        with self._cond:
            if len(self._items) >= self.maxsize:
                self._on_drop(self._items.popleft())
            self._items.append(item)
            self._cond.notify()
        if self.notify is not None:
            self.notify.set()

    def get(self, timeout: float | None = None):
        """The oldest item, or None after `timeout` seconds with nothing queued."""
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
            return self._items.popleft() if self._items else None

    def __len__(self) -> int:
        return len(self._items)


