"""HCRL-MFD: Hierarchical Contrastive Representation Learning with Multimodal Feature Decoupling.

Wang, Li & Jiang, "Hierarchical Contrastive Representation Learning Guided by Multimodal Feature
Decomposition for Multimodal Sentiment Analysis", Computers, Materials & Continua 88(2), 2026.

Read top to bottom:
  1. unimodal encoders: text encoder (eq. 1), positional-encoded Transformers for vision and audio (eq. 2-3)
  2. multimodal feature decoupling: per-modality core-sentiment and redundant encoders (eq. 4-5)
  3. unimodal predictors on the core features (eq. 8)
  4. concatenation + MLP fusion (eq. 22-23)                                   <- inference ends here
  5. training only (`loss`): reconstruction (eq. 6), orthogonality (eq. 7), unimodal loss (eq. 9),
     hierarchical contrastive learning (eq. 10-21), MAE (eq. 24), total (eq. 25)

The inference path runs the core-sentiment encoders only; the redundant encoders and decoders
exist for the decoupling losses. Absent modalities: the pooled core feature of an absent modality
is replaced by a learned "absent" embedding before the predictors and the fusion MLP, so a model
trained on text-only data behaves the same when audio/vision are absent live.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from moodlens.models.base import SentimentModel
from moodlens.models.batch import MultimodalBatch, SentimentOutput
from moodlens.models.config import BaseModelConfig
from moodlens.models.layers import MLP, TransformerEncoder, TransformerLayer, masked_mean
from moodlens.models.losses import LABEL_HEADS, cosine_matrix, label_for, masked_l1, orthogonality


@dataclass
class Config(BaseModelConfig):
    """Values marked (paper) come from the paper; the others were not available to us when this
    was written and are ordinary choices for MOSI-sized data: tune them in the YAML."""

    # Widths: d_V = 128 and d_A = 64 (paper); the text stream is projected to d_T.
    text_hidden: int = 128          # d_T
    audio_hidden: int = 64          # d_A
    vision_hidden: int = 128        # d_V
    shared_dim: int = 128           # common space of the pooled core features (fusion + contrast)
    heads: int = 4
    encoder_layers: int = 2         # vision/audio Transformer encoders (eq. 2-3)
    decouple_layers: int = 2        # cascaded Transformer layers of each core/redundant encoder (eq. 4-5)
    fusion_hidden: int = 128        # MLP of eq. 22-23
    # Hierarchical contrastive learning (eq. 11-21)
    label_threshold: float = 0.5    # δ: |y_i - y_j| <= δ makes j a positive candidate for i
    top_k: int = 2                  # k (paper): k most similar positives, k least similar negatives
    temperature: float = 0.1        # τ of eq. 21
    # Loss weights of eq. 25
    weight_unimodal: float = 0.1
    weight_reconstruction: float = 0.1
    weight_orthogonality: float = 0.1
    weight_contrastive: float = 0.1


# ---- paper-specific blocks ---------------------------------------------------------------------

class CascadedEncoder(nn.Module):
    """Cascaded Transformer layers (eq. 4-5): H_C = E_C(H) for core, H_R = E_R(H) for redundant features."""

    def __init__(self, dim: int, heads: int, layers: int, dropout: float):
        super().__init__()
        self.layers = nn.ModuleList(TransformerLayer(dim, heads, dropout=dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, mask)
        return self.norm(x)


def select_pairs(similarity: torch.Tensor, label_distance: torch.Tensor, delta: float, k: int,
                 valid_rows: torch.Tensor | None = None, valid_cols: torch.Tensor | None = None,
                 exclude_diagonal: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Positive and negative pairs of the hierarchical contrastive loss (eq. 11-20).

    Candidates by label (eq. 11-12): j is a positive candidate of anchor i when |y_i - y_j| <= δ,
    a negative candidate otherwise. Ranking by cosine similarity (eq. 13-20): the k most similar
    positive candidates are the positives (top-k), the k least similar negative candidates the
    negatives (bottom-k). Fewer candidates than k -> all of them.

    similarity, label_distance: (N, M). Returns two (N, M) bool masks (positives, negatives).
    """
    n, m = similarity.shape
    allowed = torch.ones(n, m, dtype=torch.bool, device=similarity.device)
    if valid_rows is not None:
        allowed &= valid_rows.unsqueeze(1)
    if valid_cols is not None:
        allowed &= valid_cols.unsqueeze(0)
    if exclude_diagonal:
        allowed &= ~torch.eye(n, m, dtype=torch.bool, device=similarity.device)
    positive_candidates = allowed & (label_distance <= delta)          # eq. 11
    negative_candidates = allowed & (label_distance > delta)           # eq. 12
    return (_top_k_mask(similarity, positive_candidates, k),            # top-k positives
            _top_k_mask(-similarity, negative_candidates, k))           # bottom-k negatives


