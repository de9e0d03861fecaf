"""Stream policies inside the engine: the queue in front of Whisper, which merges (or drops) windows
instead of growing when Whisper is behind. It is the one `BoundedQueue` of `capture/streams.py`
with the ``merge`` policy; this module says how two windows merge.
"""

from __future__ import annotations

import threading

import numpy as np
from moodlens.core.types import Window
from moodlens.realtime.capture.streams import BoundedQueue
from moodlens.realtime.engine.stats import PipelineStats


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
    merged.merged = first.merged + second.merged
    return merged


def window_queue(maxsize: int, *, realtime: bool, max_merged_s: float, stats: PipelineStats,
                 stop: threading.Event) -> BoundedQueue:
    """The ASR queue. Realtime: a window that finds it full is merged into the newest waiting one;
    when that would pass `max_merged_s` the oldest waiting window is dropped instead. Otherwise
    (a file read as fast as possible) the put waits. Merges, drops and the backlog go to `stats`."""

    def merge(newest: Window, window: Window) -> Window | None:
        if (newest.end - newest.start) + window.duration <= max_merged_s:
            return merge_windows(newest, window)
        return None

    def backlog(n: int) -> None:
        stats.asr_backlog = n

    return BoundedQueue(maxsize, policy="merge" if realtime else "block", merge=merge, stop=stop,
                        on_merge=lambda _: stats.add(windows_merged=1),
                        on_drop=lambda _: stats.add(windows_dropped=1), on_change=backlog)
