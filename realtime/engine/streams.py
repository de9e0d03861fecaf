"""Stream policies inside the engine: the frame schedule and the window queue that merges or drops
windows when Whisper is behind.
"""

from __future__ import annotations

import threading
from collections import deque

import numpy as np
from moodlens.realtime.engine.stats import PipelineStats
from moodlens.core.types import Window

_END = object()          # end of stream marker passed down the queues
_POLL_S = 0.05           # how often blocked stages look at the stop event


class FrameSchedule:
    """Picks frames at `fps` (a quarter period early is fine, as VisionFeaturizer.wants does), so
    30 fps in gives 15 fps out rather than every third frame; a gap or a new stream re-anchors it."""

    def __init__(self, fps: float):
        self.period = 1.0 / fps
        self.next_due: float | None = None
        self.last_t: float | None = None

    def due(self, t: float) -> bool:
        restart = self.next_due is None or (self.last_t is not None and t < self.last_t)
        self.last_t = t
        if not restart and t < self.next_due - 0.25 * self.period:
            return False
        if restart or t - self.next_due >= self.period:
            self.next_due = t + self.period
        else:
            self.next_due += self.period
        return True


# ---------------------------------------------------------------------------------------------
# The queue in front of Whisper: merges (or drops) windows instead of growing
# ---------------------------------------------------------------------------------------------

def merge_windows(first: Window, second: Window) -> Window:
    """One window covering both: audio back to back (the silence between is left out)."""
    merged = Window(
        id=first.id, start=first.start, end=second.end,
        audio=np.concatenate([first.audio, second.audio]),
        faces=list(first.faces) + list(second.faces),
        interim=second.interim,
        closed_at=min(first.closed_at, second.closed_at),   # latency counts from the older close
        # ... and from the older speech end: the first speaker has waited longest.
        speech_end=first.speech_end, speech_end_mono=first.speech_end_mono,
    )
    merged.merged = getattr(first, "merged", 1) + getattr(second, "merged", 1)  # type: ignore[attr-defined]
    return merged


class WindowQueue:
    """Bounded FIFO of windows. `put` on a full queue either waits (not realtime) or merges the
    new window into the newest waiting one; when that would pass `max_merged_s` the oldest
    waiting window is dropped instead."""

    def __init__(self, maxsize: int, realtime: bool, max_merged_s: float, stats: PipelineStats,
                 stop: threading.Event):
        self.maxsize = maxsize
        self.realtime = realtime
        self.max_merged_s = max_merged_s
        self.stats = stats
        self.stop = stop
        self._items: deque = deque()
        self._cond = threading.Condition()

    def put(self, item) -> None:
        with self._cond:
            if item is not _END and len(self._items) >= self.maxsize:
                if self.realtime:
                    self._merge_or_drop(item)
                    self._publish()
                    return
                while len(self._items) >= self.maxsize and not self.stop.is_set():
                    self._cond.wait(_POLL_S)
            self._items.append(item)
            self._publish()
            self._cond.notify_all()

    def _merge_or_drop(self, window: Window) -> None:
        newest = self._items[-1]
        if newest is not _END and (newest.end - newest.start) + window.duration <= self.max_merged_s:
            self._items[-1] = merge_windows(newest, window)
            self.stats.add(windows_merged=1)
        else:
            self._items.popleft()
            self._items.append(window)
            self.stats.add(windows_dropped=1)

    def wake(self) -> None:
        """Wake a `get` waiting on an empty queue (other work for its consumer has arrived)."""
        with self._cond:
            self._cond.notify_all()

    def get(self, timeout: float = _POLL_S, other_work=None):
        """The oldest window, or None after `timeout` (at once when `other_work()` says the
        consumer has something else to do; checked under the lock, so a `wake` is never lost)."""
        with self._cond:
            if not self._items and not (other_work is not None and other_work()):
                self._cond.wait(timeout)
            if not self._items:
                return None
            item = self._items.popleft()
            self._publish()
            self._cond.notify_all()
            return item

    def _publish(self) -> None:
        self.stats.asr_backlog = sum(1 for i in self._items if i is not _END)

    def __len__(self) -> int:
        return len(self._items)


# ---------------------------------------------------------------------------------------------
