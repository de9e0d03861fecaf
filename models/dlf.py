"""DLF: Disentangled-Language-Focused multimodal representation learning.

Wang, Pan et al., "DLF: Disentangled-Language-Focused Multimodal Sentiment Analysis", AAAI 2025.
Defaults follow the authors' MOSI configuration (width 50, 10 heads, 2 levels, conv kernel 5) and
their loss weighting.

Read top to bottom:
  1. feature extraction: text encoder, then 1-D temporal convolutions to a common width
  2. feature disentanglement: one shared encoder for all modalities, one specific encoder per
     modality (decoders: training only)
  3. shared space: the three shared sequences together through a Transformer
  4. Language-Focused Attractor (LFA): the language-specific sequence is the query over itself,
     vision and audio specific sequences (X -> Language), then a self-attention memory
  5. hierarchical predictions: shared, specific per modality, final            <- inference ends here
  6. training only (`loss`): L_r reconstruction, L_s specific consistency, L_m triplet margin
     (cosine, margin μ), L_o soft orthogonality, MAE on every prediction level

Comments cite these step numbers (the paper's own equation numbers were not at hand offline;
the authors' public code was consulted for hyperparameters and loss weights).

Unimodal outputs are the specific per-modality predictions. Absent modalities: their keys are
masked out of the shared space, their LFA branch and pooled specific feature become learned
"absent" embeddings, so a model trained on text only behaves when audio/vision are absent live.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from moodlens.models.base import SentimentModel
from moodlens.core.schema import MODALITIES
from moodlens.models.batch import MultimodalBatch, SentimentOutput
from moodlens.models.config import BaseModelConfig
from moodlens.models.layers import (MLP, Conv1dProjection, CrossModalEncoder, SinusoidalPositionalEncoding,
                                    TransformerEncoder,
                                    ensure_nonempty, masked_mean, scale_output)


@dataclass
class Config(BaseModelConfig):
    hidden_dim: int = 50            # dst_feature_dim (authors' MOSI config)
    heads: int = 10
    layers: int = 2                 # nlevels of every cross-modal / self-attention stack
    conv_kernel: int = 5            # conv1d_kernel_size_{l,a,v} (MOSI; 3 on MOSEI)
    # One dropout rate for every site (`dropout`, set to the authors' MOSI attention dropout 0.3 in
    # configs/models/dlf.yaml; they also use 0.5 before the output heads). One rate keeps
    # `dropout: 0` meaning "no dropout anywhere", which the contract tests rely on.
    dropout: float = 0.3
    triplet_margin: float = 0.2     # μ of L_m
    # Loss weights (authors' training script): L_msa = final + shared + 3·language + vision + audio;
    # L = L_msa + 0.1·(L_s + L_r + 0.1·(L_m + L_o)).
    weight_text_task: float = 3.0
    weight_reconstruction: float = 0.1
    weight_specific: float = 0.1
    weight_margin: float = 0.01
    weight_orthogonality: float = 0.01


# ---- paper-specific losses ---------------------------------------------------------------------

def triplet_margin_cosine(features: torch.Tensor, classes: torch.Tensor, margin: float,
                          valid: torch.Tensor) -> torch.Tensor:
    """L_m: for every triplet (anchor a, positive p of the same sentiment class, negative n of
    another class), max(0, μ - cos(a, p) + cos(a, n)), averaged over valid triplets.
    features (N, D), classes (N,), valid (N,) bool. No valid triplet -> 0."""
    sim = F.normalize(features, dim=-1) @ F.normalize(features, dim=-1).T
    same = classes.unsqueeze(0) == classes.unsqueeze(1)
    ok = valid.unsqueeze(0) & valid.unsqueeze(1)
    eye = torch.eye(len(features), dtype=torch.bool, device=features.device)
    positive = same & ok & ~eye                                   # (a, p)
    negative = ~same & ok                                         # (a, n)
    hinge = (margin - sim.unsqueeze(2) + sim.unsqueeze(1)).clamp_min(0)   # [a, p, n]
    triplets = positive.unsqueeze(2) & negative.unsqueeze(1)
    count = triplets.sum()
    return (hinge * triplets).sum() / count.clamp_min(1)


def sentiment_class(labels: torch.Tensor) -> torch.Tensor:
    """Negative / neutral / positive, the classes L_m contrasts."""
    return torch.sign(labels).to(torch.long)


def _masked_average(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    weights = valid.to(values.dtype)
    return (values * weights).sum() / weights.sum().clamp_min(1.0)


# ---- the model ---------------------------------------------------------------------------------

class Model(SentimentModel):
    name = "dlf"

    def __init__(self, config: Config, load_text_weights: bool = True):
        super().__init__(config, load_text_weights)
        c = config
        d = c.hidden_dim
        in_dims = {"text": c.text_dim, "audio": c.audio_dim, "vision": c.vision_dim}
        # Step 1: temporal 1-D convolutions to the common width d.
        self.project = nn.ModuleDict({m: Conv1dProjection(in_dims[m], d, c.conv_kernel) for m in MODALITIES})
        # Step 2: one shared encoder E^c (all modalities) and a specific encoder E^s_m per modality;
        # decoders D_m reconstruct X_m from [S_m; C_m] (1-D convolutions, training only).
        self.shared_encoder = Conv1dProjection(d, d, 1)
        self.specific_encoder = nn.ModuleDict({m: Conv1dProjection(d, d, 1) for m in MODALITIES})
        self.decoder = nn.ModuleDict({m: Conv1dProjection(2 * d, d, 1) for m in MODALITIES})
        self.shared_similarity = nn.Linear(d, d)                  # projection where L_m is measured
        # Step 3, shared space: the three shared sequences (tagged by modality) through a Transformer.
        # Positions are added per modality before concatenating (a table over the summed length
        # would cap the three dynamic lengths jointly under torch.export).
        self.positions = SinusoidalPositionalEncoding(d)
        self.modality_embedding = nn.Parameter(torch.zeros(3, d))
        self.shared_transformer = TransformerEncoder(d, c.heads, c.layers, dropout=c.dropout, positional=False)
        # Step 4, LFA: language as the query over language, audio and vision specific sequences.
        self.attractor = nn.ModuleDict({m: CrossModalEncoder(d, c.heads, c.layers, dropout=c.dropout)
                                        for m in MODALITIES})
        self.attractor_memory = TransformerEncoder(3 * d, c.heads, c.layers, dropout=c.dropout,
                                                   positional=False)
        # Learned stand-ins for an absent modality's LFA branch and pooled features.
        self.absent_attractor = nn.Parameter(torch.zeros(3, d))
        self.absent_specific = nn.Parameter(torch.zeros(3, d))
        # Step 5, hierarchical predictions.
        self.shared_head = MLP(d, d, 1, 2, c.dropout)
        self.specific_head = nn.ModuleDict({m: MLP(d, d, 1, 2, c.dropout) for m in MODALITIES})
        self.final_head = MLP(4 * d, d, 1, 2, c.dropout)

    # ---- steps 1-2 ------------------------------------------------------------------------
    def disentangle(self, text_ids, text_mask, audio, audio_mask, vision, vision_mask):
        raw = {"text": self.text_encoder(text_ids, text_mask), "audio": audio, "vision": vision}
        x = {m: self.project[m](raw[m]) for m in MODALITIES}                     # X_m
        shared = {m: self.shared_encoder(x[m]) for m in MODALITIES}              # C_m = E^c(X_m)
        specific = {m: self.specific_encoder[m](x[m]) for m in MODALITIES}       # S_m = E^s_m(X_m)
        return x, shared, specific

    # ---- steps 3-5 ------------------------------------------------------------------------
    def predict(self, shared: dict, specific: dict, masks: dict, present: torch.Tensor) -> dict:
        # Shared space: concatenate in time; absent modalities contribute no keys.
        seq = torch.cat([self.positions(shared[m]) + self.modality_embedding[i] for i, m in enumerate(MODALITIES)], dim=1)
        keys = torch.cat([masks[m] & present[:, i:i + 1] for i, m in enumerate(MODALITIES)], dim=1)
        keys = ensure_nonempty(keys)
        shared_rep = masked_mean(self.shared_transformer(seq, keys), keys)
        # LFA: Q = S_language; K, V = S_language, S_audio, S_vision (X -> Language).
        query = specific["text"]
        attracted = []
        for i, m in enumerate(MODALITIES):
            h = self.attractor[m](query, specific[m], masks[m])
            on = present[:, i].view(-1, 1, 1)
            attracted.append(torch.where(on, h, self.absent_attractor[i].expand_as(h)))
        memory = self.attractor_memory(torch.cat(attracted, dim=-1), masks["text"])
        lfa_rep = masked_mean(memory, masks["text"])
        # Hierarchical predictions: shared, specific per modality, final.
        pooled_specific = {}
        for i, m in enumerate(MODALITIES):
            p = masked_mean(specific[m], masks[m])
            pooled_specific[m] = torch.where(present[:, i:i + 1], p, self.absent_specific[i].expand_as(p))
        return {
            "shared": self.shared_head(shared_rep).squeeze(-1),
            **{m: self.specific_head[m](pooled_specific[m]).squeeze(-1) for m in MODALITIES},
            "final": self.final_head(torch.cat([shared_rep, lfa_rep], dim=-1)).squeeze(-1),
        }

    def encode_and_predict(self, text_ids, text_mask, audio, audio_mask, vision, vision_mask,
                           present) -> SentimentOutput:
        _, shared, specific = self.disentangle(text_ids, text_mask, audio, audio_mask, vision, vision_mask)
        masks = {"text": text_mask, "audio": audio_mask, "vision": vision_mask}
        pred = self.predict(shared, specific, masks, present)
        r = self.config.output_range
        return SentimentOutput(*(scale_output(pred[k], r) for k in ("final", "text", "audio", "vision")))

    # ---- step 6: training -------------------------------------------------------------------
    def loss(self, batch: MultimodalBatch, labels: torch.Tensor, **extras) -> dict[str, torch.Tensor]:
        c = self.config
        r = c.output_range
        text_ids, text_mask, audio, audio_mask, vision, vision_mask, present = self.clean_inputs(*batch.tensors())
        labels = labels.to(torch.float32).reshape(-1)
        x, shared, specific = self.disentangle(text_ids, text_mask, audio, audio_mask, vision, vision_mask)
        masks = {"text": text_mask, "audio": audio_mask, "vision": vision_mask}
        pred = self.predict(shared, specific, masks, present)

        recon_terms, specific_terms, ortho_terms, sim_feats = [], [], [], []
        for i, m in enumerate(MODALITIES):
            frames = masks[m] & present[:, i:i + 1]                  # real frames of present samples
            recon = self.decoder[m](torch.cat([specific[m], shared[m]], dim=-1))     # X'_m = D_m([S_m; C_m])
            # L_r = ||X_m - X'_m||^2
            recon_terms.append(_masked_average((recon - x[m]).pow(2).mean(-1), frames))
            # L_s = ||S_m - E^s_m(X'_m)||^2: the specific encoder recovers S_m from the reconstruction
            specific_terms.append(_masked_average((self.specific_encoder[m](recon) - specific[m]).pow(2).mean(-1),
                                                  frames))
            # L_o soft orthogonality = max(0, cos(S_m, C_m)) per frame (cosine embedding loss, y = -1)
            ortho_terms.append(_masked_average(F.cosine_similarity(specific[m], shared[m], dim=-1).clamp_min(0),
                                               frames))
            sim_feats.append(self.shared_similarity(masked_mean(shared[m], masks[m])))

        # L_m: triplets over the pooled shared features of all present (sample, modality) pairs.
        feats = torch.stack(sim_feats, dim=1).reshape(-1, c.hidden_dim)             # (B*3, d), sample-major
        classes = sentiment_class(labels).repeat_interleave(3)
        margin = triplet_margin_cosine(feats, classes, c.triplet_margin, present.reshape(-1))

        def mae(p, valid=None):
            err = (scale_output(p, r) - labels).abs()
            return err.mean() if valid is None else _masked_average(err, valid)

        terms = {
            "task_final": mae(pred["final"]),
            "task_shared": mae(pred["shared"]),
            "task_text": mae(pred["text"], present[:, 0]),
            "task_audio": mae(pred["audio"], present[:, 1]),
            "task_vision": mae(pred["vision"], present[:, 2]),
            "reconstruction": torch.stack(recon_terms).sum(),
            "specific": torch.stack(specific_terms).sum(),
            "margin": margin,
            "orthogonality": torch.stack(ortho_terms).sum(),
        }
        task = (terms["task_final"] + terms["task_shared"] + c.weight_text_task * terms["task_text"]
                + terms["task_audio"] + terms["task_vision"])
        terms["total"] = (task + c.weight_reconstruction * terms["reconstruction"]
                          + c.weight_specific * terms["specific"] + c.weight_margin * terms["margin"]
                          + c.weight_orthogonality * terms["orthogonality"])
        return terms
