"""Stream plumbing, each rule written once: pacing, audio chunking, the audio gap filler, the
frame-rate decider, the time-ordered merge of two streams and the bounded queue with its policies.

Capture uses all of them; the engine (`engine/pipeline.py`), the VAD (`perception/vad.py`) and the
session writer (`sessions/writer.py`) use the queue, the frame-rate decider and the gap filler from here.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any, Callable, Iterator, Literal, Union

import numpy as np
from moodlens.core.errors import ConfigError
from moodlens.core.types import AUDIO_SAMPLE_RATE, AudioChunk, SourceStats, VideoFrame

Item = Union[VideoFrame, AudioChunk]
CHUNK_SAMPLES = 512            # 32 ms at 16 kHz
PACES = ("fast", "realtime")
# Audio that starts later than the stream so far ends was lost (a dropped chunk, a damaged packet):
# the gap is filled with silence so later audio keeps its place on the clock next to the video.
# Live chunks are stamped with the wall clock, which jitters by tens of ms under load, so a gap
# counts from 50 ms; decoded packets carry exact timestamps, so there a lost 21-23 ms AAC packet counts.
AUDIO_GAP_FILL_S = 0.05
PACKET_GAP_FILL_S = 0.02


def gap_samples(t: float, expected_t: float, *, min_gap_s: float = AUDIO_GAP_FILL_S) -> int:
    """Samples of silence to put before audio starting at `t` when the stream so far ends at
    `expected_t` (0 for smaller gaps, which are clock jitter, and for overlaps)."""
    n = int(round((t - expected_t) * AUDIO_SAMPLE_RATE))
    return n if n > min_gap_s * AUDIO_SAMPLE_RATE else 0


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
            gap = gap_samples(t, self.start_t + (self.emitted + self._pending_len) / AUDIO_SAMPLE_RATE,
                              min_gap_s=PACKET_GAP_FILL_S)
            if gap:
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


class FrameRate:
    """The frame-rate decider: keeps frames on a grid of `fps` per second of media time (None keeps
    every frame). A frame up to `early` of a period before its slot counts (0.25: 30 fps in gives
    exactly 15 fps out rather than every third frame, as the face tracker's own `wants` does); a gap
    of a period or more, or time going backwards (a new stream), re-anchors the grid on the frame."""

    def __init__(self, fps: float | None, *, early: float = 0.0, what: str = "video_fps"):
        if fps is not None and not fps > 0:
            raise ConfigError(f"{what} must be positive, not {fps}.")
        self.period = None if fps is None else 1.0 / fps
        self.slack = 1e-6 if fps is None else max(early * self.period, 1e-6)
        self.next_due: float | None = None
        self.last_t: float | None = None

    def keep(self, t: float) -> bool:
        if self.period is None:
            return True
        restart = self.next_due is None or (self.last_t is not None and t < self.last_t)
        self.last_t = t
        if not restart and t < self.next_due - self.slack:
            return False
        if restart or t - self.next_due >= self.period:
            self.next_due = t + self.period
        else:
            self.next_due += self.period
        return True


def merge_in_time(first: deque, second: deque, first_done: bool, second_done: bool) -> Iterator[tuple[float, Any]]:
    """The time merge: pops (t, item) pairs in time order from two queues that are each in order,
    as long as the order is certain (an empty queue whose stream is not done stops it; a tie goes
    to `first`). Decoders push into the queues as they go; a reader of whole streams marks them done."""
    while True:
        if first and second:
            yield (first.popleft() if first[0][0] <= second[0][0] else second.popleft())
        elif first and second_done:
            yield first.popleft()
        elif second and first_done:
            yield second.popleft()
        else:
            return


def count_dropped(stats: SourceStats, item) -> None:
    if isinstance(item, VideoFrame):
        stats.frames_dropped += 1
    else:
        stats.audio_chunks_dropped += 1


# ---------------------------------------------------------------------------------------------
# The bounded queue: one type, one named policy for a put into a full queue
# ---------------------------------------------------------------------------------------------

class _End:
    def __repr__(self) -> str:
        return "END"


END = _End()      # what `get` returns once a closed queue is empty
POLICIES = ("block", "drop_oldest", "merge")
Policy = Literal["block", "drop_oldest", "merge"]


class BoundedQueue:
    """A thread-safe FIFO of at most `maxsize` items (None: unbounded). `policy` says what a put
    into a full queue does:

    - ``block``: wait for room (giving up, False, once `stop` is set): stages that must not lose
      anything (a file read as fast as possible);
    - ``drop_oldest``: drop the oldest item (``on_drop(item)``, counted in `dropped`): live capture,
      where a fresh frame matters more than an old one;
    - ``merge``: ``merge(newest, item)`` replaces the newest item (``on_merge``, counted in `merged`);
      when it returns None (the two must not merge) the oldest is dropped instead.

    `close()` ends the stream: `get` hands out what is queued, then `END`. `get(timeout)` returns
    None when nothing came in time. `on_change(n)` sees the length after every change (backlog
    gauges); `notify` (an Event) is set after every put, for a reader that waits on several queues.
    """

    def __init__(self, maxsize: int | None, *, policy: Policy = "block",
                 merge: Callable[[Any, Any], Any] | None = None, on_drop: Callable[[Any], None] | None = None,
                 on_merge: Callable[[Any], None] | None = None, on_change: Callable[[int], None] | None = None,
                 stop: threading.Event | None = None, notify: threading.Event | None = None,
                 poll_s: float = 0.05):
        if policy not in POLICIES:
            raise ConfigError(f"queue policy must be one of {POLICIES}, not '{policy}'.")
        if maxsize is not None and maxsize < 1:
            raise ConfigError(f"queue size must be at least 1, not {maxsize}.")
        if policy == "merge" and merge is None:
            raise ConfigError("a merge queue needs a merge function.")
        self.maxsize = maxsize
        self.policy = policy
        self.dropped = 0
        self.merged = 0
        self.notify = notify
        self._merge, self._on_drop, self._on_merge, self._on_change = merge, on_drop, on_merge, on_change
        self._stop = stop
        self._poll_s = poll_s
        self._items: deque = deque()
        self._closed = False
        self._cond = threading.Condition()

    def put(self, item) -> bool:
        """Queue `item` by the policy; False when a blocking put gave up because `stop` was set."""
        with self._cond:
            if self.maxsize is not None and len(self._items) >= self.maxsize:
                if self.policy == "block":
                    while len(self._items) >= self.maxsize:
                        if self._stop is not None and self._stop.is_set():
                            return False
                        self._cond.wait(self._poll_s)
                    self._items.append(item)
                elif self.policy == "merge" and (merged := self._merge(self._items[-1], item)) is not None:
                    self._items[-1] = merged
                    self.merged += 1
                    if self._on_merge is not None:
                        self._on_merge(merged)
                else:
                    self._drop_oldest()
                    self._items.append(item)
            else:
                self._items.append(item)
            self._changed()
        if self.notify is not None:
            self.notify.set()
        return True

    def _drop_oldest(self) -> None:
        oldest = self._items.popleft()
        self.dropped += 1
        if self._on_drop is not None:
            self._on_drop(oldest)

    def close(self) -> None:
        """End of stream: `get` returns END once the items queued before are taken."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self.notify is not None:
            self.notify.set()

    def get(self, timeout: float | None = None, *, other_work: Callable[[], bool] | None = None):
        """The oldest item; END when closed and empty; None after `timeout` seconds with nothing
        (at once when `other_work()` says the consumer has something else to do; checked under the
        lock, so a `wake` is never lost)."""
        with self._cond:
            if not self._items and not self._closed and not (other_work is not None and other_work()):
                self._cond.wait(timeout)
            if self._items:
                item = self._items.popleft()
                self._changed()
                return item
            return END if self._closed else None

    def wake(self) -> None:
        """Wake a `get` waiting on an empty queue (other work for its consumer has arrived)."""
        with self._cond:
            self._cond.notify_all()

    def _changed(self) -> None:
        self._cond.notify_all()
        if self._on_change is not None:
            self._on_change(len(self._items))

    def __len__(self) -> int:
        return len(self._items)
