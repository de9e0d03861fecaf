"""A small SentimentModel on the real contract (a 1-layer BERT text encoder with random weights, masked
self-attention over audio, masked mean over vision), so inductor and the ONNX exporter finish in seconds."""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch
from torch import nn

from moodlens.models.base import SentimentModel
from moodlens.models.batch import MultimodalBatch, SentimentOutput
from moodlens.models.config import BaseModelConfig
from moodlens.models.layers import TransformerLayer, masked_mean


@dataclass
class TinyConfig(BaseModelConfig):
    hidden: int = 16


class TinyModel(SentimentModel):
    name = "tiny"

    def __init__(self, config: TinyConfig):
        super().__init__(config, load_text_weights=False)
        h = config.hidden
        self.audio_in = nn.Linear(config.audio_dim, h)
        self.audio_attn = TransformerLayer(h, 2, ff_mult=2, dropout=0.0)
        self.vision_in = nn.Linear(config.vision_dim, h)
        self.text_out = nn.Linear(config.text_dim, 1)
        self.audio_out = nn.Linear(h, 1)
        self.vision_out = nn.Linear(h, 1)
        self.fuse = nn.Linear(config.text_dim + 2 * h, 1)

    def encode_and_predict(self, text_ids, text_mask, audio, audio_mask, vision, vision_mask, present):
        t = masked_mean(self.text_encoder(text_ids, text_mask), text_mask)
        a = masked_mean(self.audio_attn(self.audio_in(audio), audio_mask), audio_mask)
        v = masked_mean(torch.tanh(self.vision_in(vision)), vision_mask)
        fused = self.fuse(torch.cat([t, a, v], dim=-1)).squeeze(-1)
        return SentimentOutput(fused, self.text_out(t).squeeze(-1), self.audio_out(a).squeeze(-1),
                               self.vision_out(v).squeeze(-1))


def make_tiny_model(folder, seed: int = 0) -> TinyModel:
    """A TinyModel whose text encoder is a 1-layer BERT config written into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({
        "model_type": "bert", "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
        "intermediate_size": 64, "vocab_size": 6000, "max_position_embeddings": 512, "type_vocab_size": 2,
    }))
    torch.manual_seed(seed)
    return TinyModel(TinyConfig(text_encoder=str(folder), text_dim=32)).eval()


def ragged_batch(model, batch_size, text_len, audio_len, vision_len, seed=0, absent=None) -> MultimodalBatch:
    batch = model.example_inputs(batch_size, text_len, audio_len, vision_len, seed=seed)
    if absent is not None:  # drop one modality in row 0
        present = batch.present.clone()
        present[0, absent] = False
        batch = batch.replace(present=present)
    return batch
