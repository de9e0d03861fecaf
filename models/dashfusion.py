"""DashFusion: Dual-stream Alignment with Hierarchical Bottleneck Fusion.

Wen, Li, Zhou, Gao, Wen, Tao & Li, "DashFusion: Dual-stream Alignment with Hierarchical Bottleneck
Fusion for Multimodal Sentiment Analysis", IEEE TNNLS 2025 (arXiv 2512.05515). Equation numbers
below are the paper's; docs/fidelity/dashfusion.md maps each one to this file.

Read top to bottom:
  1. modality encoding (§III-B): text encoder projected to d = 128; audio and vision projected,
     a learned first (CLS) token prepended, positions, post-LN Transformer layers (eq. 1-2) -> X_m
  2. temporal alignment (§III-C1, eq. 3-4): H = X_t + CA(X_t, X_a) + CA(X_t, X_v)
  3. hierarchical bottleneck fusion (§III-E), L layers:
       eq. 6   B^l = Transformer-layer(H^{l-1})[0 : p / 2^{l-1}]     (H^0 = H of eq. 4)
       eq. 7-8 H^l = LN(B^l + Σ_m CA(B^l, X_m^{l-1})), H^l = LN(H^l + FFN(H^l))
       eq. 9   Z_m = LN(X_m^{l-1} + CA(X_m^{l-1}, H^l)), X_m^l = LN(Z_m + FFN(Z_m))
  4. prediction (§III-F): MLP on [H^L first token; X_t^L, X_a^L, X_v^L first tokens]  <- inference ends
  5. training only (`loss`): eq. 10 L_pred (MSE) + λ·eq. 11 L_con, where L_con unifies semantic
     alignment (text anchor, same-video audio/vision positives, eq. 5) and supervised contrastive
     learning with hard negatives (§III-D: 2 similar same-class positives, 2 similar + 2 dissimilar
     other-class negatives) on X̄_t, X̄_a, X̄_v and H̄.

Where the paper is silent the authors' code (github.com/ultramarineX/DashFusion, read for facts,
not copied) decided: 8 heads, FFN width 2d, the CLS token of the audio/vision encoders, Multi-CA
as one residual over the sum of the three CAs, the stream update reading the refined bottleneck,
classes of the contrastive sampler = round(label), its top-10 lists and their refresh every 2 epochs.
The sampler draws over the whole training set (`DatasetSampler`, `contrastive_sampler: dataset`, the
paper configs) or, cheaper, inside the batch (`contrastive_groups`, the default config);
docs/fidelity/dashfusion.md lists every difference.

Additions to the paper, needed by moodlens (they change nothing when every modality is present and
`unimodal_weight` is 0, as in the paper configs):
  - auxiliary unimodal heads on X̄_m (text/audio/vision scores); loss weight `unimodal_weight`.
  - absence awareness: an absent modality's cross-modal attention terms (eq. 4, eq. 7-8) are
    dropped, its first-token and pooled features are replaced by learned "absent" embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from moodlens.models.base import SentimentModel
from moodlens.models.batch import MAX_SEQ_LEN, MultimodalBatch, SentimentOutput
from moodlens.models.config import BaseModelConfig
from moodlens.models.layers import MultiHeadAttention, SinusoidalPositionalEncoding, masked_mean
from moodlens.models.losses import label_for, masked_mse
from moodlens.core.errors import ConfigError


@dataclass
class Config(BaseModelConfig):
    """(paper) = §IV-D, (code) = the authors' src/config.py, (ours) = not stated anywhere."""

    hidden: int = 128                  # d of every encoder and of the fusion (paper)
    heads: int = 8                     # (code) attention heads everywhere
    ff_dim: int = 256                  # (code) FFN width 2d
    encoder_layers: int = 1            # audio/vision Transformer layers (paper: 1 MOSI/SIMS, 3 MOSEI)
    bottleneck_tokens: int = 8         # p (paper)
    fusion_layers: int = 2             # L (paper: 2 MOSI/SIMS, 3 MOSEI); tokens p, p/2, ...
    # Loss (paper: λ = 0.2, τ = 0.5)
    contrastive_weight: float = 0.2    # λ of eq. 12
    temperature: float = 0.5           # τ of eq. 5
    positives: int = 2                 # same-class positives per anchor (paper §III-D)
    similar_negatives: int = 2         # other-class negatives most similar to the anchor (paper)
    dissimilar_negatives: int = 2      # other-class negatives least similar to the anchor (paper)
    unimodal_weight: float = 0.5       # auxiliary unimodal heads (ours; 0 in the paper configs)
    # Where §III-D draws positives/negatives: "dataset" = over the whole training set, as the paper
    # ("the cosine similarity between each sample pair (i, j) in the dataset D"); the drawn samples are
    # encoded beside the batch, 7x the encoder work. "batch" = inside the mini-batch (ours: cheap, the
    # product default).
    contrastive_sampler: str = "batch"
    sampler_top_k: int = 10            # (code) draw at random among the 10 most / least similar
    sampler_refresh_epochs: int = 2    # (code) similarities recomputed from the model every 2 epochs


