"""Live devices: webcam (OpenCV) and microphone (PortAudio) on capture threads, merged by `LiveSource`.

Live sources capture on their own thread into a bounded queue. When the consumer falls behind,
the OLDEST item is dropped (fresh frames matter more than old ones in a live view) and counted in
`SourceStats`, so nothing piles up silently.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Iterator

import numpy as np
from moodlens.realtime.capture.streams import (
    CHUNK_SAMPLES,
    BoundedQueue,
    Item,
    count_dropped,
)
from moodlens.core.errors import MediaError
from moodlens.core.types import AUDIO_SAMPLE_RATE, AudioChunk, SourceStats, VideoFrame


class _ThreadedSource:
    """Base of live sources: a capture thread fills a drop-oldest BoundedQueue; iteration drains it."""

    has_video = False
    has_audio = False
    duration = None            # live: unknown

    def __init__(self, queue_size: int):
        self.stats = SourceStats()
        self.queue = BoundedQueue(queue_size, policy="drop_oldest", on_drop=self._count_drop)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: MediaError | None = None
        self._lock = threading.Lock()

    def _count_drop(self, item) -> None:
        count_dropped(self.stats, item)

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

