"""DLF: Disentangled-Language-Focused multimodal representation learning.

Wang, Zhou, Wu, Chen & Hu, "DLF: Disentangled-Language-Focused Multimodal Sentiment Analysis",
AAAI 2025. Equation numbers below are the paper's; docs/fidelity/dlf.md maps each one to this file.

Read top to bottom:
  1. feature extraction: text encoder; 1-D temporal convolutions to the common width d -> X̂_m
  2. feature disentanglement: Sh^m = E^Sh(X̂_m) (eq. 1, one shared encoder), Sp^m = E^Sp_m(X̂_m)
     (eq. 2, one per modality), both cascaded Transformer layers
  3. shared branch: a unified Transformer layer over each Sh^m, concatenation, two fully connected
     layers -> HSh, the shared prediction
  4. Language-Focused Attractor (eq. 10-11): positional embedding + dropout on Sp^m, then three
     branches with language as the query: L->L (self-attention), V->L and A->L (cross-attention);
     each branch is projected to HSp^m and has its own specific predictor
  5. fusion (eq. 12) F = Concat(HSp^L, HSp^V, HSp^A, HSh) and the final predictor   <- inference ends
  6. training only (`loss`): decoders X̂'_m = D_m([Sh^m ⊕ Sp^m]) (eq. 3), L_r (eq. 4), L_s (eq. 5-6),
     triplet L_m (eq. 7: P = same sentiment in another modality, N = other sentiment in the same
     modality), soft orthogonality L_o (eq. 8), L_d (eq. 9), L1 task losses (eq. 13) combined
     as L_MSA (eq. 14) and L_DLF = L_d + L_MSA (eq. 15).

The paper gives no width, heads, depth, dropout, μ, λ_k or β_l; those come from the authors' code
(github.com/pwang322/DLF, read for values, not copied): d = 50, 10 heads, 2 levels, conv kernel 5,
memory self-attention of 3 layers after each cross-modal LFA branch, β = (1, 1, 3, 1, 1),
λ = (0.1, 0.1, 0.01, 0.01).

Unimodal outputs are the specific predictions of the three LFA branches (the text output is the
L->L branch; the audio and vision outputs are the A->L and V->L branches, which read language as
their query, as the paper builds them). Addition for moodlens: an absent modality's keys are
masked, its pooled shared feature and its LFA branch become learned "absent" embeddings, so it
cannot change any output; with every modality present nothing of this runs.
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
from moodlens.models.layers import Conv1dProjection, MultiHeadAttention, SinusoidalPositionalEncoding, masked_mean
from moodlens.models.losses import label_for, masked_l1


@dataclass
class Config(BaseModelConfig):
    """(code) = the authors' config.json for MOSI; (ours) = not stated anywhere."""

    hidden_dim: int = 50            # (code) dst_feature_dim
    heads: int = 10                 # (code)
    layers: int = 2                 # (code) nlevels: depth of E^Sh, E^Sp_m and each LFA branch
    memory_layers: int = 3          # (code) self-attention after the V->L and A->L branches
    conv_kernel: int = 5            # (code) conv1d_kernel_size_{l,a,v} (MOSI; 3 on MOSEI)
    # One dropout rate for every site (`dropout`, set to the authors' MOSI attention dropout 0.3 in
    # configs/models/dlf.yaml; they also use 0.5 before the output heads). One rate keeps
    # `dropout: 0` meaning "no dropout anywhere", which the contract tests rely on.
    dropout: float = 0.3
    triplet_margin: float = 0.2     # μ of eq. 7 (ours; not given)
    # β_l of eq. 14 (code): L_MSA = final + shared + 3·language + vision + audio.
    weight_text_task: float = 3.0
    # λ_k of eq. 9 (code): L_d = 0.1·(L_s + L_r + 0.1·(L_m + L_o)).
    weight_reconstruction: float = 0.1
    weight_specific: float = 0.1
    weight_margin: float = 0.01
    weight_orthogonality: float = 0.01


# ---- paper-specific blocks ---------------------------------------------------------------------

