"""DAR: robust sentiment analysis by random erasure, disentanglement, alignment and restoration.

Implements the architecture as the project's issue 2 specifies it (the erasure, alignment,
common/independent encoders, InfoNCE similarity, CLUB dissimilarity with its own BiLSTM + MLP
variational network optimised alternately, restoration decoders, gated common/independent
reconstruction, self-attention fusion of common features, cross-attention fusion of independent
features, boot prediction; λ = 0.7, α = β = 0.1). The issue gives the weights but not how they
combine; here L = L_task + λ·L_restore + α·L_sim + β·L_club (the restoration/reconstruction term is
what the erasure exists for, so it carries the large weight).

Read top to bottom:
  1. alignment: text encoder, then per modality a 1-D convolution to the common width and
     learned-query attention to the common length K (export-dynamic, unlike adaptive pooling)
  2. disentanglement: one common encoder shared by all modalities, one independent encoder each
  3. reconstruction modules: modality m rebuilt from the common space (mean of the present
     modalities' common features) and from its own independent features, combined by a gate
  4. fusion: self-attention over the common features of all modalities; cross-attention with the
     text's reconstructed features as query over audio and vision
  5. boot prediction: the fused head and per-modality heads               <- inference ends here
  6. training only: random erasure (`training_batch`), restoration decoders back to the clean
     (un-erased) input, InfoNCE between modalities' common features, CLUB upper bound between
     common and independent features (variational net frozen in `loss`, trained in
     `auxiliary_loss` on its log-likelihood)

Absent modalities: excluded from the common mean and from every attention key set; their
unimodal head sees a learned "absent" embedding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from moodlens.models.base import SentimentModel
from moodlens.core.schema import MODALITIES
from moodlens.models.batch import MultimodalBatch, SentimentOutput
from moodlens.models.config import BaseModelConfig
from moodlens.models.layers import (MLP, Conv1dProjection, CrossModalEncoder, QueryPooling, TransformerEncoder,
                                    ensure_nonempty, masked_mean, scale_output)
from moodlens.models.losses import info_nce

UNK_TOKEN_ID = 100                   # [UNK] in the BERT uncased vocabulary
SPECIAL_TOKEN_IDS = (0, 101, 102)    # [PAD], [CLS], [SEP] are never erased


@dataclass
class Config(BaseModelConfig):
    hidden_dim: int = 64            # common width after alignment
    common_length: int = 8          # K: common length after alignment
    heads: int = 4
    conv_kernel: int = 3            # 1-D alignment convolution
    encoder_layers: int = 2         # common / independent encoders
    fusion_layers: int = 2          # self-attention (common) and cross-attention (independent) fusion
    club_hidden: int = 64           # BiLSTM width of the CLUB variational network
    erase_ratio: float = 0.1        # proportion of each modality erased in training
    unk_token_id: int = UNK_TOKEN_ID
    temperature: float = 0.1        # InfoNCE τ
    weight_restore: float = 0.7     # λ
    weight_similarity: float = 0.1  # α
    weight_club: float = 0.1        # β
    weight_unimodal: float = 0.1    # per-modality heads of the boot prediction


# ---- paper-specific blocks ---------------------------------------------------------------------

class ClubEstimator(nn.Module):
    """CLUB variational network q(i | c) = N(μ(c), σ²(c)): a BiLSTM over the common sequence and an
    MLP to the mean and log-variance of the independent features at every step."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.lstm = nn.LSTM(dim, hidden, batch_first=True, bidirectional=True)
        self.mu = MLP(2 * hidden, hidden, dim, 2, 0.0)
        self.logvar = nn.Sequential(MLP(2 * hidden, hidden, dim, 2, 0.0), nn.Tanh())

    def forward(self, common: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, _ = self.lstm(common)
        return self.mu(h), self.logvar(h)


def club_log_likelihood(mu, logvar, independent, valid) -> torch.Tensor:
    """Mean Gaussian log-likelihood (up to a constant) of the true independent features."""
    ll = (-(mu - independent).pow(2) / logvar.exp() - logvar).sum(-1).mean(-1)        # (B,)
    return _masked_average(ll, valid)


def club_upper_bound(mu, logvar, independent, valid) -> torch.Tensor:
    """CLUB: E_p(c,i)[log q(i|c)] - E_p(c)p(i)[log q(i|c)], negatives are every other valid sample."""
    var = logvar.exp()
    positive = (-(mu - independent).pow(2) / (2 * var)).sum(-1).mean(-1)                           # (B,)
    pair = (-(mu.unsqueeze(1) - independent.unsqueeze(0)).pow(2) / (2 * var.unsqueeze(1))).sum(-1).mean(-1)  # (B, B)
    cols = valid.to(pair.dtype).unsqueeze(0)
    negative = (pair * cols).sum(1) / cols.sum(1).clamp_min(1.0)
    return _masked_average(positive - negative, valid)


def random_erasure(batch: MultimodalBatch, ratio: float, unk_token_id: int,
                   generator: torch.Generator | None = None) -> tuple[MultimodalBatch, dict[str, torch.Tensor]]:
    """Erase round(ratio · n) randomly chosen real positions of every present modality of every sample:
    text tokens -> [UNK] (special tokens kept), audio/vision frames -> zeros. Returns the erased batch
    and the (B, L) erased-position masks."""
    present = batch.present.to(torch.bool)
    specials = torch.zeros_like(batch.text_mask)
    for token in SPECIAL_TOKEN_IDS:
        specials |= batch.text_ids == token
    erasable = {"text": batch.text_mask.to(torch.bool) & ~specials & present[:, :1],
                "audio": batch.audio_mask.to(torch.bool) & present[:, 1:2],
                "vision": batch.vision_mask.to(torch.bool) & present[:, 2:3]}
    erased = {}
    for m, ok in erasable.items():
        scores = torch.rand(ok.shape, generator=generator).to(ok.device).masked_fill(~ok, 2.0)
        rank = scores.argsort(1).argsort(1)                       # random order among erasable positions
        count = torch.round(ok.sum(1).to(torch.float32) * ratio).to(torch.long)
        erased[m] = rank < count.unsqueeze(1)
    return batch.replace(
        text_ids=torch.where(erased["text"], torch.full_like(batch.text_ids, unk_token_id), batch.text_ids),
        audio=batch.audio.masked_fill(erased["audio"].unsqueeze(-1), 0.0),
        vision=batch.vision.masked_fill(erased["vision"].unsqueeze(-1), 0.0),
    ), erased


def _masked_average(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    weights = valid.to(values.dtype)
    return (values * weights).sum() / weights.sum().clamp_min(1.0)


def _info_nce_on(anchor, positive, valid, temperature):
    if int(valid.sum()) < 2:
        return anchor.sum() * 0.0
    return info_nce(anchor[valid], positive[valid], temperature)


# ---- the model ---------------------------------------------------------------------------------

class Model(SentimentModel):
    name = "dar"

    def __init__(self, config: Config, load_text_weights: bool = True):
        super().__init__(config, load_text_weights)
        c = config
        d, k = c.hidden_dim, c.common_length
        self.in_dims = {"text": c.text_dim, "audio": c.audio_dim, "vision": c.vision_dim}
        # 1. alignment to the common width (1-D conv) and common length K (learned queries).
        self.align_width = nn.ModuleDict({m: Conv1dProjection(self.in_dims[m], d, c.conv_kernel) for m in MODALITIES})
        self.align_length = nn.ModuleDict({m: QueryPooling(d, k, c.heads) for m in MODALITIES})
        # 2. common encoder (shared) and independent encoders (one per modality).
        self.common_encoder = TransformerEncoder(d, c.heads, c.encoder_layers, dropout=c.dropout)
        self.independent_encoder = nn.ModuleDict({m: TransformerEncoder(d, c.heads, c.encoder_layers,
                                                                        dropout=c.dropout) for m in MODALITIES})
        # 3. reconstruction modules with a gated combination.
        self.from_common = nn.ModuleDict({m: nn.Linear(d, d) for m in MODALITIES})
        self.from_independent = nn.ModuleDict({m: nn.Linear(d, d) for m in MODALITIES})
        self.gate = nn.ModuleDict({m: nn.Linear(2 * d, d) for m in MODALITIES})
        # 4. fusion: self-attention over common features, cross-attention over independent ones.
        self.modality_embedding = nn.Parameter(torch.zeros(3, d))
        self.common_fusion = TransformerEncoder(d, c.heads, c.fusion_layers, dropout=c.dropout, positional=False)
        self.independent_fusion = CrossModalEncoder(d, c.heads, c.fusion_layers, dropout=c.dropout)
        # 5. boot prediction: fused head + per-modality heads (absent -> learned embedding).
        self.absent = nn.Parameter(torch.zeros(3, 2 * d))
        self.fused_head = MLP(2 * d, d, 1, 2, c.dropout)
        self.unimodal_head = nn.ModuleDict({m: MLP(2 * d, d, 1, 2, c.dropout) for m in MODALITIES})
        # 6. training only: restoration decoders and the CLUB variational networks.
        self.restore = nn.ModuleDict({m: MLP(d, d, self.in_dims[m], 2, 0.0) for m in MODALITIES})
        self.club = nn.ModuleDict({m: ClubEstimator(d, c.club_hidden) for m in MODALITIES})

    # ---- 1-2 -------------------------------------------------------------------------------
    def disentangle(self, text_ids, text_mask, audio, audio_mask, vision, vision_mask):
        raw = {"text": self.text_encoder(text_ids, text_mask), "audio": audio, "vision": vision}
        masks = {"text": text_mask, "audio": audio_mask, "vision": vision_mask}
        aligned = {m: self.align_length[m](self.align_width[m](raw[m]), masks[m]) for m in MODALITIES}  # (B, K, d)
        common = {m: self.common_encoder(aligned[m]) for m in MODALITIES}
        independent = {m: self.independent_encoder[m](aligned[m]) for m in MODALITIES}
        return common, independent

    # ---- 3-5 -------------------------------------------------------------------------------
    def reconstruct(self, common: dict, independent: dict, present: torch.Tensor) -> dict:
        """Gated combination of the common-space and independent reconstructions of each modality."""
        weights = present.to(common["text"].dtype)                                         # (B, 3)
        stacked = torch.stack([common[m] for m in MODALITIES], dim=1)                      # (B, 3, K, d)
        common_mean = (stacked * weights.view(-1, 3, 1, 1)).sum(1) / weights.sum(1).clamp_min(1.0).view(-1, 1, 1)
        rebuilt = {}
        for m in MODALITIES:
            r_common = self.from_common[m](common_mean)
            r_independent = self.from_independent[m](independent[m])
            g = torch.sigmoid(self.gate[m](torch.cat([r_common, r_independent], dim=-1)))
            rebuilt[m] = g * r_common + (1 - g) * r_independent
        return rebuilt

    def predict(self, common: dict, independent: dict, rebuilt: dict, present: torch.Tensor) -> dict:
        k = self.config.common_length
        b = present.shape[0]
        # Self-attention fusion of the common features of the present modalities.
        seq = torch.cat([common[m] + self.modality_embedding[i] for i, m in enumerate(MODALITIES)], dim=1)
        keys = ensure_nonempty(present.repeat_interleave(k, dim=1))
        fused_common = masked_mean(self.common_fusion(seq, keys), keys)
        # Cross-attention fusion: the text's reconstruction queries audio and vision reconstructions.
        context = torch.cat([rebuilt["audio"], rebuilt["vision"]], dim=1)
        context_keys = ensure_nonempty(present[:, 1:].repeat_interleave(k, dim=1))
        fused_independent = self.independent_fusion(rebuilt["text"], context, context_keys).mean(1)
        out = {"fused": self.fused_head(torch.cat([fused_common, fused_independent], dim=-1)).squeeze(-1)}
        for i, m in enumerate(MODALITIES):
            own = torch.cat([common[m].mean(1), rebuilt[m].mean(1)], dim=-1)
            own = torch.where(present[:, i:i + 1], own, self.absent[i].expand(b, -1))
            out[m] = self.unimodal_head[m](own).squeeze(-1)
        return out

    def encode_and_predict(self, text_ids, text_mask, audio, audio_mask, vision, vision_mask,
                           present) -> SentimentOutput:
        common, independent = self.disentangle(text_ids, text_mask, audio, audio_mask, vision, vision_mask)
        pred = self.predict(common, independent, self.reconstruct(common, independent, present), present)
        r = self.config.output_range
        return SentimentOutput(*(scale_output(pred[k], r) for k in ("fused", "text", "audio", "vision")))

    # ---- 6. training -----------------------------------------------------------------------
    def training_batch(self, batch: MultimodalBatch, labels: torch.Tensor,
                       generator: torch.Generator | None = None) -> tuple[MultimodalBatch, dict]:
        erased_batch, _ = random_erasure(batch, self.config.erase_ratio, self.config.unk_token_id, generator)
        return erased_batch, {"clean_batch": batch}

    def auxiliary_parameters(self) -> list[nn.Parameter]:
        return list(self.club.parameters())

    def auxiliary_loss(self, batch: MultimodalBatch, labels: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood of the CLUB variational networks on the current (detached)
        common/independent features: the estimator's own step, alternating with the main step."""
        text_ids, text_mask, audio, audio_mask, vision, vision_mask, present = self.clean_inputs(*batch.tensors())
        with torch.no_grad():
            common, independent = self.disentangle(text_ids, text_mask, audio, audio_mask, vision, vision_mask)
        nll = [-club_log_likelihood(*self.club[m](common[m]), independent[m], present[:, i])
               for i, m in enumerate(MODALITIES)]
        return torch.stack(nll).sum()

    def restoration_targets(self, clean: MultimodalBatch) -> dict:
        """What the restoration decoders rebuild: the pooled un-erased input of each modality (the text
        as the text encoder's pooled states), layer-normalised so raw feature scales cannot swamp the loss."""
        text_ids, text_mask, audio, audio_mask, vision, vision_mask, _ = self.clean_inputs(*clean.tensors())
        with torch.no_grad():
            text = masked_mean(self.text_encoder(text_ids, text_mask), text_mask)
        pooled = {"text": text, "audio": masked_mean(audio, audio_mask), "vision": masked_mean(vision, vision_mask)}
        return {m: F.layer_norm(x, x.shape[-1:]) for m, x in pooled.items()}

    def loss(self, batch: MultimodalBatch, labels: torch.Tensor, clean_batch: MultimodalBatch | None = None,
             **extras) -> dict[str, torch.Tensor]:
        c = self.config
        r = c.output_range
        text_ids, text_mask, audio, audio_mask, vision, vision_mask, present = self.clean_inputs(*batch.tensors())
        labels = labels.to(torch.float32).reshape(-1)
        common, independent = self.disentangle(text_ids, text_mask, audio, audio_mask, vision, vision_mask)
        rebuilt = self.reconstruct(common, independent, present)
        pred = self.predict(common, independent, rebuilt, present)

        # Restoration: decoders rebuild the clean input from the (erased) reconstruction.
        targets = self.restoration_targets(clean_batch if clean_batch is not None else batch)
        restore = torch.stack([
            _masked_average((self.restore[m](rebuilt[m].mean(1)) - targets[m]).pow(2).mean(-1), present[:, i])
            for i, m in enumerate(MODALITIES)]).sum()
        # Similarity: InfoNCE between the common features of every pair of present modalities.
        pooled = {m: common[m].mean(1) for m in MODALITIES}
        pairs = (("text", "audio", 0, 1), ("text", "vision", 0, 2), ("audio", "vision", 1, 2))
        similarity = torch.stack([_info_nce_on(pooled[a], pooled[b], present[:, i] & present[:, j], c.temperature)
                                  for a, b, i, j in pairs]).sum()
        # Dissimilarity: CLUB upper bound of I(common; independent); the variational networks are
        # used with detached weights so the main loss never trains them. Softplus: a negative
        # estimate is estimator error, and rewarding it let the encoders exploit the lagging
        # estimator (the bound fell below zero and the task got worse on synthetic data).
        club_terms = []
        for i, m in enumerate(MODALITIES):
            frozen = {name: p.detach() for name, p in self.club[m].named_parameters()}
            mu, logvar = functional_call(self.club[m], frozen, (common[m],))
            club_terms.append(F.softplus(club_upper_bound(mu, logvar, independent[m], present[:, i])))
        club = torch.stack(club_terms).sum()

        def mae(p, valid=None):
            err = (scale_output(p, r) - labels).abs()
            return err.mean() if valid is None else _masked_average(err, valid)

        unimodal = sum(mae(pred[m], present[:, i]) for i, m in enumerate(MODALITIES))
        terms = {"task": mae(pred["fused"]), "unimodal": unimodal, "restore": restore,
                 "similarity": similarity, "club": club}
        terms["total"] = (terms["task"] + c.weight_unimodal * unimodal + c.weight_restore * restore
                          + c.weight_similarity * similarity + c.weight_club * club)
        return terms