# ---- paper-specific blocks ---------------------------------------------------------------------

class FeedForward(nn.Sequential):
    """FFN of eq. 1, 7 and 9: two linear maps with a ReLU (the paper names ReLU, §III-E)."""

    def __init__(self, dim: int, hidden: int, dropout: float):
        super().__init__(nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, dim))


class PostLNLayer(nn.Module):
    """Eq. 1 (self-attention) and eq. 9 (cross-attention with `context`), post-LN:
    Z = LN(X + Attn(X, C)), out = LN(Z + FFN(Z))."""

    def __init__(self, dim: int, heads: int, ff_dim: int, dropout: float):
        super().__init__()
        self.attn = MultiHeadAttention(dim, heads, dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, ff_dim, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, mask=None, context=None, context_mask=None):
        kv, kv_mask = (x, mask) if context is None else (context, context_mask)
        z = self.norm1(x + self.drop(self.attn(x, kv, kv_mask)))
        return self.norm2(z + self.drop(self.ff(z)))


class SequenceEncoder(nn.Module):
    """§III-B audio / vision encoder: Linear to d, a learned first token (CLS), sinusoidal
    positions, `layers` post-LN Transformer layers. Returns (X_m, mask with the CLS slot)."""

    def __init__(self, in_dim: int, dim: int, heads: int, ff_dim: int, layers: int, dropout: float):
        super().__init__()
        self.proj = nn.Linear(in_dim, dim)
        self.cls = nn.Parameter(torch.randn(dim) * 0.02)
        self.pos = SinusoidalPositionalEncoding(dim, MAX_SEQ_LEN + 1)   # + the CLS slot
        self.drop = nn.Dropout(dropout)
        self.layers = nn.ModuleList(PostLNLayer(dim, heads, ff_dim, dropout) for _ in range(layers))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = x.shape[0]
        x = torch.cat([self.cls.expand(b, 1, -1), self.proj(x)], 1)
        mask = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=mask.device), mask], 1)
        x = self.drop(self.pos(x))
        for layer in self.layers:
            x = layer(x, mask)
        return x, mask


class TemporalAlignment(nn.Module):
    """Eq. 4: H = X_t + CA(X_t, X_a) + CA(X_t, X_v). Text is the query of both (eq. 3).
    Addition: a CA term of an absent modality is dropped (`present` (B, 3))."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.ca_audio = MultiHeadAttention(dim, heads, dropout)
        self.ca_vision = MultiHeadAttention(dim, heads, dropout)

    def forward(self, text, audio, audio_mask, vision, vision_mask, present):
        a2t = self.ca_audio(text, audio, audio_mask)                               # X_{a->t}
        v2t = self.ca_vision(text, vision, vision_mask)                            # X_{v->t}
        zero = torch.zeros_like(a2t)
        return (text + torch.where(present[:, 1].view(-1, 1, 1), a2t, zero)
                + torch.where(present[:, 2].view(-1, 1, 1), v2t, zero))


class MultiCA(nn.Module):
    """Eq. 7-8: the bottleneck B queries every unimodal stream; H = LN(B + Σ_m CA(B, X_m)),
    H = LN(H + FFN(H)). Eq. 8 written into eq. 7 literally counts B twice; the authors' code uses
    one residual, as here. Addition: absent streams' CA terms are dropped."""

    def __init__(self, dim: int, heads: int, ff_dim: int, dropout: float, streams: int = 3):
        super().__init__()
        self.ca = nn.ModuleList(MultiHeadAttention(dim, heads, dropout) for _ in range(streams))
        self.norm1 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, ff_dim, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, bottleneck, streams, masks, present):
        gathered = torch.zeros_like(bottleneck)
        for i, (ca, x, mask) in enumerate(zip(self.ca, streams, masks)):
            term = ca(bottleneck, x, mask)                                         # CA(B^l, X_m^{l-1})
            gathered = gathered + torch.where(present[:, i].view(-1, 1, 1), term, torch.zeros_like(term))
        h = self.norm1(bottleneck + self.drop(gathered))                           # eq. 7 (with eq. 8)
        return self.norm2(h + self.drop(self.ff(h)))


