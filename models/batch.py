"""The one input/output contract shared by every model, the trainer, the engine and exporters."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import NamedTuple

import torch

from moodlens.core.schema import MODALITIES  # noqa: F401  (re-exported for the models)

# Upper bounds used for torch.export dynamic shapes (positional tables are sized to match).
MAX_TEXT_LEN = 512
MAX_SEQ_LEN = 4096


class SentimentOutput(NamedTuple):
    """(B,) sentiment scores on the label scale (MOSI: -3..+3). Unimodal scores are only
    meaningful where that modality is present (`MultimodalBatch.present`)."""

    fused: torch.Tensor
    text: torch.Tensor
    audio: torch.Tensor
    vision: torch.Tensor


@dataclass(frozen=True)
class MultimodalBatch:
    text_ids: torch.Tensor      # (B, Lt) int64 token ids for the configured text encoder
    text_mask: torch.Tensor     # (B, Lt) bool, True = real token
    audio: torch.Tensor         # (B, La, Da) float32 frame-level acoustic features
    audio_mask: torch.Tensor    # (B, La) bool, True = real frame
    vision: torch.Tensor        # (B, Lv, Dv) float32 frame-level face features
    vision_mask: torch.Tensor   # (B, Lv) bool, True = frame with a face
    present: torch.Tensor       # (B, 3) bool: text, audio, vision present

    FIELDS = ("text_ids", "text_mask", "audio", "audio_mask", "vision", "vision_mask", "present")

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return tuple(getattr(self, f) for f in self.FIELDS)

    def replace(self, **fields) -> "MultimodalBatch":
        return dataclasses.replace(self, **fields)

    @property
    def batch_size(self) -> int:
        return int(self.text_ids.shape[0])

    def to(self, device: torch.device | str) -> "MultimodalBatch":
        return MultimodalBatch(*(t.to(device) for t in self.tensors()))

    def index(self, idx) -> "MultimodalBatch":
        """Select rows (an int list, slice or bool mask) of every tensor."""
        return MultimodalBatch(*(t[idx] for t in self.tensors()))

    @staticmethod
    def dynamic_shapes(batch_dim=None) -> tuple[dict[int, object], ...]:
        """torch.export dynamic-shapes spec for `tensors()`: batch and the three sequence lengths."""
        from torch.export import Dim

        batch = batch_dim if batch_dim is not None else Dim("batch", min=1, max=1024)
        lt = Dim("text_len", min=2, max=MAX_TEXT_LEN)
        la = Dim("audio_len", min=2, max=MAX_SEQ_LEN)
        lv = Dim("vision_len", min=2, max=MAX_SEQ_LEN)
        return (
            {0: batch, 1: lt},
            {0: batch, 1: lt},
            {0: batch, 1: la},
            {0: batch, 1: la},
            {0: batch, 1: lv},
            {0: batch, 1: lv},
            {0: batch},
        )

    @classmethod
    def cat(cls, batches: list["MultimodalBatch"]) -> "MultimodalBatch":
        """Concatenate batches that share sequence lengths."""
        return cls(*(torch.cat(ts, dim=0) for ts in zip(*(b.tensors() for b in batches))))
