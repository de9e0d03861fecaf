"""The one featurizer used live and by `moodlens featurize`: text + audio + faces -> Sample -> batch.

Present flags: text is absent when the transcript has no words, audio when there is no audio,
vision when no processed frame had a face. Absent modalities still get (zero) tensors so that
every batch has the same 7-tensor shape contract (models/batch.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from moodlens.core.errors import ConfigError
from moodlens.realtime.perception.features.audio import AudioFeaturizer
from moodlens.realtime.perception.features.config import FeaturizerConfig
from moodlens.realtime.perception.features.text import TextFeaturizer
from moodlens.core.types import AUDIO_SAMPLE_RATE, FaceFeatures, VideoFrame

MIN_SEQ_LEN = 2  # torch.export's dynamic dims start at 2 (models/batch.py)


@dataclass
class Sample:
    """Unpadded features of one window."""

    text: str
    text_ids: np.ndarray       # (Lt,) int64 including [CLS]/[SEP]
    audio: np.ndarray          # (Ta, Da) float32, Ta = 0 when there is no audio
    vision: np.ndarray         # (Tv, Dv) float32, zeros on frames without a face
    vision_mask: np.ndarray    # (Tv,) bool, True = a face in that frame
    present: np.ndarray        # (3,) bool: text, audio, vision
    start: float = 0.0
    end: float = 0.0
    extras: dict = field(default_factory=dict)   # optional per-window arrays (e.g. eGeMAPS LLDs)


class Featurizer:
    def __init__(self, config: FeaturizerConfig | None = None, text_encoder_path: str | None = None):
        self.config = config or FeaturizerConfig()
        self.text = TextFeaturizer(text_encoder_path, max_len=self.config.text_max_len)
        if self.text.identity != self.config.text_tokenizer_sha:
            raise ConfigError(
                f"The text encoder at {self.text.folder} tokenizes differently (vocabulary {self.text.identity}) "
                f"from the featurizer config ({self.config.text_encoder}, vocabulary "
                f"{self.config.text_tokenizer_sha}); use the encoder the config names.")
        self.audio = AudioFeaturizer(self.config)
        self._vision = None

    @property
    def vision(self):
        """The face tracker, created on first use (text/audio-only callers never load MediaPipe)."""
        if self._vision is None:
            from moodlens.realtime.perception.features.vision import VisionFeaturizer

            self._vision = VisionFeaturizer(self.config)
        return self._vision

    def faces(self, frames: list[VideoFrame]) -> list[FaceFeatures]:
        """Run the face tracker over frames in time order at the configured rate."""
        return [self.vision.process(f) for f in frames if self.vision.wants(f.t)]

    def span_sample(self, text: str, audio: np.ndarray | None, faces: list[FaceFeatures], start: float, end: float,
                    *, audio_start: float | None = None) -> Sample:
        """Features for the span [start, end) of a stream: THE definition shared by live scoring (the
        pipeline), offline featurizing (`moodlens featurize`) and training on recorded sessions, so a
        model sees in training what it is given live.

        `audio` holds the samples from `audio_start` on (seconds on the faces' clock; None = `audio`
        is already the span's audio); `faces` may cover any times, those with start <= t < end count.
        """
        audio = np.zeros(0, np.float32) if audio is None else np.asarray(audio, dtype=np.float32)
        if audio_start is not None:
            audio = span_audio(audio, start, end, audio_start)
        return self.sample(text, audio, span_faces(faces, start, end), start=start, end=end)

    def sample(self, text: str, audio: np.ndarray | None, faces: list[FaceFeatures],
               start: float = 0.0, end: float = 0.0) -> Sample:
        """Features of one window from its own audio and faces (use `span_sample` for a span of a stream)."""
        text = text or ""
        enc = self.text.encode([text])
        ids = enc.ids[0][enc.mask[0]]
        audio_feats = self.audio.extract(np.asarray(audio, dtype=np.float32) if audio is not None
                                         else np.zeros(0, np.float32))
        dv = self.config.vision_dim
        vision = np.zeros((len(faces), dv), dtype=np.float32)
        vision_mask = np.zeros(len(faces), dtype=bool)
        for i, face in enumerate(faces):
            if face.face_present and face.values is not None:
                vision[i] = np.nan_to_num(face.values, nan=0.0, posinf=0.0, neginf=0.0)
                vision_mask[i] = True
        present = np.array([bool(enc.present[0]), len(audio_feats) > 0, bool(vision_mask.any())])
        return Sample(text=text, text_ids=ids.astype(np.int64), audio=audio_feats, vision=vision,
                      vision_mask=vision_mask, present=present, start=start, end=end)

    def collate(self, samples: list[Sample]):
        """Pad samples into a MultimodalBatch (torch tensors, masks, present flags)."""
        import torch

        from moodlens.models.batch import MultimodalBatch

        arrays = pad_samples(samples, self.config)
        return MultimodalBatch(
            text_ids=torch.from_numpy(arrays["text_ids"]),
            text_mask=torch.from_numpy(arrays["text_mask"]),
            audio=torch.from_numpy(arrays["audio"]),
            audio_mask=torch.from_numpy(arrays["audio_mask"]),
            vision=torch.from_numpy(arrays["vision"]),
            vision_mask=torch.from_numpy(arrays["vision_mask"]),
            present=torch.from_numpy(arrays["present"]),
        )

    def close(self) -> None:
        if self._vision is not None:
            self._vision.close()
            self._vision = None


def span_audio(audio: np.ndarray, start: float, end: float, audio_start: float = 0.0) -> np.ndarray:
    """The samples of [start, end) in `audio`, whose first sample is at `audio_start` seconds."""
    lo = int(round((start - audio_start) * AUDIO_SAMPLE_RATE))
    hi = int(round((end - audio_start) * AUDIO_SAMPLE_RATE))
    return audio[max(lo, 0):max(hi, 0)]


def span_faces(faces: list[FaceFeatures], start: float, end: float) -> list[FaceFeatures]:
    """The faces of [start, end) (a face at `end` belongs to the next span, as in the windower)."""
    return [f for f in faces if start <= f.t < end]


def pad_samples(samples: list[Sample], config: FeaturizerConfig, text_len: int | None = None,
                audio_len: int | None = None, vision_len: int | None = None) -> dict[str, np.ndarray]:
    """Numpy padding shared by `collate` and the dataset writer (lengths at least MIN_SEQ_LEN)."""
    n = len(samples)
    lt = text_len or max([len(s.text_ids) for s in samples] + [MIN_SEQ_LEN])
    la = audio_len or max([len(s.audio) for s in samples] + [MIN_SEQ_LEN])
    lv = vision_len or max([len(s.vision) for s in samples] + [MIN_SEQ_LEN])
    out = {
        "text_ids": np.zeros((n, lt), np.int64), "text_mask": np.zeros((n, lt), bool),
        "audio": np.zeros((n, la, config.audio_dim), np.float32), "audio_mask": np.zeros((n, la), bool),
        "vision": np.zeros((n, lv, config.vision_dim), np.float32), "vision_mask": np.zeros((n, lv), bool),
        "present": np.zeros((n, 3), bool),
        "audio_lengths": np.zeros(n, np.int64), "vision_lengths": np.zeros(n, np.int64),
    }
    for i, s in enumerate(samples):
        k = min(len(s.text_ids), lt)
        out["text_ids"][i, :k] = s.text_ids[:k]
        out["text_mask"][i, :k] = True
        k = min(len(s.audio), la)
        out["audio"][i, :k] = s.audio[:k]
        out["audio_mask"][i, :k] = True
        out["audio_lengths"][i] = k
        k = min(len(s.vision), lv)
        out["vision"][i, :k] = s.vision[:k]
        out["vision_mask"][i, :k] = s.vision_mask[:k]
        out["vision_lengths"][i] = k
        out["present"][i] = s.present
    return out
