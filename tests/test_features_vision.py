"""Face tracker (real MediaPipe FaceLandmarker) on real face clips and on a face-free video."""

from __future__ import annotations

import math

import av
import numpy as np
import pytest

from moodlens.core.errors import DataError
from moodlens.realtime.perception.features.config import VISION_FEATURE_NAMES, FeaturizerConfig
from moodlens.realtime.perception.features.vision import VisionFeaturizer, head_pose
from moodlens.core.types import VideoFrame

pytestmark = pytest.mark.e2e

YAW, PITCH, ROLL, TZ = (VISION_FEATURE_NAMES.index(n) for n in
                        ("head_yaw_rad", "head_pitch_rad", "head_roll_rad", "head_tz_dm"))


def decode(path, limit=None) -> list[VideoFrame]:
    frames = []
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if limit is not None and i >= limit:
                break
            frames.append(VideoFrame(t=float(frame.time), image=frame.to_ndarray(format="rgb24"), index=i))
    return frames


def make_face_free_video(path, seconds=1.0, fps=15, size=(320, 240)) -> None:
    """Noise and gradient frames (no face anywhere) encoded to H.264 with PyAV."""
    rng = np.random.default_rng(0)
    w, h = size
    gradient = np.broadcast_to(np.linspace(0, 255, w, dtype=np.uint8)[None, :, None], (h, w, 3))
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(int(seconds * fps)):
            image = gradient.copy() if i % 2 else rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


@pytest.fixture(scope="module")
def tracker():
    with VisionFeaturizer(FeaturizerConfig(vision_fps=15.0)) as featurizer:
        yield featurizer


@pytest.mark.shared
@pytest.mark.parametrize("clip", ["zh_raw_video.mp4", "zh_0001.mp4", "zh_0008.mp4"])
def test_real_face_clip(shared_data, tracker, clip):
    frames = decode(shared_data / "clips" / clip)
    tracker.reset()
    faces = [tracker.process(f) for f in frames if tracker.wants(f.t)]
    duration = frames[-1].t - frames[0].t
    # frame-rate control: about 15 processed frames per second of a 25-30 fps clip
    assert abs(len(faces) - duration * 15) <= 2
    present = np.array([f.face_present for f in faces])
    assert present.mean() >= 0.8
    values = np.stack([f.values for f in faces if f.face_present])
    assert values.shape[1] == 64 and values.dtype == np.float32 and np.isfinite(values).all()
    assert ((values[:, :52] >= 0) & (values[:, :52] <= 1)).all()  # blendshape scores
    # plausible pose for a talking head facing the camera
    assert np.abs(values[:, [YAW, PITCH, ROLL]]).max() < math.radians(60)
    assert (-15 < values[:, TZ]).all() and (values[:, TZ] < -1).all()  # 10 cm .. 1.5 m in front
    geometry = values[:, 58:]
    assert (geometry >= 0).all() and (geometry[:, 1:3] < 1).all() and (geometry[:, 5] > 0.03).all()


def test_face_free_video_has_no_face(tmp_path, tracker):
    path = tmp_path / "noise.mp4"
    make_face_free_video(path)
    frames = decode(path)
    assert len(frames) == 15
    tracker.reset()
    faces = [tracker.process(f) for f in frames]
    assert all(not f.face_present and f.values is None for f in faces)
    assert tracker.frames_processed == 15 and tracker.faces_found == 0


def test_wants_keeps_the_configured_rate_and_timestamps_stay_increasing(tracker):
    tracker.reset()
    blank = np.zeros((64, 64, 3), np.uint8)
    times = [i / 30 for i in range(60)]                       # 2 s at 30 fps
    taken = [t for t in times if tracker.wants(t) and tracker.process_image(blank, t) is not None]
    assert len(taken) == 30
    # a stream that restarts at t=0 (next clip) is accepted: MediaPipe needs increasing timestamps
    tracker.process_image(blank, 0.0)
    tracker.process_image(blank, 0.0)
    assert tracker.frames_processed == 32


def test_bad_frames_are_refused(tracker):
    with pytest.raises(DataError, match="uint8 RGB"):
        tracker.process_image(np.zeros((10, 10), np.float32), 99.0)


def test_a_different_face_model_is_refused():
    from moodlens.core.errors import ConfigError

    with pytest.raises(ConfigError, match="face landmarker model"):
        VisionFeaturizer(FeaturizerConfig(vision_model_sha="0123456789abcdef"))


def test_head_pose_of_known_rotation():
    yaw = math.radians(20)
    rotation = np.array([[math.cos(yaw), 0, math.sin(yaw)], [0, 1, 0], [-math.sin(yaw), 0, math.cos(yaw)]])
    matrix = np.eye(4)
    matrix[:3, :3] = rotation
    matrix[:3, 3] = [1.0, -2.0, -40.0]
    pose = head_pose(matrix)
    assert pose[0] == pytest.approx(yaw, abs=1e-5) and abs(pose[1]) < 1e-6 and abs(pose[2]) < 1e-6
    assert pose[3:] == pytest.approx([0.1, -0.2, -4.0])


@pytest.mark.shared
def test_small_face_in_a_wide_frame_needs_the_crop_search(shared_data):
    """zh_0008 (1920x804, face ~9% of the width): the full-frame detector misses it, the crop search finds it."""
    frames = decode(shared_data / "clips" / "zh_0008.mp4", limit=12)
    found = {}
    for search in (False, True):
        with VisionFeaturizer(FeaturizerConfig(vision_fps=30.0, vision_crop_search=search)) as tracker:
            found[search] = sum(tracker.process(f).face_present for f in frames)
    assert found[True] >= 10 and found[False] <= 2
