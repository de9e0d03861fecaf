"""Sources: media files through real PyAV, microphone through the real PortAudio, webcam through real OpenCV.

This machine has no camera and no microphone: the device tests check the clear refusal, and the
drop-policy tests use SyntheticSource(live=True) and a stand-in camera object (CameraStandIn).
"""

from __future__ import annotations

import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from moodlens.core.errors import ConfigError, MediaError
from moodlens.realtime.capture.streams import BoundedQueue
from moodlens.realtime.capture.devices import LiveSource, MicrophoneSource, StreamResampler, WebcamSource
from moodlens.realtime.capture.media import MediaFileSource, read_media
from moodlens.realtime.capture.synthetic import SyntheticSource
from moodlens.core.types import AudioChunk, VideoFrame
from helpers.media import write_clip


def write_media(path: Path, seconds: float, video: bool = True, audio: bool = True, fps: int = 10,
                size: tuple[int, int] = (64, 96), faststart: bool = False) -> Path:
    """A small H.264/AAC mp4 (or audio-only m4a / video-only mp4): numbered grey frames with a green
    patch top-left (orientation shows) and a 440 Hz tone padded to whole 1024-sample AAC frames."""
    frames = []
    for i in range(int(seconds * fps) if video else 0):
        image = np.full((*size, 3), (i * 7) % 255, dtype=np.uint8)
        image[: size[0] // 2, : size[1] // 3, 1] = 255
        frames.append(image)
    tone = None
    if audio:
        n = int(seconds * 16000)
        tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(n) / 16000)).astype(np.float32)
        tone = np.pad(tone, (0, -n % 1024))
    return write_clip(path, tone, frames, fps, options={"movflags": "faststart"} if faststart else None)


def split(items):
    frames = [i for i in items if isinstance(i, VideoFrame)]
    chunks = [i for i in items if isinstance(i, AudioChunk)]
    return frames, chunks


# -- media files ---------------------------------------------------------------------------------

def test_media_file_interleaves_video_and_16k_audio_in_time_order(tmp_path):
    path = write_media(tmp_path / "av.mp4", 2.0)
    with MediaFileSource(path, origin=100.0) as source:
        assert source.has_video and source.has_audio
        assert source.duration == pytest.approx(2.0, abs=0.15)
        items = list(source)
    frames, chunks = split(items)
    times = [i.t for i in items]
    assert times == sorted(times)
    assert len(frames) == 20 and source.stats.frames_in == 20
    assert frames[0].image.shape == (64, 96, 3) and frames[0].image.dtype == np.uint8
    assert all(c.samples.dtype == np.float32 for c in chunks)
    assert {len(c.samples) for c in chunks[:-1]} == {512}
    audio = np.concatenate([c.samples for c in chunks])
    assert len(audio) / 16000 == pytest.approx(2.0, abs=0.1)
    assert 0.1 < np.abs(audio).max() <= 1.0
    # audio chunks are contiguous on the clock
    assert chunks[1].t - chunks[0].t == pytest.approx(512 / 16000)
    assert times[0] >= 100.0 and times[-1] < 102.2


def test_video_fps_decimation(tmp_path):
    path = write_media(tmp_path / "av.mp4", 2.0, fps=10, audio=False)
    clip = read_media(path, video_fps=4)
    assert 7 <= len(clip.frames) <= 9
    gaps = np.diff([f.t for f in clip.frames])
    assert gaps.min() >= 0.2 - 1e-6


