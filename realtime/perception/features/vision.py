"""Vision featurizer: video frames -> per-frame 64-d face features with MediaPipe FaceLandmarker.

FaceLandmarker (MediaPipe Tasks, VIDEO running mode, so landmarks are tracked between frames
instead of detected from scratch) with blendshapes and the facial transformation matrix on,
up to `vision_num_faces` faces; the largest face (landmark bounding box in pixels) is used.
Faces too small for the detector in wide frames are found in square crops and then tracked in
a crop around them (`vision_crop_search`; see `_crop_search`). Pose translation is then
relative to that crop, rotation, blendshapes and geometry ratios are not affected.

64 dims = 52 blendshape scores + head pose (yaw, pitch, roll in radians from the rotation part
of the transformation matrix; translation x, y, z in decimetres) + 6 ratios of landmark
distances (mouth and eye aspect ratios, brow heights over the inter-ocular distance, face width
over image width). Names are `VISION_FEATURE_NAMES` in config.py. `vision_features: mediapipe_v2` puts
size- and roll-free mouth/brow geometry in the four framing slots; `mediapipe_v3` appends 7 dims, the
log-probabilities of a facial-expression CNN on the face cut out around the landmarks, mean of the crop and
its mirror image (features/face_expression.py), 71 in all.

Frame rate: `wants(t)` says whether a frame at time t is due at `vision_fps`; the caller skips
frames it does not want. VIDEO mode needs strictly increasing millisecond timestamps, which
`process` guarantees (a time that goes backwards starts a new stream).
"""

from __future__ import annotations

import contextlib
import math
import os
import sys

import numpy as np

from moodlens.core.assets import FACE_EXPRESSION, FACE_LANDMARKER, resolve_path
from moodlens.core.errors import AssetError, ConfigError, DataError
from moodlens.realtime.perception.features.config import BLENDSHAPE_NAMES, FeaturizerConfig
from moodlens.core.types import FaceFeatures, VideoFrame
from moodlens.realtime.perception.features.face_expression import face_crop

# MediaPipe face mesh landmark indices (subject's right = image left for a mirrored selfie).
MOUTH_UPPER, MOUTH_LOWER, MOUTH_RIGHT, MOUTH_LEFT = 13, 14, 61, 291
RIGHT_EYE = (33, 133, 159, 145)   # outer corner, inner corner, upper lid, lower lid
LEFT_EYE = (263, 362, 386, 374)
RIGHT_BROW, LEFT_BROW = 105, 334
RIGHT_BROW_INNER, LEFT_BROW_INNER = 55, 285
EYE_OUTER_RIGHT, EYE_OUTER_LEFT = 33, 263
CROP_SEARCH_INTERVAL_S = 0.5   # without a face, search crops at most this often
ROI_FACE_SCALE = 3.0           # a tracked small face's crop is this many face sizes wide


def model_identity(path) -> str:
    """sha256 (first 16 hex) of a model file; cached per path, size and mtime."""
    import hashlib
    import os

    stat = os.stat(path)
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _IDENTITIES:
        with open(path, "rb") as f:
            _IDENTITIES[key] = hashlib.sha256(f.read()).hexdigest()[:16]
    return _IDENTITIES[key]


_IDENTITIES: dict = {}


def head_pose(matrix: np.ndarray) -> np.ndarray:
    """(yaw, pitch, roll) radians and translation (x, y, z) in dm from a 4x4 face transform."""
    m = np.asarray(matrix, dtype=np.float64).reshape(4, 4)
    rotation = m[:3, :3] / np.maximum(np.linalg.norm(m[:3, :3], axis=0, keepdims=True), 1e-9)
    pitch = math.atan2(rotation[2, 1], rotation[2, 2])
    yaw = math.atan2(-rotation[2, 0], math.hypot(rotation[2, 1], rotation[2, 2]))
    roll = math.atan2(rotation[1, 0], rotation[0, 0])
    tx, ty, tz = m[:3, 3] / 10.0  # canonical face model units are cm
    return np.array([yaw, pitch, roll, tx, ty, tz], dtype=np.float32)


