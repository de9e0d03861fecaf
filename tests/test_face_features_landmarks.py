"""scripts/probe_face_landmarks.py: the similarity-normalised landmarks and their mirror map, the inputs
the landmark study (issue 10 item 5) probed beside the v2 face features."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))   # the probe imports its sibling scripts by name
import probe_face_landmarks as script  # noqa: E402


def moved(points, angle_deg=0.0, scale=1.0, shift=(0.0, 0.0)):
    a = math.radians(angle_deg)
    rotation = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return scale * points @ rotation.T + np.asarray(shift)


def symmetric_face(rng) -> np.ndarray:
    """(478, 2) normalised points whose SUBSET is mirror-symmetric under MIRROR_PAIRS (x -> -x), the outer
    eye corners at (-0.5, 0) and (0.5, 0); other landmarks random."""
    p = rng.normal(size=(478, 2))
    for a, b in script.MIRROR_PAIRS:
        p[b] = p[a] * (-1.0, 1.0)
        if a == b:
            p[a, 0] = 0.0
    p[script.EYE_OUTER_RIGHT], p[script.EYE_OUTER_LEFT] = (-0.5, 0.0), (0.5, 0.0)
    return p


def mirrored(lm: np.ndarray) -> np.ndarray:
    """The face mirrored: every SUBSET landmark takes its partner's place, x negated."""
    out = lm.copy()
    for a, b in script.MIRROR_PAIRS:
        out[..., a, :], out[..., b, :] = lm[..., b, :] * (-1.0, 1.0), lm[..., a, :] * (-1.0, 1.0)
    return out


def test_normalised_landmarks_do_not_depend_on_position_size_or_roll():
    rng = np.random.default_rng(0)
    face = rng.normal(size=(478, 2)) * 40 + 200
    base = script.normalised(face)
    assert base[script.EYE_OUTER_RIGHT] == pytest.approx([-0.5, 0.0], abs=1e-6)
    assert base[script.EYE_OUTER_LEFT] == pytest.approx([0.5, 0.0], abs=1e-6)
    for angle, scale, shift in ((25.0, 1.0, (0, 0)), (-40.0, 0.3, (15, -80)), (170.0, 2.5, (-300, 40))):
        assert np.abs(script.normalised(moved(face, angle, scale, shift)) - base).max() < 1e-4


def test_coincident_eye_corners_give_zeros_not_nan():
    face = np.ones((478, 2)) * 5.0
    assert (script.normalised(face) == 0).all()


def test_mirror_pairs_are_an_involution_closing_both_subsets():
    partner = script.partner_positions(script.SUBSET)
    assert (partner[partner] == np.arange(len(script.SUBSET))).all()
    assert script.SUBSET[partner[script.SUBSET.index(61)]] == 291        # mouth corners
    assert script.SUBSET[partner[script.SUBSET.index(33)]] == 263        # outer eye corners
    assert {a for a, b in script.MIRROR_PAIRS if a == b} == {0, 1, 13, 14, 17, 152}   # midline
    script.partner_positions(script.KEY)
    with pytest.raises(ValueError, match="not closed"):
        script.partner_positions((61, 13))                               # 291 missing


def test_mirror_pairs_are_read_back_from_a_symmetric_shape_and_asymmetry_is_refused():
    rng = np.random.default_rng(1)
    face = symmetric_face(rng)
    assert script.mirror_pairs(face) == sorted(script.MIRROR_PAIRS)
    collapsed = face.copy()
    collapsed[list(script.SUBSET)] = (0.0, 0.0)
    collapsed[61] = (0.4, 0.0)          # one point off the midline, the rest on one spot: no pairing
    with pytest.raises(ValueError, match="do not pair up"):
        script.mirror_pairs(collapsed)


@pytest.mark.parametrize("name", ["lm", "dist", "v2+lm", "v2+dist"])
def test_mirror_of_the_features_is_the_features_of_the_mirrored_face(name):
    """The probe's test-time mirror average relies on this: mirror(features(face)) == features(mirror(face))."""
    rng = np.random.default_rng(2)
    lm = rng.normal(size=(5, 478, 2)).astype(np.float32)
    x = rng.normal(size=(5, 64)).astype(np.float32)
    inputs = script.Inputs({"x": x, "lm": lm})
    flipped = script.Inputs({"x": script.v2_mirror(x), "lm": mirrored(lm).astype(np.float32)})
    features, mirror = inputs.build(name)
    assert np.abs(mirror(features) - flipped.build(name)[0]).max() < 1e-5
    assert np.abs(mirror(mirror(features)) - features).max() < 1e-5


def test_a_symmetric_face_is_its_own_mirror():
    face = symmetric_face(np.random.default_rng(3))[None].astype(np.float32)
    inputs = script.Inputs({"x": np.zeros((1, 64), np.float32), "lm": face})
    for name in ("lm", "dist"):
        features, mirror = inputs.build(name)
        assert np.abs(mirror(features) - features).max() < 1e-5