def test_display_rotation_is_applied(tmp_path):
    """A phone-style file: frames stored landscape with a 90 degree display matrix in the track header."""
    import struct

    plain = write_media(tmp_path / "plain.mp4", 0.5, audio=False, size=(48, 80))
    data = bytearray(plain.read_bytes())
    matrix_at = data.find(b"tkhd") + 4 + 40          # version-0 track header: the matrix follows 40 bytes
    identity = struct.pack(">9i", 65536, 0, 0, 0, 65536, 0, 0, 0, 1 << 30)
    assert bytes(data[matrix_at:matrix_at + 36]) == identity
    data[matrix_at:matrix_at + 36] = struct.pack(">9i", 0, -65536, 0, 65536, 0, 0, 0, 0, 1 << 30)  # ffmpeg's rotate=90
    rotated = tmp_path / "rotated.mp4"
    rotated.write_bytes(bytes(data))
    upright = read_media(plain).frames[0].image
    turned = read_media(rotated).frames[0].image
    assert upright.shape == (48, 80, 3) and turned.shape == (80, 48, 3)
    assert upright[: 24, : 26, 1].mean() > 200               # the patch is top-left when upright
    np.testing.assert_array_equal(turned, np.rot90(upright, 1))  # and bottom-left after the turn
    assert turned[-26:, : 24, 1].mean() > 200


def test_video_only_file_gives_frames_and_no_audio(tmp_path):
    clip = read_media(write_media(tmp_path / "video_only.mp4", 1.0, audio=False))
    assert clip.has_video and not clip.has_audio
    assert len(clip.frames) == 10 and clip.audio.size == 0


def test_audio_only_file_gives_audio_and_no_video(tmp_path):
    clip = read_media(write_media(tmp_path / "audio_only.m4a", 1.5, video=False))
    assert clip.has_audio and not clip.has_video
    assert clip.frames == []
    assert len(clip.audio) / 16000 == pytest.approx(1.5, abs=0.1)


def test_cover_art_is_not_video(tmp_path):
    """Music files carry album art as a one-picture video stream: that is audio only, not a face video."""
    import av

    path = tmp_path / "song.m4a"
    container = av.open(str(path), mode="w", format="mp4")
    audio = container.add_stream("aac", rate=16000, layout="mono")
    cover = container.add_stream("mjpeg", rate=1)
    cover.width, cover.height, cover.pix_fmt = 64, 64, "yuvj420p"
    cover.disposition = av.stream.Disposition.attached_pic
    picture = av.VideoFrame.from_ndarray(np.full((64, 64, 3), 200, np.uint8), format="rgb24")
    picture.pts, picture.time_base = 0, Fraction(1, 1)
    for packet in list(cover.encode(picture)) + list(cover.encode()):
        container.mux(packet)
    tone = (0.2 * np.sin(np.arange(32000) / 5)).astype(np.float32)
    for start in range(0, 32000, 1024):
        frame = av.AudioFrame.from_ndarray(tone[None, start:start + 1024], format="fltp", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = 16000, start, Fraction(1, 16000)
        for packet in audio.encode(frame):
            container.mux(packet)
    for packet in audio.encode():
        container.mux(packet)
    container.close()
    assert len(av.open(str(path)).streams.video) == 1          # the cover is there as a stream
    clip = read_media(path)
    assert clip.has_audio and not clip.has_video and clip.frames == []
    assert len(clip.audio) / 16000 == pytest.approx(2.0, abs=0.1)


def test_garbage_bytes_refused_with_one_sentence(tmp_path):
    bad = tmp_path / "garbage.mp4"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 20_000, dtype=np.uint8).tobytes())
    with pytest.raises(MediaError, match="garbage.mp4") as err:
        MediaFileSource(bad)
    assert "\n" not in str(err.value)


def test_missing_file_refused(tmp_path):
    with pytest.raises(MediaError, match="does not exist"):
        read_media(tmp_path / "nope.mp4")


def test_truncated_mp4_refused(tmp_path):
    # Default mp4 keeps its index (moov) at the end: cutting the file loses it.
    path = write_media(tmp_path / "cut.mp4", 2.0)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(MediaError, match="cut.mp4"):
        read_media(path)


def test_truncated_faststart_mp4_refused(tmp_path):
    # With the index first, the header survives the cut and the media stops early.
    path = write_media(tmp_path / "cut_fast.mp4", 3.0, faststart=True)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(MediaError, match="truncated"):
        read_media(path)