def _top_k_mask(scores: torch.Tensor, candidates: torch.Tensor, k: int) -> torch.Tensor:
    k = min(k, scores.shape[1])
    masked = scores.masked_fill(~candidates, float("-inf"))
    chosen = masked.topk(k, dim=1).indices
    mask = torch.zeros_like(candidates).scatter_(1, chosen, True)
    return mask & candidates  # rows with fewer than k candidates picked some -inf entries: drop them


def multi_positive_info_nce(similarity: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor,
                            temperature: float) -> torch.Tensor:
    """Eq. 21: -log( Σ_pos exp(s/τ) / Σ_{pos ∪ neg} exp(s/τ) ), averaged over anchors that have
    at least one positive and one negative (anchors without either carry no contrast)."""
    logits = similarity / temperature
    neg_inf = torch.full_like(logits, float("-inf"))
    log_pos = torch.logsumexp(torch.where(positives, logits, neg_inf), dim=1)
    log_all = torch.logsumexp(torch.where(positives | negatives, logits, neg_inf), dim=1)
    usable = positives.any(1) & negatives.any(1)
    per_anchor = torch.where(usable, log_all - log_pos, torch.zeros_like(log_all))
    return per_anchor.sum() / usable.sum().clamp_min(1)


# ---- the model ---------------------------------------------------------------------------------

