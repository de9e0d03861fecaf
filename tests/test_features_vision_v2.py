"""vision_features "mediapipe_v2": the framing dims (x/y/z translation, face width over image width)
replaced by mouth and brow geometry that does not depend on where the face sits in the frame."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from moodlens.core.errors import ConfigError
from moodlens.realtime.perception.features.config import (
    VISION_FEATURE_NAMES, VISION_FEATURE_NAMES_V2, FeaturizerConfig)
from moodlens.realtime.perception.features.vision import (
    EYE_OUTER_LEFT, EYE_OUTER_RIGHT, LEFT_BROW_INNER, MOUTH_LEFT, MOUTH_LOWER, MOUTH_RIGHT, MOUTH_UPPER,
    RIGHT_BROW_INNER, V2_SLOTS, face_geometry_v2)

FACES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "faces"


def synthetic_face(lift_left=0.1, lift_right=0.1) -> np.ndarray:
    """(478, 2) image-axis points (y down) of a level face, inter-ocular distance 1: only the landmarks
    face_geometry_v2 reads are placed; the mouth corners sit `lift_*` above the inner-lip midpoint."""
    p = np.zeros((478, 2))
    p[EYE_OUTER_RIGHT], p[EYE_OUTER_LEFT] = (-0.5, 0.0), (0.5, 0.0)      # subject's right = image left
    p[RIGHT_BROW_INNER], p[LEFT_BROW_INNER] = (-0.15, -0.3), (0.15, -0.3)
    p[MOUTH_UPPER], p[MOUTH_LOWER] = (0.0, 0.95), (0.0, 1.05)
    p[MOUTH_RIGHT], p[MOUTH_LEFT] = (-0.3, 1.0 - lift_right), (0.3, 1.0 - lift_left)
    return p


def moved(points, angle_deg=0.0, scale=1.0, shift=(0.0, 0.0)):
    a = math.radians(angle_deg)
    rotation = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return scale * points @ rotation.T + np.asarray(shift)


def test_geometry_of_a_known_face():
    asym, lift, width, gap = face_geometry_v2(synthetic_face(lift_left=0.2, lift_right=0.1))
    assert asym == pytest.approx(0.1, abs=1e-6)          # the subject's left corner higher
    assert lift == pytest.approx(0.15, abs=1e-6)         # corners above the lips' midpoint: a smile
    assert width == pytest.approx(math.hypot(0.6, 0.1), abs=1e-6)
    assert gap == pytest.approx(0.3, abs=1e-6)
    assert face_geometry_v2(synthetic_face(-0.1, -0.1))[1] == pytest.approx(-0.1, abs=1e-6)   # a frown


def test_geometry_ignores_position_size_and_roll():
    """What the v1 framing dims encode (where and how large the face is) must not move these."""
    face = synthetic_face(lift_left=0.12, lift_right=0.05)
    reference = face_geometry_v2(face)
    for angle, scale, shift in ((25.0, 1.0, (0, 0)), (0.0, 140.0, (600, 90)), (-35.0, 37.0, (12, 400))):
        np.testing.assert_allclose(face_geometry_v2(moved(face, angle, scale, shift)), reference, atol=1e-5)


def test_a_mirrored_face_negates_the_asymmetry_slot_only():
    """Mirroring swaps which corner is the subject's left: slot 55 (FACE_MIRROR_NEGATE) changes sign,
    the other three stay."""
    a = face_geometry_v2(synthetic_face(lift_left=0.2, lift_right=0.05))
    b = face_geometry_v2(synthetic_face(lift_left=0.05, lift_right=0.2))
    assert b[0] == pytest.approx(-a[0], abs=1e-6)
    np.testing.assert_allclose(b[1:], a[1:], atol=1e-6)


def test_degenerate_landmarks_give_zeros():
    assert not face_geometry_v2(np.zeros((478, 2))).any()


def test_v2_names_keep_the_slots_the_mirror_map_reads():
    from moodlens.models.hcrl_mfd import FACE_MIRROR_NEGATE, FACE_MIRROR_PAIRS

    assert len(VISION_FEATURE_NAMES_V2) == len(VISION_FEATURE_NAMES) == 64
    changed = [i for i, (a, b) in enumerate(zip(VISION_FEATURE_NAMES, VISION_FEATURE_NAMES_V2)) if a != b]
    assert changed == list(V2_SLOTS) == [55, 56, 57, 63]
    assert [VISION_FEATURE_NAMES_V2[i] for i in FACE_MIRROR_NEGATE] == [
        "head_yaw_rad", "head_roll_rad", "mouth_corner_asymmetry_iod"]
    assert not any(i in V2_SLOTS for pair in FACE_MIRROR_PAIRS for i in pair)


def test_config_kind():
    config = FeaturizerConfig().for_vision_features("mediapipe_v2")
    assert config.vision_feature_names == list(VISION_FEATURE_NAMES_V2) and config.vision_dim == 64
    old = FeaturizerConfig().to_dict()
    del old["vision_features"]                       # a dataset or checkpoint written before the kind existed
    assert FeaturizerConfig.from_dict(old).vision_features == "mediapipe"
    with pytest.raises(ConfigError, match="does not match the live featurizer: vision_features"):
        config.check_compatible(FeaturizerConfig().to_dict(), where="a v1 checkpoint")
    with pytest.raises(ConfigError, match="vision_features must be one of"):
        FeaturizerConfig(vision_features="openface")
    with pytest.raises(ConfigError, match="Unknown vision feature kind 'x'"):
        FeaturizerConfig().for_vision_features("x")


@pytest.mark.skipif(not FACES.is_dir(), reason="../shared/data/faces absent")
def test_real_face_in_a_larger_frame_keeps_v2_but_not_v1_framing():
    """A real still and the same face pasted off-centre into a frame 2.5x as wide (as a webcam frames
    a face): v2 equals v1 outside its four slots, and its four values move far less than v1's."""
    from PIL import Image

    from moodlens.realtime.perception.features.vision import VisionFeaturizer

    image = np.asarray(Image.open(FACES / "muxspace" / "Goran_Persson_0001.jpg").convert("RGB"))
    h, w = image.shape[:2]
    wide = np.full((int(2.5 * h), int(2.5 * w), 3), 110, np.uint8)
    wide[40:40 + h, int(1.3 * w):int(1.3 * w) + w] = image

    def features(kind, frame):
        with VisionFeaturizer(FeaturizerConfig().for_vision_features(kind)) as f:
            return [f.process_image(frame, k / 15) for k in range(3)][-1].values

    v1, v2 = features("mediapipe", image), features("mediapipe_v2", image)
    v1_wide, v2_wide = features("mediapipe", wide), features("mediapipe_v2", wide)
    assert all(v is not None for v in (v1, v2, v1_wide, v2_wide))
    others = [i for i in range(64) if i not in V2_SLOTS]
    np.testing.assert_array_equal(v1[others], v2[others])
    slots = list(V2_SLOTS)
    v1_shift = np.abs(v1_wide[slots] - v1[slots]) / (np.abs(v1[slots]) + 1e-3)
    v2_shift = np.abs(v2_wide[slots] - v2[slots]) / (np.abs(v2[slots]) + 1e-3)
    assert v1_shift.max() > 0.5                    # tz / width / translation follow the framing
    assert np.median(v2_shift) < 0.1 and np.median(v2_shift) < 0.2 * np.median(v1_shift)


