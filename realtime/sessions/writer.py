"""Record a live session into a self-describing, crash-safe folder, and read it back.

A session folder holds:
    session.json    what was recorded and how: start time, config, checkpoint, featurizer config,
                    versions, devices, media files and their clock offsets (rewritten atomically)
    windows.jsonl   one scored window per line (the pipeline's `WindowEvent.to_dict()` plus `seq`
                    and `recorded_t`), appended and fsynced window by window
    audio.wav       16 kHz mono PCM-16; the header is patched at every window, and on open when
                    the recording was cut (SIGKILL, power loss), so it is always a valid WAV
    video.mp4       fragmented MP4 (H.264): a new fragment starts at every window boundary, so a
                    cut file plays up to the last window (option: no video, or `faces.bin` only)

Crash safety comes from ordering: the recorder's writer thread handles audio, frames and events
in the order the pipeline delivered them, and a window's line is appended only after the audio
and video before it are on disk. So every window listed in windows.jsonl has its media, whatever
stopped the process. A torn last line (power loss mid-write) is ignored on read, with a note.

The recorder never raises into the pipeline: a full disk or an unwritable folder logs one
sentence (a warning; the CLI shows it), the recorder switches itself off, live scoring goes on, and what was written stays valid.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import json
import logging
import os
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

import numpy as np
from moodlens.core.errors import ConfigError, MediaError
from moodlens.core.options import Options
from moodlens.realtime.sessions.format import (
    RESERVE_BYTES,
    RESERVE_FILE,
    AUDIO_FILE,
    FACES_FILE,
    LOCK_FILE,
    REPEAT_FRAME_S,
    SESSION_FILE,
    SESSION_FORMAT,
    VIDEO_FILE,
    VIDEO_MODES,
    WAV_HEADER_BYTES,
    WINDOWS_FILE,
    _atomic_write_json,
    _faces_dtype_spec,
    _finite_or_none,
    _json_default,
    _patch_wav_sizes,
    _utc_now,
    _write_all,
    encode_faces,
    versions,
    wav_header,
)
from moodlens.core.types import AUDIO_SAMPLE_RATE, AudioChunk, FaceFeatures, VideoFrame
from moodlens.realtime.capture.streams import gap_samples
from moodlens.realtime.engine import SinkBase

log = logging.getLogger(__name__)


@dataclass
class RecordingOptions(Options):
    video: str = "mp4"              # "mp4": H.264 video; "faces": face features only (privacy); "none"
    video_max_width: int = 640      # larger frames are scaled down (keeps encoding cheap)
    video_fps: float = 15.0         # frames closer together than 1/fps are skipped
    video_crf: int = 28             # x264 quality (lower = better, bigger)
    keyframe_interval_s: float = 2.0  # at most this much video per fragment between windows
    fsync: bool = True              # fsync files at every window (crash safety on power loss)
    max_pending_frames: int = 32    # frames waiting for the encoder; more are dropped and counted
    block_when_busy: bool = False   # True (file runs): wait for the encoder instead of dropping frames
    max_queued_items: int = 20_000  # ~10 min of audio chunks waiting for the disk; beyond, recording stops
    # video="faces": True when the pipeline hands its own face features to `on_face` (then frames are
    # not run through MediaPipe a second time); False: the recorder computes them from the frames.
    faces_from_pipeline: bool = False

    def check(self, where: str = "recording options") -> None:
        if self.video not in VIDEO_MODES:
            raise ConfigError(f"{where}: recording option video='{self.video}' is unknown; choose one of: "
                              f"{', '.join(VIDEO_MODES)}.")
        if self.video_fps <= 0 or self.video_max_width < 16:
            raise ConfigError(f"{where}: recording options need video_fps > 0 and video_max_width >= 16.")


@dataclass
class RecordingStats:
    audio_samples: int = 0
    audio_gap_samples: int = 0      # silence inserted where audio chunks were missing
    frames_written: int = 0
    frames_skipped: int = 0         # above video_fps
    frames_dropped: int = 0         # encoder could not keep up
    faces_written: int = 0
    windows_written: int = 0



# ------------------------------------------------------------------------------------------
# the recorder (a pipeline sink)


class SessionRecorder(SinkBase):
    """Pipeline sink that records audio, video (or face features) and scored windows.

    `on_audio`, `on_frame` and `on_event` only queue the item (frames beyond the encoder's pace are
    dropped and counted, audio and events never are); a writer thread does all disk work, so a slow
    disk never stalls live scoring. Call `close()` at the end (also safe after failures).
    """

    def __init__(self, folder: str | Path, session_info: dict[str, Any] | None = None,
                 options: RecordingOptions | None = None,
                 on_error: Callable[[str], None] | None = None):
        self.folder = Path(folder).expanduser()
        self.options = options or RecordingOptions()
        self.options.check()
        self.session_info = dict(session_info or {})
        self.stats = RecordingStats()
        self.error: str | None = None
        # Why the session ended, written to session.json at close (docs/sessions.md): "completed",
        # "interrupted" (Ctrl-C, SIGTERM), "disk full" or "error" (any other failed write).
        self.end_reason: str | None = None
        self._error_errno: int | None = None
        self.on_error = on_error or _log_error
        self._items: deque = deque()
        self._cond = threading.Condition()
        self._pending_frames = 0
        self._last_frame_t: float | None = None
        self._closing = False
        self._closed = False
        self._thread: threading.Thread | None = None
        # writer-thread state
        self._audio_fd: int | None = None
        self._lock_fd: int | None = None
        self._windows_fd: int | None = None
        self._faces_fd: int | None = None
        self._video: _VideoWriter | None = None
        self._faces_featurizer = None
        self._audio_start_t: float | None = None
        self._audio_bytes = 0
        self._seq = 0
        self._meta: dict[str, Any] = {}
        self._started = time.monotonic()

        if (self.folder / SESSION_FILE).exists():
            # Refused before anything starts, so nothing is lost: never overwrite a recording.
            raise ConfigError(f"The folder {self.folder} already holds a recorded session; "
                              f"choose a new folder for --record.")
        taken = [n for n in (AUDIO_FILE, VIDEO_FILE, WINDOWS_FILE, FACES_FILE) if (self.folder / n).exists()]
        if taken:
            raise ConfigError(f"The folder {self.folder} already has a file named {taken[0]} that recording "
                              f"would overwrite; choose a new or empty folder for --record.")
        self._reserve: Path | None = None
        try:
            self._create_files()
        except OSError as err:
            self._fail(err, "start")
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None
            return
        self._thread = threading.Thread(target=self._run, name="moodlens-recorder", daemon=True)
        self._thread.start()

    # ---- sink protocol (called on pipeline threads; never raises) --------------------------
    def on_audio(self, chunk: AudioChunk) -> None:
        if self.enabled:
            self._put(chunk)

    def on_frame(self, frame: VideoFrame) -> None:
        if not self.enabled or self.options.video == "none":
            return
        if self.options.video == "faces" and self.options.faces_from_pipeline:
            return
        try:
            if self._last_frame_t is not None and frame.t - self._last_frame_t < 0.999 / self.options.video_fps:
                self.stats.frames_skipped += 1
                return
            with self._cond:
                while (self.options.block_when_busy and self.enabled
                       and self._pending_frames >= self.options.max_pending_frames):
                    self._cond.wait(0.1)
                if self._pending_frames >= self.options.max_pending_frames:
                    self.stats.frames_dropped += 1
                    return
                self._pending_frames += 1
            self._last_frame_t = frame.t
            self._put(frame)
        except Exception as err:  # noqa: BLE001 - a sink must not break the pipeline
            self._fail(err, "frame")

    def on_event(self, event: Any) -> None:
        if self.enabled:
            self._put(event)

    def on_face(self, face: FaceFeatures) -> None:
        """Optional sink method: the pipeline's face features (used with `faces_from_pipeline`)."""
        if self.enabled and self.options.video == "faces" and self.options.faces_from_pipeline:
            self._put(face)

    @staticmethod
    def check_folder(folder: str | Path) -> None:
        """Refuse, before any work starts, a folder that holds a session or files recording would
        overwrite, or one that cannot be created or written (one sentence, exit 2)."""
        from moodlens.core.paths import check_output_dir

        folder = Path(folder).expanduser()
        check_output_dir(folder, "The --record folder")
        if (folder / SESSION_FILE).exists():
            raise ConfigError(f"The folder {folder} already holds a recorded session; "
                              f"choose a new folder for --record.")
        taken = [n for n in (AUDIO_FILE, VIDEO_FILE, WINDOWS_FILE, FACES_FILE) if (folder / n).exists()]
        if taken:
            raise ConfigError(f"The folder {folder} already has a file named {taken[0]} that recording "
                              f"would overwrite; choose a new or empty folder for --record.")

    def close(self, reason: str | None = None) -> None:
        """Write everything queued, finish the media files and mark the session closed, noting why
        it ended: `reason`, else `end_reason` if the runner set it earlier (the pipeline closes its
        sinks itself), else "completed"; a failed write overrides both ("disk full", "error")."""
        if self._closed:
            return
        if reason is not None and self.end_reason is None:
            self.end_reason = reason
        if self.end_reason is None:
            from moodlens.core.signals import interrupted

            if interrupted():     # closed by the pipeline's cleanup while Ctrl-C / SIGTERM unwinds
                self.end_reason = "interrupted"
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
        self._closed = True

    def __enter__(self) -> "SessionRecorder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def enabled(self) -> bool:
        return self.error is None and not self._closing

    # ---- writer thread ----------------------------------------------------------------------
    def _put(self, item) -> None:
        with self._cond:
            if len(self._items) >= self.options.max_queued_items:
                # The disk has stalled for minutes: stop rather than fill memory.
                self._fail(OSError(0, "the disk cannot keep up (writes stalled)"), _kind(item))
                return
            self._items.append(item)
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._items and not self._closing:
                    self._cond.wait()
                if not self._items and self._closing:
                    break
                item = self._items.popleft()
                kind = _kind(item)
                if kind == "frame":
                    self._pending_frames -= 1
                    self._cond.notify_all()
            if self.error is not None:
                continue  # switched off: drain without writing
            try:
                if kind == "audio":
                    self._write_audio(item)
                elif kind == "frame":
                    self._write_frame(item)
                elif kind == "face":
                    self._write_face(item)
                else:
                    self._write_window(item)
            except Exception as err:  # noqa: BLE001 - any failure switches the recorder off, never the pipeline
                self._fail(err, kind)
        self._finish()

    def _create_files(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.folder / LOCK_FILE, os.O_WRONLY | os.O_CREAT, 0o644)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        info = dict(self.session_info)
        # faces.bin records as wide as the featurizer's face vector (64; mediapipe_v3 71)
        self._face_dim = int((info.get("featurizer_config") or {}).get("vision_dim", 64))
        self._meta = {
            "format": SESSION_FORMAT,
            "session_id": uuid.uuid4().hex[:12],
            "name": self.folder.name,
            "created": _utc_now(),
            "created_unix": time.time(),
            "state": "recording",
            # Session-clock time of the first recorded item: windows are shown relative to it.
            "origin_t": None,
            "config": info.pop("config", None),
            "checkpoint": info.pop("checkpoint", None),
            "featurizer_config": info.pop("featurizer_config", None),
            "devices": info.pop("devices", None),
            "source": info.pop("source", None),
            "info": info,
            "versions": versions(),
            "recording": dataclasses.asdict(self.options),
            "files": {
                "windows": WINDOWS_FILE,
                "audio": {"path": AUDIO_FILE, "sample_rate": AUDIO_SAMPLE_RATE, "channels": 1,
                          "encoding": "pcm_s16le", "start_t": None},
                "video": ({"path": VIDEO_FILE, "codec": "h264", "container": "fragmented mp4",
                           "start_t": None} if self.options.video == "mp4" else None),
                "faces": ({"path": FACES_FILE, "dtype": _faces_dtype_spec(self._face_dim), "start_t": None}
                          if self.options.video == "faces" else None),
            },
        }
        self._audio_fd = os.open(self.folder / AUDIO_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        _write_all(self._audio_fd, wav_header(0))
        self._windows_fd = os.open(self.folder / WINDOWS_FILE,
                                   os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        if self.options.video == "faces":
            self._faces_fd = os.open(self.folder / FACES_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self._save_meta()
        # Space kept back for the final session.json: on a full disk it is freed just before the
        # session's end (state, end_reason, error) is written, so that write still succeeds.
        # Twice the metadata's size (at least RESERVE_BYTES): the final write needs one new copy.
        # Best effort: a folder where even this does not fit still records (and may lose the end).
        reserve = self.folder / RESERVE_FILE
        size = max(RESERVE_BYTES, 2 * (self.folder / SESSION_FILE).stat().st_size)
        try:
            with open(reserve, "wb") as f:
                f.write(b"\0" * size)
                if self.options.fsync:
                    os.fsync(f.fileno())
            self._reserve = reserve
        except OSError:
            _unlink_quietly(reserve)

    def _save_meta(self) -> None:
        _atomic_write_json(self.folder / SESSION_FILE, self._meta, fsync=self.options.fsync)

    def _mark_start(self, stream: str, t: float) -> None:
        """First item of a stream: note its clock offset (atomically, before its data is written)."""
        changed = False
        if self._meta["origin_t"] is None:
            self._meta["origin_t"] = float(t)
            changed = True
        entry = self._meta["files"].get(stream)
        if isinstance(entry, dict) and entry.get("start_t") is None:
            entry["start_t"] = float(t)
            changed = True
        if changed:
            self._save_meta()

    def _write_audio(self, chunk: AudioChunk) -> None:
        samples = np.asarray(chunk.samples, dtype=np.float32).reshape(-1)
        if self._audio_start_t is None:
            self._mark_start("audio", chunk.t)
            self._audio_start_t = float(chunk.t)
        # Where the file is on the session clock; a later chunk means chunks were dropped upstream.
        # (Measured from the sample count, so capture-time jitter never accumulates.)
        n_gap = gap_samples(chunk.t, self._audio_start_t + self.stats.audio_samples / AUDIO_SAMPLE_RATE)
        parts = []
        if n_gap:
            parts.append(np.zeros(n_gap, dtype=np.int16))
            self.stats.audio_gap_samples += n_gap
        # The libsndfile/PyAV convention (sample = int / 32768), so audio that arrived as PCM-16 is stored
        # bit-exactly and a rescore hears what the live run heard.
        pcm = np.clip(np.nan_to_num(samples) * 32768.0, -32768.0, 32767.0)
        parts.append(pcm.round().astype("<i2"))
        data = b"".join(p.tobytes() for p in parts)
        try:
            _write_all(self._audio_fd, data)
        except OSError:
            # Never leave half a sample or a half chunk behind: cut back to what was whole.
            _truncate_quietly(self._audio_fd, WAV_HEADER_BYTES + self._audio_bytes)
            raise
        self._audio_bytes += len(data)
        self.stats.audio_samples += len(data) // 2

    def _write_frame(self, frame: VideoFrame) -> None:
        if self.options.video == "mp4":
            if self._video is None:
                self._mark_start("video", frame.t)
                self._video = _VideoWriter(self.folder / VIDEO_FILE, frame.image.shape, self.options)
            self._video.write(frame.image, frame.t - self._meta["files"]["video"]["start_t"])
            self.stats.frames_written += 1
        elif self.options.video == "faces":
            if self._faces_featurizer is None:
                self._faces_featurizer = _make_vision_featurizer(self._meta.get("featurizer_config"))
            if hasattr(self._faces_featurizer, "wants") and not self._faces_featurizer.wants(frame.t):
                return
            self._write_face(self._faces_featurizer.process(frame))

    def _write_face(self, face: FaceFeatures) -> None:
        self._mark_start("faces", face.t)
        _write_all(self._faces_fd, encode_faces([face], getattr(self, "_face_dim", 64)))
        self.stats.faces_written += 1

    def _write_window(self, event: Any) -> None:
        record = event.to_dict() if hasattr(event, "to_dict") else dict(event)
        record = _finite_or_none(record)
        record["seq"] = self._seq
        if self._meta["origin_t"] is None and isinstance(record.get("start"), (int, float)):
            self._mark_start("windows", record["start"])   # no media recorded: the first window sets the clock
        record["recorded_t"] = round(time.monotonic() - self._started, 3)  # wall seconds since start
        # Media first: the window's audio and video must be durable before the window is listed.
        if self._audio_fd is not None:
            _patch_wav_sizes(self._audio_fd, self._audio_bytes)
            if self.options.fsync:
                os.fsync(self._audio_fd)
        if self._video is not None:
            self._video.cut_fragment()
        if self._faces_fd is not None and self.options.fsync:
            os.fsync(self._faces_fd)
        line = (json.dumps(record, ensure_ascii=False, default=_json_default) + "\n").encode("utf-8")
        size_before = os.fstat(self._windows_fd).st_size
        try:
            _write_all(self._windows_fd, line)
            if self.options.fsync:
                os.fsync(self._windows_fd)
        except OSError:
            _truncate_quietly(self._windows_fd, size_before)
            raise
        self._seq += 1
        self.stats.windows_written += 1

    def _finish(self) -> None:
        """Close media cleanly (when the recorder still works) and mark the session closed."""
        failed = self.error is not None
        if self._video is not None:
            try:
                self._video.close()
            except Exception as err:  # noqa: BLE001
                self._fail(err, "video")
        if self._audio_fd is not None:
            try:
                if not failed:
                    _patch_wav_sizes(self._audio_fd, self._audio_bytes)
                    os.fsync(self._audio_fd)
            except OSError as err:
                self._fail(err, "audio")
            finally:
                os.close(self._audio_fd)
                self._audio_fd = None
        for name in ("_windows_fd", "_faces_fd"):
            fd = getattr(self, name)
            if fd is not None:
                try:
                    os.fsync(fd)
                except OSError:
                    pass
                os.close(fd)
                setattr(self, name, None)
        if self._faces_featurizer is not None and hasattr(self._faces_featurizer, "close"):
            try:
                self._faces_featurizer.close()
            except Exception:  # noqa: BLE001
                pass
        if self._meta:
            if self._video is None and self._meta["files"].get("video"):
                self._meta["files"]["video"] = None   # the source had no video: say so, no empty file
                try:
                    (self.folder / VIDEO_FILE).unlink(missing_ok=True)
                except OSError:
                    pass
            self._meta["state"] = "failed" if self.error else "closed"
            self._meta["end_reason"] = self._end_reason()
            self._meta["ended"] = _utc_now()
            self._meta["ended_unix"] = time.time()
            self._meta["stats"] = dataclasses.asdict(self.stats)
            if self.error:
                self._meta["error"] = self.error
            self._release_reserve()      # first: on a full disk this is the space the end is written to
            try:
                self._save_meta()
            except OSError:
                pass  # the previous session.json stays whole (atomic rename), just without the end
        self._release_reserve()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = None

    def _release_reserve(self) -> None:
        reserve = getattr(self, "_reserve", None)
        if reserve is not None:
            try:
                reserve.unlink(missing_ok=True)
            except OSError:
                pass
            self._reserve = None

    def _end_reason(self) -> str:
        if self.error is not None:
            full = self._error_errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
            return "disk full" if full else "error"
        return self.end_reason or "completed"

    def _fail(self, err: BaseException, during: str) -> None:
        if self.error is not None:
            return
        self._error_errno = getattr(err, "errno", None)
        reason = getattr(err, "strerror", None) or str(err) or type(err).__name__
        if during == "start":
            self.error = f"Cannot record to {self.folder}: {reason}; live scoring continues without a recording."
        else:
            what = {"audio": "audio", "frame": "video", "video": "video", "event": "a window",
                    "face": "face features"}.get(during, during)
            self.error = (f"Recording to {self.folder} stopped while writing {what}: {reason}; "
                          f"live scoring continues and what was recorded so far stays readable.")
        try:
            self.on_error(self.error)
        except Exception:  # noqa: BLE001
            pass


def _kind(item) -> str:
    """What a queued item is: the writer's queue holds the sink calls' own typed items, in order."""
    if isinstance(item, AudioChunk):
        return "audio"
    if isinstance(item, VideoFrame):
        return "frame"
    if isinstance(item, FaceFeatures):
        return "face"
    return "event"


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def _truncate_quietly(fd: int, size: int) -> None:
    try:
        os.ftruncate(fd, size)
    except OSError:
        pass


def _log_error(sentence: str) -> None:
    log.warning(sentence, extra={"label": "recording"})


def _make_vision_featurizer(featurizer_config: dict | None):
    try:
        from moodlens.realtime.perception.features.config import FeaturizerConfig
        from moodlens.realtime.perception.features.vision import VisionFeaturizer
    except ImportError as err:
        raise MediaError(f"Recording face features needs the vision featurizer ({err.name} is missing).") from None
    config = FeaturizerConfig.from_dict(featurizer_config) if featurizer_config else FeaturizerConfig()
    return VisionFeaturizer(config)


class _VideoWriter:
    """H.264 in fragmented MP4 (empty moov + one fragment per keyframe): readable when cut short.

    `cut_fragment()` (at each window) re-sends the newest frame, 1 ms later, as a keyframe: the
    muxer then writes out the fragment holding every frame so far, which is fsynced right away.
    """

    def __init__(self, path: Path, shape: tuple[int, ...], options: RecordingOptions):
        import av

        height, width = int(shape[0]), int(shape[1])
        scale = min(1.0, options.video_max_width / width)
        self.width = max(16, int(width * scale) // 2 * 2)   # yuv420p needs even sizes
        self.height = max(16, int(height * scale) // 2 * 2)
        self.fsync = options.fsync
        self.container = av.open(str(path), "w", format="mp4", options={
            "movflags": "frag_keyframe+empty_moov+default_base_moof", "flush_packets": "1"})
        self.stream = self.container.add_stream("libx264", rate=max(1, int(round(options.video_fps))))
        self.stream.width, self.stream.height, self.stream.pix_fmt = self.width, self.height, "yuv420p"
        self.stream.codec_context.time_base = Fraction(1, 1000)
        gop = max(1, int(round(options.keyframe_interval_s * options.video_fps)))
        # zerolatency: no lookahead and no B-frames, so each frame's packet comes out at once.
        self.stream.options = {"preset": "ultrafast", "tune": "zerolatency", "crf": str(options.video_crf),
                               "g": str(gop)}
        self.path = path
        self._fd: int | None = None   # for fsync (it flushes the file whoever wrote it); opened once it exists
        self._last_pts = -1
        self._last_image: np.ndarray | None = None
        self._unflushed = 0
        self._av = av

    def write(self, image: np.ndarray, t: float, keyframe: bool = False) -> None:
        frame = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(image[..., :3]), format="rgb24")
        frame = frame.reformat(width=self.width, height=self.height, format="yuv420p")
        pts = max(self._last_pts + 1, int(round(t * 1000)))
        frame.pts, frame.time_base = pts, Fraction(1, 1000)
        self._last_pts = pts
        if keyframe:
            frame.pict_type = self._av.video.frame.PictureType.I
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self._last_image = image
        self._unflushed += 1

    def cut_fragment(self) -> None:
        if self._last_image is None or self._unflushed == 0:
            return
        self.write(self._last_image, (self._last_pts + REPEAT_FRAME_S * 1000 / 2) / 1000, keyframe=True)
        self._unflushed = 0
        if self.fsync:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_RDONLY)
            os.fsync(self._fd)

    def close(self) -> None:
        try:
            for packet in self.stream.encode(None):
                self.container.mux(packet)
        finally:
            self.container.close()
            if self._fd is not None:
                os.close(self._fd)