class Model(SentimentModel):
    name = "hcrl_mfd"
    modalities = ("text", "audio", "vision")

    def __init__(self, config: Config, load_text_weights: bool = True):
        super().__init__(config, load_text_weights)
        c = config
        widths = {"text": c.text_hidden, "audio": c.audio_hidden, "vision": c.vision_hidden}
        self.widths = widths
        # eq. 1-3: unimodal encoders. Text: pretrained encoder + projection; audio/vision: projection,
        # sinusoidal positions, Transformer encoder.
        self.text_proj = nn.Linear(c.text_dim, c.text_hidden)
        self.audio_proj = nn.Linear(c.audio_dim, c.audio_hidden)
        self.vision_proj = nn.Linear(c.vision_dim, c.vision_hidden)
        self.audio_encoder = TransformerEncoder(c.audio_hidden, c.heads, c.encoder_layers, dropout=c.dropout)
        self.vision_encoder = TransformerEncoder(c.vision_hidden, c.heads, c.encoder_layers, dropout=c.dropout)
        # eq. 4-5: core-sentiment (E_C) and redundant (E_R) encoders per modality.
        self.core = nn.ModuleDict({m: CascadedEncoder(w, c.heads, c.decouple_layers, c.dropout)
                                   for m, w in widths.items()})
        self.redundant = nn.ModuleDict({m: CascadedEncoder(w, c.heads, c.decouple_layers, c.dropout)
                                        for m, w in widths.items()})
        # eq. 6: decoders reconstruct H_m from [H_C; H_R] (training only).
        self.decoder = nn.ModuleDict({m: nn.Linear(2 * w, w) for m, w in widths.items()})
        # Pooled core features into the shared space (fusion input and contrastive space).
        self.to_shared = nn.ModuleDict({m: nn.Linear(w, c.shared_dim) for m, w in widths.items()})
        # Stands in for the pooled core feature of an absent modality.
        self.absent = nn.Parameter(torch.zeros(3, c.shared_dim))
        # eq. 8: unimodal predictors; eq. 22-23: fusion MLP over the concatenation.
        self.unimodal_heads = nn.ModuleDict({m: MLP(c.shared_dim, c.shared_dim, 1, 2, c.dropout)
                                             for m in self.modalities})
        self.fusion = MLP(3 * c.shared_dim, c.fusion_hidden, 1, 3, c.dropout)

    # ---- eq. 1-3 ---------------------------------------------------------------------------
    def encode_unimodal(self, text_ids, text_mask, audio, audio_mask, vision, vision_mask):
        h_text = self.text_proj(self.text_encoder(text_ids, text_mask))                    # eq. 1
        h_audio = self.audio_encoder(self.audio_proj(audio), audio_mask)                  # eq. 2
        h_vision = self.vision_encoder(self.vision_proj(vision), vision_mask)             # eq. 3
        return {"text": h_text, "audio": h_audio, "vision": h_vision}

    def pooled_core(self, hidden: dict, masks: dict, present: torch.Tensor) -> dict:
        """eq. 4 then mean-pool and project into the shared space; absent -> learned embedding."""
        pooled = {}
        for i, m in enumerate(self.modalities):
            core = masked_mean(self.core[m](hidden[m], masks[m]), masks[m])
            shared = self.to_shared[m](core)
            pooled[m] = torch.where(present[:, i:i + 1], shared, self.absent[i].expand_as(shared))
        return pooled

    def predict(self, pooled: dict) -> SentimentOutput:
        """Raw regression scores (the paper's linear heads); `encode_and_predict` bounds them."""
        unimodal = [self.unimodal_heads[m](pooled[m]).squeeze(-1) for m in self.modalities]           # eq. 8
        fused = self.fusion(torch.cat([pooled[m] for m in self.modalities], dim=-1)).squeeze(-1)       # eq. 22-23
        return SentimentOutput(fused, *unimodal)

    def encode_and_predict(self, text_ids, text_mask, audio, audio_mask, vision, vision_mask,
                           present) -> SentimentOutput:
        hidden = self.encode_unimodal(text_ids, text_mask, audio, audio_mask, vision, vision_mask)
        masks = {"text": text_mask, "audio": audio_mask, "vision": vision_mask}
        raw = self.predict(self.pooled_core(hidden, masks, present))
        # Clamped at inference only: training sees the unbounded linear score, so an overshoot
        # never meets a zero gradient (a tanh head can saturate and stick).
        r = self.config.output_range
        return SentimentOutput(*(x.clamp(-r, r) for x in raw))

    # ---- training --------------------------------------------------------------------------
    def loss(self, batch: MultimodalBatch, labels: torch.Tensor, **extras) -> dict[str, torch.Tensor]:
        c = self.config
        text_ids, text_mask, audio, audio_mask, vision, vision_mask, present = self.clean_inputs(*batch.tensors())
        labels = labels.to(torch.float32)
        labels = labels.reshape(-1) if labels.dim() == 1 or labels.shape[-1] != len(LABEL_HEADS) else labels
        # Per-head labels (models/losses.py contract): (B,) serves every head; (B, 4) gives each head
        # its own, NaN = unknown -> that sample's term of that head is masked out.
        y = {head: label_for(labels, head) for head in LABEL_HEADS}
        hidden = self.encode_unimodal(text_ids, text_mask, audio, audio_mask, vision, vision_mask)
        masks = {"text": text_mask, "audio": audio_mask, "vision": vision_mask}

        reconstruction, orthogonal = [], []
        pooled, core_shared = {}, {}
        for i, m in enumerate(self.modalities):
            valid = present[:, i]
            h_core = self.core[m](hidden[m], masks[m])                                       # eq. 4
            h_redundant = self.redundant[m](hidden[m], masks[m])                              # eq. 5
            # eq. 6: L_R = ||D([H_C; H_R]) - H||^2 over real frames of present samples; the target is
            # detached so the decoupling cannot shrink the encoder output to make reconstruction trivial.
            recon = self.decoder[m](torch.cat([h_core, h_redundant], -1))
            frame_err = (recon - hidden[m].detach()).pow(2).mean(-1)
            frame_ok = masks[m] & valid.unsqueeze(1)
            reconstruction.append(_masked_average(frame_err, frame_ok))
            # eq. 7: L_O = ||(H_C)^T H_R||_F^2 on the pooled, unit-normalised core and redundant features
            # (rows of samples without the modality zeroed).
            c_pool = masked_mean(h_core, masks[m])
            r_pool = masked_mean(h_redundant, masks[m])
            keep = valid.unsqueeze(1).to(c_pool.dtype)
            orthogonal.append(orthogonality(F.normalize(c_pool, dim=-1) * keep, F.normalize(r_pool, dim=-1) * keep))
            core_shared[m] = self.to_shared[m](c_pool)
            pooled[m] = torch.where(valid.unsqueeze(1), core_shared[m], self.absent[i].expand_as(core_shared[m]))

        out = self.predict(pooled)
        # eq. 9: L_U = Σ_m mean |ŷ_m - y_m| over samples where m is present and its label known.
        unimodal = sum(masked_l1(getattr(out, m), y[m][0], y[m][1] & present[:, i])
                       for i, m in enumerate(self.modalities))
        contrastive = self.hierarchical_contrastive(core_shared, y, present)                 # eq. 10-21
        task = masked_l1(out.fused, *y["fused"])                                            # eq. 24
        terms = {
            "task": task,
            "unimodal": unimodal,
            "reconstruction": torch.stack(reconstruction).sum(),
            "orthogonality": torch.stack(orthogonal).sum(),
            "contrastive_intra": contrastive["intra"],
            "contrastive_inter": contrastive["inter"],
        }
        terms["total"] = (task + c.weight_unimodal * terms["unimodal"]                       # eq. 25
                          + c.weight_reconstruction * terms["reconstruction"]
                          + c.weight_orthogonality * terms["orthogonality"]
                          + c.weight_contrastive * (terms["contrastive_intra"] + terms["contrastive_inter"]))
        return terms

    def hierarchical_contrastive(self, features: dict, labels, present: torch.Tensor) -> dict:
        """Intra-modal level (same modality, other samples) and inter-modal level (other modality,
        any sample incl. the same one): pairs by `select_pairs`, loss by eq. 21.

        `labels`: (B,) or the per-head dict {head: (values, known)} of `loss`. With per-head labels
        the intra-modal level of modality m ranks pairs by m's own label (samples whose m label is
        unknown take no part) and the inter-modal level by the fused label."""
        c = self.config
        if isinstance(labels, torch.Tensor):
            labels = {head: label_for(labels, head) for head in LABEL_HEADS}

        def distance(head):
            values = labels[head][0]
            return (values.unsqueeze(1) - values.unsqueeze(0)).abs()                          # for eq. 11-12

        fused_distance, fused_known = distance("fused"), labels["fused"][1]
        intra, inter = [], []
        for i, m in enumerate(self.modalities):
            sim = cosine_matrix(features[m], features[m])                                     # eq. 13-14
            valid = present[:, i] & labels[m][1]
            pos, neg = select_pairs(sim, distance(m), c.label_threshold, c.top_k,
                                    valid, valid, exclude_diagonal=True)                      # eq. 15-16
            intra.append(multi_positive_info_nce(sim, pos, neg, c.temperature))
            for j, n in enumerate(self.modalities):
                if j == i:
                    continue
                sim = cosine_matrix(features[m], features[n])                                 # eq. 17-18
                pos, neg = select_pairs(sim, fused_distance, c.label_threshold, c.top_k,
                                        present[:, i] & fused_known, present[:, j] & fused_known,
                                        exclude_diagonal=False)                               # eq. 19-20
                inter.append(multi_positive_info_nce(sim, pos, neg, c.temperature))
        return {"intra": torch.stack(intra).mean(), "inter": torch.stack(inter).mean()}


def _masked_average(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    weights = valid.to(values.dtype)
    return (values * weights).sum() / weights.sum().clamp_min(1.0)
