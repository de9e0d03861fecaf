"""DashFusion: Dual-stream Alignment with Hierarchical Bottleneck Fusion.

Wen, Li, Zhou, Gao, Wen, Tao & Li, "DashFusion: Dual-stream Alignment with Hierarchical Bottleneck
Fusion for Multimodal Sentiment Analysis", IEEE TNNLS 2025 (arXiv 2512.05515).

Read top to bottom:
  1. unimodal encoders: text encoder projected to the common width d; Transformer encoders for
     audio and vision (d = 128)
  2. dual-stream alignment, temporal stream: cross-modal attention with text as query (eq. 4)
  3. hierarchical bottleneck fusion: p = 8 bottleneck tokens, halved after every layer (eq. 6-8)
  4. MLP on the first token of each stream + the pooled bottleneck (eq. 9)      <- inference ends here
  5. training only (`loss`): semantic-stream alignment by NT-Xent with text as anchor (eq. 5),
     supervised contrastive learning with hard-negative mining on unimodal and aligned features,
     L = L_pred (MSE) + λ·L_con.

Additions to the paper, both needed by moodlens:
  - auxiliary unimodal heads (text/audio/vision scores, trained on the same label); the paper
    only predicts the fused score.
  - absence awareness: an absent modality's pooled/first-token feature is replaced by a learned
    "absent" embedding, and its stream does not update the shared bottleneck tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from moodlens.models.base import SentimentModel
from moodlens.models.batch import MultimodalBatch, SentimentOutput
from moodlens.models.config import BaseModelConfig
from moodlens.models.layers import MLP, CrossModalEncoder, TransformerEncoder, TransformerLayer, masked_mean
from moodlens.models.losses import nt_xent
from moodlens.core.errors import ConfigError


@dataclass
class Config(BaseModelConfig):
    """Values marked (paper) come from the paper; the others are ordinary choices (tune in the YAML)."""

    hidden: int = 128                  # common width d (paper: 128)
    heads: int = 4
    encoder_layers: int = 2            # audio/vision Transformer encoders
    alignment_layers: int = 1          # cross-modal attention layers of the temporal stream (eq. 4)
    bottleneck_tokens: int = 8         # p (paper: 8), halved after every fusion layer
    fusion_layers: int = 3             # 8 -> 4 -> 2 bottleneck tokens
    head_hidden: int = 128
    # Loss (paper: λ = 0.2, τ = 0.5)
    contrastive_weight: float = 0.2    # λ
    temperature: float = 0.5           # τ
    hard_negatives: int = 4            # hardest negatives kept per anchor in supervised contrast
    neutral_margin: float = 0.0        # |y| <= margin is the neutral class of supervised contrast
    unimodal_weight: float = 0.5       # auxiliary unimodal heads (our addition)


# ---- paper-specific blocks ---------------------------------------------------------------------

class HierarchicalBottleneckFusion(nn.Module):
    """Eq. 6-8. Layer l holds p_l = p / 2^l bottleneck tokens B^l. Each stream m runs a Transformer
    layer over [X_m; B^l] (eq. 6); the bottleneck is the mean of the streams' updated bottleneck
    tokens over present streams (eq. 7); it is then compressed to half as many tokens by averaging
    neighbouring pairs (eq. 8). Information can cross modalities only through B."""

    def __init__(self, dim: int, heads: int, tokens: int, layers: int, streams: int, dropout: float):
        super().__init__()
        if tokens % (2 ** (layers - 1)):
            raise ConfigError(f"DashFusion config: {tokens} bottleneck_tokens cannot be halved over "
                              f"{layers} fusion_layers; use a multiple of {2 ** (layers - 1)}.")
        self.token_counts = [tokens // 2 ** i for i in range(layers)]   # tokens entering each layer
        self.bottleneck = nn.Parameter(torch.randn(tokens, dim) * 0.02)  # B^0
        self.layers = nn.ModuleList(
            nn.ModuleList(TransformerLayer(dim, heads, dropout=dropout) for _ in range(streams))
            for _ in range(layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, streams: list[torch.Tensor], masks: list[torch.Tensor], present: torch.Tensor,
                return_history: bool = False):
        """Returns (streams, bottleneck (B, p_last / 2, d)) and, when asked, the bottleneck before
        every layer and after the last."""
        b = streams[0].shape[0]
        bottleneck = self.bottleneck.unsqueeze(0).expand(b, -1, -1)
        weights = present.to(bottleneck.dtype)                                   # (B, streams)
        denom = weights.sum(1).clamp_min(1.0)[:, None, None]
        history = []
        for layer_streams in self.layers:
            history.append(bottleneck)
            p = bottleneck.shape[1]
            ones = torch.ones(b, p, dtype=torch.bool, device=bottleneck.device)
            updated = torch.zeros_like(bottleneck)
            new_streams = []
            for i, (layer, x, mask) in enumerate(zip(layer_streams, streams, masks)):
                y = layer(torch.cat([x, bottleneck], 1), torch.cat([mask, ones], 1))        # eq. 6
                new_streams.append(y[:, :-p])
                updated = updated + y[:, -p:] * weights[:, i, None, None]
            # eq. 7: average over present streams; with none present keep the previous tokens.
            bottleneck = torch.where(weights.sum(1)[:, None, None] > 0, updated / denom, bottleneck)
            bottleneck = bottleneck.reshape(b, p // 2, 2, -1).mean(2) if p > 1 else bottleneck  # eq. 8
            streams = new_streams
        streams = [self.norm(x) for x in streams]
        bottleneck = self.norm(bottleneck)
        if return_history:
            return streams, bottleneck, history + [bottleneck]
        return streams, bottleneck


def supervised_contrastive_hard(features: torch.Tensor, classes: torch.Tensor, temperature: float,
                                hard_negatives: int, valid: torch.Tensor) -> torch.Tensor:
    """Supervised contrast where each anchor keeps only its `hard_negatives` most similar
    other-class samples in the denominator (hard-negative mining); same-class samples are positives."""
    n = features.shape[0]
    z = F.normalize(features, dim=-1)
    sim = z @ z.T / temperature
    eye = torch.eye(n, dtype=torch.bool, device=features.device)
    pair_ok = valid.unsqueeze(0) & valid.unsqueeze(1) & ~eye
    same = classes.unsqueeze(0) == classes.unsqueeze(1)
    positives = pair_ok & same
    negatives = pair_ok & ~same
    k = min(hard_negatives, n)
    hardest = sim.masked_fill(~negatives, float("-inf")).topk(k, dim=1).indices
    hard = torch.zeros_like(negatives).scatter_(1, hardest, True) & negatives
    neg_inf = torch.full_like(sim, float("-inf"))
    log_denominator = torch.logsumexp(torch.where(positives | hard, sim, neg_inf), dim=1, keepdim=True)
    log_prob = torch.where(positives, sim - log_denominator, torch.zeros_like(sim))
    counts = positives.sum(1)
    usable = (counts > 0) & hard.any(1)
    per_anchor = -log_prob.sum(1) / counts.clamp_min(1)
    return torch.where(usable, per_anchor, torch.zeros_like(per_anchor)).sum() / usable.sum().clamp_min(1)


# ---- the model ---------------------------------------------------------------------------------

class Model(SentimentModel):
    name = "dashfusion"
    modalities = ("text", "audio", "vision")

    def __init__(self, config: Config, load_text_weights: bool = True):
        super().__init__(config, load_text_weights)
        c = config
        d = c.hidden
        # Unimodal encoders: text projected to d; audio/vision projected, positions, Transformer.
        self.text_proj = nn.Linear(c.text_dim, d)
        self.audio_proj = nn.Linear(c.audio_dim, d)
        self.vision_proj = nn.Linear(c.vision_dim, d)
        self.audio_encoder = TransformerEncoder(d, c.heads, c.encoder_layers, dropout=c.dropout)
        self.vision_encoder = TransformerEncoder(d, c.heads, c.encoder_layers, dropout=c.dropout)
        # eq. 4: temporal alignment, text queries audio / vision.
        self.align_audio = CrossModalEncoder(d, c.heads, c.alignment_layers, dropout=c.dropout)
        self.align_vision = CrossModalEncoder(d, c.heads, c.alignment_layers, dropout=c.dropout)
        # eq. 6-8
        self.fusion = HierarchicalBottleneckFusion(d, c.heads, c.bottleneck_tokens, c.fusion_layers, 3, c.dropout)
        # Learned stand-ins for an absent modality's pooled / first-token feature.
        self.absent_pooled = nn.Parameter(torch.zeros(3, d))
        self.absent_first = nn.Parameter(torch.zeros(3, d))
        # eq. 9: MLP on [first tokens of the three streams; pooled bottleneck].
        self.head = MLP(4 * d, c.head_hidden, 1, 2, c.dropout)
        # Auxiliary unimodal heads (our addition).
        self.unimodal_heads = nn.ModuleDict({m: MLP(d, c.head_hidden, 1, 2, c.dropout) for m in self.modalities})

    def encode(self, text_ids, text_mask, audio, audio_mask, vision, vision_mask, present,
               return_history: bool = False):
        """Everything the prediction and the losses need, as a dict of tensors (with the bottleneck
        tokens entering each fusion layer under "history" when asked)."""
        text = self.text_proj(self.text_encoder(text_ids, text_mask))
        audio = self.audio_encoder(self.audio_proj(audio), audio_mask)
        vision = self.vision_encoder(self.vision_proj(vision), vision_mask)
        audio_aligned = self.align_audio(text, audio, audio_mask)                  # eq. 4: A' = CA(T, A)
        vision_aligned = self.align_vision(text, vision, vision_mask)              # eq. 4: V' = CA(T, V)
        streams, bottleneck, history = self.fusion([text, audio_aligned, vision_aligned],   # eq. 6-8
                                                   [text_mask, text_mask, text_mask], present, return_history=True)

        def absent_aware(x, table):
            return torch.stack([torch.where(present[:, i:i + 1], x[i], table[i].expand_as(x[i])) for i in range(3)])

        pooled = absent_aware([masked_mean(text, text_mask), masked_mean(audio, audio_mask),
                               masked_mean(vision, vision_mask)], self.absent_pooled)
        aligned = [masked_mean(audio_aligned, text_mask), masked_mean(vision_aligned, text_mask)]
        first = absent_aware([s[:, 0] for s in streams], self.absent_first)
        encoded = {"pooled": pooled, "aligned": aligned, "first": first, "bottleneck": bottleneck.mean(1)}
        if return_history:
            encoded["history"] = history
        return encoded

    def predict(self, enc: dict) -> SentimentOutput:
        """Raw regression scores (the paper's linear MLP head); `encode_and_predict` bounds them."""
        first = enc["first"]
        fused = self.head(torch.cat([first[0], first[1], first[2], enc["bottleneck"]], -1)).squeeze(-1)  # eq. 9
        unimodal = [self.unimodal_heads[m](enc["pooled"][i]).squeeze(-1) for i, m in enumerate(self.modalities)]
        return SentimentOutput(fused, *unimodal)

    def encode_and_predict(self, text_ids, text_mask, audio, audio_mask, vision, vision_mask,
                           present) -> SentimentOutput:
        raw = self.predict(self.encode(text_ids, text_mask, audio, audio_mask, vision, vision_mask, present))
        # Clamped at inference only: training sees the unbounded score (no saturated gradients).
        r = self.config.output_range
        return SentimentOutput(*(x.clamp(-r, r) for x in raw))

    # ---- training --------------------------------------------------------------------------
    def loss(self, batch: MultimodalBatch, labels: torch.Tensor, **extras) -> dict[str, torch.Tensor]:
        c = self.config
        cleaned = self.clean_inputs(*batch.tensors())
        present = cleaned[-1]
        labels = labels.to(torch.float32).reshape(-1)
        enc = self.encode(*cleaned)
        out = self.predict(enc)
        text_on, audio_on, vision_on = present[:, 0], present[:, 1], present[:, 2]
        # eq. 5: semantic alignment, text anchor against the aligned audio / vision (NT-Xent).
        semantic = (nt_xent(enc["pooled"][0], enc["aligned"][0], c.temperature, text_on & audio_on)
                    + nt_xent(enc["pooled"][0], enc["aligned"][1], c.temperature, text_on & vision_on))
        # Supervised contrast on unimodal and aligned features; classes negative / neutral / positive.
        classes = torch.where(labels > c.neutral_margin, 1, torch.where(labels < -c.neutral_margin, -1, 0))
        features = [(enc["pooled"][0], text_on), (enc["pooled"][1], audio_on), (enc["pooled"][2], vision_on),
                    (enc["aligned"][0], text_on & audio_on), (enc["aligned"][1], text_on & vision_on)]
        supervised = torch.stack([supervised_contrastive_hard(f, classes, c.temperature, c.hard_negatives, v)
                                  for f, v in features]).mean()
        prediction = F.mse_loss(out.fused, labels)                                  # L_pred
        unimodal = sum(_masked_average((getattr(out, m) - labels).pow(2), present[:, i])
                       for i, m in enumerate(self.modalities))
        terms = {"prediction": prediction, "semantic_alignment": semantic,
                 "supervised_contrastive": supervised, "unimodal": unimodal}
        terms["total"] = (prediction + c.contrastive_weight * (semantic + supervised)  # L_pred + λ·L_con
                          + c.unimodal_weight * unimodal)
        return terms

    def bottleneck_token_counts(self, batch: MultimodalBatch) -> list[int]:
        """Bottleneck tokens entering each fusion layer, and leaving the last, measured on `batch`."""
        history = self.encode(*self.clean_inputs(*batch.tensors()), return_history=True)["history"]
        return [int(h.shape[1]) for h in history]


def _masked_average(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    weights = valid.to(values.dtype)
    return (values * weights).sum() / weights.sum().clamp_min(1.0)
