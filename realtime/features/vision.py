"""Vision featurizer: video frames -> per-frame 64-d face features with MediaPipe FaceLandmarker.

FaceLandmarker (MediaPipe Tasks, VIDEO running mode, so landmarks are tracked between frames
instead of detected from scratch) with blendshapes and the facial transformation matrix on,
up to `vision_num_faces` faces; the largest face (landmark bounding box in pixels) is used.

64 dims = 52 blendshape scores + head pose (yaw, pitch, roll in radians from the rotation part
of the transformation matrix; translation x, y, z in decimetres) + 6 ratios of landmark
distances (mouth and eye aspect ratios, brow heights over the inter-ocular distance, face width
over image width). Names are `VISION_FEATURE_NAMES` in config.py.

Frame rate: `wants(t)` says whether a frame at time t is due at `vision_fps`; the caller skips
frames it does not want. VIDEO mode needs strictly increasing millisecond timestamps, which
`process` guarantees (a time that goes backwards starts a new stream).
"""

from __future__ import annotations

import math

import numpy as np

from moodlens.realtime.assets import FACE_LANDMARKER, resolve_path
from moodlens.realtime.errors import AssetError, DataError
from moodlens.realtime.features.config import BLENDSHAPE_NAMES, FeaturizerConfig
from moodlens.realtime.types import FaceFeatures, VideoFrame

# MediaPipe face mesh landmark indices (subject's right = image left for a mirrored selfie).
MOUTH_UPPER, MOUTH_LOWER, MOUTH_RIGHT, MOUTH_LEFT = 13, 14, 61, 291
RIGHT_EYE = (33, 133, 159, 145)   # outer corner, inner corner, upper lid, lower lid
LEFT_EYE = (263, 362, 386, 374)
RIGHT_BROW, LEFT_BROW = 105, 334
EYE_OUTER_RIGHT, EYE_OUTER_LEFT = 33, 263


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


class VisionFeaturizer:
    """One tracker per stream; `close()` (or `with`) releases MediaPipe's graph."""

    def __init__(self, config: FeaturizerConfig | None = None, model_path: str | None = None):
        self.config = config or FeaturizerConfig()
        self.model_path = resolve_path(FACE_LANDMARKER, model_path)
        self.period = 1.0 / self.config.vision_fps
        self._landmarker = None
        self._names_checked = False
        self.frames_processed = 0
        self.faces_found = 0
        self._reset_clock()
        self._landmarker = self._create()

    def _create(self):
        from mediapipe.tasks.python import BaseOptions, vision

        c = self.config
        options = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(self.model_path)),
            running_mode=vision.RunningMode.VIDEO,
            num_faces=c.vision_num_faces,
            min_face_detection_confidence=c.vision_min_detection_confidence,
            min_face_presence_confidence=c.vision_min_detection_confidence,
            min_tracking_confidence=c.vision_min_tracking_confidence,
            output_face_blendshapes=True,
            output_facial_transformation_matrixes=True,
        )
        try:
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
        import mediapipe as mp

        if self._landmarker is None:
            raise DataError("The vision featurizer was used after close().")
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise DataError(f"Video frames must be (H, W, 3) uint8 RGB, got {image.dtype} {image.shape} at t={t:.3f}s.")
        timestamp = self._timestamp_ms(t)
        self._advance_schedule(t)
        result = self._landmarker.detect_for_video(
            mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image)), timestamp)
        self.frames_processed += 1
        values = self._features(result, image.shape[1], image.shape[0])
        if values is None:
            return FaceFeatures(t=t, values=None, face_present=False)
        self.faces_found += 1
        return FaceFeatures(t=t, values=values, face_present=True)

    def _features(self, result, width: int, height: int) -> np.ndarray | None:
        if not result.face_landmarks:
            return None
        scale = np.array([width, height], dtype=np.float32)
        best, best_area, best_points = -1, -1.0, None
        for i, landmarks in enumerate(result.face_landmarks):
            points = np.array([(p.x, p.y) for p in landmarks], dtype=np.float32) * scale
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
        geometry = face_geometry(best_points, width)
        values = np.concatenate([blendshapes, pose, geometry])
        return np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)

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

    def __enter__(self) -> "VisionFeaturizer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