class HierarchicalBottleneckFusion(nn.Module):
    """Eq. 6-9 over `layers` layers; layer l keeps p / 2^{l-1} bottleneck tokens.

    Layer 1 derives its bottleneck from H (text length, `h_mask`); later layers from the previous
    layer's fused bottleneck H^{l-1}. H is zeroed at padded text positions and p zero (masked)
    slots are appended before eq. 6, so "the first p tokens" exist for any sentence length and do
    not depend on how much padding the batch has."""

    def __init__(self, dim: int, heads: int, ff_dim: int, tokens: int, layers: int, dropout: float,
                 streams: int = 3):
        super().__init__()
        if layers < 1 or tokens % (2 ** (layers - 1)):
            raise ConfigError(f"DashFusion config: {tokens} bottleneck_tokens cannot be halved over "
                              f"{layers} fusion_layers; use a multiple of {2 ** max(layers - 1, 0)}.")
        self.token_counts = [tokens // 2 ** i for i in range(layers)]   # p / 2^{l-1}, l = 1..L
        self.bottleneck_layers = nn.ModuleList(PostLNLayer(dim, heads, ff_dim, dropout) for _ in range(layers))
        self.multi_ca = nn.ModuleList(MultiCA(dim, heads, ff_dim, dropout, streams) for _ in range(layers))
        self.stream_layers = nn.ModuleList(
            nn.ModuleList(PostLNLayer(dim, heads, ff_dim, dropout) for _ in range(streams)) for _ in range(layers))

    def forward(self, h: torch.Tensor, h_mask: torch.Tensor, streams: list[torch.Tensor],
                masks: list[torch.Tensor], present: torch.Tensor, return_history: bool = False):
        """Returns (H^L, [X_m^L]) and, when asked, the bottleneck B^l of every layer."""
        b, _, d = h.shape
        p = self.token_counts[0]
        h = torch.where(h_mask.unsqueeze(-1), h, torch.zeros_like(h))
        h = torch.cat([h, h.new_zeros(b, p, d)], 1)
        mask = torch.cat([h_mask, torch.zeros(b, p, dtype=torch.bool, device=h.device)], 1)
        history = []
        for l, keep in enumerate(self.token_counts):
            bottleneck = self.bottleneck_layers[l](h, mask)[:, :keep]               # eq. 6
            history.append(bottleneck)
            h = self.multi_ca[l](bottleneck, streams, masks, present)              # eq. 7-8: H^l
            mask = None
            streams = [layer(x, m, context=h) for layer, x, m in zip(self.stream_layers[l], streams, masks)]  # eq. 9
        if return_history:
            return h, streams, history
        return h, streams


# ---- eq. 5 / §III-D: contrastive groups and loss -----------------------------------------------

def contrastive_groups(similarity: torch.Tensor, classes: torch.Tensor, valid: torch.Tensor,
                       positives: int = 2, similar_negatives: int = 2, dissimilar_negatives: int = 2):
    """§III-D sampler within a batch: for anchor i, `positives` same-class samples most similar to
    i, `similar_negatives` other-class samples most similar and `dissimilar_negatives` least
    similar. similarity (N, N), classes (N,), valid (N,) bool. Returns (positive, negative) (N, N)
    bool pair masks. The paper draws them from the whole training set (`DatasetSampler`, random
    among the 10 most similar); a batch holds fewer candidates, so the most similar are taken."""
    n = similarity.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=similarity.device)
    ok = valid.unsqueeze(0) & valid.unsqueeze(1) & ~eye
    same = classes.unsqueeze(0) == classes.unsqueeze(1)

    def pick(candidates, k, largest):
        k = min(k, n)
        if k == 0:
            return torch.zeros_like(candidates)
        fill = float("-inf") if largest else float("inf")
        idx = similarity.masked_fill(~candidates, fill).topk(k, dim=1, largest=largest).indices
        return torch.zeros_like(candidates).scatter_(1, idx, True) & candidates

    positive = pick(ok & same, positives, True)
    similar = pick(ok & ~same, similar_negatives, True)
    dissimilar = pick(ok & ~same & ~similar, dissimilar_negatives, False)
    return positive, similar | dissimilar