def test_truncated_matroska_refused(tmp_path):
    # Matroska demuxes to the cut without an error: the declared duration tells the file is short.
    path = write_media(tmp_path / "cut.mkv", 3.0)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(MediaError, match=r"cut.mkv' is truncated: its media stops at"):
        read_media(path)


def test_damaged_packets_are_skipped_and_counted_not_fatal(tmp_path):
    path = write_media(tmp_path / "damaged.mp4", 3.0, faststart=True, size=(128, 160))
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 3000] = np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    with MediaFileSource(path, origin=0.0) as source:
        frames, chunks = split(list(source))
    stats = source.stats
    assert stats.frames_dropped + stats.audio_chunks_dropped > 0
    assert 15 <= len(frames) < 30
    # audio lost in the damaged part is replaced by silence: the audio still spans the file,
    # so what follows the damage stays aligned with the video
    assert chunks[-1].t + chunks[-1].duration == pytest.approx(3.0, abs=0.15)
    times = [c.t for c in chunks]
    assert np.allclose(np.diff(times)[:-1], 512 / 16000)


def test_bad_options_refused(tmp_path):
    path = write_media(tmp_path / "av.mp4", 0.5)
    with pytest.raises(ConfigError, match="pace"):
        MediaFileSource(path, pace="turbo")
    with pytest.raises(ConfigError, match="video_fps"):
        MediaFileSource(path, video_fps=0)


def test_realtime_pacing_takes_about_the_duration_and_fast_does_not(tmp_path):
    path = write_media(tmp_path / "av.mp4", 1.5, size=(32, 48))
    start = time.monotonic()
    with MediaFileSource(path, pace="fast") as source:
        n_fast = len(list(source))
    fast = time.monotonic() - start
    start = time.monotonic()
    with MediaFileSource(path, pace="realtime") as source:
        items = list(source)
    paced = time.monotonic() - start
    assert len(items) == n_fast
    assert paced >= 0.8 * 1.5
    assert fast < 0.5 * paced
    # paced items are stamped on the monotonic clock, close to when they were released
    assert abs(items[-1].t - time.monotonic()) < 0.5


def test_close_from_another_thread_stops_a_paced_source_promptly(tmp_path):
    import threading

    path = write_media(tmp_path / "av.mp4", 3.0, size=(32, 48))
    source = MediaFileSource(path, pace="realtime")
    threading.Timer(0.3, source.close).start()
    start = time.monotonic()
    items = list(source)
    assert time.monotonic() - start < 1.0
    assert 0 < len(items) < 60
    assert list(source) == []          # a closed source stays closed


@pytest.mark.shared
def test_real_clips_decode(shared_data):
    expected = {"zh_0001.mp4": (1.3, (804, 1920)), "zh_0008.mp4": (2.7, (804, 1920)), "zh_raw_video.mp4": (2.47, (360, 640))}
    for name, (seconds, shape) in expected.items():
        with MediaFileSource(shared_data / "clips" / name) as probe:
            assert (probe.height, probe.width) == shape
        clip = read_media(shared_data / "clips" / name, video_fps=10, max_size=320)
        assert clip.has_audio and clip.has_video
        assert clip.duration == pytest.approx(seconds, abs=0.1)
        assert len(clip.audio) / 16000 == pytest.approx(seconds, abs=0.15)
        assert abs(len(clip.frames) - seconds * 10) <= 2
        height, width = clip.frames[0].image.shape[:2]
        assert width == 320 and height == pytest.approx(320 * shape[0] / shape[1], abs=2)
        assert np.abs(clip.audio).max() > 0.01   # there is speech in there


# -- live sources --------------------------------------------------------------------------------

def test_microphone_refused_clearly_with_real_portaudio():
    mic = MicrophoneSource()
    with pytest.raises(MediaError, match="microphone") as err:
        mic.start()
    assert "\n" not in str(err.value)
    with pytest.raises(MediaError, match="microphone"):
        MicrophoneSource(device="no such device").start()