def test_featurize_command_writes_v2_still_features(tmp_path):
    """`moodlens featurize --vision-features mediapipe_v2` on a real still (the bundled demo clip's first
    frame): the dataset's config names the kind, the four slots hold the v2 geometry, the rest is v1."""
    import pickle

    from helpers.media import demo_still_dataset
    from moodlens.realtime.cli import main
    from moodlens.realtime.perception.features.vision import VisionFeaturizer

    frame, raw, labels = demo_still_dataset(tmp_path)
    outs = {}
    for kind in ("mediapipe", "mediapipe_v2"):
        out = tmp_path / f"{kind}.pkl"
        assert main(["featurize", "--raw", str(raw), "--labels", str(labels), "--out", str(out),
                     "--workers", "1", "--vision-features", kind]) == 0
        outs[kind] = pickle.loads(out.read_bytes())
    v1, v2 = outs["mediapipe"], outs["mediapipe_v2"]
    assert v1["meta"]["vision_features"] == "mediapipe" and v2["meta"]["vision_features"] == "mediapipe_v2"
    assert v2["meta"]["vision_feature_names"] == list(VISION_FEATURE_NAMES_V2)
    a, b = v1["train"]["vision"][0, 0], v2["train"]["vision"][0, 0]
    others = [i for i in range(64) if i not in V2_SLOTS]
    np.testing.assert_array_equal(a[others], b[others])
    with VisionFeaturizer(FeaturizerConfig().for_vision_features("mediapipe_v2")) as vision:
        live = [vision.process_image(frame, k / 15) for k in range(3)][-1].values   # the live path, same frame
    np.testing.assert_allclose(b, live, atol=1e-6)
    assert not np.allclose(a[list(V2_SLOTS)], b[list(V2_SLOTS)])
