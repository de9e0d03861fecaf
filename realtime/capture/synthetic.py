"""A generated source for tests and demos without hardware.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Iterator

import numpy as np
from moodlens.realtime.capture.streams import (
    CHUNK_SAMPLES,
    BoundedQueue,
    Item,
    _check_pace,
    count_dropped,
    merge_in_time,
    _Pacer,
)
from moodlens.core.types import AUDIO_SAMPLE_RATE, AudioChunk, SourceStats, VideoFrame

# ---------------------------------------------------------------------------------------------
# Synthetic source (tests, demos without hardware)
# ---------------------------------------------------------------------------------------------

class SyntheticSource:
    """Generated frames (a bright square moving over a gradient) and audio (given samples, a tone, or silence).

    `live=False` iterates in time order (paced or fast) like a file. `live=True` produces on a
    thread at real time into a bounded drop-oldest queue, like a camera + microphone, so a slow
    consumer sees drops counted in `stats`.
    """

    def __init__(self, duration: float = 2.0, fps: float = 10.0, size: tuple[int, int] = (48, 64),
                 audio: np.ndarray | None = None, tone_hz: float | None = None, video: bool = True,
                 pace: str = "fast", live: bool = False, queue_size: int = 8, origin: float | None = None,
                 chunk_samples: int = CHUNK_SAMPLES):
        _check_pace(pace)
        if audio is not None:
            audio = np.asarray(audio, dtype=np.float32).reshape(-1)
            duration = len(audio) / AUDIO_SAMPLE_RATE
        self.duration = float(duration)
        self.fps = fps
        self.size = size
        self.audio = audio
        self.tone_hz = tone_hz
        self.has_video = video and fps > 0
        self.has_audio = audio is not None or tone_hz is not None
        self.pace = "realtime" if live else pace
        self.live = live
        self.origin = origin
        self.chunk_samples = chunk_samples
        self.stats = SourceStats()
        self._stop = threading.Event()
        self.queue = BoundedQueue(queue_size, policy="drop_oldest", on_drop=self._count_drop) if live else None
        self._thread: threading.Thread | None = None

    def _count_drop(self, item) -> None:
        count_dropped(self.stats, item)

    def _frame(self, index: int) -> np.ndarray:
        h, w = self.size
        image = np.empty((h, w, 3), dtype=np.uint8)
        image[...] = np.linspace(0, 120, w, dtype=np.uint8)[None, :, None]
        side = max(2, min(h, w) // 4)
        x = (index * 3) % max(1, w - side)
        image[h // 2 - side // 2:h // 2 + side // 2, x:x + side] = 255
        return image

    def _samples(self) -> np.ndarray:
        n = int(round(self.duration * AUDIO_SAMPLE_RATE))
        if self.audio is not None:
            return self.audio
        t = np.arange(n, dtype=np.float32) / AUDIO_SAMPLE_RATE
        return (0.1 * np.sin(2 * np.pi * float(self.tone_hz) * t)).astype(np.float32)

    def _timeline(self) -> Iterator[tuple[float, Item]]:
        """(media_t, item with media time) in time order."""
        video: deque = deque()
        audio: deque = deque()
        if self.has_video:
            for i in range(int(np.ceil(self.duration * self.fps - 1e-9))):
                video.append((i / self.fps, i))
        if self.has_audio:
            samples = self._samples()
            for start in range(0, len(samples), self.chunk_samples):
                audio.append((start / AUDIO_SAMPLE_RATE, samples[start:start + self.chunk_samples]))
        for t, payload in merge_in_time(video, audio, True, True):
            if isinstance(payload, int):
                yield t, VideoFrame(t=t, image=self._frame(payload), index=payload)
            else:
                yield t, AudioChunk(t=t, samples=payload)

    def _stamped(self, item: Item, origin: float) -> Item:
        if isinstance(item, VideoFrame):
            return VideoFrame(t=origin + item.t, image=item.image, index=item.index)
        return AudioChunk(t=origin + item.t, samples=item.samples)

    def _produce(self) -> Iterator[Item]:
        pacer = _Pacer(self.pace, self._stop)
        origin = self.origin
        for media_t, item in self._timeline():
            pacer.wait_until(media_t)
            if self._stop.is_set():
                return
            if origin is None:
                origin = time.monotonic() - media_t
            yield self._stamped(item, origin)

    def _producer_thread(self) -> None:
        for item in self._produce():
            is_video = isinstance(item, VideoFrame)
            if is_video:
                self.stats.frames_in += 1
            else:
                self.stats.audio_chunks_in += 1
            self.queue.put(item)
        self._stop.set()

    def __iter__(self) -> Iterator[Item]:
        if not self.live:
            for item in self._produce():
                if isinstance(item, VideoFrame):
                    self.stats.frames_in += 1
                else:
                    self.stats.audio_chunks_in += 1
                yield item
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._producer_thread, name="SyntheticSource", daemon=True)
            self._thread.start()
        while True:
            item = self.queue.get(timeout=0.05)
            if item is not None:
                yield item
            elif self._stop.is_set() and len(self.queue) == 0:
                return

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)

    def __enter__(self) -> "SyntheticSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