def test_microphone_resampler_is_seamless_across_blocks():
    """48 kHz microphone blocks (the common native rate) become 16 kHz without clicks at block edges."""
    import soxr

    tone = (0.5 * np.sin(2 * np.pi * 440 * np.arange(48_000) / 48_000)).astype(np.float32)
    resampler = StreamResampler(48_000)
    blocks = [resampler(tone[i:i + 1536]) for i in range(0, len(tone), 1536)]
    out = np.concatenate(blocks + [resampler(np.zeros(0, np.float32), last=True)])
    assert len(out) == pytest.approx(16_000, abs=2)
    reference = soxr.resample(tone, 48_000, 16_000, quality="HQ")
    np.testing.assert_allclose(out[:len(reference)], reference[:len(out)], atol=1e-3)
    spectrum = np.abs(np.fft.rfft(out[1000:15000]))
    assert np.argmax(spectrum) * 16_000 / 14_000 == pytest.approx(440, abs=3)


def test_webcam_refused_clearly_without_camera():
    with pytest.raises(MediaError, match="No camera could be opened at index 0"):
        WebcamSource(0).start()


def test_live_source_with_nothing_refused():
    with pytest.raises(MediaError, match="Neither a camera nor a microphone"):
        LiveSource.open(camera_index=0)


def test_drop_oldest_queue_counts():
    dropped = []
    queue = BoundedQueue(2, policy="drop_oldest", on_drop=dropped.append)
    for i in range(5):
        queue.put(i)
    assert dropped == [0, 1, 2]
    assert [queue.get(0), queue.get(0), queue.get(0)] == [3, 4, None]


def test_slow_consumer_drops_oldest_with_counters():
    """SyntheticSource(live=True) stands in for a camera + microphone producing at real time."""
    source = SyntheticSource(duration=1.0, fps=30, tone_hz=220, live=True, queue_size=4)
    received = []
    for item in source:
        received.append(item)
        time.sleep(0.03)       # a consumer slower than the ~61 items/s produced
    stats = source.stats
    assert stats.frames_in == 30 and stats.audio_chunks_in == 32
    assert stats.frames_dropped + stats.audio_chunks_dropped > 10
    assert len(received) == stats.frames_in + stats.audio_chunks_in - stats.frames_dropped - stats.audio_chunks_dropped
    # what survives is the freshest, still in order
    assert [i.t for i in received] == sorted(i.t for i in received)


class CameraStandIn:
    """Stand-in for cv2.VideoCapture (no camera on this machine): BGR frames at ~100 fps."""

    def __init__(self, frames: int):
        self.left = frames
        self.released = False

    def isOpened(self):
        return True

    def set(self, *args):
        return True

    def read(self):
        if self.left <= 0:
            time.sleep(0.001)
            return False, None
        self.left -= 1
        time.sleep(0.01)
        image = np.zeros((24, 32, 3), dtype=np.uint8)
        image[..., 0] = 255          # blue in BGR
        return True, image

    def release(self):
        self.released = True


def test_webcam_capture_thread_drops_oldest_for_slow_consumer():
    camera = CameraStandIn(frames=40)
    webcam = WebcamSource(0, queue_size=3, capture=camera)
    webcam._failures_allowed = 5
    got = []
    with LiveSource(webcam, None) as live:
        stats = live.stats          # held once, as a dashboard would: it must keep counting
        assert live.has_video and not live.has_audio
        with pytest.raises(MediaError, match="stopped delivering frames"):
            for frame in live:
                got.append(frame)
                time.sleep(0.05)
    assert stats.frames_in == 40 and webcam.stats is stats
    assert stats.frames_dropped > 15
    assert len(got) + stats.frames_dropped == 40
    assert got[0].image[0, 0].tolist() == [0, 0, 255]     # converted to RGB
    assert camera.released
