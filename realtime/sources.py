"""Timestamped capture sources: media files (PyAV), webcam (OpenCV), microphone (PortAudio), synthetic.

Every source iterates `VideoFrame | AudioChunk` in time order on one clock (seconds): live sources
stamp items with `time.monotonic()` at capture; files and the synthetic source use media time plus
`origin` (default: `time.monotonic()` when iteration starts, so latencies can be measured against
the same clock). Audio is always 16 kHz mono float32 in chunks of `chunk_samples` (512 = 32 ms,
one Silero VAD frame).

Live sources capture on their own thread into a bounded queue. When the consumer falls behind,
the OLDEST item is dropped (fresh frames matter more than old ones in a live view) and counted in
`SourceStats`, so nothing piles up silently.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Union

import numpy as np

from moodlens.realtime.errors import ConfigError, MediaError
from moodlens.realtime.types import AUDIO_SAMPLE_RATE, AudioChunk, SourceStats, VideoFrame

Item = Union[VideoFrame, AudioChunk]
CHUNK_SAMPLES = 512            # 32 ms at 16 kHz
PACES = ("fast", "realtime")
# A file whose decoded media stops this much before its declared duration is called truncated.
TRUNCATION_TOLERANCE_S = 0.5
# Containers whose header states the true duration; elsewhere (mp3, ADTS, MPEG-TS) FFmpeg may
# estimate it from the bit rate, and a short decode proves nothing.
EXACT_DURATION_FORMATS = {"mov", "mp4", "matroska", "webm", "avi", "flac"}
# Undecodable packets in a row after which a stream counts as broken rather than damaged.
MAX_BAD_PACKETS_IN_ROW = 25
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
# Media files
# ---------------------------------------------------------------------------------------------

def _open_container(path: Path):
    import av

    if not path.exists():
        raise MediaError(f"The media file '{path}' does not exist.")
    if path.is_dir():
        raise MediaError(f"'{path}' is a folder, not a media file.")
    try:
        return av.open(str(path), mode="r")
    except av.FFmpegError as err:
        raise MediaError(f"The media file '{path}' cannot be opened: it is corrupt, truncated or not a supported audio/video format ({err.strerror or err}).") from err
    except (OSError, UnicodeDecodeError) as err:
        raise MediaError(f"The media file '{path}' cannot be read ({err}).") from err


def _moving_video_streams(container) -> list:
    """Video streams that are video: cover art in music files is a one-picture 'video' stream."""
    import av

    attached = av.stream.Disposition.attached_pic
    return [s for s in container.streams.video if not (s.disposition & attached) and s.codec_context is not None]


def _audio_streams(container) -> list:
    """Audio streams FFmpeg has a decoder for (one it cannot decode counts as absent)."""
    return [s for s in container.streams.audio if s.codec_context is not None]


@dataclass
class MediaClip:
    """A whole decoded file: 16 kHz mono audio and the (optionally decimated) RGB frames."""

    audio: np.ndarray                     # (N,) float32 16 kHz mono; empty when the file has no audio
    frames: list[VideoFrame]              # t in media seconds from 0
    duration: float
    has_audio: bool
    has_video: bool
    path: str = ""
    video_fps: float | None = None        # the file's nominal frame rate


class MediaFileSource:
    """Decodes a media file with PyAV into time-ordered `VideoFrame`s and 16 kHz `AudioChunk`s.

    `pace="realtime"` releases each item when its media time comes (a file that behaves like a
    camera + microphone); `pace="fast"` decodes as fast as possible. `video_fps` keeps at most
    that many frames per second. `max_size` downscales frames whose longer side is bigger.
    A file without video gives audio only (`has_video` False) and vice versa.
    """

    def __init__(
        self,
        path: str | Path,
        pace: str = "fast",
        video_fps: float | None = None,
        origin: float | None = None,
        chunk_samples: int = CHUNK_SAMPLES,
        max_size: int | None = None,
    ):
        _check_pace(pace)
        if chunk_samples <= 0:
            raise ConfigError(f"chunk_samples must be positive, not {chunk_samples}.")
        _FpsDecimator(video_fps)  # validates
        self.path = Path(path)
        self.pace = pace
        self.video_fps = video_fps
        self.origin = origin
        self.chunk_samples = chunk_samples
        self.max_size = max_size
        self.stats = SourceStats()
        self._stop = threading.Event()
        self._container = _open_container(self.path)
        self._used = False
        self._iterating = False
        video = _moving_video_streams(self._container)
        audio = _audio_streams(self._container)
        self.has_video = len(video) > 0
        self.has_audio = len(audio) > 0
        if not (self.has_video or self.has_audio):
            self._container.close()
            raise MediaError(f"The media file '{self.path}' holds neither an audio nor a video stream.")
        self.width = video[0].codec_context.width if self.has_video else 0
        self.height = video[0].codec_context.height if self.has_video else 0
        rate = video[0].average_rate if self.has_video else None
        self.nominal_fps = float(rate) if rate else None
        self.duration = self._declared_duration()

    def _declared_duration(self) -> float:
        c = self._container
        if c.duration is not None:
            return c.duration / 1_000_000
        best = 0.0
        for s in _moving_video_streams(c)[:1] + _audio_streams(c)[:1]:
            if s.duration is not None and s.time_base is not None:
                best = max(best, float(s.duration * s.time_base))
        return best

    # -- iteration ---------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Item]:
        return self.items()

    def items(self) -> Iterator[Item]:
        if self._stop.is_set():
            return
        container = self._container if not self._used else _open_container(self.path)
        self._used = True
        self._container = container
        pacer = _Pacer(self.pace, self._stop)
        origin = self.origin
        self._iterating = True
        try:
            for media_t, kind, payload, index in self._decode(container):
                if self._stop.is_set():
                    return
                pacer.wait_until(media_t)
                if self._stop.is_set():
                    return
                if origin is None:
                    origin = time.monotonic() - media_t if self.pace == "realtime" else time.monotonic()
                if kind == "v":
                    self.stats.frames_in += 1
                    yield VideoFrame(t=origin + media_t, image=payload, index=index)
                else:
                    self.stats.audio_chunks_in += 1
                    yield AudioChunk(t=origin + media_t, samples=payload)
        finally:
            self._iterating = False
            if self._stop.is_set():
                self._close_container()

    def _decode(self, container) -> Iterator[tuple[float, str, np.ndarray, int]]:
        import av

        streams = []
        video_stream = _moving_video_streams(container)[0] if self.has_video else None
        audio_stream = _audio_streams(container)[0] if self.has_audio else None
        if video_stream is not None:
            video_stream.thread_type = "AUTO"
            streams.append(video_stream)
        if audio_stream is not None:
            streams.append(audio_stream)
        offset = container.start_time / 1_000_000 if container.start_time is not None else 0.0
        resampler = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_SAMPLE_RATE) if audio_stream else None
        chunker = _AudioChunker(self.chunk_samples)
        decimator = _FpsDecimator(self.video_fps)
        video_q: deque = deque()
        audio_q: deque = deque()
        video_index = 0
        last_video_t = -1.0
        step = 1.0 / self.nominal_fps if self.nominal_fps else 1.0 / 30
        end_t = 0.0
        bad_in_row = {True: 0, False: 0}     # consecutive undecodable packets, video / audio

        def on_video(frame) -> None:
            nonlocal video_index, last_video_t, end_t
            t = frame.time - offset if frame.time is not None else last_video_t + step
            t = max(t, last_video_t + 1e-6, 0.0)
            last_video_t = t
            end_t = max(end_t, t + step)
            if decimator.keep(t):
                video_q.append((t, ("v", self._to_rgb(frame), video_index)))
            video_index += 1

        def on_audio(resampled) -> None:
            nonlocal end_t
            for out in resampled:
                samples = out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
                t = max(out.time - offset, 0.0) if out.time is not None else None
                for ct, chunk in chunker.add(samples, t):
                    audio_q.append((ct, ("a", chunk, 0)))
                    end_t = max(end_t, ct + len(chunk) / AUDIO_SAMPLE_RATE)

        try:
            for packet in container.demux(*streams):
                if self._stop.is_set():
                    return
                is_video = packet.stream is video_stream
                try:
                    decoded = packet.decode()
                except av.FFmpegError as err:
                    # A damaged packet costs its frames, not the file: skip it, count it, go on,
                    # unless the stream has turned into nothing but errors.
                    bad_in_row[is_video] += 1
                    if is_video:
                        self.stats.frames_dropped += 1
                    else:
                        self.stats.audio_chunks_dropped += 1
                    if bad_in_row[is_video] > MAX_BAD_PACKETS_IN_ROW:
                        kind = "video" if is_video else "audio"
                        raise MediaError(
                            f"The {kind} stream of '{self.path}' is corrupt from about {end_t:.2f} s "
                            f"({bad_in_row[is_video]} undecodable packets in a row: {err.strerror or err})."
                        ) from err
                    continue
                bad_in_row[is_video] = 0
                if is_video:
                    for frame in decoded:
                        on_video(frame)
                else:
                    for frame in decoded:
                        on_audio(resampler.resample(frame))
                for t, (kind, payload, index) in _merge_in_time(video_q, audio_q, video_stream is None, audio_stream is None):
                    yield t, kind, payload, index
            if resampler is not None:
                on_audio(resampler.resample(None))
                for ct, chunk in chunker.finish():
                    audio_q.append((ct, ("a", chunk, 0)))
                    end_t = max(end_t, ct + len(chunk) / AUDIO_SAMPLE_RATE)
        except av.FFmpegError as err:
            raise MediaError(f"Decoding '{self.path}' failed near {end_t:.2f} s: the file is corrupt or truncated ({err.strerror or err}).") from err
        for t, (kind, payload, index) in _merge_in_time(video_q, audio_q, True, True):
            yield t, kind, payload, index
        exact = bool(EXACT_DURATION_FORMATS & set(container.format.name.split(",")))
        if exact and self.duration and end_t < self.duration - max(TRUNCATION_TOLERANCE_S, 0.1 * self.duration):
            raise MediaError(
                f"The media file '{self.path}' is truncated: its media stops at {end_t:.2f} s of the declared {self.duration:.2f} s."
            )

    def _to_rgb(self, frame) -> np.ndarray:
        if self.max_size and max(frame.width, frame.height) > self.max_size:
            scale = self.max_size / max(frame.width, frame.height)
            width = max(2, int(round(frame.width * scale / 2)) * 2)
            height = max(2, int(round(frame.height * scale / 2)) * 2)
            image = frame.to_ndarray(format="rgb24", width=width, height=height)
        else:
            image = frame.to_ndarray(format="rgb24")
        # Phones store portrait video sideways plus a display rotation: apply it as players do,
        # or the face tracker sees faces lying on their side.
        quarter_turns = int(round((frame.rotation or 0) / 90)) % 4
        if quarter_turns:
            image = np.ascontiguousarray(np.rot90(image, quarter_turns))
        return image

    # -- lifetime ----------------------------------------------------------------------------
    def close(self) -> None:
        """Stop (also from another thread: a paced wait is interrupted) and release the file."""
        self._stop.set()
        # Closing the container under a decoding thread is unsafe in FFmpeg: the iterating
        # generator closes it itself when it sees the stop flag.
        if not self._iterating:
            self._close_container()

    def _close_container(self) -> None:
        try:
            self._container.close()
        except Exception:  # already closed
            pass

    def __enter__(self) -> "MediaFileSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_media(path: str | Path, video_fps: float | None = None, max_size: int | None = None) -> MediaClip:
    """Decode a whole file (media time from 0): 16 kHz mono audio and RGB frames."""
    frames: list[VideoFrame] = []
    audio: list[np.ndarray] = []
    with MediaFileSource(path, pace="fast", video_fps=video_fps, origin=0.0, max_size=max_size) as source:
        for item in source:
            if isinstance(item, VideoFrame):
                frames.append(item)
            else:
                audio.append(item.samples)
        samples = np.concatenate(audio) if audio else np.zeros(0, dtype=np.float32)
        duration = source.duration or max(len(samples) / AUDIO_SAMPLE_RATE, frames[-1].t if frames else 0.0)
        return MediaClip(
            audio=samples, frames=frames, duration=duration, has_audio=source.has_audio,
            has_video=source.has_video, path=str(path), video_fps=source.nominal_fps,
        )


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


class _ThreadedSource:
    """Base of live sources: a capture thread fills a DropOldestQueue; iteration drains it."""

    has_video = False
    has_audio = False
    duration = None            # live: unknown

    def __init__(self, queue_size: int):
        self.stats = SourceStats()
        self.queue = DropOldestQueue(queue_size, self._count_drop)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: MediaError | None = None
        self._lock = threading.Lock()

    def _count_drop(self, item) -> None:
        _count_dropped(self.stats, item)

    def start(self) -> None:
        """Open the device (raising MediaError with one sentence) and start capturing."""
        with self._lock:
            if self._thread is not None or self._stop.is_set():
                return
            self._open()
            self._thread = threading.Thread(target=self._run, name=type(self).__name__, daemon=True)
            self._thread.start()

    def _run(self) -> None:
        try:
            self._capture_loop()
        except MediaError as err:
            self._error = err
        finally:
            self._stop.set()
            self._release()
            if self.queue.notify is not None:
                self.queue.notify.set()

    @property
    def running(self) -> bool:
        return self._thread is not None and not self._stop.is_set()

    def poll(self):
        """One queued item or None, without waiting (used by LiveSource)."""
        return self.queue.get(timeout=0)

    def finished(self) -> bool:
        return self._stop.is_set() and len(self.queue) == 0

    def raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def __iter__(self) -> Iterator[Item]:
        self.start()
        while True:
            item = self.queue.get(timeout=0.05)
            if item is not None:
                yield item
            elif self.finished():
                self.raise_error()
                return

    def close(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=2.0)
        if thread is None:
            self._release()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # subclasses
    def _open(self) -> None: ...
    def _capture_loop(self) -> None: ...
    def _release(self) -> None: ...


class WebcamSource(_ThreadedSource):
    """Webcam frames (RGB uint8) via OpenCV, stamped with time.monotonic() at capture.

    `capture` may be any object with OpenCV's VideoCapture methods (isOpened/read/set/release),
    e.g. a stand-in camera in tests on machines without one.
    """

    has_video = True

    def __init__(self, index: int = 0, width: int = 640, height: int = 480, fps: float = 30.0,
                 queue_size: int = 4, capture=None):
        super().__init__(queue_size)
        self.index = index
        self.width, self.height, self.fps = width, height, fps
        self._cap = capture
        self._failures_allowed = 30

    def _open(self) -> None:
        if self._cap is None:
            import cv2

            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
            backend = cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY
            self._cap = cv2.VideoCapture(self.index, backend)
            if self._cap.isOpened():
                self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
                self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
                self._cap.set(cv2.CAP_PROP_FPS, self.fps)
        if not self._cap.isOpened():
            self._cap = None
            raise MediaError(f"No camera could be opened at index {self.index}: none is connected or another program is using it.")
        ok, first = self._cap.read()
        if not ok or first is None:
            self._cap.release()
            self._cap = None
            raise MediaError(f"The camera at index {self.index} opened but gave no frame: it may be busy in another program.")
        self._pending_first = first

    def _capture_loop(self) -> None:
        import cv2

        index = 0
        failures = 0
        bgr = self._pending_first
        while not self._stop.is_set():
            if bgr is None:
                ok, bgr = self._cap.read()
                if not ok or bgr is None:
                    failures += 1
                    if failures > self._failures_allowed:
                        raise MediaError(f"The camera at index {self.index} stopped delivering frames.")
                    bgr = None
                    time.sleep(0.01)
                    continue
            t = time.monotonic()
            failures = 0
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            self.stats.frames_in += 1
            self.queue.put(VideoFrame(t=t, image=rgb, index=index))
            index += 1
            bgr = None

    def _release(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()


class StreamResampler:
    """Resamples consecutive blocks of a mono stream to 16 kHz without seams between blocks (soxr)."""

    def __init__(self, rate_in: int, rate_out: int = AUDIO_SAMPLE_RATE):
        import soxr

        self._stream = soxr.ResampleStream(rate_in, rate_out, 1, dtype="float32", quality="HQ")

    def __call__(self, block: np.ndarray, last: bool = False) -> np.ndarray:
        return self._stream.resample_chunk(np.ascontiguousarray(block, dtype=np.float32), last=last)


class MicrophoneSource(_ThreadedSource):
    """Microphone audio (16 kHz mono float32 chunks) via PortAudio (sounddevice).

    PortAudio calls back on its own thread; each block is stamped with the monotonic time of its
    first sample and queued. PortAudio input overflows are counted as dropped chunks too. A device
    that does not take 16 kHz is opened at its native rate and resampled block by block (soxr).
    """

    has_audio = True

    def __init__(self, device: int | str | None = None, chunk_samples: int = CHUNK_SAMPLES, queue_size: int = 64):
        super().__init__(queue_size)
        self.device = device
        self.chunk_samples = chunk_samples
        self._stream = None
        self._resampler: StreamResampler | None = None
        self.device_rate: int | None = None

    def _describe(self) -> str:
        return "the default microphone" if self.device is None else f"the microphone '{self.device}'"

    def _open(self) -> None:
        try:
            import sounddevice as sd
        except OSError as err:  # the PortAudio library itself is missing
            raise MediaError(f"PortAudio is not installed, so no microphone can be used (install libportaudio2): {err}.") from err
        try:
            info = sd.query_devices(self.device, kind="input")
        except (sd.PortAudioError, ValueError) as err:
            if self.device is None:
                raise MediaError("No microphone is available: PortAudio found no audio input device.") from err
            raise MediaError(f"The microphone '{self.device}' was not found among PortAudio's input devices ({err}).") from err
        if info.get("max_input_channels", 0) < 1:
            raise MediaError(f"{self._describe().capitalize()} ('{info.get('name')}') has no input channels.")
        rate = self._supported_rate(sd, info)
        try:
            self._resampler = None if rate == AUDIO_SAMPLE_RATE else StreamResampler(rate)
            self._stream = sd.InputStream(
                samplerate=rate, channels=1, dtype="float32",
                blocksize=int(round(self.chunk_samples * rate / AUDIO_SAMPLE_RATE)),
                device=self.device, callback=self._callback,
            )
            self._stream.start()
        except (sd.PortAudioError, ValueError) as err:
            self._stream = None
            raise MediaError(f"{self._describe().capitalize()} could not be opened; it may be busy in another program ({err}).") from err
        self.device_rate = rate

    def _supported_rate(self, sd, info) -> int:
        """16 kHz when the device takes it, else its native rate (resampled here to 16 kHz)."""
        native = int(round(info.get("default_samplerate") or 0))
        for rate in dict.fromkeys([AUDIO_SAMPLE_RATE, native, 48_000, 44_100]):
            if rate <= 0:
                continue
            try:
                sd.check_input_settings(device=self.device, channels=1, samplerate=rate, dtype="float32")
                return rate
            except (sd.PortAudioError, ValueError):
                continue
        raise MediaError(f"{self._describe().capitalize()} accepts none of 16, 44.1 or 48 kHz mono float input.")

    def _callback(self, indata, frames, time_info, status) -> None:
        now = time.monotonic()
        if status.input_overflow:
            self.stats.audio_chunks_dropped += 1
        samples = indata[:, 0].astype(np.float32, copy=True)
        if self._resampler is not None:
            samples = self._resampler(samples)
            if len(samples) == 0:
                return
        self.stats.audio_chunks_in += 1
        self.queue.put(AudioChunk(t=now - len(samples) / AUDIO_SAMPLE_RATE, samples=samples))

    def _capture_loop(self) -> None:
        # PortAudio captures on its own thread; this one only watches the stream's health.
        while not self._stop.wait(0.1):
            if self._stream is not None and not self._stream.active:
                raise MediaError(f"{self._describe().capitalize()} stopped delivering audio.")

    def _release(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.stop()
            finally:
                stream.close()


class LiveSource:
    """Webcam + microphone merged into one stream; either may be None (that modality is absent)."""

    def __init__(self, camera: WebcamSource | None, mic: MicrophoneSource | None):
        if camera is None and mic is None:
            raise MediaError("A live source needs a camera or a microphone, and neither was given.")
        self.camera = camera
        self.mic = mic
        self.has_video = camera is not None
        self.has_audio = mic is not None
        self.duration = None
        self.warnings: list[str] = []
        self._notify = threading.Event()
        self._stop = threading.Event()
        # One live SourceStats for both: the camera only counts frames, the microphone only audio,
        # and a consumer holding `live.stats` sees the counters move.
        self.stats = SourceStats()
        for src in self._sources():
            src.queue.notify = self._notify
            for name in ("frames_in", "frames_dropped", "audio_chunks_in", "audio_chunks_dropped"):
                setattr(self.stats, name, getattr(self.stats, name) + getattr(src.stats, name))
            src.stats = self.stats

    @classmethod
    def open(cls, camera_index: int | None = 0, mic_device: int | str | None = None, **kwargs) -> "LiveSource":
        """Open what is there: a missing camera or microphone becomes a warning (kept in `.warnings`)."""
        camera = mic = None
        warnings = []
        if camera_index is not None:
            try:
                camera = WebcamSource(camera_index, **kwargs)
                camera.start()
            except MediaError as err:
                camera = None
                warnings.append(str(err))
        try:
            mic = MicrophoneSource(mic_device)
            mic.start()
        except MediaError as err:
            mic = None
            warnings.append(str(err))
        if camera is None and mic is None:
            raise MediaError("Neither a camera nor a microphone could be opened (" + " ".join(warnings) + ")")
        source = cls(camera, mic)
        source.warnings = warnings
        return source

    def _sources(self) -> list[_ThreadedSource]:
        return [s for s in (self.camera, self.mic) if s is not None]

    def __iter__(self) -> Iterator[Item]:
        sources = self._sources()
        for src in sources:
            src.start()
        while not self._stop.is_set():
            self._notify.clear()
            ready = [item for item in (src.poll() for src in sources) if item is not None]
            for item in sorted(ready, key=lambda i: i.t):
                yield item
            if ready:
                continue
            if all(src.finished() for src in sources):
                for src in sources:
                    src.raise_error()
                return
            self._notify.wait(0.05)

    def close(self) -> None:
        self._stop.set()
        for src in self._sources():
            src.close()

    def __enter__(self) -> "LiveSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


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
        self.queue = DropOldestQueue(queue_size, self._count_drop) if live else None
        self._thread: threading.Thread | None = None

    def _count_drop(self, item) -> None:
        _count_dropped(self.stats, item)

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
        for t, payload in _merge_in_time(video, audio, True, True):
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