def face_geometry(points: np.ndarray, image_width: int) -> np.ndarray:
    """Six size-free ratios from (478, 2) landmark pixel coordinates."""
    def dist(a, b):
        return float(np.linalg.norm(points[a] - points[b]))

    def ratio(num, den):
        return num / den if den > 1e-6 else 0.0

    iod = dist(EYE_OUTER_RIGHT, EYE_OUTER_LEFT)
    mouth = ratio(dist(MOUTH_UPPER, MOUTH_LOWER), dist(MOUTH_RIGHT, MOUTH_LEFT))
    right_eye = ratio(dist(RIGHT_EYE[2], RIGHT_EYE[3]), dist(RIGHT_EYE[0], RIGHT_EYE[1]))
    left_eye = ratio(dist(LEFT_EYE[2], LEFT_EYE[3]), dist(LEFT_EYE[0], LEFT_EYE[1]))
    right_brow = ratio(dist(RIGHT_BROW, RIGHT_EYE[2]), iod)
    left_brow = ratio(dist(LEFT_BROW, LEFT_EYE[2]), iod)
    width = ratio(float(points[:, 0].max() - points[:, 0].min()), float(image_width))
    return np.array([mouth, right_eye, left_eye, right_brow, left_brow, width], dtype=np.float32)


def _derolled(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Landmarks rotated about the eye midpoint so the outer eye corners lie level (no head roll),
    and the inter-ocular distance; image axes (y grows downwards)."""
    right, left = points[EYE_OUTER_RIGHT].astype(np.float64), points[EYE_OUTER_LEFT].astype(np.float64)
    dx, dy = left - right
    iod = math.hypot(dx, dy)
    angle = math.atan2(dy, dx)
    c, s = math.cos(-angle), math.sin(-angle)
    centre = 0.5 * (right + left)
    rotated = (points.astype(np.float64) - centre) @ np.array([[c, s], [-s, c]])
    return rotated, iod


def face_geometry_v2(points: np.ndarray) -> np.ndarray:
    """The four mouth and brow ratios of `vision_features: mediapipe_v2` (config.VISION_FEATURE_NAMES_V2)
    from (478, 2) landmark pixels: corner asymmetry, corner lift, mouth width, inner-brow gap, each over
    the inter-ocular distance after removing head roll, so they do not depend on where the face sits
    in the frame, its size or its roll. Lift: how far the mouth corners sit above the midpoint of the
    inner lips (a smile > 0, a frown < 0); asymmetry: the subject's left corner's lift minus the right's
    (a mirrored face negates it, as FACE_MIRROR_NEGATE expects of that slot)."""
    p, iod = _derolled(points)
    if iod <= 1e-6:
        return np.zeros(4, np.float32)
    centre_y = 0.5 * (p[MOUTH_UPPER, 1] + p[MOUTH_LOWER, 1])
    lift_right, lift_left = centre_y - p[MOUTH_RIGHT, 1], centre_y - p[MOUTH_LEFT, 1]
    width = float(np.linalg.norm(p[MOUTH_LEFT] - p[MOUTH_RIGHT]))
    gap = float(np.linalg.norm(p[LEFT_BROW_INNER] - p[RIGHT_BROW_INNER]))
    return (np.array([lift_left - lift_right, 0.5 * (lift_left + lift_right), width, gap]) / iod).astype(np.float32)


def _load_expression(config: FeaturizerConfig, configured: str | None):
    """The expression CNN of a mediapipe_v3 config: resolved (config path -> MOODLENS_FACE_EXPRESSION_MODEL
    -> package fer), its identity checked against the config's, loaded (needs h5py)."""
    from moodlens.realtime.perception.features.face_expression import ExpressionCNN

    path = resolve_path(FACE_EXPRESSION, configured)
    identity = model_identity(path)
    if identity != config.vision_expression_sha:
        raise ConfigError(
            f"The facial expression model {path} (sha {identity}) is not the one the featurizer config was "
            f"made with (sha {config.vision_expression_sha}); its features would differ.")
    try:
        import h5py  # noqa: F401
    except ImportError:
        raise AssetError("Reading the facial expression model needs h5py: install it with `pip install h5py`.") from None
    try:
        return ExpressionCNN(path)
    except (OSError, ValueError, KeyError) as err:
        raise AssetError(f"The facial expression model {path} could not be loaded ({err}).") from None


V2_SLOTS = (55, 56, 57, 63)   # config.VISION_FEATURE_NAMES_V2: where face_geometry_v2's four values go


class VisionFeaturizer:
    """One tracker per stream; `close()` (or `with`) releases MediaPipe's graph."""

    def __init__(self, config: FeaturizerConfig | None = None, model_path: str | None = None,
                 expression_model: str | None = None):
        self.config = config or FeaturizerConfig()
        self.model_path = resolve_path(FACE_LANDMARKER, model_path)
        identity = model_identity(self.model_path)
        if identity != self.config.vision_model_sha:
            raise ConfigError(
                f"The face landmarker model {self.model_path} (sha {identity}) is not the one the featurizer "
                f"config was made with (sha {self.config.vision_model_sha}); its features would differ.")
        self._expression = None
        if self.config.vision_features == "mediapipe_v3":
            self._expression = _load_expression(self.config, expression_model)
        self.period = 1.0 / self.config.vision_fps
        self._landmarker = None
        self._searcher = None
        self._names_checked = False
        self.frames_processed = 0
        self.faces_found = 0
        self._reset_clock()
        self._landmarker = self._create()

    def _create(self, video: bool = True):
        from mediapipe.tasks.python import BaseOptions, vision

        c = self.config
        options = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(self.model_path)),
            running_mode=vision.RunningMode.VIDEO if video else vision.RunningMode.IMAGE,
            num_faces=c.vision_num_faces,
            min_face_detection_confidence=c.vision_min_detection_confidence,
            min_face_presence_confidence=c.vision_min_detection_confidence,
            min_tracking_confidence=c.vision_min_tracking_confidence,
            output_face_blendshapes=True,
            output_facial_transformation_matrixes=True,
        )
        try:
            with _native_stderr_silenced():
                return vision.FaceLandmarker.create_from_options(options)
        except (RuntimeError, ValueError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise AssetError(f"The face landmarker model {self.model_path} could not be loaded ({first}).") from None

    def _reset_clock(self):
        self._next_due: float | None = None
        self._last_t: float | None = None
        self._origin_t = 0.0
        self._base_ms = 0
        self._last_ms = -1
        self._roi: tuple[int, int, int] | None = None
        self._next_search_t = -math.inf

    # ---- frame-rate control ----------------------------------------------------------------
    def wants(self, t: float) -> bool:
        """True when a frame at time t is due at `vision_fps` (a quarter period early is fine,
        so 30 fps input becomes exactly 15 fps, not every third frame)."""
        if self._next_due is None or (self._last_t is not None and t < self._last_t):
            return True
        return t >= self._next_due - 0.25 * self.period

    def _advance_schedule(self, t: float) -> None:
        if self._next_due is None or t - self._next_due >= self.period:
            self._next_due = t + self.period      # first frame, or after a gap: restart the grid
        else:
            self._next_due += self.period

    def _timestamp_ms(self, t: float) -> int:
        if self._last_t is None:
            self._origin_t = t
        elif t < self._last_t:                    # time went backwards: a new stream
            self._base_ms = self._last_ms + 1000
            self._origin_t = t
            self._next_due = None
            self._roi = None
            self._next_search_t = -math.inf
        ms = self._base_ms + int(round((t - self._origin_t) * 1000.0))
        if ms <= self._last_ms:
            ms = self._last_ms + 1
        self._last_ms = ms
        self._last_t = t
        return ms

    # ---- processing ------------------------------------------------------------------------
    def process(self, frame: VideoFrame) -> FaceFeatures:
        return self.process_image(frame.image, frame.t)

    def process_image(self, image: np.ndarray, t: float) -> FaceFeatures:
        if self._landmarker is None:
            raise DataError("The vision featurizer was used after close().")
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise DataError(f"Video frames must be (H, W, 3) uint8 RGB, got {image.dtype} {image.shape} at t={t:.3f}s.")
        timestamp = self._timestamp_ms(t)
        self._advance_schedule(t)
        self.frames_processed += 1
        height, width = image.shape[:2]
        found = None
        if self._roi is not None:                       # a small face found earlier: track it in its crop
            found = self._run(self._landmarker, image, self._roi, timestamp)
            if found is not None:
                found = (found[0], found[1], True)      # keep the crop following the face
            else:
                self._roi = None
                found = self._run(self._searcher_model(), image, None, None)
        else:
            found = self._run(self._landmarker, image, None, timestamp)
        if found is None and self.config.vision_crop_search and t >= self._next_search_t:
            found = self._crop_search(image)
            if found is None:
                self._next_search_t = t + CROP_SEARCH_INTERVAL_S
        if found is None:
            return FaceFeatures(t=t, values=None, face_present=False)
        values, points, via_crop = found
        if via_crop:
            self._roi = self._roi_around(points, width, height)
        if self._expression is not None:                # mediapipe_v3: + the expression CNN on the face
            values = np.concatenate([values, self._expression.features(face_crop(image, points))])
        self.faces_found += 1
        return FaceFeatures(t=t, values=values, face_present=True)

    # A face narrower than ~10% of a wide frame is below the face detector's reach (it sees the
    # whole frame at 128 px), e.g. CH-SIMS's 1920x804 clips. When the frame finds no face, square
    # crops along the long side are searched (at most every CROP_SEARCH_INTERVAL_S without a
    # face); a face found there is then tracked inside a square crop around it.
    def _crop_search(self, image: np.ndarray):
        height, width = image.shape[:2]
        side = min(height, width)
        span = max(height, width) - side
        if span < side // 4:
            return None                                 # nearly square: the full frame was the search
        count = int(math.ceil(span / (side / 2))) + 1
        for offset in np.linspace(0, span, count).round().astype(int):
            box = (int(offset), 0, side) if width >= height else (0, int(offset), side)
            found = self._run(self._searcher_model(), image, box, None)
            if found is not None:
                return found[0], found[1], True
        return None

    @staticmethod
    def _roi_around(points: np.ndarray, width: int, height: int) -> tuple[int, int, int]:
        size = float(max(np.ptp(points[:, 0]), np.ptp(points[:, 1])))
        side = int(min(max(ROI_FACE_SCALE * size, 128), width, height))
        cx, cy = points[:, 0].mean(), points[:, 1].mean()
        x0 = int(np.clip(round(cx - side / 2), 0, width - side))
        y0 = int(np.clip(round(cy - side / 2), 0, height - side))
        return x0, y0, side

    def _searcher_model(self):
        if self._searcher is None:
            self._searcher = self._create(video=False)
        return self._searcher

    def _run(self, model, image: np.ndarray, box, timestamp):
        """Landmarker on the image or on a square crop `box` = (x0, y0, side) of it; returns
        (values, landmark pixels in the full image, False) or None."""
        import mediapipe as mp

        if box is None:
            x0, y0, part = 0, 0, image
        else:
            x0, y0, side = box
            part = image[y0:y0 + side, x0:x0 + side]
        mp_image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(part))
        result = model.detect_for_video(mp_image, timestamp) if timestamp is not None else model.detect(mp_image)
        return self._features(result, part.shape[1], part.shape[0], x0, y0, image.shape[1])

    def _features(self, result, width: int, height: int, x0: int = 0, y0: int = 0,
                  full_width: int | None = None):
        if not result.face_landmarks:
            return None
        scale = np.array([width, height], dtype=np.float32)
        offset = np.array([x0, y0], dtype=np.float32)
        best, best_area, best_points = -1, -1.0, None
        for i, landmarks in enumerate(result.face_landmarks):
            points = np.array([(p.x, p.y) for p in landmarks], dtype=np.float32) * scale + offset
            area = float(np.ptp(points[:, 0]) * np.ptp(points[:, 1]))
            if area > best_area:
                best, best_area, best_points = i, area, points
        if best >= len(result.face_blendshapes) or best >= len(result.facial_transformation_matrixes):
            return None
        categories = result.face_blendshapes[best]
        if not self._names_checked:
            names = tuple(c.category_name for c in categories)
            if names != BLENDSHAPE_NAMES:
                raise AssetError(f"The face landmarker model {self.model_path} gives blendshapes "
                                 f"{len(names)} names that differ from the 52 this featurizer expects.")
            self._names_checked = True
        blendshapes = np.array([c.score for c in categories], dtype=np.float32)
        pose = head_pose(result.facial_transformation_matrixes[best])
        geometry = face_geometry(best_points, full_width or width)
        values = np.concatenate([blendshapes, pose, geometry])
        if self.config.vision_features in ("mediapipe_v2", "mediapipe_v3"):
            values[list(V2_SLOTS)] = face_geometry_v2(best_points)
        return np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32), best_points, False

    def reset(self) -> None:
        """Start a new stream: forget the tracked face and the frame schedule."""
        self.close()
        self._reset_clock()
        self._names_checked = False
        self.frames_processed = 0
        self.faces_found = 0
        self._landmarker = self._create()

    def close(self) -> None:
        if self._landmarker is not None:
            self._landmarker.close()
            self._landmarker = None
        if self._searcher is not None:
            self._searcher.close()
            self._searcher = None

    def __enter__(self) -> "VisionFeaturizer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


@contextlib.contextmanager
def _native_stderr_silenced():
    """MediaPipe's C++ graph start-up writes glog/TFLite chatter straight to fd 2 (no Python logging
    and no environment variable turns it off), painting over the dashboard. Failures still surface
    as the Python exception it raises."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real fd 2 (e.g. captured by a test harness)
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