def nt_xent_groups(anchor: torch.Tensor, candidates: torch.Tensor, positive: torch.Tensor,
                   negative: torch.Tensor, temperature: float) -> torch.Tensor:
    """Eq. 5 per anchor: ℓ^i = Σ_{p ∈ P_i} -log( exp(s_ip/τ) / Σ_{k ∈ N_i ∪ P_i} exp(s_ik/τ) ).
    anchor (N, D), candidates (M, D), positive/negative (N, M) bool. s = cosine (the authors' code;
    the paper says "dot product of the encoded" features). Returns (N,) ℓ^i (0 without a positive)."""
    sim = F.normalize(anchor, dim=-1) @ F.normalize(candidates, dim=-1).T / temperature
    return nt_xent_rows(sim, positive, negative)


def nt_xent_rows(sim: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """Eq. 5 on precomputed scaled similarities sim (N, M) (s/τ): per row, Σ_{p ∈ P} -log softmax over
    P ∪ N. Returns (N,) (0 for a row without a positive)."""
    denominator = torch.logsumexp(sim.masked_fill(~(positive | negative), float("-inf")), dim=1, keepdim=True)
    return torch.where(positive, denominator - sim, torch.zeros_like(sim)).sum(1)


class DatasetSampler:
    """§III-D over the whole training set D: for every training sample i, the `top_k` same-class
    samples most similar to i, the `top_k` other-class samples most similar and the `top_k`
    other-class samples least similar (cosine of the pooled [X̄_t; X̄_v; X̄_a], as the in-batch
    sampler); `draw` picks 2 / 2 / 2 of them at random for each anchor of a batch ("we randomly
    select two samples from the same class with high cosine similarity ... four samples with
    different labels: two of them are similar to sample i and the other two are dissimilar").

    Only the (N, top_k) index lists are kept, built in row chunks, so CMU-MOSEI's 16k training
    samples never need the full N x N matrix. Which features, top_k = 10 and the refresh every 2
    epochs are the authors' code's (their lists store rank positions instead of sample indices,
    a slip not followed here)."""

    def __init__(self, features: torch.Tensor, classes: torch.Tensor, valid: torch.Tensor, top_k: int = 10,
                 chunk: int = 1024):
        z = F.normalize(features.float(), dim=-1)
        n = z.shape[0]
        k = max(1, min(top_k, n - 1))
        lists = {name: [] for name in ("same", "similar", "dissimilar")}
        for start in range(0, n, chunk):
            rows = torch.arange(start, min(start + chunk, n))
            sim = z[rows] @ z.T
            ok = valid[rows].unsqueeze(1) & valid.unsqueeze(0)
            ok[torch.arange(len(rows)), rows] = False                      # never the anchor itself
            same = classes[rows].unsqueeze(1) == classes.unsqueeze(0)
            for name, allowed, score in (("same", ok & same, sim), ("similar", ok & ~same, sim),
                                         ("dissimilar", ok & ~same, -sim)):
                top = score.masked_fill(~allowed, float("-inf")).topk(k, dim=1)
                lists[name].append((top.indices, torch.isfinite(top.values)))
        self.lists = {name: (torch.cat([i for i, _ in parts]), torch.cat([v for _, v in parts]))
                      for name, parts in lists.items()}
        self.size = n

    def draw(self, index: torch.Tensor, counts: tuple[int, int, int] = (2, 2, 2),
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Partners of the anchors `index` (B,): (B, sum(counts)) dataset indices, columns ordered
        positives | similar negatives | dissimilar negatives, and a (B, sum(counts)) bool mask of
        the slots that hold a real candidate (a class with fewer members leaves slots empty)."""
        index = index.to(torch.long).cpu()
        picked, ok = [], []
        for (name, count) in zip(("same", "similar", "dissimilar"), counts):
            idx, valid = self.lists[name]
            idx, valid = idx[index], valid[index]
            if count > idx.shape[1]:
                raise ConfigError(f"DashFusion sampler: {count} partners asked from lists of {idx.shape[1]}.")
            order = torch.rand(idx.shape, generator=generator).masked_fill(~valid, 2.0).argsort(dim=1)[:, :count]
            picked.append(idx.gather(1, order))
            ok.append(valid.gather(1, order))
        return torch.cat(picked, 1), torch.cat(ok, 1)


def sampler_features(enc: dict, present: torch.Tensor) -> torch.Tensor:
    """What the §III-D sampler compares: [X̄_t; X̄_v; X̄_a], each unit-normalised (the authors'
    sampler concatenates t, v, a). An absent modality's part is zeroed: its learned stand-in must
    not steer the sampler."""
    t, a, v = enc["pooled"][0], enc["pooled"][1], enc["pooled"][2]
    return torch.cat([F.normalize(x, dim=-1) * present[:, i].unsqueeze(1).to(x.dtype)
                      for i, x in ((0, t), (2, v), (1, a))], -1)


# ---- the model ---------------------------------------------------------------------------------

class Model(SentimentModel):
    name = "dashfusion"
    modalities = ("text", "audio", "vision")

    def __init__(self, config: Config, load_text_weights: bool = True):
        super().__init__(config, load_text_weights)
        c = config
        d = c.hidden
        # §III-B: BERT output "scaled to match the feature dimension"; audio/vision encoders.
        self.text_proj = nn.Linear(c.text_dim, d)
        self.audio_encoder = SequenceEncoder(c.audio_dim, d, c.heads, c.ff_dim, c.encoder_layers, c.dropout)
        self.vision_encoder = SequenceEncoder(c.vision_dim, d, c.heads, c.ff_dim, c.encoder_layers, c.dropout)
        self.alignment = TemporalAlignment(d, c.heads, c.dropout)                 # eq. 4
        self.fusion = HierarchicalBottleneckFusion(d, c.heads, c.ff_dim, c.bottleneck_tokens,   # eq. 6-9
                                                   c.fusion_layers, c.dropout)
        # §III-F: MLP with ReLU on [H^L[0]; X_t[0]; X_a[0]; X_v[0]] (hidden 2d, d as the authors' code).
        self.head = nn.Sequential(nn.Linear(4 * d, 2 * d), nn.ReLU(), nn.Dropout(c.dropout),
                                  nn.Linear(2 * d, d), nn.ReLU(), nn.Dropout(c.dropout), nn.Linear(d, 1))
        # Additions: learned stand-ins for an absent modality, and auxiliary unimodal heads.
        self.absent_pooled = nn.Parameter(torch.zeros(3, d))
        self.absent_first = nn.Parameter(torch.zeros(3, d))
        self.unimodal_heads = nn.ModuleDict({m: nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Dropout(c.dropout),
                                                              nn.Linear(d, 1)) for m in self.modalities})
        if c.contrastive_sampler not in ("batch", "dataset"):
            raise ConfigError(f"DashFusion config: contrastive_sampler '{c.contrastive_sampler}' is not "
                              "'batch' or 'dataset'.")
        self.sampler: DatasetSampler | None = None     # §III-D over the training set (training only)
        self._sampler_epochs = 0

    def encode(self, text_ids, text_mask, audio, audio_mask, vision, vision_mask, present,
               return_history: bool = False, fuse: bool = True):
        """Everything the prediction and the losses need, as a dict of tensors (with the
        bottleneck B^l of every fusion layer under "history" when asked). `fuse=False` stops after
        eq. 4 (the contrastive partners of §III-D need only X̄_m and H̄)."""
        text = self.text_proj(self.text_encoder(text_ids, text_mask))                # X_t
        audio, audio_mask = self.audio_encoder(audio, audio_mask)                    # X_a (CLS first)
        vision, vision_mask = self.vision_encoder(vision, vision_mask)               # X_v (CLS first)
        h = self.alignment(text, audio, audio_mask, vision, vision_mask, present)    # eq. 4
        if fuse:  # (fusion built before the pooling: the autograd graph, so runs, stay bit-identical)
            fused, streams, history = self.fusion(h, text_mask, [text, audio, vision],   # eq. 6-9
                                                  [text_mask, audio_mask, vision_mask], present, return_history=True)

        def absent_aware(xs, table):
            return torch.stack([torch.where(present[:, i:i + 1], x, table[i].expand_as(x)) for i, x in enumerate(xs)])

        # X̄_m: time average of the unimodal features (eq. 5); H̄ likewise over the text positions.
        pooled = absent_aware([masked_mean(text, text_mask), masked_mean(audio, audio_mask),
                               masked_mean(vision, vision_mask)], self.absent_pooled)
        encoded = {"pooled": pooled, "h_pooled": masked_mean(h, text_mask)}
        if not fuse:
            return encoded
        encoded["first"] = absent_aware([s[:, 0] for s in streams], self.absent_first)
        encoded["bottleneck"] = fused[:, 0]
        if return_history:
            encoded["history"] = history
        return encoded

    def predict(self, enc: dict) -> SentimentOutput:
        """Raw regression scores; `encode_and_predict` bounds them."""
        first = enc["first"]
        fused = self.head(torch.cat([enc["bottleneck"], first[0], first[1], first[2]], -1)).squeeze(-1)
        unimodal = [self.unimodal_heads[m](enc["pooled"][i]).squeeze(-1) for i, m in enumerate(self.modalities)]
        return SentimentOutput(fused, *unimodal)

    def encode_and_predict(self, text_ids, text_mask, audio, audio_mask, vision, vision_mask,
                           present) -> SentimentOutput:
        raw = self.predict(self.encode(text_ids, text_mask, audio, audio_mask, vision, vision_mask, present))
        # Clamped at inference only: training sees the unbounded score (no saturated gradients).
        r = self.config.output_range
        return SentimentOutput(*(x.clamp(-r, r) for x in raw))

    # ---- training --------------------------------------------------------------------------
    def contrastive_loss(self, enc: dict, labels: torch.Tensor, known: torch.Tensor,
                         present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. 11 L_con = mean_i ℓ^i with ℓ^i of eq. 5 over four anchor groups per sample: X̄_t,
        X̄_v, X̄_a and H̄, each with its own sampled positives and negatives (§III-D); the text
        anchor also has the same sample's X̄_a and X̄_v as positives (semantic alignment, §III-C2).
        Returns (semantic part, supervised part); their sum is ℓ^i summed over groups."""
        c = self.config
        t, a, v = enc["pooled"][0], enc["pooled"][1], enc["pooled"][2]
        h = enc["h_pooled"]
        classes = torch.round(labels)                       # (code) class = rounded label
        # The sampler's similarity: cosine of the concatenated pooled features (as the authors'
        # data sampler), no gradient.
        # An absent modality's part is zeroed: its learned stand-in must not steer the sampler.
        on = [present[:, 0], present[:, 1], present[:, 2]]
        with torch.no_grad():
            z = F.normalize(sampler_features(enc, present), dim=-1)
            similarity = z @ z.T
        eye = torch.eye(t.shape[0], dtype=torch.bool, device=t.device)
        supervised = torch.zeros_like(t[:, 0])
        text_pos = text_neg = None
        for feats, valid in ((t, on[0]), (v, on[2]), (a, on[1]), (h, on[0])):
            valid = valid & known
            pos, neg = contrastive_groups(similarity, classes, valid, c.positives, c.similar_negatives,
                                          c.dissimilar_negatives)
            if feats is t:
                text_pos, text_neg = pos, neg
            else:
                supervised = supervised + nt_xent_groups(feats, feats, pos, neg, c.temperature)
        # Text group: candidates [X̄_t of other samples; X̄_a; X̄_v], positives = 2 sampled texts and
        # the same sample's audio and vision, negatives = 4 sampled texts (all in one denominator).
        cross_a = eye & (on[0] & on[1]).unsqueeze(1)
        cross_v = eye & (on[0] & on[2]).unsqueeze(1)
        none = torch.zeros_like(eye)
        positive = torch.cat([text_pos, cross_a, cross_v], 1)
        negative = torch.cat([text_neg, none, none], 1)
        sims = F.normalize(t, dim=-1) @ F.normalize(torch.cat([t, a, v], 0), dim=-1).T / c.temperature
        denominator = torch.logsumexp(sims.masked_fill(~(positive | negative), float("-inf")), 1, keepdim=True)
        per_pair = torch.where(positive, denominator - sims, torch.zeros_like(sims))
        n = t.shape[0]
        semantic = per_pair[:, n:].sum(1)                    # text-audio, text-vision pairs
        supervised = supervised + per_pair[:, :n].sum(1)     # text-text pairs
        return semantic.mean(), supervised.mean()

    def dataset_contrastive_loss(self, enc: dict, known: torch.Tensor, present: torch.Tensor,
                                 partners: MultimodalBatch, partner_ok: torch.Tensor
                                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. 11 with the §III-D partners drawn over the training set (`DatasetSampler.draw`):
        anchor i of group X̄_t / X̄_v / X̄_a / H̄ has its 2 positives and 4 negatives among its
        own 6 partners (encoded here, with gradient, as the authors' code encodes its sample2);
        the text anchor also has the same sample's X̄_a and X̄_v as positives (eq. 5, §III-C2), all
        in one denominator. partners: B·6 samples, anchor-major; partner_ok (B, 6). Returns
        (semantic part, supervised part), as `contrastive_loss`."""
        c = self.config
        b = known.shape[0]
        slots = partner_ok.shape[1]
        p_clean = self.clean_inputs(*partners.tensors())
        p_present = p_clean[-1].view(b, slots, 3)
        p_enc = self.encode(*p_clean, fuse=False)
        n_pos = c.positives
        is_pos = torch.zeros(slots, dtype=torch.bool, device=known.device)
        is_pos[:n_pos] = True
        anchors = {0: enc["pooled"][0], 2: enc["pooled"][2], 1: enc["pooled"][1], 3: enc["h_pooled"]}
        candidates = {0: p_enc["pooled"][0], 2: p_enc["pooled"][2], 1: p_enc["pooled"][1], 3: p_enc["h_pooled"]}
        semantic = supervised = enc["h_pooled"].new_zeros(b)
        for group in (0, 2, 1, 3):                       # X̄_t, X̄_v, X̄_a, H̄ (H̄ needs the text)
            m = 0 if group == 3 else group
            anchor = F.normalize(anchors[group], dim=-1)
            cand = F.normalize(candidates[group], dim=-1).view(b, slots, -1)
            sim = torch.einsum("bd,bkd->bk", anchor, cand) / c.temperature
            usable = partner_ok & p_present[:, :, m] & (present[:, m] & known).unsqueeze(1)
            positive, negative = usable & is_pos, usable & ~is_pos
            if group == 0:                               # + the same sample's audio and vision (eq. 5)
                own = torch.stack([F.normalize(enc["pooled"][1], dim=-1), F.normalize(enc["pooled"][2], dim=-1)], 1)
                cross = torch.einsum("bd,bkd->bk", anchor, own) / c.temperature
                cross_ok = present[:, 1:3] & present[:, :1]
                terms_all = torch.cat([sim, cross], 1)
                pos_all = torch.cat([positive, cross_ok], 1)
                neg_all = torch.cat([negative, torch.zeros_like(cross_ok)], 1)
                denominator = torch.logsumexp(terms_all.masked_fill(~(pos_all | neg_all), float("-inf")), 1,
                                              keepdim=True)
                per_pair = torch.where(pos_all, denominator - terms_all, torch.zeros_like(terms_all))
                semantic = semantic + per_pair[:, slots:].sum(1)
                supervised = supervised + per_pair[:, :slots].sum(1)
            else:
                supervised = supervised + nt_xent_rows(sim, positive, negative)
        return semantic.mean(), supervised.mean()

    # Training-only hooks of the dataset-level sampler, called by train/trainer.py.
    @property
    def uses_dataset_sampler(self) -> bool:
        return self.config.contrastive_sampler == "dataset" and self.config.contrastive_weight > 0

    @torch.no_grad()
    def refresh_sampler(self, batches) -> bool:
        """Called before every training epoch with the training split's (batch, labels) in
        dataset order: every `sampler_refresh_epochs` epochs (and whenever no sampler exists, e.g.
        after a resume), the similarity lists are rebuilt from the current model's features, in
        eval mode (the authors' `update_matrix`). Returns whether it rebuilt them."""
        due = self.sampler is None or self._sampler_epochs % max(self.config.sampler_refresh_epochs, 1) == 0
        self._sampler_epochs += 1
        if not due:
            return False
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        feats, classes, valid = [], [], []
        try:
            for batch, labels in batches:
                cleaned = self.clean_inputs(*batch.to(device).tensors())
                enc = self.encode(*cleaned, fuse=False)
                label, known = label_for(labels.to(device).to(torch.float32), "fused")
                feats.append(sampler_features(enc, cleaned[-1]).cpu())
                classes.append(torch.round(torch.nan_to_num(label)).cpu())    # (code) class = rounded label
                valid.append(known.cpu())
        finally:
            self.train(was_training)
        self.sampler = DatasetSampler(torch.cat(feats), torch.cat(classes), torch.cat(valid), self.config.sampler_top_k)
        return True

    def contrastive_partners(self, index: torch.Tensor, generator: torch.Generator | None = None
                             ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B·6,) training-set indices of the anchors' partners, anchor-major, and (B, 6) slot mask."""
        if self.sampler is None:
            raise RuntimeError("refresh_sampler must run before contrastive_partners")
        c = self.config
        picked, ok = self.sampler.draw(index, (c.positives, c.similar_negatives, c.dissimilar_negatives), generator)
        return picked.reshape(-1), ok

    def loss(self, batch: MultimodalBatch, labels: torch.Tensor, partners: MultimodalBatch | None = None,
             partner_ok: torch.Tensor | None = None, **extras) -> dict[str, torch.Tensor]:
        """`partners` / `partner_ok`: the §III-D partners drawn over the training set (trainer, with
        `contrastive_sampler: dataset`); without them the sampler works inside the batch."""
        c = self.config
        cleaned = self.clean_inputs(*batch.tensors())
        present = cleaned[-1]
        labels = labels.to(torch.float32)
        enc = self.encode(*cleaned)
        out = self.predict(enc)
        fused_label, fused_known = label_for(labels, "fused")
        if partners is not None:
            semantic, supervised = self.dataset_contrastive_loss(enc, fused_known, present, partners, partner_ok)
        else:
            semantic, supervised = self.contrastive_loss(enc, fused_label, fused_known, present)
        prediction = masked_mse(out.fused, fused_label, fused_known)                # eq. 10 L_pred
        unimodal = out.fused.new_zeros(())
        for i, m in enumerate(self.modalities):                                    # addition
            target, known = label_for(labels, m)
            unimodal = unimodal + masked_mse(getattr(out, m), target, known & present[:, i])
        terms = {"prediction": prediction, "semantic_alignment": semantic,
                 "supervised_contrastive": supervised, "unimodal": unimodal}
        terms["total"] = (prediction + c.contrastive_weight * (semantic + supervised)  # eq. 12
                          + c.unimodal_weight * unimodal)
        return terms

    def bottleneck_token_counts(self, batch: MultimodalBatch) -> list[int]:
        """Bottleneck tokens of each fusion layer (eq. 6), measured on `batch`."""
        history = self.encode(*self.clean_inputs(*batch.tensors()), return_history=True)["history"]
        return [int(x.shape[1]) for x in history]
