"""Read a recorded session back (windows, audio, video or faces), repairing what a cut recording left:
a WAV header with stale sizes, a torn last line of windows.jsonl.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import struct
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from moodlens.core.errors import DataError, MediaError
from moodlens.realtime.sessions.format import (
    LOCK_FILE,
    RESERVE_FILE,
    REPEAT_FRAME_S,
    SESSION_FILE,
    SESSION_FORMAT,
    WAV_HEADER_BYTES,
    WINDOWS_FILE,
    _atomic_write_json,
    _faces_dtype,
    _patch_wav_sizes,
)
from moodlens.core.types import AUDIO_SAMPLE_RATE, FaceFeatures, VideoFrame
from moodlens.realtime.engine.events import WindowEvent

# reading a session back


# A recorded window is the live engine's record (`WindowEvent`) read back: `seq` and `recorded_t`
# set, `start`/`end`/`speech_end`/`ready_at` in seconds from the session's start (its first recorded item).
RecordedWindow = WindowEvent   # the name train/sessions.py imports; not a second type


@dataclass
class RecordedSession:
    folder: Path
    info: dict[str, Any]
    windows: list[WindowEvent]
    audio_path: Path | None
    video_path: Path | None
    faces_path: Path | None
    notes: list[str] = field(default_factory=list)   # what was repaired or left out when reading

    @property
    def name(self) -> str:
        return self.info.get("name") or self.folder.name

    @property
    def closed_cleanly(self) -> bool:
        return self.info.get("state") == "closed"

    @property
    def origin_t(self) -> float:
        origin = self.info.get("origin_t")
        return float(origin) if origin is not None else 0.0

    @property
    def featurizer_config(self) -> dict | None:
        return self.info.get("featurizer_config")

    def _stream_offset(self, stream: str) -> float:
        """Seconds from the session start to the stream's first item."""
        entry = (self.info.get("files") or {}).get(stream) or {}
        start = entry.get("start_t")
        return 0.0 if start is None else float(start) - self.origin_t

    @property
    def audio_duration(self) -> float:
        if self.audio_path is None:
            return 0.0
        return _wav_data_bytes(self.audio_path) // 2 / AUDIO_SAMPLE_RATE

    @property
    def duration(self) -> float:
        ends = [w.end for w in self.windows]
        if self.audio_path is not None:
            ends.append(self._stream_offset("audio") + self.audio_duration)
        return max(ends, default=0.0)

    def read_audio(self, start: float = 0.0, end: float | None = None) -> np.ndarray:
        """Float32 16 kHz samples between session times `start` and `end` (silence where none was recorded)."""
        if end is None:
            end = self.duration
        n_out = max(0, int(round((end - start) * AUDIO_SAMPLE_RATE)))
        out = np.zeros(n_out, dtype=np.float32)
        if self.audio_path is None or n_out == 0:
            return out
        total = _wav_data_bytes(self.audio_path) // 2
        first = int(round((start - self._stream_offset("audio")) * AUDIO_SAMPLE_RATE))
        lo, hi = max(0, first), min(total, first + n_out)
        if hi > lo:
            with open(self.audio_path, "rb") as f:
                f.seek(WAV_HEADER_BYTES + 2 * lo)
                pcm = np.frombuffer(f.read(2 * (hi - lo)), dtype="<i2")
            out[lo - first: lo - first + len(pcm)] = pcm.astype(np.float32) / 32768.0  # as the writer (libsndfile's convention)
        return out

    def iter_frames(self, start: float = 0.0, end: float = math.inf) -> Iterator[VideoFrame]:
        """Decoded video frames (RGB) with `t` in session seconds, in order; a cut file ends early."""
        if self.video_path is None:
            return
        import av

        offset = self._stream_offset("video")
        try:
            container = av.open(str(self.video_path))
        except (av.error.FFmpegError, OSError) as err:
            raise MediaError(f"Cannot open the recorded video {self.video_path}: {err}.") from None
        try:
            index = 0
            last_t = None
            decoded = container.decode(video=0)
            while True:
                try:
                    frame = next(decoded)
                except StopIteration:
                    break
                except av.error.FFmpegError:
                    break  # a fragment cut by a crash: everything before it was whole
                t = offset + float(frame.time if frame.time is not None else 0.0)
                if last_t is not None and t - last_t < REPEAT_FRAME_S:
                    continue  # the repeat that closed a fragment at a window boundary
                last_t = t
                if t >= end:
                    break
                if t >= start:
                    yield VideoFrame(t=t, image=frame.to_ndarray(format="rgb24"), index=index)
                index += 1
        finally:
            container.close()

    def read_faces(self, start: float = 0.0, end: float = math.inf) -> list[FaceFeatures]:
        """Recorded face features (privacy mode) with `t` in session seconds."""
        if self.faces_path is None:
            return []
        dim = int((((self.info.get("files") or {}).get("faces") or {}).get("dtype") or {}).get("dim", 64))
        dtype = _faces_dtype(dim)
        data = self.faces_path.read_bytes()
        records = np.frombuffer(data[: len(data) // dtype.itemsize * dtype.itemsize], dtype=dtype)
        out = []
        for r in records:
            t = float(r["t"]) - self.origin_t
            if start <= t < end:
                present = bool(r["present"])
                out.append(FaceFeatures(t=t, values=np.array(r["values"]) if present else None,
                                        face_present=present))
        return out

    def event_dicts(self) -> list[dict[str, Any]]:
        """Windows in the live JSONL schema with session-relative times."""
        return [w.to_dict() for w in self.windows]


def _wav_data_bytes(path: Path) -> int:
    size = path.stat().st_size
    return max(0, size - WAV_HEADER_BYTES) // 2 * 2


def _repair_wav(path: Path, notes: list[str]) -> None:
    """Make the header's sizes match the whole samples on disk (a cut recording left them stale)."""
    data_bytes = _wav_data_bytes(path)
    with open(path, "rb") as f:
        head = f.read(WAV_HEADER_BYTES)
    if len(head) < WAV_HEADER_BYTES or head[:4] != b"RIFF" or head[36:40] != b"data":
        notes.append(f"{path.name} has no valid WAV header; the audio is left out.")
        raise _BadAudio()
    stated = struct.unpack("<I", head[40:44])[0]
    if stated == min(data_bytes, 0xFFFFFFFF - 36) and path.stat().st_size == WAV_HEADER_BYTES + data_bytes:
        return
    try:
        fd = os.open(path, os.O_WRONLY)
        try:
            if path.stat().st_size != WAV_HEADER_BYTES + data_bytes:
                os.ftruncate(fd, WAV_HEADER_BYTES + data_bytes)   # a torn half sample
            _patch_wav_sizes(fd, data_bytes)
        finally:
            os.close(fd)
        notes.append(f"{path.name} was not closed properly; its header was fixed "
                     f"({data_bytes // 2 / AUDIO_SAMPLE_RATE:.2f} s of audio).")
    except OSError:
        notes.append(f"{path.name} was not closed properly and the folder is read-only; "
                     f"its samples are read by size ({data_bytes // 2 / AUDIO_SAMPLE_RATE:.2f} s).")


class _BadAudio(Exception):
    pass


def read_windows(path: Path, origin_t: float, notes: list[str]) -> list[WindowEvent]:
    windows: list[WindowEvent] = []
    if not path.exists():
        notes.append(f"{path.name} is missing: the session has no scored windows.")
        return windows
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    # Every complete line ends with a newline, so the piece after the last one is a torn write.
    if lines and lines[-1].strip():
        notes.append(f"{path.name}: the last line was cut off mid-write (the recording stopped abruptly) "
                     f"and is ignored.")
    by_id: dict[int, int] = {}
    for n, line in enumerate(lines[:-1], 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line.decode("utf-8"))
            if not isinstance(d, dict):
                raise ValueError
        except (ValueError, UnicodeDecodeError):
            raise DataError(f"{path} line {n} is not a valid recorded window.") from None
        window = record_from_line(d, origin_t, f"{path} line {n}", seq=len(windows))
        if window.id in by_id:
            notes.append(f"{path.name} line {n} repeats window id {window.id}; the later one is kept.")
            windows[by_id[window.id]] = window
        else:
            by_id[window.id] = len(windows)
            windows.append(window)
    return windows


def record_from_line(d: dict[str, Any], origin_t: float, where: str, *, seq: int) -> WindowEvent:
    """The file boundary: a windows.jsonl line (schema v1 or v2, plus `seq`/`recorded_t`) as the
    record, with its media-clock times made relative to the session's start."""
    try:
        event = WindowEvent.from_dict(d, where)
    except (ValueError, KeyError, TypeError) as err:
        raise DataError(f"{where} is not a valid recorded window ({err}).") from None
    shift = lambda t: None if t is None else t - origin_t  # noqa: E731
    return dataclasses.replace(event, start=event.start - origin_t, end=event.end - origin_t,
                               speech_end=shift(event.speech_end), ready_at=shift(event.ready_at),
                               seq=event.seq if event.seq is not None else seq)


def _still_recording(folder: Path) -> bool:
    """True while a live recorder holds the folder's lock (a dead process holds none)."""
    try:
        fd = os.open(folder / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # closing drops a lock we took
    return False


def is_session_folder(path: str | Path) -> bool:
    return (Path(path) / SESSION_FILE).is_file()


def open_session(folder: str | Path) -> RecordedSession:
    """Read a session folder, repairing what an abrupt stop left (see `RecordedSession.notes`)."""
    folder = Path(folder).expanduser()
    meta_path = folder / SESSION_FILE
    if folder.exists() and not folder.is_dir():
        raise DataError(f"{folder} is a file, not a session folder (give the folder --record wrote).")
    if not folder.is_dir():
        raise DataError(f"The session folder {folder} does not exist.")
    if not meta_path.is_file():
        raise DataError(f"{folder} is not a recorded session (it has no {SESSION_FILE}).")
    try:
        info = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise DataError(f"{meta_path} is not valid JSON.") from None
    if not isinstance(info, dict) or info.get("format") != SESSION_FORMAT:
        raise DataError(f"{meta_path} is not a {SESSION_FORMAT} file.")
    notes: list[str] = []
    live = info.get("state") == "recording" and _still_recording(folder)
    if live:
        notes.append("The session is still being recorded; it is read up to its last completed window.")
    elif info.get("state") in ("recording", "interrupted"):
        notes.append("The recording was not closed (the process stopped abruptly); "
                     "it is read up to the last completed window.")
    elif info.get("state") == "failed":
        notes.append(f"The recording stopped early: {info.get('error', 'a write failed')}")
    elif info.get("end_reason") == "interrupted":
        notes.append("The recording was stopped by Ctrl-C or SIGTERM; everything up to its last window is kept.")
    files = info.get("files") or {}

    def member(key: str) -> Path | None:
        entry = files.get(key)
        if not entry:
            return None
        path = folder / (entry["path"] if isinstance(entry, dict) else entry)
        return path if path.is_file() and path.stat().st_size > 0 else None

    audio_path = member("audio")
    if audio_path is not None and not live:
        try:
            _repair_wav(audio_path, notes)
        except _BadAudio:
            audio_path = None
    if info.get("state") == "recording" and not live:
        # Mark it, so the next reader knows no recorder will come back to finish it.
        info["state"] = "interrupted"
        info.setdefault("end_reason", "killed")
        try:
            _atomic_write_json(meta_path, info)
            (folder / RESERVE_FILE).unlink(missing_ok=True)
        except OSError:
            pass
    video_path = member("video")
    faces_path = member("faces")
    origin = info.get("origin_t")
    windows = read_windows(folder / (files.get("windows") or WINDOWS_FILE),
                           float(origin) if origin is not None else 0.0, notes)
    return RecordedSession(folder=folder, info=info, windows=windows, audio_path=audio_path,
                           video_path=video_path, faces_path=faces_path, notes=notes)