class PostLNLayer(nn.Module):
    """Eq. 11: h' = LN(h + Drop(MCA(h, kv))), h^o = LN(h' + FFN(h')). Without `context` it is
    the self-attention branch (L->L) and the encoder layer; with it, language queries `context`."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.attn = MultiHeadAttention(dim, heads, dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, 4 * dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(4 * dim, dim))
        self.norm2 = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, mask=None, context=None, context_mask=None):
        kv, kv_mask = (x, mask) if context is None else (context, context_mask)
        h = self.norm1(x + self.drop(self.attn(x, kv, kv_mask)))                 # MCA(Q_L, K_m, V_m), eq. 10
        return self.norm2(h + self.drop(self.ff(h)))


class SequenceTransformer(nn.Module):
    """Cascaded Transformer layers with sinusoidal positions and dropout on the input: the shared
    and specific encoders (eq. 1-2) and the LFA branches (eq. 10-11, `context` = keys/values)."""

    def __init__(self, dim: int, heads: int, layers: int, dropout: float, positional: bool = True):
        super().__init__()
        self.pos = SinusoidalPositionalEncoding(dim) if positional else None
        self.drop = nn.Dropout(dropout)
        self.layers = nn.ModuleList(PostLNLayer(dim, heads, dropout) for _ in range(layers))

    def forward(self, x, mask, context=None, context_mask=None):
        if self.pos is not None:
            x = self.drop(self.pos(x))
        for layer in self.layers:
            x = layer(x, mask, context, context_mask)
        return x


class ResidualProjection(nn.Module):
    """Two fully connected layers with a residual (x + FC(ReLU(FC(x)))): the "two fully connected
    layers" of the shared branch, the projection to HSp^m, and the final predictor's body."""

    def __init__(self, dim: int, dropout: float):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        return x + self.fc2(self.drop(F.relu(self.fc1(x))))


def triplet_margin_cosine(features: torch.Tensor, classes: torch.Tensor, modality: torch.Tensor,
                          margin: float, valid: torch.Tensor) -> torch.Tensor:
    """Eq. 7, L_m = 1/|T| Σ max(0, μ - cos(S, P) + cos(S, N)) over triplets where P has the anchor's
    sentiment in a *different* modality and N a different sentiment in the *same* modality.
    (Printed with d = cosine similarity as max(0, d(S,P) - d(S,N) + μ), which would push positives
    apart; read as the distance 1 - cos, which gives this form.)
    features (N, D), classes (N,), modality (N,) index, valid (N,) bool. No valid triplet -> 0."""
    sim = F.normalize(features, dim=-1) @ F.normalize(features, dim=-1).T
    same_class = classes.unsqueeze(0) == classes.unsqueeze(1)
    same_modality = modality.unsqueeze(0) == modality.unsqueeze(1)
    ok = valid.unsqueeze(0) & valid.unsqueeze(1)
    positive = same_class & ~same_modality & ok                   # (S, P)
    negative = ~same_class & same_modality & ok                   # (S, N)
    hinge = (margin - sim.unsqueeze(2) + sim.unsqueeze(1)).clamp_min(0)   # [S, P, N]
    triplets = positive.unsqueeze(2) & negative.unsqueeze(1)
    return (hinge * triplets).sum() / triplets.sum().clamp_min(1)


