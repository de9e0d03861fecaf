"""Media files decoded with PyAV into timestamped `VideoFrame`/`AudioChunk` items (paced or fast).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from moodlens.realtime.capture.streams import (
    CHUNK_SAMPLES,
    Item,
    _AudioChunker,
    _check_pace,
    FrameRate,
    merge_in_time,
    _Pacer,
)
from moodlens.core.errors import ConfigError, MediaError
from moodlens.core.types import AUDIO_SAMPLE_RATE, AudioChunk, SourceStats, VideoFrame

TRUNCATION_TOLERANCE_S = 0.5
# Containers whose header states the true duration; elsewhere (mp3, ADTS, MPEG-TS) FFmpeg may
# estimate it from the bit rate, and a short decode proves nothing.
EXACT_DURATION_FORMATS = {"mov", "mp4", "matroska", "webm", "avi", "flac"}
# Undecodable packets in a row after which a stream counts as broken rather than damaged.
MAX_BAD_PACKETS_IN_ROW = 25
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


def _is_still_image(container) -> bool:
    """FFmpeg's image demuxers (image2, png_pipe, jpeg_pipe, webp_pipe...) hold one picture."""
    name = container.format.name or ""
    return name == "image2" or name.endswith("_pipe")


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
        FrameRate(video_fps)  # validates
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
        if not self.has_audio and _is_still_image(self._container):
            self._container.close()
            raise MediaError(f"'{self.path}' is a still image, not audio or video: moodlens scores timed utterance "
                             f"windows; make a clip of it first (ffmpeg -loop 1 -i {self.path.name} -t 5 clip.mp4).")
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
        decimator = FrameRate(self.video_fps)
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
                for t, (kind, payload, index) in merge_in_time(video_q, audio_q, video_stream is None, audio_stream is None):
                    yield t, kind, payload, index
            if resampler is not None:
                on_audio(resampler.resample(None))
                for ct, chunk in chunker.finish():
                    audio_q.append((ct, ("a", chunk, 0)))
                    end_t = max(end_t, ct + len(chunk) / AUDIO_SAMPLE_RATE)
        except av.FFmpegError as err:
            raise MediaError(f"Decoding '{self.path}' failed near {end_t:.2f} s: the file is corrupt or truncated ({err.strerror or err}).") from err
        for t, (kind, payload, index) in merge_in_time(video_q, audio_q, True, True):
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


