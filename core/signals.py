"""Ctrl-C and SIGTERM end a run the same way, and the run remembers that it was interrupted.

`install()` (called by the CLI) makes SIGINT and SIGTERM raise KeyboardInterrupt in the main
thread, so stages stop, sinks close and the recording is flushed (exit 130), and sets a flag that
`interrupted()` reads: a recorder closed by the pipeline's own cleanup, before the runner knows
why, still writes `end_reason: interrupted` instead of "completed". Without the handler SIGTERM
would end the process as abruptly as SIGKILL.
"""

from __future__ import annotations

import signal
import threading

_interrupted = threading.Event()


def _handler(signum, frame):
    _interrupted.set()
    raise KeyboardInterrupt


def install() -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _handler)
        signal.signal(signal.SIGTERM, _handler)


def interrupted() -> bool:
    """True once SIGINT or SIGTERM reached a process that called `install()`."""
    return _interrupted.is_set()