def sentiment_class(labels: torch.Tensor) -> torch.Tensor:
    """Negative / neutral / positive: what "the same sentiment" of eq. 7 means here (ours)."""
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
        # Step 2 (eq. 1-2): one shared encoder E^Sh, one specific encoder E^Sp_m per modality.
        self.shared_encoder = SequenceTransformer(d, c.heads, c.layers, c.dropout)
        self.specific_encoder = nn.ModuleDict({m: SequenceTransformer(d, c.heads, c.layers, c.dropout)
                                               for m in MODALITIES})
        # Eq. 3 decoders D_m (1-D convolutions, training only) and the space where L_m is measured.
        self.decoder = nn.ModuleDict({m: Conv1dProjection(2 * d, d, 1) for m in MODALITIES})
        self.shared_similarity = nn.ModuleDict({m: nn.Linear(d, d) for m in MODALITIES})
        # Step 3: the unified Transformer layer over each Sh^m, then two FC layers -> HSh (3d).
        self.shared_transformer = SequenceTransformer(d, c.heads, 1, c.dropout, positional=False)
        self.shared_projection = ResidualProjection(3 * d, c.dropout)
        # Step 4 (eq. 10-11): the LFA. Positions + dropout on Sp^m, then three branches, Q = language.
        self.lfa_positions = SinusoidalPositionalEncoding(d)
        self.lfa_dropout = nn.Dropout(c.dropout)
        self.attractor = nn.ModuleDict({m: SequenceTransformer(d, c.heads, c.layers, c.dropout, positional=False)
                                        for m in MODALITIES})
        self.attractor_memory = nn.ModuleDict({m: SequenceTransformer(d, c.heads, c.memory_layers, c.dropout,
                                                                      positional=False)
                                               for m in ("audio", "vision")})
        self.specific_projection = nn.ModuleDict({m: ResidualProjection(d, c.dropout) for m in MODALITIES})  # HSp^m
        # Additions: learned stand-ins for an absent modality's pooled shared feature / LFA branch.
        self.absent_shared = nn.Parameter(torch.zeros(3, d))
        self.absent_attractor = nn.Parameter(torch.zeros(3, d))
        # Step 5, hierarchical predictions: shared, specific per modality, final.
        self.shared_head = nn.Linear(3 * d, 1)
        self.specific_head = nn.ModuleDict({m: nn.Linear(d, 1) for m in MODALITIES})
        self.final_body = ResidualProjection(6 * d, c.dropout)
        self.final_head = nn.Linear(6 * d, 1)

    # ---- steps 1-2 ------------------------------------------------------------------------
    def disentangle(self, text_ids, text_mask, audio, audio_mask, vision, vision_mask):
        raw = {"text": self.text_encoder(text_ids, text_mask), "audio": audio, "vision": vision}
        masks = {"text": text_mask, "audio": audio_mask, "vision": vision_mask}
        x = {m: self.project[m](raw[m]) for m in MODALITIES}                             # X̂_m
        shared = {m: self.shared_encoder(x[m], masks[m]) for m in MODALITIES}            # eq. 1
        specific = {m: self.specific_encoder[m](x[m], masks[m]) for m in MODALITIES}     # eq. 2
        return x, shared, specific

    # ---- steps 3-5 ------------------------------------------------------------------------
    def attract(self, specific: dict, masks: dict, present: torch.Tensor) -> dict:
        """LFA (eq. 10-11): pooled output of each branch, learned stand-in where m is absent."""
        sp = {m: self.lfa_dropout(self.lfa_positions(specific[m])) for m in MODALITIES}
        query, query_mask = sp["text"], masks["text"]
        out = {}
        for i, m in enumerate(MODALITIES):
            if m == "text":
                h = self.attractor[m](query, query_mask)                                 # L -> L
            else:
                h = self.attractor[m](query, query_mask, sp[m], masks[m])                # V -> L, A -> L
                h = self.attractor_memory[m](h, query_mask)
            pooled = masked_mean(h, query_mask)
            out[m] = torch.where(present[:, i:i + 1], pooled, self.absent_attractor[i].expand_as(pooled))
        return out

    def predict(self, shared: dict, specific: dict, masks: dict, present: torch.Tensor) -> dict:
        # Shared branch: unified Transformer per modality, pooled, concatenated, two FC -> HSh.
        pooled_shared = []
        for i, m in enumerate(MODALITIES):
            p = masked_mean(self.shared_transformer(shared[m], masks[m]), masks[m])
            pooled_shared.append(torch.where(present[:, i:i + 1], p, self.absent_shared[i].expand_as(p)))
        hsh = self.shared_projection(torch.cat(pooled_shared, -1))                      # HSh
        attracted = self.attract(specific, masks, present)
        hsp = {m: self.specific_projection[m](attracted[m]) for m in MODALITIES}        # HSp^m
        fused = torch.cat([hsp["text"], hsp["vision"], hsp["audio"], hsh], -1)           # eq. 12
        return {
            "shared": self.shared_head(hsh).squeeze(-1),
            **{m: self.specific_head[m](hsp[m]).squeeze(-1) for m in MODALITIES},
            "final": self.final_head(self.final_body(fused)).squeeze(-1),
        }

    def encode_and_predict(self, text_ids, text_mask, audio, audio_mask, vision, vision_mask,
                           present) -> SentimentOutput:
        _, shared, specific = self.disentangle(text_ids, text_mask, audio, audio_mask, vision, vision_mask)
        masks = {"text": text_mask, "audio": audio_mask, "vision": vision_mask}
        pred = self.predict(shared, specific, masks, present)
        # Linear heads (the paper's regression); clamped to the label range at inference only.
        r = self.config.output_range
        return SentimentOutput(*(pred[k].clamp(-r, r) for k in ("final", "text", "audio", "vision")))

    # ---- step 6: training -------------------------------------------------------------------
    def loss(self, batch: MultimodalBatch, labels: torch.Tensor, **extras) -> dict[str, torch.Tensor]:
        c = self.config
        text_ids, text_mask, audio, audio_mask, vision, vision_mask, present = self.clean_inputs(*batch.tensors())
        labels = labels.to(torch.float32)
        x, shared, specific = self.disentangle(text_ids, text_mask, audio, audio_mask, vision, vision_mask)
        masks = {"text": text_mask, "audio": audio_mask, "vision": vision_mask}
        pred = self.predict(shared, specific, masks, present)
        fused_label, fused_known = label_for(labels, "fused")

        recon_terms, specific_terms, ortho_terms, sim_feats = [], [], [], []
        for i, m in enumerate(MODALITIES):
            frames = masks[m] & present[:, i:i + 1]                  # real frames of present samples
            recon = self.decoder[m](torch.cat([shared[m], specific[m]], dim=-1))      # eq. 3
            recon_terms.append(_masked_average((recon - x[m]).pow(2).mean(-1), frames))       # eq. 4 L_r
            again = self.specific_encoder[m](recon, masks[m])                        # eq. 5 Sp^m'
            specific_terms.append(_masked_average((again - specific[m]).pow(2).mean(-1), frames))  # eq. 6 L_s
            # eq. 8 L_o: the non-negative part of cos(Sh^m, Sp^m), per frame
            ortho_terms.append(_masked_average(F.cosine_similarity(specific[m], shared[m], dim=-1).clamp_min(0),
                                               frames))
            sim_feats.append(self.shared_similarity[m](masked_mean(shared[m], masks[m])))

        # eq. 7 L_m over the pooled shared features of all present (sample, modality) pairs.
        b = labels.shape[0]
        feats = torch.stack(sim_feats, dim=1).reshape(b * 3, -1)                    # sample-major
        classes = sentiment_class(fused_label).repeat_interleave(3)
        modality = torch.arange(3, device=feats.device).repeat(b)
        valid = (present & fused_known.unsqueeze(1)).reshape(-1)
        margin = triplet_margin_cosine(feats, classes, modality, c.triplet_margin, valid)

        def head_l1(prediction, head, present_row=None):              # eq. 13 on one head's label
            target, known = label_for(labels, head)
            if present_row is not None:
                known = known & present_row
            return masked_l1(prediction, target, known)

        terms = {
            "task_final": head_l1(pred["final"], "fused"),
            "task_shared": head_l1(pred["shared"], "fused"),
            "task_text": head_l1(pred["text"], "text", present[:, 0]),
            "task_audio": head_l1(pred["audio"], "audio", present[:, 1]),
            "task_vision": head_l1(pred["vision"], "vision", present[:, 2]),
            "reconstruction": torch.stack(recon_terms).sum(),
            "specific": torch.stack(specific_terms).sum(),
            "margin": margin,
            "orthogonality": torch.stack(ortho_terms).sum(),
        }
        task = (terms["task_final"] + terms["task_shared"] + c.weight_text_task * terms["task_text"]   # eq. 14
                + terms["task_audio"] + terms["task_vision"])
        decoupling = (c.weight_reconstruction * terms["reconstruction"] + c.weight_specific * terms["specific"]
                      + c.weight_margin * terms["margin"] + c.weight_orthogonality * terms["orthogonality"])  # eq. 9
        terms["total"] = decoupling + task                                                              # eq. 15
        return terms
